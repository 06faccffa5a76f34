"""Peak memory of `hooktrack serve` while it ingests and forwards N webhooks.

    uv run python bench/bench_rss.py [--events 200000] [--connections 32]

Sends N unique Stripe-signed webhooks with wrk (in chunks, so signatures stay fresh) to one
`hooktrack serve` (SQLite, in-process forwarder to a local receiver), waits until the outbox is
empty, and prints the process's peak RSS (VmHWM) next to its RSS right after startup.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import free_port, start_hooktrack, start_uvicorn, write_requests, wrk


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=40_000)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    receiver = start_uvicorn("bench.bare:app", receiver_port := free_port())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc = start_hooktrack(folder, f"http://127.0.0.1:{receiver_port}", port := free_port())
        try:
            at_start = memory_kb(proc.pid)["VmRSS"]
            sent = 0
            started = time.perf_counter()
            while sent < args.events:
                n = min(args.chunk, args.events - sent)
                bodies, sigs = write_requests(folder, n, f"c{sent}")
                # wrk runs for a fixed time; give it enough for this chunk and count what got through.
                result = wrk(f"http://127.0.0.1:{port}", bodies, sigs, max(5, n // 800), args.connections)
                sent += min(n, result["requests"])
                print(f"  {sent:,} sent, RSS {memory_kb(proc.pid)['VmRSS'] / 1024:.0f} MB", flush=True)
            db = sqlite3.connect(folder / "bench.db")
            while db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0]:
                time.sleep(0.5)
            events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            db.close()
            mem = memory_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
            receiver.terminate()
    print(f"\n{events:,} events stored and forwarded in {time.perf_counter() - started:.0f}s")
    print(f"  RSS after startup {at_start / 1024:.0f} MB, now {mem['VmRSS'] / 1024:.0f} MB, "
          f"peak {mem['VmHWM'] / 1024:.0f} MB (target <= 150 MB)")


if __name__ == "__main__":
    main()
