#!/usr/bin/env bash
# walhook benchmark: one command, everything throwaway.
#
#     bash bench/run.sh            # the full run (about 8 minutes on 2 cores, after the build)
#     bash bench/run.sh --quick    # every size 10x smaller, to try the script out (BENCH_QUICK=1 too)
#     bash bench/run.sh --latency  # only 3, the latency rows (about 3 minutes; 3 s each with --quick)
#
# Builds walhook and the benchmark receiver (examples/bench_receiver.rs) in release, starts a
# temporary Postgres cluster, and measures in one run:
#   1. baseline: pg_recvlogical (pgoutput, proto_version 1) reading a backlog of 500,000 changes
#      (200,000 single-row transactions and one 300,000-row transaction) from a fresh slot;
#   2. walhook delivering the same backlog from its own fresh slot to a local receiver, with
#      batch_size = 100 (concurrency default 16), and with batch_size = 1, concurrency = 64 over
#      HTTP/1.1 and over cleartext HTTP/2 (h2c);
#   2b. wide rows: 20,000 single-row transactions into a table of 40 columns, three of them text
#      of 1-4 kB, read by pg_recvlogical and delivered by walhook (batch_size 100): events/s and
#      request bytes/s against the baseline;
#   3. latency: 2,000 single-row transactions/s for 30 s (synchronous_commit on), receipt time
#      minus the event's commit timestamp, p50 / p99 / max;
#   4. walhook's peak RSS (VmHWM) during 2, during one 1,000,000-row transaction, and while the
#      receiver is down and 1,000,000 events are committed (then how fast the backlog drains
#      once the receiver is back);
#   5. the same with the state in Postgres ([state] url, a schema in the benchmark's database):
#      the backlog with batch_size 100, the latency with batch_size 1, the receiver down and back;
# and prints one table with the targets of DESIGN.md ("Targets") beside the figures.
#
# The cluster runs with fsync = off (nothing here needs durability; commits still write WAL,
# and synchronous_commit stays on) and autovacuum = off (so no vacuum of the freshly loaded
# table competes with a measurement). Both the baseline and walhook decode the same WAL through
# the same walsender code, so neither setting favours one of them.
#
# Needs: cargo, python3, curl, and the Postgres server binaries incl. pgbench and
# pg_recvlogical (PG_BIN, else `pg_config --bindir`, else /usr/lib/postgresql/*/bin).
# Environment: BENCH_QUICK=1 (as --quick), KEEP=1 keeps the temp dir (logs, configs),
# BENCH_TIMEOUT=<s> caps each wait for deliveries (default 900, quick 180), BENCH_ROUNDS=<n>
# sets the throughput rounds (default 3), BENCH_REVISION names what was measured when the
# tree is a snapshot without .git.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK="${BENCH_QUICK:-}"
LATENCY_ONLY=""
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --latency) LATENCY_ONLY=1 ;;
        -h | --help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench: unknown argument '$arg' (use --quick, --latency)" >&2; exit 2 ;;
    esac
done

DIV=1
[[ -n "$QUICK" ]] && DIV=10
SINGLE_TXNS=$((200000 / DIV))    # single-row transactions of the backlog
BIG_TXN_ROWS=$((300000 / DIV))   # rows of the backlog's one large transaction
BACKLOG=$((SINGLE_TXNS + BIG_TXN_ROWS))
LAT_RATE=2000                    # transactions per second of the latency writer
LAT_SECONDS=$((30 / DIV))
MEM_ROWS=$((1000000 / DIV))      # the large transaction, and the events committed while down
DOWN_TXNS=$((1000 / DIV))        # ... as this many transactions of 1,000 rows
ROUNDS="${BENCH_ROUNDS:-3}"          # throughput rounds (the table shows the median)
TIMEOUT="${BENCH_TIMEOUT:-$((DIV == 1 ? 900 : 180))}"
LOAD_SECONDS=$((DIV == 1 ? 5 : 2))
SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PUBLICATION=bench_pub
DB=bench

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------------------
for tool in cargo python3 curl awk; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
find_pg_bin() {
    local dir
    if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
    if command -v pg_config >/dev/null && dir="$(pg_config --bindir 2>/dev/null)" \
        && [[ -x "$dir/postgres" ]]; then
        echo "$dir"; return
    fi
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/postgres" ]]; then echo "$dir"; return; fi
    return 1
}
PG_BIN="$(find_pg_bin)" || die "no Postgres server binaries found; set PG_BIN to their directory"
for b in initdb pg_ctl postgres psql pgbench pg_recvlogical; do
    [[ -x "$PG_BIN/$b" ]] || die "$PG_BIN has no '$b' binary (set PG_BIN to a full Postgres bin directory)"
done
AS_ROOT=""
if [[ "$(id -u)" == 0 ]]; then # initdb refuses root: the cluster belongs to 'postgres'
    id postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' user to own the cluster"
    command -v runuser >/dev/null || die "running as root, but 'runuser' is missing (util-linux)"
    AS_ROOT=1
