"""Drain: a backlog against an API that limits requests per window, like Dub's sliding window.

    uv run python bench/bench_drain.py [--conversions 10000] [--limit 1000] [--window 5] [--runs 3]

Seeds N pending Sales (each customer known to the stand-in through a clickId, so every one is
counted) into a SQLite store, starts the strict Dub stand-in (adapter/receiver.py) limited to
`--limit` requests per `--window` seconds per API key (an Upstash-style sliding window, as Dub's
`ratelimit(..., "1 m")`), then `hooktrack worker`, and reports the achieved rate against the
allowed rate (limit / window) and how many requests were answered 429. Dub's real window is a
minute; a shorter one here keeps the run short, and the forwarder learns the window from how
`X-RateLimit-Reset` moves. Targets (issue 16): >= 0.9 x the allowed rate, < 1% answered 429.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import seed
from bench_ingest import ROOT, free_port

from adapter.receiver import TrackingReceiver, run_in_thread


def _pending(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0])
    finally:
        conn.close()


def run(count: int, limit: int, window: float, concurrency: int) -> tuple[float, int, int]:
    """(achieved requests/s while draining, requests answered 429, requests sent)."""
    receiver = TrackingReceiver(api_key="dub_bench", rate_limit=limit, window_s=window)
    with tempfile.TemporaryDirectory() as tmp, run_in_thread(receiver.app(), port=free_port()) as url:
        folder = Path(tmp)
        config = folder / "hooktrack.toml"
        config.write_text(
            f'[store]\nurl = "sqlite:///{folder / "bench.db"}"\n'
            f'[tracking]\nurl = "{url}"\napi_key = "dub_bench"\n'
            f"[forwarder]\nconcurrency = {concurrency}\npoll_interval_s = 0.05\n")
        subprocess.run([sys.executable, "-m", "adapter", "migrate", "--config", str(config)], cwd=ROOT,
                       check=True, capture_output=True)
        seed(folder / "bench.db", count, customers=count)  # one lead per customer first, then sales
        proc = subprocess.Popen([sys.executable, "-m", "adapter", "worker", "--config", str(config),
                                 "--log-level", "WARNING"], cwd=ROOT, stderr=subprocess.DEVNULL)
        try:
            while not receiver.requests:
                time.sleep(0.01)
            started = receiver.requests[0].at
            while _pending(folder / "bench.db"):
                time.sleep(0.1)
            elapsed = receiver.requests[-1].at - started
        finally:
            proc.terminate()
            proc.wait()
        refused = sum(1 for r in receiver.requests if r.status == 429)
        sent = len(receiver.requests)
        counted = len(receiver.counted_leads())
        if counted != count:
            raise SystemExit(f"only {counted} of {count} conversions were counted: the run is not valid")
        return (sent - refused) / elapsed, refused, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversions", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=1000, help="requests per window and API key")
    parser.add_argument("--window", type=float, default=5.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    allowed = args.limit / args.window
    rates, refusals = [], []
    for n in range(args.runs):
        rate, refused, sent = run(args.conversions, args.limit, args.window, args.concurrency)
        rates.append(rate)
        refusals.append(refused / sent)
        print(f"run {n + 1}: {rate:.0f} requests/s counted against {allowed:.0f}/s allowed "
              f"({rate / allowed:.2f}x), {refused} of {sent} answered 429", flush=True)
    rate = statistics.median(rates)
    print(f"\ndrain {args.conversions:,} conversions at {args.limit} per {args.window:g} s "
          f"(median of {args.runs}): {rate:.0f}/s = {rate / allowed:.2f}x the allowed rate, "
          f"{statistics.median(refusals):.2%} answered 429")


if __name__ == "__main__":
    main()
