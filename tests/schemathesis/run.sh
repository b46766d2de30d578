#!/usr/bin/env bash
# Schema fuzzing of the tasks service with Schemathesis, against the OpenAPI
# document the service itself serves (GET /openapi.json).
#
#   bash tests/schemathesis/run.sh [extra schemathesis run flags...]
#
# What it does:
#   1. creates tests/schemathesis/.venv (gitignored) if missing or stale and
#      installs the pinned requirements.txt from PyPI (the only network use);
#   2. starts TASKS_BIN (default target/debug/tasks-server; build it first) on
#      a free 127.0.0.1 port with a temporary DATA_DIR (embedded SQLite), or
#      against PostgreSQL when DATABASE_URL is set (use a throwaway database:
#      the run creates and deletes tasks for a fresh per-run user);
#   3. mints an HS256 token for that user with `tasks-server token`;
#   4. runs `schemathesis run` on every operation with schemathesis.toml
#      (checks, phases, auth) and a hard time limit;
#   5. stops the service (trap) and exits non-zero on any failure.
#
# Environment:
#   TASKS_BIN                  service binary (default: target/debug/tasks-server)
#   DATABASE_URL               postgres://... to fuzz against PostgreSQL instead of SQLite
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   SCHEMATHESIS_TIMEOUT       hard limit in seconds for the schemathesis run (default 600)
#   SCHEMATHESIS_SEED          replay a run with the seed it printed
#   SCHEMATHESIS_CHECKS        override the checks, e.g. "all" (default: schemathesis.toml)
#   SCHEMATHESIS_REPORT_DIR    JUnit report and server log (default: tests/schemathesis/report)
#   SCHEMATHESIS_VENV          virtualenv location (default: tests/schemathesis/.venv)
#   PYTHON                     interpreter used to create the venv (default: the newest
#                              CPython >= 3.12 found on PATH or under pyenv, else python3)
# Traffic goes only to 127.0.0.1.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

TASKS_BIN="${TASKS_BIN:-$ROOT/target/debug/tasks-server}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
RUN_TIMEOUT="${SCHEMATHESIS_TIMEOUT:-600}"
VENV="${SCHEMATHESIS_VENV:-$HERE/.venv}"
REPORT_DIR="${SCHEMATHESIS_REPORT_DIR:-$HERE/report}"
# CPython 3.11 has a bug that hypothesis can hit (`SystemError: AST
# constructor recursion depth mismatch`, aborting a generation phase in about
# half of the runs seen here): prefer a 3.12 or newer when the machine has one.
pick_python() {
  local c
  local candidates=(python3.14 python3.13 python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.1[2-9]*/bin/python3)
  fi
  for c in "${candidates[@]}"; do
    if "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      echo "$c"; return
    fi
  done
  echo python3
}
PYTHON="${PYTHON:-$(pick_python)}"
START_TIMEOUT="${SCHEMATHESIS_START_TIMEOUT:-60}"

die() { echo "run.sh: $*" >&2; exit 2; }