fi
as_owner() { if [[ -n "$AS_ROOT" ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
now_ns() { date +%s%N; }
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { # pid: user + system CPU ticks so far (empty once the process is gone)
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    awk '{ print $12 + $13 }' <<<"${stat##*)}"
}
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

# ---------------------------------------------------------------------------------------
# Cleanup on any exit
# ---------------------------------------------------------------------------------------
TMP=""
PG_STARTED=""
PIDS=() # background processes this script started
cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if [[ -n "$PG_STARTED" ]]; then
        (cd / && as_owner "$PG_BIN/pg_ctl" -D "$TMP/data" -m immediate stop >/dev/null 2>&1)
    fi
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ -n "${KEEP:-}" || "$rc" -ne 0 ]]; then echo "bench: kept $TMP" >&2; else rm -rf "$TMP"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
forget_pid() { local keep=() p; for p in "${PIDS[@]}"; do [[ "$p" != "$1" ]] && keep+=("$p"); done; PIDS=("${keep[@]}"); }
show_log() { [[ -f "$1" ]] && { echo "---- last lines of $1 ----" >&2; tail -n 30 "$1" >&2; } || true; }

# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------
LOAD_AVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
say "Building in release: cargo build --release --bin walhook --example bench_receiver"
(cd "$ROOT" && cargo build --release --bin walhook --example bench_receiver) || die "cargo build failed"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
WALHOOK="$TARGET_DIR/release/walhook"
RECEIVER="$TARGET_DIR/release/examples/bench_receiver"
[[ -x "$WALHOOK" && -x "$RECEIVER" ]] || die "built, but no binaries in $TARGET_DIR/release"

# ---------------------------------------------------------------------------------------
# Postgres
# ---------------------------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/walhook-bench.XXXXXX")"
chmod 755 "$TMP"
[[ -n "$AS_ROOT" ]] && chown postgres: "$TMP"
PG_PORT="$(free_port)"
DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$DB"
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB")
sql() { "${PSQL[@]}" -Atc "$1"; }

say "Starting a throwaway Postgres ($("$PG_BIN/postgres" --version)) on port $PG_PORT in $TMP"
(cd "$TMP" && as_owner "$PG_BIN/initdb" -D "$TMP/data" -U postgres -A trust -E UTF8 \
    --locale=C --no-sync >"$TMP/initdb.log" 2>&1) || { show_log "$TMP/initdb.log"; die "initdb failed"; }
cat >>"$TMP/data/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
fsync = off                 # benchmark only: no durability needed
synchronous_commit = on     # the default, stated: the latency test commits synchronously
autovacuum = off            # no vacuum competes with a measurement
shared_buffers = 256MB
max_wal_size = 8GB          # no forced checkpoints while the backlog is written
checkpoint_timeout = 30min
EOF
PG_STARTED=1
(cd "$TMP" && as_owner "$PG_BIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 start >/dev/null) \
    || { show_log "$TMP/postgres.log"; die "Postgres did not start"; }
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE DATABASE $DB"
"${PSQL[@]}" <<SQL
CREATE TABLE bench (id bigserial PRIMARY KEY, a int, b text, c numeric, d timestamptz);
-- The end marker: one row here after the backlog gives pg_recvlogical a message past --endpos.
-- walhook maps no rule to it, so it settles without an event.
CREATE TABLE bench_end (id int PRIMARY KEY);
CREATE PUBLICATION $PUBLICATION FOR TABLE bench, bench_end;
-- transactions of rows_each rows, each committed on its own
CREATE PROCEDURE fill(transactions int, rows_each int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR t IN 1..transactions LOOP
        INSERT INTO bench (a, b, c, d)
            SELECT g, md5(g::text), g * 1.25, clock_timestamp() FROM generate_series(1, rows_each) g;
        COMMIT;
    END LOOP;
END \$\$;
SQL

# ---------------------------------------------------------------------------------------
# Receiver, and its ceiling
# ---------------------------------------------------------------------------------------
start_receiver() { # port-file [listen address]: starts one; sets RECEIVER_PID
    "$RECEIVER" serve --listen "${2:-127.0.0.1:0}" --port-file "$1" 2>>"$TMP/receiver.log" &
    RECEIVER_PID=$!
    PIDS+=("$RECEIVER_PID")
    for _ in $(seq 100); do [[ -s "$1" ]] && return 0; sleep 0.05; done
    die "the receiver did not start (see $TMP/receiver.log)"
}
start_receiver "$TMP/receiver.port"
RECEIVER_URL="http://127.0.0.1:$(cat "$TMP/receiver.port")"
stat_of() { # key [stats line]: one value of the receiver's /stats
    local line="${2:-$(curl -fsS "$RECEIVER_URL/stats")}"
    sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$line"
}

say "Receiver ceiling: bench_receiver load for ${LOAD_SECONDS}s each"
CEIL_1="$("$RECEIVER" load --url "$RECEIVER_URL/hook" --batch 1 --concurrency 64 --seconds "$LOAD_SECONDS")"
CEIL_100="$("$RECEIVER" load --url "$RECEIVER_URL/hook" --batch 100 --concurrency 16 --seconds "$LOAD_SECONDS")"
echo "    batch 1, 64 connections:   $CEIL_1" >&2
echo "    batch 100, 16 connections: $CEIL_100" >&2
curl -fsS -X POST "$RECEIVER_URL/reset" >/dev/null

# ---------------------------------------------------------------------------------------
# walhook runs
# ---------------------------------------------------------------------------------------
# The state: a SQLite file beside the config, or with STATE_PG=1 a schema of its own in the
# benchmark's database (the Postgres backend, on the source, as a team without a second
# database would run it).
state_section() { # config file
    local name
    name="$(basename "${1%.toml}")"
    if [[ -n "${STATE_PG:-}" ]]; then
        printf 'url = "postgres://postgres@127.0.0.1:%s/%s?sslmode=disable"\nschema = "state_%s"\n' \
            "$PG_PORT" "$DB" "$name"
    else
        printf 'path = "%s"\n' "${1%.toml}-state.db"
    fi
}
write_config() { # file slot url batch_size concurrency [h2c]
    cat >"$1" <<EOF
[source]
url = "postgres://postgres@127.0.0.1:$PG_PORT/$DB?sslmode=disable"
slot = "$2"
publication = "$PUBLICATION"
status_interval = "1s"

[state]
$(state_section "$1")

[subscribers.bench]
url = "$3/hook"
secret = "$SECRET"
batch_size = $4
concurrency = $5
h2c = ${6:-false}
retry = { initial = "1s", max = "5s", give_up_after = "1h" }

[[events]]
type = "bench.inserted"
table = "public.${EVENT_TABLE:-bench}"
operations = ["insert"]
subscribers = ["bench"]
EOF
}

start_walhook() { # name slot url batch_size concurrency [h2c]: sets WALHOOK_PID, WALHOOK_START_NS
    local config="$TMP/$1.toml"
    write_config "$config" "$2" "$3" "$4" "$5" "${6:-false}"
    WALHOOK_START_NS="$(now_ns)"
    "$WALHOOK" run --config "$config" >"$TMP/$1.log" 2>&1 &
    WALHOOK_PID=$!
    PIDS+=("$WALHOOK_PID")
}

wait_active() { # slot: until walhook streams from it
    local active=""
    for _ in $(seq 240); do
        kill -0 "$WALHOOK_PID" 2>/dev/null || die "walhook exited before streaming from slot $1"
        active="$(sql "SELECT active FROM pg_replication_slots WHERE slot_name = '$1'")"
        [[ "$active" == t ]] && return 0
        sleep 0.25
    done
    die "walhook is not streaming from slot $1 after 60s"
}

walsender_of() { sql "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$1'"; }

wait_events() { # count deadline_ns: until the receiver counted `count` events; 1 on timeout
    local got
    while :; do
        got="$(stat_of events)"
        [[ "${got:-0}" -ge "$1" ]] && return 0
        kill -0 "$WALHOOK_PID" 2>/dev/null || { show_log "$WALHOOK_LOG"; die "walhook exited while delivering"; }
        [[ "$(now_ns)" -ge "$2" ]] && return 1
        sleep 0.2
    done
}

stop_walhook() { # sets WALHOOK_RC
    kill -TERM "$WALHOOK_PID" 2>/dev/null || true
    WALHOOK_RC=0
    wait "$WALHOOK_PID" || WALHOOK_RC=$?
    forget_pid "$WALHOOK_PID"
}

mib() { awk -v k="$1" 'BEGIN { if (k == "") print "?"; else printf "%.1f", k / 1024 }'; }
secs() { awk -v n="$1" 'BEGIN { printf "%.2f", n / 1e9 }'; }
rate() { awk -v c="$1" -v n="$2" 'BEGIN { if (n <= 0) print "?"; else printf "%.0f", c / (n / 1e9) }'; }
cpu_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { if (t == "") print "?"; else printf "%.1f", t / hz }'; }

# ---------------------------------------------------------------------------------------
# 1 + 2. The backlog: slots first, then the changes
# ---------------------------------------------------------------------------------------
if [[ -z "$LATENCY_ONLY" ]]; then
# Each round reads the whole backlog three times: pg_recvlogical, walhook with batch_size 100,
# walhook with batch_size 1 and concurrency 64, each from its own slot created before the
# backlog. Rounds interleave so that other load on the machine falls on all three alike; the
# table shows the median of the rounds.
for r in $(seq "$ROUNDS"); do
    for slot in "base_$r" "wh_b100_$r" "wh_b1c64_$r" "wh_b1h2_$r" $([[ $r == 1 ]] && echo wh_b100pg); do
        sql "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
    done
done
say "Writing the backlog: $SINGLE_TXNS single-row transactions, then one of $BIG_TXN_ROWS rows"
t0="$(now_ns)"
sql "CALL fill($SINGLE_TXNS, 1)"
sql "CALL fill(1, $BIG_TXN_ROWS)"
t1="$(now_ns)"
ENDPOS="$(sql "SELECT pg_current_wal_insert_lsn()")"
sql "INSERT INTO bench_end VALUES (1)"
sql "CHECKPOINT"
WAL_BYTES="$(sql "SELECT pg_wal_lsn_diff('$ENDPOS', restart_lsn) FROM pg_replication_slots WHERE slot_name = 'base_1'")"
echo "    written in $(secs $((t1 - t0)))s; $(awk -v b="$WAL_BYTES" 'BEGIN { printf "%.0f", b / 1048576 }') MiB of WAL up to $ENDPOS" >&2

baseline() { # slot: pg_recvlogical to --endpos; sets BASE_NS, BASE_WS_TICKS
    local pid ws="" ticks="" t
    local start="$(now_ns)"
    "$PG_BIN/pg_recvlogical" -d "$DSN" --slot "$1" --start -o proto_version=1 \
        -o "publication_names=$PUBLICATION" -f /dev/null --no-loop --endpos "$ENDPOS" \
        2>"$TMP/$1.log" &
    pid=$!
    PIDS+=("$pid")
    while kill -0 "$pid" 2>/dev/null; do # sample the walsender's CPU until it exits
        [[ -z "$ws" ]] && ws="$(walsender_of "$1")"
        if [[ -n "$ws" ]]; then t="$(cpu_ticks "$ws")"; [[ -n "$t" ]] && ticks="$t"; fi
        sleep 0.1
    done
    wait "$pid" || { show_log "$TMP/$1.log"; die "pg_recvlogical failed"; }
    BASE_NS=$(($(now_ns) - start))
    forget_pid "$pid"
    BASE_WS_TICKS="$ticks"
    sql "SELECT pg_drop_replication_slot('$1')" >/dev/null
}

backlog_run() { # name slot batch_size concurrency [h2c]: sets RUN_NS, RUN_RSS, RUN_CPU, RUN_WS, RUN_RECV_CPU, RUN_EVENTS
    local deadline ws recv0 line
    curl -fsS -X POST "$RECEIVER_URL/reset" >/dev/null
    recv0="$(cpu_ticks "$RECEIVER_PID")"
    WALHOOK_LOG="$TMP/$1.log"
    start_walhook "$1" "$2" "$RECEIVER_URL" "$3" "$4" "${5:-false}"
    deadline=$(($(now_ns) + TIMEOUT * 1000000000))
    RUN_TIMED_OUT=""
    wait_events "$BACKLOG" "$deadline" || RUN_TIMED_OUT=1
    line="$(curl -fsS "$RECEIVER_URL/stats")"
    ws="$(walsender_of "$2")"
    RUN_WS="$([[ -n "$ws" ]] && cpu_ticks "$ws")"
    RUN_RSS="$(peak_rss_kib "$WALHOOK_PID")"
    RUN_CPU="$(cpu_ticks "$WALHOOK_PID")"
    RUN_RECV_CPU=$(($(cpu_ticks "$RECEIVER_PID") - recv0))
    RUN_EVENTS="$(stat_of events "$line")"
    RUN_BYTES="$(stat_of bytes "$line")"
    if [[ -n "$RUN_TIMED_OUT" ]]; then
        RUN_NS=$(($(now_ns) - WALHOOK_START_NS))
    else
        RUN_NS=$(($(stat_of last_ns "$line") - WALHOOK_START_NS))
    fi
    stop_walhook
    sleep 1
    RUN_EVENTS_FINAL="$(stat_of events)"
    sql "SELECT pg_drop_replication_slot('$2')" >/dev/null
}

# Per kind (base, b100, b1): one entry per round.
declare -a base_ns base_ws b100_ns b100_rss b100_cpu b100_ws b100_recv b100_events b100_timed b100_rc \
    b1_ns b1_rss b1_cpu b1_ws b1_recv b1_events b1_timed b1_rc \
    h2_ns h2_rss h2_cpu h2_ws h2_recv h2_events h2_timed h2_rc
record() { # kind: appends this run's figures to the kind's arrays
    local k="$1"
    eval "${k}_ns+=(\"\$RUN_NS\") ${k}_rss+=(\"\$RUN_RSS\") ${k}_cpu+=(\"\$RUN_CPU\")"
    eval "${k}_ws+=(\"\$RUN_WS\") ${k}_recv+=(\"\$RUN_RECV_CPU\") ${k}_events+=(\"\$RUN_EVENTS_FINAL\")"
    eval "${k}_timed+=(\"\$RUN_TIMED_OUT\") ${k}_rc+=(\"\$WALHOOK_RC\")"
}
for r in $(seq "$ROUNDS"); do
    say "Round $r/$ROUNDS: pg_recvlogical --slot base_$r --endpos $ENDPOS"
    baseline "base_$r"
    base_ns+=("$BASE_NS") base_ws+=("$BASE_WS_TICKS")
    echo "    $(secs "$BASE_NS")s" >&2
    say "Round $r/$ROUNDS: walhook, batch_size = 100, concurrency = 16 (slot wh_b100_$r)"
    backlog_run "b100_$r" "wh_b100_$r" 100 16
    record b100
    echo "    $(secs "$RUN_NS")s, ${RUN_EVENTS_FINAL} events, peak RSS $(mib "$RUN_RSS") MiB${RUN_TIMED_OUT:+, TIMED OUT}" >&2
    say "Round $r/$ROUNDS: walhook, batch_size = 1, concurrency = 64 (slot wh_b1c64_$r)"
    backlog_run "b1c64_$r" "wh_b1c64_$r" 1 64
    record b1
    echo "    $(secs "$RUN_NS")s, ${RUN_EVENTS_FINAL} events, peak RSS $(mib "$RUN_RSS") MiB${RUN_TIMED_OUT:+, TIMED OUT}" >&2
    say "Round $r/$ROUNDS: walhook, batch_size = 1, concurrency = 64, cleartext HTTP/2 (h2c; slot wh_b1h2_$r)"
    backlog_run "b1h2_$r" "wh_b1h2_$r" 1 64 true
    record h2
    echo "    $(secs "$RUN_NS")s, ${RUN_EVENTS_FINAL} events, peak RSS $(mib "$RUN_RSS") MiB${RUN_TIMED_OUT:+, TIMED OUT}" >&2
done
median_index() { # values...: the index of the median (the lower one for an even count)
    local i=0 v
    for v in "$@"; do echo "$v $i"; i=$((i + 1)); done | sort -n | awk -v n="$#" 'NR == int((n + 1) / 2) { print $2 }'
}
max_of() { printf '%s\n' "$@" | sort -n | tail -n 1; }
list_secs() { local v out=""; for v in "$@"; do out+="${out:+, }$(secs "$v")"; done; echo "$out"; }
# The same backlog once more with the state in Postgres (section 5 of the table), before
# anything else is written to the table.
say "Postgres state: walhook, batch_size = 100, concurrency = 16 (slot wh_b100pg)"
STATE_PG=1 backlog_run b100pg wh_b100pg 100 16
PG_B100=("$RUN_NS" "$RUN_EVENTS_FINAL" "$RUN_CPU" "$RUN_RSS" "$RUN_TIMED_OUT")
echo "    $(secs "$RUN_NS")s, ${RUN_EVENTS_FINAL} events${RUN_TIMED_OUT:+, TIMED OUT}" >&2
m="$(median_index "${base_ns[@]}")"
BASE_NS="${base_ns[$m]}" BASE_WS="${base_ws[$m]}"
m="$(median_index "${b100_ns[@]}")"
B100=("${b100_ns[$m]}" "$(max_of "${b100_rss[@]}")" "${b100_cpu[$m]}" "${b100_ws[$m]}" "${b100_recv[$m]}" "${b100_events[$m]}" "$(printf '%s' "${b100_timed[@]}")" "$(max_of "${b100_rc[@]}")")
m="$(median_index "${b1_ns[@]}")"
B1=("${b1_ns[$m]}" "$(max_of "${b1_rss[@]}")" "${b1_cpu[$m]}" "${b1_ws[$m]}" "${b1_recv[$m]}" "${b1_events[$m]}" "$(printf '%s' "${b1_timed[@]}")" "$(max_of "${b1_rc[@]}")")
m="$(median_index "${h2_ns[@]}")"
H2=("${h2_ns[$m]}" "$(max_of "${h2_rss[@]}")" "${h2_cpu[$m]}" "${h2_ws[$m]}" "${h2_recv[$m]}" "${h2_events[$m]}" "$(printf '%s' "${h2_timed[@]}")" "$(max_of "${h2_rc[@]}")")

# ---------------------------------------------------------------------------------------
# 2b. Wide rows: 40 columns, three of them text of 1-4 kB
# ---------------------------------------------------------------------------------------
WIDE_ROWS=$((20000 / DIV))
wide_columns() { # 36 short columns of four kinds, then three long texts: with id, 40
    local i kinds=(int text numeric timestamptz) out=""
    for i in $(seq 1 36); do out+="c$i ${kinds[$(((i - 1) % 4))]}, "; done
    echo "${out}t1 text, t2 text, t3 text"
}
wide_values() { # the 39 values of row g
    local i out=""
    for i in $(seq 1 36); do
        case $(((i - 1) % 4)) in
            0) out+="g + $i, " ;;
            1) out+="md5((g + $i)::text), " ;;
            2) out+="g * 1.25 + $i, " ;;
            3) out+="clock_timestamp(), " ;;
        esac
    done
    # 32..128 md5s: 1-4 kB of hex, little compressible
    for i in 1 2 3; do
        out+="(SELECT string_agg(md5(random()::text || k::text), '') FROM generate_series(1, 32 + (random() * 96)::int) k)"
        [[ $i -lt 3 ]] && out+=", "
    done
    echo "$out"
}
say "Wide rows: $WIDE_ROWS single-row transactions into a table of 40 columns (three text of 1-4 kB)"
"${PSQL[@]}" <<SQL
CREATE TABLE wide (id bigserial PRIMARY KEY, $(wide_columns));
ALTER PUBLICATION $PUBLICATION ADD TABLE wide;
CREATE PROCEDURE fill_wide(transactions int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR g IN 1..transactions LOOP
        INSERT INTO wide ($(wide_columns | sed 's/ [a-z]*,/,/g; s/ text$//')) VALUES ($(wide_values));
        COMMIT;
    END LOOP;
END \$\$;
SQL
for slot in base_wide wh_wide; do
    sql "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
done
sql "CALL fill_wide($WIDE_ROWS)"
ENDPOS_BACKLOG="$ENDPOS"
ENDPOS="$(sql "SELECT pg_current_wal_insert_lsn()")"
sql "INSERT INTO bench_end VALUES (2)"
WIDE_WAL="$(sql "SELECT pg_wal_lsn_diff('$ENDPOS', restart_lsn) FROM pg_replication_slots WHERE slot_name = 'base_wide'")"
say "Wide rows: pg_recvlogical --slot base_wide --endpos $ENDPOS ($(awk -v b="$WIDE_WAL" 'BEGIN { printf "%.0f", b / 1048576 }') MiB of WAL)"
BASE_NS_BACKLOG="$BASE_NS"
baseline base_wide
WIDE_BASE_NS="$BASE_NS"
BASE_NS="$BASE_NS_BACKLOG" # the backlog's median: every ratio of the table but wide rows'
ENDPOS="$ENDPOS_BACKLOG"
say "Wide rows: walhook, batch_size = 100, concurrency = 16 (slot wh_wide)"
BACKLOG_SAVED="$BACKLOG"
BACKLOG="$WIDE_ROWS"
EVENT_TABLE=wide backlog_run wide wh_wide 100 16
BACKLOG="$BACKLOG_SAVED"
WIDE=("$RUN_NS" "$RUN_EVENTS_FINAL" "$RUN_BYTES" "$RUN_CPU" "$RUN_RSS" "$RUN_TIMED_OUT")
echo "    baseline $(secs "$WIDE_BASE_NS")s; walhook $(secs "${WIDE[0]}")s, ${WIDE[1]} events, ${WIDE[2]} bytes${RUN_TIMED_OUT:+, TIMED OUT}" >&2

fi # not LATENCY_ONLY
# ---------------------------------------------------------------------------------------
# 3. Latency at a steady 2,000 transactions/s
# ---------------------------------------------------------------------------------------
echo "INSERT INTO bench (a, b, c, d) VALUES (1, md5(random()::text), 1.25, clock_timestamp());" >"$TMP/latency.sql"
latency_run() { # name batch_size concurrency: sets LAT (p50 p99 max ms) LAT_EVENTS LAT_TPS
    local slot="wh_$1" before after expected deadline line
    WALHOOK_LOG="$TMP/$1.log"
    start_walhook "$1" "$slot" "$RECEIVER_URL" "$2" "$3"
    wait_active "$slot"
    sleep 1
    curl -fsS -X POST "$RECEIVER_URL/reset" >/dev/null
    before="$(sql "SELECT coalesce(max(id), 0) FROM bench")"
    "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -f "$TMP/latency.sql" \
        --rate "$LAT_RATE" -T "$LAT_SECONDS" -c 4 -j 2 "$DB" >"$TMP/$1.pgbench" 2>&1 \
        || { show_log "$TMP/$1.pgbench"; die "pgbench failed"; }
    after="$(sql "SELECT coalesce(max(id), 0) FROM bench")"
    expected=$((after - before))
    deadline=$(($(now_ns) + 60 * 1000000000))
    wait_events "$expected" "$deadline" || echo "    (not every event arrived within 60s)" >&2
    line="$(curl -fsS "$RECEIVER_URL/stats")"
    LAT_EVENTS="$(stat_of events "$line")/$expected"
    LAT=("$(awk -v u="$(stat_of p50_us "$line")" 'BEGIN { printf "%.1f", u / 1000 }')"
        "$(awk -v u="$(stat_of p99_us "$line")" 'BEGIN { printf "%.1f", u / 1000 }')"
        "$(awk -v u="$(stat_of max_us "$line")" 'BEGIN { printf "%.1f", u / 1000 }')")
    LAT_NOISE=("$(awk -v u="$(stat_of oversleep_p99_us "$line")" 'BEGIN { printf "%.1f", u / 1000 }')"
        "$(awk -v u="$(stat_of oversleep_max_us "$line")" 'BEGIN { printf "%.1f", u / 1000 }')")
    LAT_TPS="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$TMP/$1.pgbench" | head -n 1)"
    LAT_RSS="$(peak_rss_kib "$WALHOOK_PID")"
    stop_walhook
    sql "SELECT pg_drop_replication_slot('$slot')" >/dev/null
}
# The same writer with Postgres alone: pg_recvlogical (test_decoding, which prints each commit's
# timestamp) into a reader that notes when each COMMIT line arrives. What this shows of a tail
# is the machine's and Postgres's, not walhook's.
cat >"$TMP/commit_latency.py" <<'PY'
import datetime, re, sys, time
commit = re.compile(r"^COMMIT \d+ \(at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\+00\)")
latencies = []
for line in open(sys.argv[1]):
    now = time.time()
    m = commit.match(line)
    if m:
        text = m.group(1) + ("" if "." in m.group(1) else ".0")
        at = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
        latencies.append((now - at.timestamp()) * 1000)
latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, max(0, int(q * len(latencies) + 0.999999) - 1))]
if latencies:
    print(f"{pick(0.5):.1f} {pick(0.99):.1f} {latencies[-1]:.1f} {len(latencies)}")
else:
    print("? ? ? 0")
PY
say "Latency baseline: $LAT_RATE tx/s for ${LAT_SECONDS}s, pg_recvlogical (test_decoding) alone"
sql "SELECT pg_create_logical_replication_slot('latency_base', 'test_decoding')" >/dev/null
mkfifo "$TMP/commits.fifo"
PGTZ=UTC python3 "$TMP/commit_latency.py" "$TMP/commits.fifo" >"$TMP/latency_base.out" &
reader=$!
PIDS+=("$reader")
PGTZ=UTC "$PG_BIN/pg_recvlogical" -d "$DSN" --slot latency_base --start -o include-timestamp=1 \
    -F 0 -f "$TMP/commits.fifo" 2>"$TMP/latency_base.log" &
recvlogical=$!
PIDS+=("$recvlogical")
for _ in $(seq 100); do
    [[ "$(sql "SELECT active FROM pg_replication_slots WHERE slot_name = 'latency_base'")" == t ]] && break
    sleep 0.1
done
"$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -f "$TMP/latency.sql" \
    --rate "$LAT_RATE" -T "$LAT_SECONDS" -c 4 -j 2 "$DB" >"$TMP/latency_base.pgbench" 2>&1 \
    || { show_log "$TMP/latency_base.pgbench"; die "pgbench failed"; }
