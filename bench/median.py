#!/usr/bin/env python3
"""Median table over several bench runs: python3 bench/median.py RESULTS_DIR...

Each RESULTS_DIR is a bench/results/<timestamp> directory holding the
summary.json of one `bench/run.sh` run. Every figure is the median across the
runs; the service/pgbench ratio is the median of the per-run ratios (each
measured side by side in one run), not the ratio of medians.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(dirs: list[str]) -> int:
    runs = [json.loads((Path(d) / "summary.json").read_text()) for d in dirs]
    if not runs:
        print(__doc__, file=sys.stderr)
        return 2
    keys = [(r["scenario"], r["backend"], r["conns"]) for r in runs[0]["rows"]]
    print(f"Median of {len(runs)} runs: {', '.join(Path(d).name for d in dirs)}\n")
    print("| scenario | backend | conns | req/s | p50 ms | p99 ms | errors (sum) | server CPU % | peak RSS MB | pgbench tps | service/pgbench |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in keys:
        rows = [row for run in runs for row in run["rows"]
                if (row["scenario"], row["backend"], row["conns"]) == key]
        svc = [r["service"] for r in rows]
        med = lambda f: statistics.median(f(s) for s in svc)  # noqa: E731
        pg = [r.get("pgbench") for r in rows if r.get("pgbench")]
        tps = statistics.median(p["tps"] for p in pg) if pg else None
        ratios = [r["service"]["rps"] / r["pgbench"]["tps"] for r in rows if r.get("pgbench")]
        ratio = f"{statistics.median(ratios):.0%}" if ratios else "-"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {med(lambda s: s['rps']):.0f} | {med(lambda s: s['p50_us']) / 1000:.2f} | "
              f"{med(lambda s: s['p99_us']) / 1000:.2f} | {sum(s['errors'] for s in svc)} | {med(lambda s: s['cpu_pct']):.0f} | "
              f"{max(s['rss_peak_mb'] for s in svc):.1f} (max) | {f'{tps:.0f}' if tps else '-'} | {ratio} |")
    cold = [t for run in runs for t in run.get("cold_start_s", [])]
    if cold:
        print(f"\nSQLite cold start to /ready: median {statistics.median(cold) * 1000:.1f} ms over {len(cold)} starts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
