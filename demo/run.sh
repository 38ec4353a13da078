#!/usr/bin/env bash
# walhook demo: one command, everything throwaway.
#
#     bash demo/run.sh
#
# Builds walhook, starts a temporary Postgres cluster (wal_level=logical) on a free port,
# creates a small shop schema, starts a webhook receiver (demo/receiver.py) that verifies
# each Standard Webhooks signature, runs walhook against both, makes a few changes with psql
# and shows the signed webhooks arriving. Everything is stopped and removed on exit.
#
# Needs: the Rust toolchain (cargo), python3, and the Postgres server binaries (initdb,
# pg_ctl, postgres, psql). Set PG_BIN to their directory if they are not found.
# Set KEEP=1 to keep the temp dir (logs, config) after the demo.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLOT=walhook_demo
PUBLICATION=walhook_demo
DB=shop
BILLING_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CRM_SECRET="whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

if [[ -t 1 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
say() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"; }
die() { printf '\ndemo: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (https://rustup.rs)"
command -v python3 >/dev/null || die "python3 not found: the demo's webhook receiver needs it"

find_pg_bin() {
    local dir
    if [[ -n "${PG_BIN:-}" ]]; then
        echo "$PG_BIN"; return # checked below
    fi
    if command -v pg_config >/dev/null && dir="$(pg_config --bindir 2>/dev/null)" \
        && [[ -x "$dir/postgres" ]]; then
        echo "$dir"; return
    fi
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/postgres" ]]; then
        echo "$dir"; return
    fi
    return 1
}
# None found: as root on Debian/Ubuntu the demo installs Debian's postgresql itself (server
# and psql); anywhere else it says the one command to run.
if ! PG_BIN="$(find_pg_bin)" && [[ -z "${PG_BIN:-}" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    say "No Postgres server binaries found: installing Debian's postgresql (apt-get install postgresql)"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
        || die "apt-get install postgresql failed; install Postgres yourself, or set PG_BIN"
fi
PG_BIN="$(find_pg_bin)" || die "no Postgres server binaries found (initdb, pg_ctl, postgres, psql).
  Install them (Debian/Ubuntu: sudo apt-get install postgresql; macOS: brew install postgresql@16),
  or point PG_BIN at their directory: PG_BIN=/usr/lib/postgresql/16/bin bash demo/run.sh"
for b in initdb pg_ctl postgres psql; do
    [[ -x "$PG_BIN/$b" ]] || die "$PG_BIN has no '$b' binary (set PG_BIN to a full Postgres bin directory)"
done

# initdb refuses to run as root: then the cluster belongs to the 'postgres' user.
AS_ROOT=""
if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' user to own the cluster
  (initdb refuses root). Run the demo as an ordinary user, or create the user: useradd -r postgres"
    command -v runuser >/dev/null || die "running as root, but 'runuser' is missing (util-linux)"
    AS_ROOT=1
fi
as_owner() { # run a cluster command as the cluster's owner
    if [[ -n "$AS_ROOT" ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------
# Cleanup on any exit
# ---------------------------------------------------------------------------------------
TMP=""
WALHOOK_PID=""
RECEIVER_PID=""
PG_STARTED=""
cleanup() {
    local rc=$?
    set +e
    [[ -n "$WALHOOK_PID" ]] && kill "$WALHOOK_PID" 2>/dev/null && wait "$WALHOOK_PID" 2>/dev/null
    [[ -n "$RECEIVER_PID" ]] && kill "$RECEIVER_PID" 2>/dev/null && wait "$RECEIVER_PID" 2>/dev/null
    if [[ -n "$PG_STARTED" ]]; then
        (cd / && as_owner "$PG_BIN/pg_ctl" -D "$TMP/data" -m immediate stop >/dev/null 2>&1)
    fi
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ -n "${KEEP:-}" ]]; then
            echo "demo: kept $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_log() { # file: print its tail to help with a failure
    [[ -f "$1" ]] && { echo "---- last lines of $1 ----" >&2; tail -n 30 "$1" >&2; } || true
}

# ---------------------------------------------------------------------------------------
# 1. Build walhook, start Postgres
# ---------------------------------------------------------------------------------------
say "Building walhook (cargo build --bin walhook)"
(cd "$ROOT" && cargo build --bin walhook) || die "cargo build failed"
WALHOOK="${CARGO_TARGET_DIR:-$ROOT/target}/debug/walhook"
[[ "$WALHOOK" == /* ]] || WALHOOK="$ROOT/$WALHOOK"
[[ -x "$WALHOOK" ]] || die "built, but no binary at $WALHOOK"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/walhook-demo.XXXXXX")"
chmod 755 "$TMP"
if [[ -n "$AS_ROOT" ]]; then chown postgres: "$TMP"; fi
PG_PORT="$(free_port)"
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres)

say "Starting a throwaway Postgres ($("$PG_BIN/postgres" --version)) on 127.0.0.1:$PG_PORT in $TMP"
(cd "$TMP" && as_owner "$PG_BIN/initdb" -D "$TMP/data" -U postgres -A trust \
    -E UTF8 --locale=C --no-sync >"$TMP/initdb.log" 2>&1) \
    || { show_log "$TMP/initdb.log"; die "initdb failed"; }
cat >>"$TMP/data/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = off
EOF
PG_STARTED=1
(cd "$TMP" && as_owner "$PG_BIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" \
    -w -t 60 start >/dev/null) || { show_log "$TMP/postgres.log"; die "Postgres did not start"; }

# ---------------------------------------------------------------------------------------
# 2. The shop schema
# ---------------------------------------------------------------------------------------
say "Creating the shop schema"
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
SCHEMA="CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL DEFAULT 'new', amount numeric(10,2) NOT NULL);
-- the order.paid rule looks at old.status: send the whole old row on update
ALTER TABLE orders REPLICA IDENTITY FULL;"
echo "$SCHEMA" | sed 's/^/    /'
"${PSQL[@]}" -d "$DB" -c "$SCHEMA"

# ---------------------------------------------------------------------------------------
# 3. The receiver
# ---------------------------------------------------------------------------------------
RECEIVER_PORT="$(free_port)"
say "Starting the webhook receiver (demo/receiver.py) on 127.0.0.1:$RECEIVER_PORT"
: >"$TMP/received.log"
python3 -u "$ROOT/demo/receiver.py" --port "$RECEIVER_PORT" --log "$TMP/received.log" \
    --secret "/hooks/billing=$BILLING_SECRET" --secret "/hooks/crm=$CRM_SECRET" &
RECEIVER_PID=$!
for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $RECEIVER_PORT), 0.2)" 2>/dev/null && break
    kill -0 "$RECEIVER_PID" 2>/dev/null || die "the receiver exited"
    sleep 0.1
done

# ---------------------------------------------------------------------------------------
# 4. walhook
# ---------------------------------------------------------------------------------------
CONFIG="$TMP/walhook.toml"
cat >"$CONFIG" <<EOF
# Generated by demo/run.sh; see config.example.toml for every option.
[source]
url = "postgres://postgres@127.0.0.1:$PG_PORT/$DB?sslmode=disable"
slot = "$SLOT"
publication = "$PUBLICATION"
status_interval = "1s"

[state]
path = "$TMP/walhook-state.db"

[subscribers.billing]
url = "http://127.0.0.1:$RECEIVER_PORT/hooks/billing"
secret = "$BILLING_SECRET"
timeout = "10s"
retry = { initial = "1s", max = "10s", give_up_after = "1m" }

[subscribers.crm]
url = "http://127.0.0.1:$RECEIVER_PORT/hooks/crm"
secret = "$CRM_SECRET"
headers = { "Authorization" = "Bearer demo-token" }
batch_size = 10
batch_wait = "50ms"

[[events]]
type = "order.created"
table = "public.orders"
operations = ["insert"]
subscribers = ["billing"]

[[events]]
type = "order.paid"
table = "public.orders"
operations = ["update"]
when = "row.status == 'paid' && old.status != 'paid'"
subscribers = ["billing"]

[[events]]
type = "customer.changed"
table = "public.customers"
operations = ["insert", "update", "delete"]
columns = ["id", "name", "email"]
subscribers = ["crm"]
EOF

say "Starting walhook: $WALHOOK run --config $CONFIG"
echo "    (walhook's own log goes to $TMP/walhook.log; it creates the publication and slot itself)"
"$WALHOOK" run --config "$CONFIG" >"$TMP/walhook.log" 2>&1 &
WALHOOK_PID=$!

active=""
for _ in $(seq 120); do
    kill -0 "$WALHOOK_PID" 2>/dev/null || { show_log "$TMP/walhook.log"; WALHOOK_PID=""; die "walhook exited before streaming"; }
    active="$("${PSQL[@]}" -d "$DB" -Atc "SELECT active FROM pg_replication_slots WHERE slot_name = '$SLOT'")"
    [[ "$active" == t ]] && break
    sleep 0.25
done
[[ "$active" == t ]] || { show_log "$TMP/walhook.log"; die "walhook is not streaming from slot $SLOT after 30s"; }
echo "    walhook is streaming from slot $SLOT"

# ---------------------------------------------------------------------------------------
# 5. Changes, and the webhooks they cause
# ---------------------------------------------------------------------------------------
sql() { # one statement, shown, then a pause so its webhooks print right below it
    printf '\n  sql> %s\n' "$1"
    "${PSQL[@]}" -d "$DB" -c "$1"
    sleep "${2:-1}"
}

say "Making changes (each line below a statement is a webhook the receiver verified)"
sql "INSERT INTO customers (id, name, email) VALUES (1, 'Ada Lovelace', 'ada@example.com'), (2, 'Grace Hopper', 'grace@example.com')"
sql "INSERT INTO orders (id, customer_id, amount) VALUES (101, 1, 12.50), (102, 2, 99.90)"
sql "UPDATE orders SET status = 'paid' WHERE id = 101"
sql "UPDATE orders SET status = 'shipped' WHERE id = 101   -- no webhook: the order.paid rule wants old.status != 'paid'"
sql "UPDATE customers SET email = 'ada@analytical.engine' WHERE id = 1"
sql "DELETE FROM customers WHERE id = 2" 0

EXPECTED=7 # 2 customer inserts, 2 order inserts, 1 paid, 1 customer update, 1 customer delete
for _ in $(seq 20); do # ~2s, less once everything is in
    [[ "$(wc -l <"$TMP/received.log")" -ge "$EXPECTED" ]] && break
    sleep 0.1
done
sleep 0.5

say "Stopping walhook with SIGTERM (it drains, confirms its position to Postgres and exits 0)"
kill -TERM "$WALHOOK_PID"
rc=0
wait "$WALHOOK_PID" || rc=$?
WALHOOK_PID=""
if [[ "$rc" -ne 0 ]]; then
    show_log "$TMP/walhook.log"
    die "walhook exited with status $rc"
fi
echo "    walhook exited with status 0"

verified="$(grep -c '^OK ' "$TMP/received.log" || true)"
bad="$(grep -c '^BAD ' "$TMP/received.log" || true)"
by_type="$(awk '$1 == "OK" { print $5 }' "$TMP/received.log" | sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }')"
say "Summary: $verified verified webhook event(s) (${by_type:-none}), $bad with a bad signature; expected $EXPECTED"
if [[ "$verified" -ne "$EXPECTED" || "$bad" -ne 0 ]]; then
    show_log "$TMP/walhook.log"
    die "the receiver did not get exactly the $EXPECTED expected signed events"
fi