sleep 2
kill -INT "$recvlogical" 2>/dev/null || true
wait "$recvlogical" 2>/dev/null || true
forget_pid "$recvlogical"
wait "$reader" || true
forget_pid "$reader"
read -r -a LAT0 <"$TMP/latency_base.out" || LAT0=("?" "?" "?" 0)
sql "SELECT pg_drop_replication_slot('latency_base')" >/dev/null
echo "    p50 ${LAT0[0]} ms, p99 ${LAT0[1]} ms, max ${LAT0[2]} ms; ${LAT0[3]} commits" >&2

say "Latency: $LAT_RATE tx/s for ${LAT_SECONDS}s, batch_size = 1 (concurrency 16)"
latency_run lat_b1 1 16
LAT1=("${LAT[@]}" "$LAT_EVENTS" "$LAT_TPS" "$LAT_RSS" "${LAT_NOISE[@]}")
echo "    p50 ${LAT[0]} ms, p99 ${LAT[1]} ms, max ${LAT[2]} ms; $LAT_EVENTS events; pgbench tps $LAT_TPS" >&2
say "Latency: $LAT_RATE tx/s for ${LAT_SECONDS}s, batch_size = 100 (batch_wait 0ms, the default)"
latency_run lat_b100 100 16
LAT100=("${LAT[@]}" "$LAT_EVENTS" "$LAT_TPS" "$LAT_RSS" "${LAT_NOISE[@]}")
echo "    p50 ${LAT[0]} ms, p99 ${LAT[1]} ms, max ${LAT[2]} ms; $LAT_EVENTS events; pgbench tps $LAT_TPS" >&2

