#!/usr/bin/env bash
# The long fidelity run (issue 13): the fidelity test (tests/fidelity.rs) on many seeds, for
# both replica identities. Each seed builds a source with rows, starts walhook with an initial
# backfill and the reference sync receiver (receivers/python/) behind a proxy failing 10% of
# requests, runs a random workload while walhook is SIGKILLed three times, and checks the
# replica equals the source row by row (to_jsonb). Prints each seed's line and the total time.
#
# usage: scripts/fidelity.sh [SEEDS]      SEEDS: a count (50: seeds 1-50) or a range (51-60)
set -uo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-50}
case "$seeds" in *-*) ;; *) seeds="1-$seeds" ;; esac
start=$(date +%s)
WALHOOK_FIDELITY_SEEDS=$seeds WALHOOK_TEST_LOG=${WALHOOK_TEST_LOG:-info} \
  cargo test --test main fidelity -- --nocapture --test-threads 1 2>&1 \
  | grep --line-buffered -E "^fidelity seed|panicked|^test |test result|differs|^    \"(items|lines)"
status=${PIPESTATUS[0]}
echo "fidelity seeds $seeds: $(( $(date +%s) - start )) s"
exit "$status"
