"""Applies walhook's events to a replica database so that it converges on the source.

Every event has a position (its version): (commit LSN, index of the change in its
transaction). For one key a later position is always a newer state, so the replica applies an
event only if it is newer than what it holds for that key and newer than the table's last
truncate. Re-deliveries, retries out of order and duplicates then change nothing.

Bookkeeping lives in the schema `walhook_sync` of the replica database:
  versions(table_name, key, lsn, idx, deleted)  one row per key, tombstones included
  floors(table_name, lsn, idx)                  the version of each table's last truncate

Row values never pass through Python floats: the body is parsed with every number as a
Decimal and handed to Postgres as JSON text, which converts it to the column types
(`jsonb_populate_record`), exactly as `to_jsonb()` printed it on the source.
"""

import json
import re
from dataclasses import dataclass
from decimal import Decimal

from psycopg import sql

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS walhook_sync;
CREATE TABLE IF NOT EXISTS walhook_sync.versions (
    table_name text NOT NULL,
    key jsonb NOT NULL,
    lsn pg_lsn NOT NULL,
    idx bigint NOT NULL,
    deleted boolean NOT NULL,
    PRIMARY KEY (table_name, key)
);
CREATE TABLE IF NOT EXISTS walhook_sync.floors (
    table_name text PRIMARY KEY,
    lsn pg_lsn NOT NULL,
    idx bigint NOT NULL
);
"""

OPERATIONS = {"insert", "update", "delete", "truncate", "read"}
STREAM_ID = re.compile(r"evt_([0-9A-Fa-f]{16})_(\d+)(?:_\d+)?")
READ_ID = re.compile(r"bf_-?\d+_[0-9a-f]+(?:_\d+)?")
LSN_TEXT = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


class PayloadError(ValueError):
    """The body is not walhook's payload; answering 400 sends it to walhook's dead letters."""


class ReplicaError(RuntimeError):
    """The replica cannot take the event (no such table, no primary key): the app must fix its
    replica, so the request fails with 5xx and walhook retries it until then."""


@dataclass(frozen=True, order=True)
class Version:
    lsn: int
    index: int

    @property
    def pg_lsn(self):
        return f"{self.lsn >> 32:X}/{self.lsn & 0xFFFFFFFF:X}"


def parse_version(event_id, commit_lsn=None):
    """The position of an event. A read event's id names its backfill and key but not its
    position: that is its chunk's high watermark, sent as `commit_lsn`, and index 0."""
    if not isinstance(event_id, str):
        raise PayloadError("the event id must be a string")
    stream = STREAM_ID.fullmatch(event_id)
    if stream:
        return Version(int(stream[1], 16), int(stream[2]))
    if READ_ID.fullmatch(event_id):
        lsn = LSN_TEXT.fullmatch(commit_lsn) if isinstance(commit_lsn, str) else None
        if not lsn:
            raise PayloadError(f"{event_id}: commit_lsn must look like 16/B374D848")
        return Version((int(lsn[1], 16) << 32) + int(lsn[2], 16), 0)
    raise PayloadError(f"{event_id!r} is not an event id of walhook (evt_... or bf_...)")


def _reject_constant(name):
    raise PayloadError(f"{name} is not a JSON value walhook sends")