# ---------------------------------------------------------------------------------------
# 4. Memory: one large transaction; the receiver down
# ---------------------------------------------------------------------------------------
if [[ -z "$LATENCY_ONLY" ]]; then
say "Memory: one transaction of $MEM_ROWS rows, batch_size = 100"
WALHOOK_LOG="$TMP/bigtx.log"
start_walhook bigtx wh_bigtx "$RECEIVER_URL" 100 16
wait_active wh_bigtx
curl -fsS -X POST "$RECEIVER_URL/reset" >/dev/null
t0="$(now_ns)"
sql "CALL fill(1, $MEM_ROWS)"
BIG_TIMED_OUT=""
wait_events "$MEM_ROWS" $(($(now_ns) + TIMEOUT * 1000000000)) || BIG_TIMED_OUT=1
BIG_NS=$(($(stat_of last_ns) - t0))
BIG_RSS="$(peak_rss_kib "$WALHOOK_PID")"
BIG_EVENTS="$(stat_of events)"
stop_walhook
sql "SELECT pg_drop_replication_slot('wh_bigtx')" >/dev/null
echo "    $(secs "$BIG_NS")s from the start of the transaction to the last event, $BIG_EVENTS events, peak RSS $(mib "$BIG_RSS") MiB${BIG_TIMED_OUT:+, TIMED OUT}" >&2

