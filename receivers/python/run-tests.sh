#!/usr/bin/env bash
# Runs the sync receiver's tests against a throwaway Postgres they start themselves (or the
# server at WALHOOK_SYNC_TEST_PG_URL). Extra arguments go to pytest, e.g. -k truncate.
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -z "${WALHOOK_SYNC_TEST_PG_URL:-}" ] && [ -z "${PG_BIN:-}" ] \
  && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt pytest==9.2.0
exec .venv/bin/python -m pytest tests "$@"
