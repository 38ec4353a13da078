#!/usr/bin/env python3
"""A tiny webhook receiver for the walhook demo (Python standard library only).

It verifies each request's Standard Webhooks signature
(https://www.standardwebhooks.com) and prints one line per event.

    python3 demo/receiver.py --port 8080 \
        --secret /hooks/billing=whsec_... --secret /hooks/crm=whsec_...

A request whose signature checks out gets 200; any other gets 401. Requests to a path
without a configured secret are accepted and printed as unsigned.
"""

import argparse
import base64
import decimal
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Reject signatures whose timestamp is further than this from now (replay protection).
TOLERANCE_SECONDS = 5 * 60


def verify(secret, msg_id, timestamp, body, signature_header):
    """True when one of the space-separated `v1,<base64>` signatures matches."""
    if not (msg_id and timestamp and signature_header):
        return False
    try:
        if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
            return False
        key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    except ValueError:
        return False
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signature_header.split():
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


def compact(value):
    """Compact JSON that keeps numbers as sent (12.50 stays 12.50, parsed as Decimal)."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + compact(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(compact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def describe(event):
    """One readable line for one event: type, operation and the row (or old row)."""
    data = event.get("data") or {}
    row = data.get("row")
    shown = row if row is not None else data.get("old")
    label = "row" if row is not None else "old"
    text = "{:<17} {:<7} {}={}".format(
        str(event.get("type")), str(data.get("operation")), label, compact(shown)
    )
    if data.get("changed"):
        text += " changed=" + compact(data["changed"])
    return text


class Handler(BaseHTTPRequestHandler):
    secrets = {}
    log = None
    lock = threading.Lock()  # requests arrive concurrently: keep each line whole

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        msg_id = self.headers.get("webhook-id", "")
        secret = self.secrets.get(self.path)
        if secret is None:
            ok, mark = True, "- (unsigned)"
        else:
            ok = verify(
                secret,
                msg_id,
                self.headers.get("webhook-timestamp", ""),
                body,
                self.headers.get("webhook-signature", ""),
            )
            mark = "✓" if ok else "✗"
        try:
            payload = json.loads(body, parse_float=decimal.Decimal)
            events = payload["events"] if isinstance(payload, dict) and "events" in payload else [payload]
        except (ValueError, TypeError):
            events = None
        lines = []
        if events is None:
            lines.append("{:<14} {} {}  (body is not JSON: {!r})".format(self.path, mark, msg_id, body[:80]))
        else:
            for event in events:
                # In a batch, each event carries its own id; the header has the batch id.
                eid = event.get("id", msg_id) if isinstance(event, dict) else msg_id
                text = describe(event) if isinstance(event, dict) else repr(event)
                lines.append("{:<14} {} {:<26} {}".format(self.path, mark, eid, text))
        with self.lock:
            for line in lines:
                sys.stdout.write("  <- webhook " + line + "\n")
                sys.stdout.flush()
                if self.log:
                    self.log.write(("OK " if ok else "BAD ") + line + "\n")
                    self.log.flush()
        self.send_response(200 if ok else 401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass  # keep the demo's output to one line per event


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--secret", action="append", default=[], metavar="PATH=whsec_...",
                        help="the signing secret for requests to PATH (repeatable)")
    parser.add_argument("--log", help="also append one line per event here, prefixed OK or BAD")
    args = parser.parse_args()
    for item in args.secret:
        path, sep, secret = item.partition("=")
        if not sep or not secret:
            parser.error("--secret wants PATH=whsec_..., got %r" % item)
        Handler.secrets[path] = secret
    Handler.log = open(args.log, "a", encoding="utf-8") if args.log else None
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print("receiver listening on http://{}:{}/ (verifying {})".format(
        args.host, args.port, ", ".join(sorted(Handler.secrets)) or "nothing"), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