def parse_body(body):
    """The events of a request body: one event, or a batch, which walhook sends as
    `{"events": [...]}` (a bare JSON array of events is taken too)."""
    try:
        parsed = json.loads(
            body, parse_float=Decimal, parse_int=Decimal, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as error:
        raise PayloadError(f"the body is not JSON: {error}") from None
    if isinstance(parsed, dict) and "events" in parsed and "data" not in parsed:
        parsed = parsed["events"]
        if not isinstance(parsed, list):
            raise PayloadError("a batch's events must be a JSON array")
    events = parsed if isinstance(parsed, list) else [parsed]
    if not events:
        raise PayloadError("a batch holds at least one event")
    return events


def json_text(value):
    """JSON text of a parsed value with every number exactly as it was received."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        items = (json.dumps(k, ensure_ascii=False) + ":" + json_text(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Change:
    """One event, checked, with what applying it needs."""

    id: str
    table: str
    operation: str
    version: Version
    row: dict | None
    old: dict | None
    unchanged_toast: list


def check(event):
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise PayloadError("an event is a JSON object with an id and a data object")
    data = event["data"]
    event_id, table, operation = event.get("id"), data.get("table"), data.get("operation")
    version = parse_version(event_id, data.get("commit_lsn"))
    if not isinstance(table, str) or "." not in table:
        raise PayloadError(f"{event_id}: data.table must be schema.name")
    if operation not in OPERATIONS:
        raise PayloadError(f"{event_id}: unknown operation {operation!r}")
    row, old, toast = data.get("row"), data.get("old"), data.get("unchanged_toast") or []
    if operation in ("insert", "update", "read") and not isinstance(row, dict):
        raise PayloadError(f"{event_id}: an {operation} needs a row object")
    if operation == "delete" and not isinstance(old, dict):
        raise PayloadError(f"{event_id}: a delete needs the old key in data.old")
    if old is not None and not isinstance(old, dict):
        raise PayloadError(f"{event_id}: data.old must be an object or null")
    if not isinstance(toast, list) or not all(isinstance(c, str) for c in toast):
        raise PayloadError(f"{event_id}: unchanged_toast must be a list of column names")
    return Change(event_id, table, operation, version, row, old, toast)


class Table:
    """A replica table's columns and primary key, and the statements that write it."""

    def __init__(self, name, t, columns, key):
        """`t`: the quoted name; `columns`: (name, generated) in table order; `key`: the
        primary key's columns."""
        self.name, self.key = name, key
        self.names = {c for c, _ in columns}
        columns = [c for c, generated in columns if not generated]  # Postgres computes those
        col = sql.Identifier
        key_list = sql.SQL(", ").join(map(col, key))

        def key_of(alias):  # the key as jsonb, computed from typed values on both sides
            pairs = (sql.SQL("{}, {}.{}").format(sql.Literal(c), sql.Identifier(alias), col(c)) for c in key)
            return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(pairs))

        def same_key(a, b):
            return sql.SQL("({}) = ({})").format(
                sql.SQL(", ").join(sql.SQL("{}.{}").format(col(a), col(c)) for c in key),
                sql.SQL(", ").join(sql.SQL("{}.{}").format(col(b), col(c)) for c in key),
            )

        # Decides and locks in one statement: the key's version row is written only if the
        # event is newer than both it and the table's floor, and stays locked until commit,
        # so a concurrent request for the same key waits and then sees the newer version.
        self.gate = sql.SQL(
            "INSERT INTO walhook_sync.versions AS v (table_name, key, lsn, idx, deleted)"
            " SELECT %(table)s::text, {key}, %(lsn)s::pg_lsn, %(idx)s::bigint, %(deleted)s"
            " FROM jsonb_populate_record(NULL::{t}, %(key)s::jsonb) AS k, walhook_sync.floors AS f"
            " WHERE f.table_name = %(table)s AND (f.lsn, f.idx) < (%(lsn)s::pg_lsn, %(idx)s::bigint)"
            " ON CONFLICT (table_name, key) DO UPDATE"
            " SET lsn = excluded.lsn, idx = excluded.idx, deleted = excluded.deleted"
            " WHERE (v.lsn, v.idx) < (excluded.lsn, excluded.idx)"
            " RETURNING 1"
        ).format(key=key_of("k"), t=t)
        # Columns the event lacks (unchanged TOAST) keep the replica's value: that of `base`
        # (the row a key change moved away) or else of the key's current row. Identity
        # columns take the source's values (OVERRIDING SYSTEM VALUE).
        rest = [c for c in columns if c not in key]
        on_conflict = (
            sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(col(c)) for c in rest)
            )
            if rest
            else sql.SQL("DO NOTHING")
        )
        self.upsert = sql.SQL(
            "INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE"
            " SELECT {r_cols} FROM jsonb_populate_record(NULL::{t}, coalesce(%(base)s::jsonb,"
            " (SELECT to_jsonb(e) FROM {t} AS e, jsonb_populate_record(NULL::{t}, %(key)s::jsonb) AS b"
            " WHERE {same}), '{{}}') || %(row)s::jsonb) AS r"
            " ON CONFLICT ({key_list}) {on_conflict}"
        ).format(
            t=t,
            cols=sql.SQL(", ").join(map(col, columns)),
            r_cols=sql.SQL(", ").join(sql.SQL("r.{}").format(col(c)) for c in columns),
            same=same_key("e", "b"),
            key_list=key_list,
            on_conflict=on_conflict,
        )
        self.delete = sql.SQL(
            "DELETE FROM {t} AS e USING jsonb_populate_record(NULL::{t}, %(key)s::jsonb) AS b"
            " WHERE {same}"
            " RETURNING to_jsonb(e)::text"
        ).format(t=t, same=same_key("e", "b"))
        # A truncate removes what is older than it; what a newer version wrote stays.
        self.truncate_rows = sql.SQL(
            "DELETE FROM {t} AS e WHERE NOT EXISTS (SELECT 1 FROM walhook_sync.versions AS v"
            " WHERE v.table_name = %(table)s AND v.key = {key})"
        ).format(t=t, key=key_of("e"))

    def check_columns(self, c):
        """jsonb_populate_record ignores names it does not know: a column the source has and
        the replica lacks (added or renamed on the source) would be lost without a word."""
        for image in (c.row, c.old):
            unknown = sorted((image or {}).keys() - self.names)
            if unknown:
                raise ReplicaError(f"the replica table {self.name} lacks column(s) {', '.join(unknown)}")

    def key_json(self, event_id, image, where):
        """The key columns of `image` as JSON text; also checks they are there."""
        missing = [c for c in self.key if image.get(c) is None]
        if missing:
            raise PayloadError(f"{event_id}: {where} lacks key column(s) {', '.join(missing)} of {self.name}")
        return json_text({c: image[c] for c in self.key})


_tables = {}


