#!/usr/bin/env bash
# Benchmark tasks-server against PostgreSQL's own speed (pgbench) and on SQLite.
# Usage: bench/run.sh            (full: 1,000 users x 100 tasks, 3 s warm-up + 15 s runs, 3 rounds)
#        BENCH_QUICK=1 bench/run.sh   (smoke: 100 users x 10 tasks, 1 s + 3 s runs, 1 round)
#        BENCH_BIG=1 bench/run.sh     (also loads 100,000 users x 100 tasks and measures on it)
# See bench/README.md for what is measured and every BENCH_* variable.
set -euo pipefail

cd "$(dirname "$0")/.."

install_pkgs() {
    if [ "$(id -u)" != 0 ]; then
        echo "bench: missing $* and not root; install them (Debian: apt-get install $*)" >&2
        exit 1
    fi
    echo "bench: installing $* (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "$@" >&2
}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v psql >/dev/null || missing+=(postgresql-client)
if [ ${#missing[@]} -gt 0 ]; then install_pkgs "${missing[@]}"; fi

if ! command -v pgbench >/dev/null; then
    # Debian ships pgbench with the server package (postgresql-NN); use the
    # installed server's copy if it is not on PATH.
    pgb=$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -1 || true)
    if [ -n "$pgb" ]; then
        export PATH="$(dirname "$pgb"):$PATH"
    else
        echo "bench: pgbench not found (Debian: it comes with the postgresql-NN package)" >&2
        exit 1
    fi
fi

# The service's release binary (unless TASKS_BIN names one) and the SQLite
# ceiling program (its own Cargo project, not a workspace member).
if [ -z "${TASKS_BIN:-}" ]; then
    echo "bench: cargo build --release -p tasks-server" >&2
    cargo build --quiet --release --locked -p tasks-server >&2
    export TASKS_BIN="${CARGO_TARGET_DIR:-target}/release/tasks-server"
fi
if [ -z "${BENCH_SQLITE_CEILING:-}" ]; then
    echo "bench: cargo build --release (bench/sqlite-ceiling)" >&2
    cargo build --quiet --release --locked --manifest-path bench/sqlite-ceiling/Cargo.toml \
        --target-dir bench/sqlite-ceiling/target >&2
fi

# BENCH_REPEAT=N rounds (default 3, 1 with BENCH_QUICK) run inside bench.py,
# interleaved; every figure and ratio is the median over the rounds.
python3 bench/bench.py "$@"

# Token verification cost (HS256; EdDSA, Better Auth's default, with and
# without the verified-token cache), printed in ns per token.
if [ "${BENCH_SKIP_VERIFY:-0}" = 0 ]; then
    echo
    echo "## Token verification (cargo run --release -p tasks-auth --example verify_bench)"
    cargo run --quiet --release --locked -p tasks-auth --example verify_bench
fi
