"""Values round trip: rows of many types, turned into events with the source's to_jsonb(),
end up on the replica with the same to_jsonb()."""

from support import batch, event, rows

KINDS = """
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    n numeric, n2 numeric(30, 10), i8 int8, i4 int4, i2 int2, f8 float8, f4 real,
    "Mixed Case" text, "select" varchar(20), j jsonb, js json,
    ai int[], atx text[], an numeric[], a2 int[][],
    b bytea, tstz timestamptz, ts timestamp, d date, tm time, ttz timetz, iv interval,
    bo boolean, u uuid, ip inet, ch char(3), bits bit varying(10), r int4range,
    twice int8 GENERATED ALWAYS AS (i4::int8 * 2) STORED
"""

ROWS = r"""
INSERT INTO app."Kinds of values" (n, n2, i8, i4, i2, f8, f4, "Mixed Case", "select", j, js,
    ai, atx, an, a2, b, tstz, ts, d, tm, ttz, iv, bo, u, ip, ch, bits, r) VALUES
(12345678901234567890.123456789012345678901234567890, 0.0000001000, 9223372036854775807,
 -2147483648, 32767, 0.1, 1.5, E'quote " backslash \\ tab \t newline \n emoji 😀 é', 'select',
 '{"a": 1.0000000000000000001, "b": [1, 2.50, null, true], "c": {"d": "e"}, "big": 123456789012345678901234567890}',
 '{ "x" : 1.10 , "x": 2 }', '{1,NULL,3}', '{"a b",NULL,"c,d","\"q\""}', '{1.50,NaN}', '{{1,2},{3,4}}',
 '\x00ff10', '2026-11-26 17:51:10.57433+00', '2026-11-26 17:51:10.5', '2026-11-26', '17:51:10.5',
 '17:51:10+02', '1 year 2 mons 3 days 04:05:06.7', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
 '192.168.0.1/24', 'ab', B'101', '[1,5)'),
('NaN', -123.4500000000, -9223372036854775808, 0, -32768, 'NaN', '-Infinity', '', '', '[]', '"text"',
 '{}', '{}', '{}', '{}', '\x', 'infinity', '-infinity', '0044-03-15 BC', '24:00:00', '00:00:00-12',
 '-178000000 years', false, '00000000-0000-0000-0000-000000000000', '::1', '', B'', 'empty'),
(1e-30, 99999999999999999999.9999999999, 1, 1, 1, 1e300, 3.4e38, 'x', 'x', 'null', 'null',
 '{-1}', '{""}', '{-0.000}', '{{NULL}}', '\xdeadbeef', '1970-01-01 00:00:00.000001+00', 'epoch', '2000-02-29',
 '00:00:00.000001', '23:59:59.999999+14', '-1 days +00:00:00.000001', NULL, NULL, '10.0.0.0/8', 'abc',
 B'1111111111', '(,)'),
(5e-324::float8::numeric, NULL, NULL, NULL, NULL, 5e-324, 1.17549435e-38, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
(('1' || repeat('0', 5000))::numeric, NULL, NULL, NULL, NULL, -0.0, NULL, repeat('long ', 100000),
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"""

TABLE = 'app."Kinds of values"'


def as_events(source, operation, lsn):
    """One event per source row, its row exactly the text of to_jsonb()."""
    found = source.execute(f"SELECT to_jsonb(t)::text FROM {TABLE} t ORDER BY id").fetchall()
    return [event("app.Kinds of values", operation, lsn, i, row=row) for i, (row,) in enumerate(found)]


def jsonb_texts(conn):
    return conn.execute(f"SELECT to_jsonb(t)::text FROM {TABLE} t ORDER BY id").fetchall()


def test_values_round_trip(receiver, source, replica):
    for conn in (source, replica):
        conn.execute(f"CREATE TABLE {TABLE} ({KINDS})")
    # GIVEN source rows of many types, sent as one batch of inserts
    source.execute(ROWS)
    inserts = as_events(source, "insert", 0x100)
    assert receiver.apply(*inserts)["applied"] == 6
    # THEN the replica's to_jsonb() is the source's, value for value
    expected = jsonb_texts(source)
    assert len(expected) == 6
    assert jsonb_texts(replica) == expected
    # WHEN every row changes, sent one request each
    source.execute(f"UPDATE {TABLE} SET n = n * 3, atx = atx || '{{new}}', j = '{{\"k\": 0.30}}', i4 = id")
    for update in as_events(source, "update", 0x200):
        receiver.apply(update)
    # THEN they still agree
    assert jsonb_texts(replica) == jsonb_texts(source)


def test_composite_keys_of_several_types(receiver, replica, table):
    t = table("tenant text, at timestamptz, seq numeric, v text, PRIMARY KEY (tenant, at, seq)")
    key = {"tenant": "ä", "at": "2026-11-26T17:51:10.57433+00:00", "seq": 1.50}
    # GIVEN rows whose key is text, timestamptz and numeric, and a delete that prints the
    # same key otherwise (another UTC offset, another numeric scale)
    receiver.apply(event(t, "insert", 0x100, row={**key, "v": "one"}))
    receiver.apply(event(t, "insert", 0x100, 1, row={**key, "seq": 2, "v": "two"}))
    receiver.apply(event(t, "delete", 0x200, old={**key, "at": "2026-11-26T23:21:10.57433+05:30", "seq": 1.5}))
    assert [r["v"] for r in rows(replica, t)] == ["two"]
    # WHEN a truncate comes between the key's insert and a newer update, THEN the update survives
    receiver.apply(
        batch(event(t, "update", 0x400, row={**key, "seq": 2, "v": "after"}), event(t, "truncate", 0x300))
    )
    assert [r["v"] for r in rows(replica, t)] == ["after"]
