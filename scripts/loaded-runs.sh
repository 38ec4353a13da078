#!/usr/bin/env bash
# Runs a group of integration tests again and again under load, to catch failures that only
# show when the machine is busy (issue: events lost under load). Each round starts COPIES test
# processes at once (each with its own throwaway Postgres) plus BURNERS busy loops, and records
# which runs failed. A failing run's output is kept, and its cluster's server log is kept by the
# test support (see tests/support/postgres.rs) in $TMPDIR/walhook-test-pg-logs/.
#
# usage: scripts/loaded-runs.sh [ROUNDS] [FILTER...]
#   ROUNDS   default 15 (each round is COPIES runs, so 15 rounds give 30 loaded runs)
#   FILTER   test name filters, default: faults e2e_more operations status delivery
# env: COPIES (2), BURNERS (1), OUT (target/loaded-runs), RUST_LOG (passed to the tests)
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-15}
shift || true
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(faults e2e_more operations status delivery)
copies=${COPIES:-2}
burners=${BURNERS:-1}
out=${OUT:-target/loaded-runs}
mkdir -p "$out"

cargo test --test main --no-run -q 2>&1 | tail -3
bin=$(cargo test --test main --no-run --message-format=json -q 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="main" and m.get("executable"): print(m["executable"])' | tail -1)
[ -x "$bin" ] || { echo "no test binary found" >&2; exit 2; }
# The real binary the fault tests run.
cargo build -q

burn() { while :; do :; done; }
pass=0; fail=0
for round in $(seq 1 "$rounds"); do
  pids=(); burn_pids=()
  for _ in $(seq 1 "$burners"); do burn & burn_pids+=($!); done
  for copy in $(seq 1 "$copies"); do
    log="$out/round$round-copy$copy.log"
    CARGO_BIN_EXE_walhook="$PWD/target/debug/walhook" "$bin" "${filters[@]}" >"$log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    log="$out/round$round-copy$((i + 1)).log"
    if wait "${pids[$i]}"; then
      pass=$((pass + 1)); rm -f "$log"
    else
      fail=$((fail + 1))
      echo "round $round copy $((i + 1)) FAILED: $(grep -a "^test .* FAILED" "$log" | cut -d" " -f2 | tr -d ' ' | tr '\n' ' ') (output: $log)"
    fi
  done
  kill "${burn_pids[@]}" 2>/dev/null; wait "${burn_pids[@]}" 2>/dev/null
  echo "after round $round: $pass passed, $fail failed"
done
echo "loaded runs: $pass passed, $fail failed (kept server logs: ${TMPDIR:-/tmp}/walhook-test-pg-logs)"
[ "$fail" -eq 0 ]
