#!/usr/bin/env bash
# Harness self-test: runs the interop + browser suites against dev/mock-tasks-server.mjs,
# a Node stand-in that follows the Rust service's contract. Use it to tell a harness bug
# from a service bug. Not part of CI; the real run is ../run.sh with TASKS_BIN.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Emulate a jose-like 30 s JWKS refetch cooldown, the slowest case the rotation test allows.
export MOCK_JWKS_COOLDOWN_MS="${MOCK_JWKS_COOLDOWN_MS:-30000}"
TASKS_BIN="$PWD/dev/mock-tasks-server.mjs" exec bash run.sh
