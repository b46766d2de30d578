#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace tests (unit, HTTP on
# PostgreSQL / SQLite / PgBouncer, property, crash, CLI), the Better Auth +
# browser interop tests, a real Next.js frontend in Chromium, and schema
# fuzzing (schemathesis). This is the
# README's test command, and .ci/run runs exactly this script.
#
# Needs: a Rust toolchain, a PostgreSQL server (TEST_DATABASE_URL, default
# postgres://postgres@127.0.0.1:5432/postgres), Redis (TEST_REDIS_URL, default
# redis://127.0.0.1:6379, started if local and down) and PgBouncer. If that server is
# local and down, it is started with pg_ctlcluster; PgBouncer is installed
# from Debian's packages when missing (as root). The PostgreSQL tests never skip.
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if [[ "$TEST_DATABASE_URL" == *"@127.0.0.1:5432/"* || "$TEST_DATABASE_URL" == *"@localhost:5432/"* ]]; then
  if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
      version="$(ls /etc/postgresql | sort -V | tail -n 1)"
      echo "PostgreSQL is down; starting cluster $version/main"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || { echo "error: no PostgreSQL at $TEST_DATABASE_URL; the tests need one" >&2; exit 1; }
  fi
fi

# Redis: the cross-instance rate limit tests use the local one.
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if [[ -z "${TEST_REDIS_URL:-}" ]] && ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "Redis is down; starting it on 127.0.0.1:6379 (no persistence)"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 1 30); do redis_up && break; sleep 0.2; done
  fi
  redis_up || { echo "error: no Redis on 127.0.0.1:6379; the tests need one (Debian: apt-get install redis-server)" >&2; exit 1; }
fi

# PgBouncer: the scale-out tests run every HTTP test through it as well.
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing PgBouncer (Debian package) for the scale-out tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q pgbouncer >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q pgbouncer >/dev/null; }
    # The package starts its own service; the tests start theirs.
    (service pgbouncer stop || pkill -x pgbouncer) >/dev/null 2>&1 || true
  else
    echo "error: the tests need PgBouncer (Debian: apt-get install pgbouncer)" >&2
    exit 1
  fi
fi

cargo test --workspace --locked

# Interop with the real better-auth package (Node 20, PostgreSQL) and a real
# browser (Debian's Chromium, driven by playwright-core), against the binary
# the tests above built.
cargo build --locked -p tasks-server
TASKS_BIN=target/debug/tasks-server bash tests/interop/better-auth/run.sh

# A real Next.js (App Router) + Better Auth frontend, built once and driven in
# Chromium against the service in each auth mode the frontends of this design
# use (tests/frontend/run.sh; npm registry only, no other download).
TASKS_BIN=target/debug/tasks-server bash tests/frontend/run.sh

# Schema fuzzing of every operation with schemathesis (PyPI), a fixed seed so
# CI is reproducible (set SCHEMATHESIS_SEED to explore others).
SCHEMATHESIS_SEED="${SCHEMATHESIS_SEED:-20261125}" TASKS_BIN=target/debug/tasks-server \
  bash tests/schemathesis/run.sh
