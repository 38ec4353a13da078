#!/usr/bin/env bash
# Runs the version smoke group of the integration tests on each Postgres major given (default
# 12 13 14 16 17), from the npm packages ci/postgres/install.sh puts in a cache outside the
# repository (installed first if missing), one test process and one throwaway cluster per
# version. The smoke group: replication and values, end to end with retries, check / setup /
# teardown, heartbeat and slot safety, the canary, and backfill where the version has it.
#
# usage: scripts/test-versions.sh [MAJOR...]      (the whole suite: WALHOOK_TEST_PG_VERSION=N cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(12 13 14 16 17)
bash ci/postgres/install.sh >/dev/null
smoke=(replication:: source:: values:: e2e:: check:: operations:: faults::canary
  delivery_http::a_receiver_that_is_down backfill::on_postgres_before_14)
status=0
for v in "${versions[@]}"; do
  filters=("${smoke[@]}")
  skip=()
  # Backfills need logical messages in pgoutput (14+); slots are invalidated by
  # max_slot_wal_keep_size from 13 on.
  [ "$v" -ge 14 ] && filters+=(backfill::)
  [ "$v" -lt 13 ] && skip+=(--skip operations::an_invalidated_slot)
  start=$(date +%s)
  if WALHOOK_TEST_PG_VERSION=$v cargo test -q --test main -- "${filters[@]}" "${skip[@]}"; then
    echo "Postgres $v: smoke group passed in $(( $(date +%s) - start )) s"
  else
    echo "Postgres $v: smoke group FAILED"
    status=1
  fi
done
exit $status
