"""Building walhook's events as JSON text and posting them signed, as walhook does."""

import base64
import json
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from standardwebhooks.webhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"walhook sync receiver test key!!").decode()


def evt_id(lsn, index, rule=None):
    return f"evt_{lsn:016X}_{index}" + ("" if rule is None else f"_{rule}")


def lsn_text(lsn):
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _json(value):
    """A row given as text is already JSON (kept exact); anything else is dumped."""
    return value if isinstance(value, str) else json.dumps(value)


def event(table, operation, lsn, index=0, row=None, old=None, toast=(), id=None):
    """One event body as walhook writes it; `id` defaults to the stream id of (lsn, index)."""
    return (
        '{"id":%s,"type":"sync","timestamp":"2026-11-26T17:51:10.574330Z","data":{"table":%s,'
        '"operation":%s,"row":%s,"old":%s,"changed":null,"unchanged_toast":%s,"commit_lsn":%s,"xid":745}}'
        % (
            json.dumps(id or evt_id(lsn, index)),
            json.dumps(table),
            json.dumps(operation),
            _json(row),
            _json(old),
            json.dumps(list(toast)),
            json.dumps(lsn_text(lsn)),
        )
    )


def read_event(table, watermark, row, backfill=7, key_hash=0xAF63DC4C8601EC8C):
    """A backfill's read event: its position is the watermark sent as commit_lsn."""
    return event(table, "read", watermark, row=row, id=f"bf_{backfill}_{key_hash:016x}")


def batch(*events):
    """A batch body as walhook sends it."""
    return '{"events":[' + ",".join(events) + "]}"


@dataclass
class Receiver:
    process: object
    url: str
    log_path: Path

    def post(self, body, msg_id="evt_test", secret=SECRET, headers=None):
        """(status, answer): the answer parsed when JSON, else its text."""
        signed = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(datetime.now(timezone.utc).timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, datetime.now(timezone.utc), body),
        }
        signed.update(headers or {})
        request = urllib.request.Request(self.url, data=body.encode(), headers=signed, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def stop(self):
        """SIGTERM, and SIGKILL if it has not exited within 10 seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def apply(self, *events):
        """Posts the events (a batch when several) and expects them accepted."""
        body = events[0] if len(events) == 1 else batch(*events)
        status, answer = self.post(body)
        assert status == 200, answer
        return answer


def rows(conn, table):
    """The replica's rows as to_jsonb() objects, ordered by their JSON text."""
    return [r for (r,) in conn.execute(f"SELECT to_jsonb(t) FROM {table} t ORDER BY to_jsonb(t)::text")]


def versions(conn, table):
    """The bookkeeping of `table`: {key json text: (lsn, idx, deleted)}."""
    found = conn.execute(
        "SELECT key::text, lsn::text, idx, deleted FROM walhook_sync.versions WHERE table_name = %s", [table]
    )
    return {key: (lsn, idx, deleted) for key, lsn, idx, deleted in found}
