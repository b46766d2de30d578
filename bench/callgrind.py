#!/usr/bin/env python3
"""Counts the instructions the service spends on one kind of request.

    bench/callgrind.py BIN sqlite|pg list|get [N] [OUTDIR]

Starts `BIN serve` under `valgrind --tool=callgrind` (one HTTP worker,
SQLite in a temporary directory, or the `tasks_prof` PostgreSQL database,
dropped and recreated), creates 100 tasks for one user, then sends N
sequential `GET /api/tasks` (list) or `GET /api/tasks/{id}` (get) requests
(default 1,000) and stops the server. Prints the total instruction count;
`callgrind_annotate OUTDIR/cg.<backend>.<scenario>` shows where they went.
Instructions, unlike seconds, repeat for the same binary and inputs
whatever else the machine is doing, so two binaries compare exactly; the
totals include start-up and the creates (a few %). Build the binary with
`cargo build --profile profiling -p tasks-server` (release code with
symbols). Under valgrind SHA-256 runs without the CPU's SHA extensions, so
hashing looks dearer than it is.
"""
import base64, hashlib, hmac, http.client, json, os, signal, subprocess, sys, tempfile, time

BIN, BACKEND, SCENARIO = sys.argv[1], sys.argv[2], sys.argv[3]
N = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
OUT = sys.argv[5] if len(sys.argv) > 5 else tempfile.mkdtemp(prefix="callgrind-")
PORT = int(os.environ.get("BENCH_PROFILE_PORT", "18090"))
SECRET = "tasks-bench-secret-0123456789abcdef-not-for-prod"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token() -> str:
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "prof-user", "iat": now, "exp": now + 7200}).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(PORT), JWT_SECRET=SECRET, RUST_LOG="warn",
               WORKERS="1", DATA_DIR=tempfile.mkdtemp(prefix="callgrind-data-"), LOG_FORMAT="json")
    env.pop("DATABASE_URL", None)
    if BACKEND == "pg":
        for sql in ("DROP DATABASE IF EXISTS tasks_prof", "CREATE DATABASE tasks_prof"):
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)
        env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/tasks_prof"
    subprocess.run([BIN, "migrate"], env=env, check=True, capture_output=True)
    out_file = os.path.join(OUT, f"cg.{BACKEND}.{SCENARIO}")
    with open(os.path.join(OUT, "server.log"), "w") as log:
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", BIN, "serve"],
            env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
                c.request("GET", "/ready")
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        headers = {"Authorization": f"Bearer {token()}", "Content-Type": "application/json"}
        ids = []
        for i in range(100):
            body = json.dumps({"title": f"Task number {i} to do", "description": "Some words about it"})
            c.request("POST", "/api/tasks", body=body, headers=headers)
            r = c.getresponse()
            ids.append(json.loads(r.read())["id"])
        for i in range(N):
            c.request("GET", "/api/tasks" if SCENARIO == "list" else f"/api/tasks/{ids[i % 100]}",
                      headers=headers)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"request {i}: HTTP {r.status}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(300)
    with open(out_file) as f:
        total = next(line.split()[1] for line in f if line.startswith("totals:"))
    print(f"{BACKEND} {SCENARIO} x{N}: {int(total):,} instructions ({out_file})")


if __name__ == "__main__":
    main()