[[ "$MAX_EXAMPLES" =~ ^[1-9][0-9]*$ ]] || die "SCHEMATHESIS_MAX_EXAMPLES must be a positive integer (got '$MAX_EXAMPLES')"
[[ "$RUN_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "SCHEMATHESIS_TIMEOUT must be a positive integer of seconds (got '$RUN_TIMEOUT')"
[[ -x "$TASKS_BIN" ]] || die "TASKS_BIN=$TASKS_BIN is not an executable file (build it: cargo build -p tasks-server)"
TASKS_BIN="$(cd "$(dirname "$TASKS_BIN")" && pwd)/$(basename "$TASKS_BIN")"
if [[ -n "${DATABASE_URL:-}" && "$DATABASE_URL" != postgres://* && "$DATABASE_URL" != postgresql://* ]]; then
  die "DATABASE_URL must be a postgres:// or postgresql:// URL (leave it unset for SQLite)"
fi

# --- 1. Virtualenv with the pinned Schemathesis -----------------------------
want_sha="$( (cat "$HERE/requirements.txt"; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"
if [[ ! -x "$VENV/bin/schemathesis" || "$(cat "$stamp" 2>/dev/null || true)" != "$want_sha" ]]; then
  echo "run.sh: installing $(grep -E '^schemathesis==' "$HERE/requirements.txt") into $VENV ($("$PYTHON" --version 2>&1))"
  if [[ -x "$VENV/bin/python" ]] && ! cmp -s <("$VENV/bin/python" -c 'import sys; print(sys.version)') <("$PYTHON" -c 'import sys; print(sys.version)'); then
    rm -rf "$VENV"   # made with another interpreter
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV" || die "could not create a venv with $PYTHON (Debian: apt-get install python3-venv)"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$HERE/requirements.txt"
  echo "$want_sha" >"$stamp"
fi
PY="$VENV/bin/python"

# --- 2. The service ---------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/tasks-schemathesis.XXXXXX")"
mkdir -p "$work/data" "$REPORT_DIR"
server_log="$work/server.log"
server_pid=""

stop_server() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
fuzz_pid=""
cleanup() {
  local rc=$?
  if [[ -n "$fuzz_pid" ]] && kill -0 "$fuzz_pid" 2>/dev/null; then
    kill -TERM "$fuzz_pid" 2>/dev/null || true   # timeout(1) passes it on to schemathesis
    wait "$fuzz_pid" 2>/dev/null || true
  fi
  stop_server
  [[ -f "$server_log" ]] && cp "$server_log" "$REPORT_DIR/server.log" 2>/dev/null || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

secret="$("$PY" -c 'import secrets; print(secrets.token_hex(20))')"   # 40 characters
user="schemathesis-$("$PY" -c 'import secrets; print(secrets.token_hex(6))')"

# A clean environment: nothing from the caller's shell (BETTER_AUTH_URL,
# RATE_LIMIT_PER_MINUTE, CONFIG_FILE, ...) changes the service under test, and
# the working directory is the temp dir, so no tasks.toml is picked up.
server_env=(
  PATH="$PATH" HOME="$work" DATA_DIR="$work/data" JWT_SECRET="$secret"
  HOST=127.0.0.1 LOG_LEVEL=warn
)
[[ -n "${DATABASE_URL:-}" ]] && server_env+=(DATABASE_URL="$DATABASE_URL")

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
is_ready() {
  "$PY" -c 'import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)' "http://127.0.0.1:$1/ready"
}

port=""
for attempt in 1 2 3; do
  candidate="$(free_port)"
  (cd "$work" && exec env -i "${server_env[@]}" PORT="$candidate" "$TASKS_BIN" serve) >"$server_log" 2>&1 &
  server_pid=$!
  deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    if is_ready "$candidate"; then port="$candidate"; break; fi
    sleep 0.2
  done
  [[ -n "$port" ]] && break
  stop_server
  echo "run.sh: the service did not become ready on port $candidate (attempt $attempt); its log:" >&2
  tail -n 20 "$server_log" >&2 || true
done
[[ -n "$port" ]] || die "could not start $TASKS_BIN"
base="http://127.0.0.1:$port"
echo "run.sh: service ready at $base ($([[ -n "${DATABASE_URL:-}" ]] && echo PostgreSQL || echo SQLite in a temp DATA_DIR))"

# --- 3. A token for a fresh user --------------------------------------------
TASKS_FUZZ_TOKEN="$(cd "$work" && env -i "${server_env[@]}" "$TASKS_BIN" token "$user")"
[[ -n "$TASKS_FUZZ_TOKEN" ]] || die "tasks-server token printed nothing"
export TASKS_FUZZ_TOKEN
export SCHEMATHESIS_REPORT_DIR="$REPORT_DIR"
# Hypothesis caches Unicode tables; keep them in the venv, not the source tree.
export HYPOTHESIS_STORAGE_DIRECTORY="${HYPOTHESIS_STORAGE_DIRECTORY:-$VENV/hypothesis}"

# --- 4. Schemathesis --------------------------------------------------------
args=(run "$base/openapi.json" --max-examples "$MAX_EXAMPLES")
[[ -n "${SCHEMATHESIS_SEED:-}" ]] && args+=(--seed "$SCHEMATHESIS_SEED")
[[ -n "${SCHEMATHESIS_CHECKS:-}" ]] && args+=(--checks "$SCHEMATHESIS_CHECKS")
args+=("$@")

echo "run.sh: schemathesis ${args[*]} (max ${RUN_TIMEOUT}s, $("$PY" --version 2>&1))"
started=$SECONDS
fuzz_log="$work/schemathesis.log"
run_fuzz() {
  # In the background plus `wait`, so that INT/TERM to this script run the
  # trap at once (bash defers traps while a foreground child runs).
  timeout --kill-after=15 "$RUN_TIMEOUT" \
    "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" "${args[@]}" </dev/null \
    > >(tee "$fuzz_log") 2>&1 &
  fuzz_pid=$!
  rc=0
  wait "$fuzz_pid" || rc=$?
  fuzz_pid=""
}
run_fuzz
# The CPython 3.11 bug above, recognised exactly, is retried once; any other
# failure fails at once.
if ((rc != 0)) && grep -q 'SystemError: AST constructor recursion depth mismatch' "$fuzz_log"; then
  echo "run.sh: schemathesis hit the CPython 3.11 AST bug (not a finding); retrying once" >&2
  run_fuzz
fi
elapsed=$((SECONDS - started))

if ((rc == 124 || rc == 137)); then
  echo "run.sh: FAILED: schemathesis did not finish within ${RUN_TIMEOUT}s" >&2
elif ((rc != 0)); then
  echo "run.sh: FAILED (exit $rc) after ${elapsed}s; service log: $REPORT_DIR/server.log" >&2
  if grep -qE ' (ERROR|WARN)' "$server_log" 2>/dev/null; then
    echo "run.sh: last warnings/errors of the service:" >&2
    grep -E ' (ERROR|WARN)' "$server_log" | tail -n 20 >&2
  fi
else
  echo "run.sh: passed in ${elapsed}s; JUnit report in $REPORT_DIR"
fi
exit "$rc"