down_and_drain() { # name: the receiver down while MEM_ROWS events are committed, then back;
    # sets DOWN_NS DOWN_RSS DOWN_HELD DOWN_DONE DRAIN_EVENTS DRAIN_NS DRAIN_RSS DRAIN_TIMED_OUT
    local name="$1" slot="wh_$1" t0 deadline behind
    DOWN_PORT="$(free_port)" # nothing listens here until the receiver comes back
    DOWN_URL="http://127.0.0.1:$DOWN_PORT"
    WALHOOK_LOG="$TMP/$name.log"
    start_walhook "$name" "$slot" "$DOWN_URL" 100 16
    wait_active "$slot"
    t0="$(now_ns)"
    sql "CALL fill($DOWN_TXNS, 1000)"
    DOWN_END="$(sql "SELECT pg_current_wal_insert_lsn()")"
    DOWN_DONE=""
    deadline=$(($(now_ns) + TIMEOUT * 1000000000))
    while [[ "$(now_ns)" -lt "$deadline" ]]; do
        kill -0 "$WALHOOK_PID" 2>/dev/null || { show_log "$WALHOOK_LOG"; die "walhook exited while the receiver was down"; }
        behind="$(sql "SELECT pg_wal_lsn_diff('$DOWN_END', confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = '$slot'")"
        if [[ -n "$behind" && "${behind%.*}" -le 0 ]]; then DOWN_DONE=1; break; fi
        sleep 0.5
    done
    DOWN_NS=$(($(now_ns) - t0))
    DOWN_RSS="$(peak_rss_kib "$WALHOOK_PID")"
    if [[ -n "${STATE_PG:-}" ]]; then
        DOWN_HELD="$(sql "SELECT count(*) FROM state_$name.pending" 2>/dev/null || echo "?")"
    else
        DOWN_HELD="$(sqlite3 "file:$TMP/$name-state.db?mode=ro" "SELECT count(*) FROM pending" 2>/dev/null || echo "?")"
    fi
    echo "    slot confirmed past the last commit after $(secs "$DOWN_NS")s$([[ -z "$DOWN_DONE" ]] && echo ": NOT within ${TIMEOUT}s"); $DOWN_HELD events held in the state; peak RSS $(mib "$DOWN_RSS") MiB" >&2

    say "The receiver comes back: draining the held events (at most ${TIMEOUT}s)"
    local receiver_url_saved="$RECEIVER_URL" receiver_pid_saved="$RECEIVER_PID" down_receiver
    start_receiver "$TMP/$name-receiver.port" "127.0.0.1:$DOWN_PORT"
    down_receiver="$RECEIVER_PID"
    RECEIVER_PID="$receiver_pid_saved"
    RECEIVER_URL="$DOWN_URL"
    t0="$(now_ns)"
    DRAIN_TIMED_OUT=""
    wait_events "$MEM_ROWS" $(($(now_ns) + TIMEOUT * 1000000000)) || DRAIN_TIMED_OUT=1
    DRAIN_LINE="$(curl -fsS "$RECEIVER_URL/stats")"
    DRAIN_EVENTS="$(stat_of events "$DRAIN_LINE")"
    if [[ -n "$DRAIN_TIMED_OUT" ]]; then DRAIN_NS=$(($(now_ns) - t0)); else DRAIN_NS=$(($(stat_of last_ns "$DRAIN_LINE") - t0)); fi
    DRAIN_RSS="$(peak_rss_kib "$WALHOOK_PID")"
    stop_walhook
    kill "$down_receiver" 2>/dev/null || true
    wait "$down_receiver" 2>/dev/null || true
    forget_pid "$down_receiver"
    RECEIVER_URL="$receiver_url_saved"
    echo "    $DRAIN_EVENTS events in $(secs "$DRAIN_NS")s${DRAIN_TIMED_OUT:+ (TIMED OUT)}; peak RSS $(mib "$DRAIN_RSS") MiB" >&2
}
say "Memory: receiver down while $MEM_ROWS events are committed ($DOWN_TXNS transactions of 1,000 rows)"
down_and_drain down
SQ_DOWN=("$DOWN_NS" "$DOWN_RSS" "$DOWN_HELD" "$DOWN_DONE" "$DRAIN_EVENTS" "$DRAIN_NS" "$DRAIN_RSS" "$DRAIN_TIMED_OUT")

# ---------------------------------------------------------------------------------------
# 5. The state in Postgres (the backend of [state] url): the backlog, latency, and the
#    receiver down and back, as above
# ---------------------------------------------------------------------------------------
say "Postgres state: latency, $LAT_RATE tx/s for ${LAT_SECONDS}s, batch_size = 1 (concurrency 16)"
STATE_PG=1 latency_run lat_b1pg 1 16
PG_LAT1=("${LAT[@]}" "$LAT_EVENTS")
echo "    p50 ${LAT[0]} ms, p99 ${LAT[1]} ms, max ${LAT[2]} ms; $LAT_EVENTS events" >&2
say "Postgres state: receiver down while $MEM_ROWS events are committed"
STATE_PG=1 down_and_drain downpg
PG_DOWN=("$DOWN_NS" "$DOWN_RSS" "$DOWN_HELD" "$DOWN_DONE" "$DRAIN_EVENTS" "$DRAIN_NS" "$DRAIN_RSS" "$DRAIN_TIMED_OUT")

# the table below reads the SQLite figures
DOWN_NS="${SQ_DOWN[0]}" DOWN_RSS="${SQ_DOWN[1]}" DOWN_HELD="${SQ_DOWN[2]}" DOWN_DONE="${SQ_DOWN[3]}"
DRAIN_EVENTS="${SQ_DOWN[4]}" DRAIN_NS="${SQ_DOWN[5]}" DRAIN_RSS="${SQ_DOWN[6]}" DRAIN_TIMED_OUT="${SQ_DOWN[7]}"

fi # not LATENCY_ONLY
# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------
met() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { if (v == "?" || v == "") { print "?"; exit }
    ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0); print ok ? "yes" : "**no**" }'; }
