#!/usr/bin/env python3
"""Soak benchmark: mixed load at a fixed rate for a long time, sampling the
service's memory, open file descriptors and PostgreSQL connections.

    python3 bench/soak.py                   # 10 minutes at 300 requests/s on PostgreSQL
    SOAK_MINUTES=1 SOAK_RATE=200 python3 bench/soak.py

Prints one line per sample and a summary: RSS and connections must stay flat,
errors must be 0. Load goes to 127.0.0.1 only and stops by itself. Python 3
standard library only; needs the release binary (cargo build --release) and
PostgreSQL on 127.0.0.1:5432.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("TASKS_BIN") or ROOT / "target" / "release" / "tasks-server")
MINUTES = float(os.environ.get("SOAK_MINUTES", "10"))
RATE = int(os.environ.get("SOAK_RATE", "300"))  # requests per second, all threads
THREADS = int(os.environ.get("SOAK_THREADS", "8"))
USERS = int(os.environ.get("SOAK_USERS", "200"))
SAMPLE_SECS = float(os.environ.get("SOAK_SAMPLE_SECS", "15"))
DB = os.environ.get("SOAK_DB", "tasks_soak")
BACKEND = os.environ.get("SOAK_BACKEND", "pg")  # pg or sqlite
SECRET = "tasks-soak-secret-0123456789abcdef-not-for-production"
HOST = "127.0.0.1"


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(sub: str) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "exp": int(time.time()) + 7200}).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def psql(sql: str, db: str = "postgres") -> str:
    return subprocess.run(["psql", "-h", HOST, "-U", "postgres", "-d", db, "-Atqc", sql],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []

    def record(self, status: int, expected: tuple[int, ...], seconds: float, what: str) -> None:
        with self.lock:
            self.latencies.append(seconds)
            if status in expected:
                self.ok += 1
            else:
                key = f"{what}:{status}"
                self.errors[key] = self.errors.get(key, 0) + 1


def worker(port: int, stop: threading.Event, stats: Stats, interval: float, seed: int) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    owned: dict[str, list[int]] = {}
    # Each thread has its own users, so its picture of their tasks is exact
    # and any unexpected status is the service's fault, not a race between
    # client threads.
    tokens = {f"soak-user-{i}": jwt(f"soak-user-{i}") for i in range(USERS) if i % THREADS == seed}
    users = list(tokens)
    next_at = time.monotonic()
    while not stop.is_set():
        next_at += interval
        user = rng.choice(users)
        ids = owned.setdefault(user, [])
        roll = rng.random()
        if roll < 0.4 or (roll < 0.8 and not ids):
            method, path, body, expected, what = "GET", "/api/tasks", None, (200,), "list"
        elif roll < 0.8:
            method, path, body, expected, what = "GET", f"/api/tasks/{rng.choice(ids)}", None, (200,), "get"
        elif roll < 0.85 or not ids:
            method, path, body, expected, what = "POST", "/api/tasks", {"title": f"soak {rng.random():.6f}", "description": "d" * rng.randint(0, 200)}, (201,), "create"
        elif roll < 0.9:
            method, path, body, expected, what = "PATCH", f"/api/tasks/{rng.choice(ids)}/complete", None, (200,), "toggle"
        elif roll < 0.95:
            method, path, body, expected, what = "PUT", f"/api/tasks/{rng.choice(ids)}", {"title": "renamed"}, (200,), "update"
        else:
            victim = ids.pop(rng.randrange(len(ids)))
            method, path, body, expected, what = "DELETE", f"/api/tasks/{victim}", None, (204,), "delete"
        headers = {"Authorization": f"Bearer {tokens[user]}"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            conn.request(method, path, body=payload, headers=headers)
            res = conn.getresponse()
            data = res.read()
            status = res.status
            if what == "create" and status == 201:
                ids.append(json.loads(data)["id"])
            if what == "list" and status == 200 and not ids:
                ids.extend(t["id"] for t in json.loads(data)[:20])
        except (OSError, http.client.HTTPException):
            status = 0
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
        stats.record(status, expected, time.monotonic() - started, what)
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)


def main() -> int:
    # A plain `kill` still stops the service and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not BIN.exists():
        print(f"soak: {BIN} missing; run cargo build --release", file=sys.stderr)
        return 2
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="tasks-soak-")
    env = {"PATH": os.environ.get("PATH", ""), "HOST": HOST, "PORT": str(port), "JWT_SECRET": SECRET,
           "DATA_DIR": data_dir, "LOG_LEVEL": "warn"}
    if BACKEND == "pg":
        psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        psql(f"CREATE DATABASE {DB}")
        env["DATABASE_URL"] = f"postgres://postgres@{HOST}:5432/{DB}"
    proc = subprocess.Popen([str(BIN), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection(HOST, port, timeout=1)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        stats = Stats()
        stop = threading.Event()
        interval = THREADS / RATE
        threads = [threading.Thread(target=worker, args=(port, stop, stats, interval, i), daemon=True)
                   for i in range(THREADS)]
        for t in threads:
            t.start()
        print(f"soak: {BACKEND}, {RATE} req/s target, {THREADS} client threads, {USERS} users, {MINUTES} min")
        print(f"{'t (s)':>6} {'req/s':>7} {'errors':>6} {'RSS MB':>7} {'fds':>5} {'pg conns':>8} {'p99 ms':>7}")
        started = time.monotonic()
        samples = []
        last_count = 0
        while time.monotonic() - started < MINUTES * 60:
            time.sleep(SAMPLE_SECS)
            with stats.lock:
                count = stats.ok + sum(stats.errors.values())
                errors = sum(stats.errors.values())
                lat = sorted(stats.latencies)
                stats.latencies.clear()
            rss = status_kb(proc.pid, "VmRSS") / 1024
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            pg = int(psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}'")) if BACKEND == "pg" else 0
            p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0
            rate = (count - last_count) / SAMPLE_SECS
            last_count = count
            elapsed = time.monotonic() - started
            samples.append((elapsed, rate, errors, rss, fds, pg, p99))
            print(f"{elapsed:6.0f} {rate:7.1f} {errors:6d} {rss:7.1f} {fds:5d} {pg:8d} {p99:7.2f}", flush=True)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        peak = status_kb(proc.pid, "VmHWM") / 1024
        rss = [s[3] for s in samples]
        later = rss[len(rss) // 2:] or rss
        print()
        print(f"requests ok: {stats.ok}, errors: {sum(stats.errors.values())} {stats.errors or ''}")
        print(f"RSS MB: first {rss[0]:.1f}, min {min(rss):.1f}, max {max(rss):.1f}, last {rss[-1]:.1f}; "
              f"second half spread {max(later) - min(later):.1f}; peak (VmHWM) {peak:.1f}")
        print(f"fds: min {min(s[4] for s in samples)}, max {max(s[4] for s in samples)}; "
              f"pg connections: min {min(s[5] for s in samples)}, max {max(s[5] for s in samples)}")
        return 0 if not stats.errors else 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=35)
        except subprocess.TimeoutExpired:
            proc.kill()
        if BACKEND == "pg":
            psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
