"""A walhook sync receiver: verifies each webhook request and applies its events to a replica.

    python receiver.py --listen 127.0.0.1:8000 --database-url postgres://... --secret whsec_...

Answers: 200 applied (or skipped as not newer), 401 bad signature, 400 not walhook's payload
(walhook dead-letters it), 503 the replica could not take it (walhook retries it whole).
"""

import argparse
import json
import os
import queue
import signal
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import walhook_sync


def connect(url):
    conn = psycopg.connect(url, autocommit=True)
    # Keys are stored as jsonb printed by this session: pin the settings that change how
    # to_jsonb() prints a value, so every connection prints a key the same way.
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET IntervalStyle = 'postgres'")
    return conn


class Connections:
    """Idle connections kept for the next request; each request has one to itself."""

    def __init__(self, url):
        self.url = url
        self.idle = queue.LifoQueue()

    def take(self):
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            return connect(self.url)

    def give_back(self, conn):
        if conn.broken or conn.closed:
            return
        self.idle.put(conn)

    def close(self):
        while not self.idle.empty():
            self.idle.get_nowait().close()


def receive(webhook, connections, body, headers, trace=None):
    """The status and answer for one request, and what was applied, for the log."""
    try:
        webhook.verify(body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError) as error:
        # ValueError: a malformed signature header or a body that is not UTF-8.
        return 401, f"signature not verified: {error}"
    try:
        events = walhook_sync.parse_body(body)
        conn = connections.take()
        try:
            applied, skipped = walhook_sync.apply(conn, events, trace)
        finally:
            connections.give_back(conn)
    except walhook_sync.PayloadError as error:
        return 400, str(error)
    except (psycopg.Error, walhook_sync.ReplicaError) as error:
        # The app may be fixing its replica tables: read their shapes again next time.
        walhook_sync.forget_tables()
        return 503, f"replica: {error}"
    return 200, {"events": len(events), "applied": applied, "skipped": skipped}


class Handler(BaseHTTPRequestHandler):
    server_version = "walhook-sync-receiver"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        msg_id = self.headers.get("webhook-id", "-")
        try:
            trace = [] if self.server.trace else None
            status, answer = receive(self.server.webhook, self.server.connections, body, dict(self.headers), trace)
        except Exception:
            traceback.print_exc()
            status, answer = 500, "internal error"
        if status == 200:
            log = " ".join(f"{k}={v}" for k, v in answer.items())
            payload, kind = json.dumps(answer), "application/json"
        else:
            log = f"status={status} {answer}"
            payload, kind = answer, "text/plain; charset=utf-8"
        lines = [f"{msg_id} {log}"] + (trace if status == 200 and trace else [])
        print("\n".join(lines), file=sys.stderr, flush=True)
        data = payload.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass  # one line per request comes from do_POST


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Applies walhook's webhooks to a replica database.")
    parser.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (port 0 picks a free one)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("WALHOOK_SYNC_DATABASE_URL"),
        help="the replica, e.g. postgres://app@localhost/replica (env WALHOOK_SYNC_DATABASE_URL)",
    )
    parser.add_argument(
        "--secret",
        default=os.environ.get("WALHOOK_SYNC_SECRET"),
        help="the subscriber's secret, whsec_... (env WALHOOK_SYNC_SECRET)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="log every event of every request (id, table, operation, key, applied or skipped)",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or WALHOOK_SYNC_DATABASE_URL) is required")
    if not args.secret:
        parser.error("--secret (or WALHOOK_SYNC_SECRET) is required, e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    try:
        args.webhook = Webhook(args.secret)
    except Exception as error:
        parser.error(f"--secret must be whsec_ followed by base64: {error}")
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen must be HOST:PORT, e.g. 127.0.0.1:8000; got {args.listen}")
    args.host, args.port = host.strip("[]"), int(port)
    return args


def main(argv=None):
    args = parse_args(argv)
    connections = Connections(args.database_url)
    try:
        conn = connections.take()
        conn.execute(walhook_sync.SCHEMA_SQL)
        connections.give_back(conn)
    except psycopg.Error as error:
        print(f"cannot prepare the bookkeeping schema walhook_sync: {error}", file=sys.stderr)
        return 1
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.webhook, server.connections, server.trace = args.webhook, connections, args.trace
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening on {args.host}:{server.server_address[1]}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()  # waits for the requests in flight
    connections.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