ratio() { awk -v b="$BASE_NS" -v n="$1" 'BEGIN { printf "%.2f", b / n }'; }
# p99 latency against the baseline's p99 of the same run (DESIGN.md: ≤ 2×, and ≤ 25 ms)
lat_ratio() { awk -v v="$1" -v b="${LAT0[1]}" 'BEGIN { if (v == "?" || b == "?" || b + 0 <= 0) print "?"; else printf "%.1f", v / b }'; }
lat_met() { awk -v v="$1" -v b="${LAT0[1]}" 'BEGIN { if (v == "?" || b == "?") { print "?"; exit }
    print (v + 0 <= 2 * b && v + 0 <= 25) ? "yes" : "**no**" }'; }
# walhook CPU per event delivered, in µs, from CPU ticks
us_per_event() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (t == "" || n + 0 <= 0) print "?"; else printf "%.1f", t / hz * 1e6 / n }'; }
rss_max_mib() { local v m=0; for v in "$@"; do [[ -n "$v" && "$v" -gt "$m" ]] && m="$v"; done; mib "$m"; }
LOAD_AVG_END="$(cut -d' ' -f1-3 /proc/loadavg)"
HEADER="walhook benchmark: walhook ${BENCH_REVISION:-$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "(revision unknown)")}, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $("$PG_BIN/postgres" --version | sed 's/^postgres (PostgreSQL) /PostgreSQL /'), fsync=off, $([[ -n "$QUICK" ]] && echo "QUICK (sizes / 10)" || echo "full size"), load average at the start $LOAD_AVG_START, at the end $LOAD_AVG_END"
LATENCY_ROWS="| latency baseline: the same writer, pg_recvlogical (test_decoding) alone: commit → receipt p50 / p99 / max | ${LAT0[0]} / ${LAT0[1]} / ${LAT0[2]} ms (${LAT0[3]} commits) | | | |
| latency, $LAT_RATE tx/s for $LAT_SECONDS s, batch_size 1: commit → receipt p50 / p99 / max | ${LAT1[0]} / ${LAT1[1]} / ${LAT1[2]} ms (${LAT1[3]} events, pgbench $(printf '%.0f' "${LAT1[4]:-0}") tx/s; machine noise: a 1 ms sleep overslept by p99 ${LAT1[6]} / max ${LAT1[7]} ms) | p99 $(lat_ratio "${LAT1[1]}") × | p99 ≤ 2 × baseline and ≤ 25 ms | $(lat_met "${LAT1[1]}") |
| latency, same, batch_size 100 (batch_wait 0 ms, the default): p50 / p99 / max | ${LAT100[0]} / ${LAT100[1]} / ${LAT100[2]} ms (${LAT100[3]} events, pgbench $(printf '%.0f' "${LAT100[4]:-0}") tx/s; 1 ms sleep overslept by p99 ${LAT100[6]} / max ${LAT100[7]} ms) | p99 $(lat_ratio "${LAT100[1]}") × | p99 ≤ 2 × baseline and ≤ 25 ms | $(lat_met "${LAT100[1]}") |"
if [[ -n "$LATENCY_ONLY" ]]; then
    cat <<EOF

$HEADER (--latency: the latency rows only)

| figure | measured | vs baseline | target (DESIGN.md) | met |
| --- | --- | --- | --- | --- |
$LATENCY_ROWS

EOF
    echo "BENCH_RESULT revision=${BENCH_REVISION:-$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)} quick=${QUICK:-0} lat_base_p99=${LAT0[1]} lat_b1_p99=${LAT1[1]} lat_b100_p99=${LAT100[1]}"
    exit 0
fi
BASE_RATE="$(rate "$BACKLOG" "$BASE_NS")"
R100="$(ratio "${B100[0]}")"
R1="$(ratio "${B1[0]}")"
RH2="$(ratio "${H2[0]}")"
round_ratios() { # walhook run times: each round's baseline / walhook
    local i=0 v out=""
    for v in "$@"; do out+="${out:+, }$(awk -v b="${base_ns[$i]}" -v n="$v" 'BEGIN { printf "%.2f", b / n }')"; i=$((i + 1)); done
    echo "$out"
}
timed() { [[ -n "$1" ]] && echo " (timed out)" || true; }

cat <<EOF

$HEADER
backlog: $BACKLOG changes ($SINGLE_TXNS single-row transactions + one of $BIG_TXN_ROWS rows), $(awk -v b="$WAL_BYTES" 'BEGIN { printf "%.0f", b / 1048576 }') MiB of WAL

