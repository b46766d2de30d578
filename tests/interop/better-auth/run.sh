#!/usr/bin/env bash
# Better Auth <-> Rust tasks service interop tests (Node 20 + headless Debian Chromium).
#
#   TASKS_BIN=target/debug/tasks-server bash tests/interop/better-auth/run.sh
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth), or set
# INTEROP_PG_ADMIN_URL=postgres://user@127.0.0.1:5432/postgres. Creates and drops its own
# databases (interop_auth_*, interop_tasks_*). Installs only from the npm registry and Debian.
# Exit status is non-zero on any failure.
set -euo pipefail
# Resolve TASKS_BIN against the caller's directory before moving.
if [[ -n "${TASKS_BIN:-}" && -e "$TASKS_BIN" ]]; then
  TASKS_BIN="$(cd "$(dirname "$TASKS_BIN")" && pwd)/$(basename "$TASKS_BIN")"
fi
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ -z "${TASKS_BIN:-}" ]]; then
  echo "run.sh: TASKS_BIN must point at the built tasks-server binary" >&2
  echo "        e.g. TASKS_BIN=target/debug/tasks-server bash $0" >&2
  exit 2
fi
if [[ ! -x "$TASKS_BIN" ]]; then
  echo "run.sh: TASKS_BIN=$TASKS_BIN is not an executable file" >&2
  exit 2
fi
TASKS_BIN="$(cd "$(dirname "$TASKS_BIN")" && pwd)/$(basename "$TASKS_BIN")"
export TASKS_BIN

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
  echo "run.sh: Node >= 20 required (found $(node -v))" >&2
  exit 2
fi

# Never let a tool fetch a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export PUPPETEER_SKIP_DOWNLOAD=1

if [[ ! -d node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

if [[ ! -x /usr/bin/chromium ]]; then
  echo "run.sh: installing Debian chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_prefix=()
  if [[ "$(id -u)" != 0 ]]; then apt_prefix=(sudo -n); fi
  "${apt_prefix[@]}" apt-get update -q
  "${apt_prefix[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver
fi

# Bounded: the whole run must finish within INTEROP_TIMEOUT seconds (default 15 min).
exec timeout --kill-after=30 "${INTEROP_TIMEOUT:-900}" \
  node --test --test-concurrency=1 --test-reporter=spec \
  interop.test.mjs browser.test.mjs
