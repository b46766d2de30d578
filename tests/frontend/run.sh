#!/usr/bin/env bash
# The Next.js + Better Auth frontend in this directory, built once with `next build` and driven in
# headless Debian Chromium against the tasks service, once per auth mode.
#
#   TASKS_BIN=target/debug/tasks-server bash tests/frontend/run.sh
#
# FRONTEND_MODES  comma-separated, from jwt,hs256,session,cookie (default: all four;
#                 cookie runs the service with AUTH_COOKIE=true).
# FRONTEND_PG_ADMIN_URL  default postgres://postgres@127.0.0.1:5432/postgres; two databases
#                 (frontend_auth_*, frontend_tasks_*) are created there and dropped at the end.
# FRONTEND_TIMEOUT  seconds the browser tests may take (default 600).
# Installs only from the npm registry (npm ci, from package-lock.json) and Debian (chromium).
set -euo pipefail
# Resolve TASKS_BIN against the caller's directory before moving.
if [[ -n "${TASKS_BIN:-}" && -e "$TASKS_BIN" ]]; then
  TASKS_BIN="$(cd "$(dirname "$TASKS_BIN")" && pwd)/$(basename "$TASKS_BIN")"
fi
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ -z "${TASKS_BIN:-}" || ! -x "$TASKS_BIN" ]]; then
  echo "run.sh: TASKS_BIN must point at the built tasks-server binary (got '${TASKS_BIN:-}')" >&2
  echo "        e.g. TASKS_BIN=target/debug/tasks-server bash $0" >&2
  exit 2
fi
export TASKS_BIN
if (( "$(node -p 'process.versions.node.split(".")[0]')" < 20 )); then
  echo "run.sh: Node >= 20 required (found $(node -v))" >&2
  exit 2
fi

export NEXT_TELEMETRY_DISABLED=1 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# npm ci only when node_modules is missing or was installed from another lockfile.
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ "$(cat node_modules/.package-lock.sha256 2>/dev/null)" != "$lock_sum" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.package-lock.sha256
fi

if [[ ! -x /usr/bin/chromium ]]; then
  echo "run.sh: installing Debian chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_prefix=()
  if [[ "$(id -u)" != 0 ]]; then apt_prefix=(sudo -n); fi
  "${apt_prefix[@]}" apt-get update -q
  "${apt_prefix[@]}" apt-get install -y -q --no-install-recommends chromium
fi

pg_admin="${FRONTEND_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export PGCONNECT_TIMEOUT=10
suffix="$(date +%s)_$$"
databases=("frontend_auth_$suffix" "frontend_tasks_$suffix")
created=()
cleanup() {
  for db in "${created[@]}"; do
    psql -qX "$pg_admin" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null ||
      echo "run.sh: could not drop database $db" >&2
  done
}
trap cleanup EXIT
for db in "${databases[@]}"; do
  psql -qX -v ON_ERROR_STOP=1 "$pg_admin" -c "CREATE DATABASE \"$db\"" >/dev/null
  created+=("$db")
done
db_url() { node -e 'const u = new URL(process.argv[1]); u.pathname = "/" + process.argv[2]; console.log(u.href)' "$pg_admin" "$1"; }
AUTH_DATABASE_URL="$(db_url "${databases[0]}")"
TASKS_DATABASE_URL="$(db_url "${databases[1]}")"
export AUTH_DATABASE_URL TASKS_DATABASE_URL

# The service listens on the same port in every mode: the cookie mode's rewrite is baked into
# the build. Better Auth also reads its secret during the build.
TASKS_SERVICE_PORT="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
BETTER_AUTH_SECRET="$(node -p 'require("crypto").randomBytes(32).toString("base64")')"
export TASKS_SERVICE_PORT BETTER_AUTH_SECRET

TASKS_SERVICE_URL="http://127.0.0.1:$TASKS_SERVICE_PORT" timeout --kill-after=10 300 node_modules/.bin/next build

timeout --kill-after=30 "${FRONTEND_TIMEOUT:-600}" \
  node --test --test-concurrency=1 --test-reporter=spec frontend.test.mjs