| figure | measured | vs baseline | target (DESIGN.md) | met |
| --- | --- | --- | --- | --- |
| baseline: pg_recvlogical reads the backlog | $(secs "$BASE_NS") s, $BASE_RATE changes/s (median of $ROUNDS runs: $(list_secs "${base_ns[@]}") s; walsender CPU $(cpu_s "$BASE_WS") s) | 1.00 | | |
| walhook, batch_size 100, concurrency 16: backlog delivered | $(secs "${B100[0]}") s, $(rate "${B100[5]}" "${B100[0]}") events/s, ${B100[5]} events$(timed "${B100[6]}") (runs: $(list_secs "${b100_ns[@]}") s; per-round ratios $(round_ratios "${b100_ns[@]}"); CPU: walhook $(cpu_s "${B100[2]}") s ($(us_per_event "${B100[2]}" "${B100[5]}") µs/event), walsender $(cpu_s "${B100[3]}") s, receiver $(cpu_s "${B100[4]}") s) | $R100 | ≥ 1.1 | $(met "$R100" 1.1 ">=") |
| walhook, batch_size 1, concurrency 64: backlog delivered | $(secs "${B1[0]}") s, $(rate "${B1[5]}" "${B1[0]}") events/s, ${B1[5]} events$(timed "${B1[6]}") (runs: $(list_secs "${b1_ns[@]}") s; CPU: walhook $(cpu_s "${B1[2]}") s, walsender $(cpu_s "${B1[3]}") s, receiver $(cpu_s "${B1[4]}") s) | $R1 | ≥ 0.6 | $(met "$R1" 0.6 ">=") |
| walhook, batch_size 1, concurrency 64, cleartext HTTP/2 (\`h2c = true\`): backlog delivered | $(secs "${H2[0]}") s, $(rate "${H2[5]}" "${H2[0]}") events/s, ${H2[5]} events$(timed "${H2[6]}") (runs: $(list_secs "${h2_ns[@]}") s; CPU: walhook $(cpu_s "${H2[2]}") s ($(us_per_event "${H2[2]}" "${H2[5]}") µs/event), receiver $(cpu_s "${H2[4]}") s; peak RSS $(mib "${H2[1]}") MiB) | $RH2 | (HTTP/1.1 above: $R1) | |
| wide rows ($WIDE_ROWS single-row transactions, 40 columns, three text of 1-4 kB; $(awk -v b="$WIDE_WAL" 'BEGIN { printf "%.0f", b / 1048576 }') MiB of WAL), batch_size 100: delivered | $(secs "${WIDE[0]}") s, $(rate "${WIDE[1]}" "${WIDE[0]}") events/s, $(awk -v b="${WIDE[2]:-0}" -v n="${WIDE[0]}" 'BEGIN { if (n <= 0) print "?"; else printf "%.1f", b / 1048576 / (n / 1e9) }') MiB/s of request bodies$(timed "${WIDE[5]}") (pg_recvlogical alone: $(secs "$WIDE_BASE_NS") s, $(rate "$WIDE_ROWS" "$WIDE_BASE_NS") changes/s; walhook CPU $(cpu_s "${WIDE[3]}") s, peak RSS $(mib "${WIDE[4]}") MiB) | $(awk -v b="$WIDE_BASE_NS" -v n="${WIDE[0]}" 'BEGIN { printf "%.2f", b / n }') | none (issue 17: the figure) | |
| walhook CPU per event, batch_size 1 × 64 | $(us_per_event "${B1[2]}" "${B1[5]}") µs | | ≤ 20 µs (issue 17) | $(met "$(us_per_event "${B1[2]}" "${B1[5]}")" 20 "<=") |
$LATENCY_ROWS
| peak RSS, backlog with batch_size 100 / batch_size 1 × 64 | $(mib "${B100[1]}") / $(mib "${B1[1]}") MiB | | ≤ 32 MiB | $(met "$(rss_max_mib "${B100[1]}" "${B1[1]}")" 32 "<=") |
| peak RSS, one $MEM_ROWS-row transaction (batch_size 100) | $(mib "$BIG_RSS") MiB (delivered in $(secs "$BIG_NS") s from the start of the transaction, $BIG_EVENTS events$(timed "$BIG_TIMED_OUT")) | | ≤ 32 MiB | $(met "$(mib "$BIG_RSS")" 32 "<=") |
| peak RSS, receiver down while $MEM_ROWS events are committed | $(mib "$DOWN_RSS") MiB (slot confirmed past them after $(secs "$DOWN_NS") s$([[ -z "$DOWN_DONE" ]] && echo ": NOT reached"); $DOWN_HELD held in the state file) | | ≤ 32 MiB | $(met "$(mib "$DOWN_RSS")" 32 "<=") |
| receiver back: held events drained | $DRAIN_EVENTS events in $(secs "$DRAIN_NS") s$(timed "$DRAIN_TIMED_OUT"), $(rate "$DRAIN_EVENTS" "$DRAIN_NS") events/s; peak RSS $(mib "$DRAIN_RSS") MiB | | ≤ 32 MiB | $(met "$(mib "$DRAIN_RSS")" 32 "<=") |
| **Postgres state** (\`[state] url\`, a schema in the benchmark's database): backlog, batch_size 100 | $(secs "${PG_B100[0]}") s, $(rate "${PG_B100[1]}" "${PG_B100[0]}") events/s, ${PG_B100[1]} events$(timed "${PG_B100[4]}") (SQLite above: $R100; walhook CPU $(cpu_s "${PG_B100[2]}") s, peak RSS $(mib "${PG_B100[3]}") MiB) | $(ratio "${PG_B100[0]}") | ≥ 1.1 | $(met "$(ratio "${PG_B100[0]}")" 1.1 ">=") |
| Postgres state: latency, $LAT_RATE tx/s, batch_size 1: p50 / p99 / max | ${PG_LAT1[0]} / ${PG_LAT1[1]} / ${PG_LAT1[2]} ms (${PG_LAT1[3]} events; SQLite above: p99 ${LAT1[1]} ms) | p99 $(lat_ratio "${PG_LAT1[1]}") × | p99 ≤ 2 × baseline and ≤ 25 ms | $(lat_met "${PG_LAT1[1]}") |
| Postgres state: receiver down while $MEM_ROWS events are committed, then back | slot confirmed past them after $(secs "${PG_DOWN[0]}") s$([[ -z "${PG_DOWN[3]}" ]] && echo ": NOT reached") (${PG_DOWN[2]} held; SQLite: $(secs "$DOWN_NS") s); drained $(rate "${PG_DOWN[4]}" "${PG_DOWN[5]}") events/s$(timed "${PG_DOWN[7]}") (SQLite: $(rate "$DRAIN_EVENTS" "$DRAIN_NS") events/s); peak RSS $(mib "${PG_DOWN[1]}") / $(mib "${PG_DOWN[6]}") MiB | | ≤ 32 MiB | $(met "$(rss_max_mib "${PG_DOWN[1]}" "${PG_DOWN[6]}")" 32 "<=") |
| receiver ceiling (bench_receiver load, same machine) | batch 1 × 64 conns: $(sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p' <<<"$CEIL_1") events/s; batch 100 × 16 conns: $(sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p' <<<"$CEIL_100") events/s | | above walhook's rates | |

EOF
# One line a script can compare between runs (regression guard): key=value, ratios against the
# baseline of this run, latencies in ms, CPU in µs per event, memory in MiB.
echo "BENCH_RESULT revision=${BENCH_REVISION:-$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)} quick=${QUICK:-0} b100_ratio=$R100 b1c64_ratio=$R1 b1c64_h2c_ratio=$RH2 wide_ratio=$(awk -v b="$WIDE_BASE_NS" -v n="${WIDE[0]}" 'BEGIN { printf "%.2f", b / n }') b100_us_per_event=$(us_per_event "${B100[2]}" "${B100[5]}") b1c64_us_per_event=$(us_per_event "${B1[2]}" "${B1[5]}") lat_base_p99=${LAT0[1]} lat_b1_p99=${LAT1[1]} lat_b100_p99=${LAT100[1]} pg_b100_ratio=$(ratio "${PG_B100[0]}") pg_lat_b1_p99=${PG_LAT1[1]} pg_drain_per_s=$(rate "${PG_DOWN[4]}" "${PG_DOWN[5]}") sqlite_drain_per_s=$(rate "$DRAIN_EVENTS" "$DRAIN_NS") rss_max=$(rss_max_mib "${B100[1]}" "${B1[1]}" "$BIG_RSS" "$DOWN_RSS" "$DRAIN_RSS")"
for rc in "${B100[7]}" "${B1[7]}" "${H2[7]}"; do
    [[ "$rc" == 0 ]] || echo "note: a walhook run exited with status $rc on SIGTERM (see the logs; KEEP=1 keeps them)"
done