def forget_tables():
    """Drops the cached table shapes, so a replica table the app altered is read again."""
    _tables.clear()


def table(conn, name):
    if name in _tables:
        return _tables[name]
    found = conn.execute(
        "SELECT c.oid, format('%%I.%%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname || '.' || c.relname = %s AND c.relkind IN ('r', 'p')",
        [name],
    ).fetchone()
    if not found:
        raise ReplicaError(f"the replica has no table {name}: create it like the source's")
    oid, ident = found
    columns = conn.execute(
        "SELECT attname, attgenerated <> '' FROM pg_attribute WHERE attrelid = %s AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        [oid],
    ).fetchall()
    key = [c for (c,) in conn.execute(
        "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
        " JOIN pg_attribute a ON a.attnum = k.attnum"
        " WHERE i.indrelid = %s AND i.indisprimary AND a.attrelid = i.indrelid ORDER BY k.n",
        [oid],
    )]
    if not key:
        raise ReplicaError(f"the replica table {name} has no primary key")
    _tables[name] = Table(name, sql.SQL(ident), columns, key)
    return _tables[name]


def apply(conn, events, trace=None):
    """Applies parsed events in order in one transaction; returns (applied, skipped).
    Raises PayloadError for an event that is not walhook's, and lets database errors through;
    either way nothing of the request is kept. `trace`, a list, gets a line per event."""
    changes = [check(event) for event in events]
    applied = 0
    with conn.transaction():
        tables = {name: table(conn, name) for name in sorted({c.table for c in changes})}
        truncated = {c.table for c in changes if c.operation == "truncate"}
        # Row changes hold their table's floor in share mode and a truncate holds it
        # exclusively, so a truncate never runs beside a write of its table. (Taken in name
        # order; two requests that still wait on each other's keys are ended by Postgres's
        # deadlock check and retried by walhook.)
        for name in tables:
            conn.execute(
                "INSERT INTO walhook_sync.floors VALUES (%s, '0/0', -1) ON CONFLICT DO NOTHING",
                [name],
            )
            mode = "UPDATE" if name in truncated else "SHARE"
            conn.execute(f"SELECT FROM walhook_sync.floors WHERE table_name = %s FOR {mode}", [name])
        for change in changes:
            done = _apply_one(conn, tables[change.table], change)
            applied += done
            if trace is not None:
                trace.append(_trace_line(change, tables[change.table].key, done))
    return applied, len(changes) - applied


def _trace_line(c, key, applied):
    """`  <id> <table> <operation> at=<lsn>/<index> key=[..] old=[..]|- toast=<cols>|- applied|skipped`."""

    def values(image):
        return "[" + ",".join(str(image.get(k)) for k in key) + "]" if image else "-"

    image = c.old if c.operation == "delete" else c.row
    return (
        f"  {c.id} {c.table} {c.operation} at={c.version.pg_lsn}/{c.version.index}"
        f" key={values(image)} old={values(c.old)}"
        f" toast={','.join(c.unchanged_toast) or '-'} {'applied' if applied else 'skipped'}"
    )


def _apply_one(conn, t, c):
    t.check_columns(c)
    at = {"table": t.name, "lsn": c.version.pg_lsn, "idx": c.version.index}
    if c.operation == "truncate":
        if not conn.execute(
            "UPDATE walhook_sync.floors SET lsn = %(lsn)s::pg_lsn, idx = %(idx)s::bigint"
            " WHERE table_name = %(table)s AND (lsn, idx) < (%(lsn)s::pg_lsn, %(idx)s::bigint)"
            " RETURNING 1",
            at,
        ).fetchone():
            return 0
        conn.execute(
            "DELETE FROM walhook_sync.versions WHERE table_name = %(table)s"
            " AND (lsn, idx) < (%(lsn)s::pg_lsn, %(idx)s::bigint)",
            at,
        )
        conn.execute(t.truncate_rows, at)
        return 1

    def gate(key, deleted):
        return conn.execute(t.gate, {**at, "key": key, "deleted": deleted}).fetchone() is not None

    if c.operation == "delete":
        key = t.key_json(c.id, c.old, "old")
        if not gate(key, True):
            return 0
        conn.execute(t.delete, {"key": key})
        return 1

    key = t.key_json(c.id, c.row, "row")
    newer = gate(key, False)
    # `old` holds the key columns only when the key changed (or every column with REPLICA
    # IDENTITY FULL). The new key's gate comes first: were both keys the same after all, the
    # old key's gate would then find this very version and not delete the row.
    moved, base = False, None
    old = c.old or {}
    if all(old.get(k) is not None for k in t.key) and any(old[k] != c.row[k] for k in t.key):
        old_key = t.key_json(c.id, old, "old")
        moved = gate(old_key, True)
        if moved:
            # Deleted before the new key is written, so that a unique column the row keeps
            # does not collide with itself; its values fill in the unchanged TOAST.
            found = conn.execute(t.delete, {"key": old_key}).fetchone()
            base = found and found[0]
    if newer:
        conn.execute(t.upsert, {"base": base, "key": key, "row": json_text(c.row)})
    return int(newer or moved)
