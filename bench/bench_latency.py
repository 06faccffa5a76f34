"""Ack latency at a fixed request rate (open loop), e.g. half of hooktrack's maximum.

    uv run python bench/bench_latency.py --rate 600 [--duration 10] [--runs 3]

Sends unique Stripe-signed webhooks at `--rate` per second on a fixed schedule (requests are
not held back by slow answers, so queueing shows up in the latency) to `hooktrack serve` and,
in the same run, to the bare Starlette endpoint; prints p50/p99/max per target (medians of runs).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import free_port, start_hooktrack, start_uvicorn, write_requests


async def open_loop(url: str, bodies: list[str], sigs: list[str], rate: float) -> list[float]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                async with session.post(f"{url}/webhooks/stripe", data=bodies[i].encode(),
                                        headers={"Stripe-Signature": sigs[i]}) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:  # a dropped connection is an error of the run, not of the bench
                errors += 1
            latencies.append(time.perf_counter() - started)

        tasks = []
        start = time.perf_counter()
        for i in range(len(bodies)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    if errors:
        print(f"  {errors} non-200 answers", flush=True)
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    count = int(args.rate * args.duration)
    receiver = start_uvicorn("bench.bare:app", receiver_port := free_port())
    bare = start_uvicorn("bench.bare:app", bare_port := free_port())
    stats: dict[str, list[tuple[float, float, float]]] = {"bare": [], "hooktrack": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                bodies_path, sigs_path = write_requests(Path(tmp), count, f"lat{run}")
                bodies = bodies_path.read_text().splitlines()
                sigs = sigs_path.read_text().splitlines()
                lat = asyncio.run(open_loop(f"http://127.0.0.1:{bare_port}", bodies, sigs, args.rate))
                stats["bare"].append((pct(lat, 0.5), pct(lat, 0.99), max(lat) * 1000))
                folder = Path(tmp) / f"run{run}"
                folder.mkdir()
                proc = start_hooktrack(folder, f"http://127.0.0.1:{receiver_port}", port := free_port())
                try:
                    lat = asyncio.run(open_loop(f"http://127.0.0.1:{port}", bodies, sigs, args.rate))
                finally:
                    proc.terminate()
                    proc.wait()
                stats["hooktrack"].append((pct(lat, 0.5), pct(lat, 0.99), max(lat) * 1000))
                print(f"run {run + 1}: hooktrack p50 {stats['hooktrack'][-1][0]:.1f} ms "
                      f"p99 {stats['hooktrack'][-1][1]:.1f} ms", flush=True)
    finally:
        receiver.terminate()
        bare.terminate()
    print(f"\nack latency at {args.rate:.0f} webhooks/s, {args.duration:.0f}s x {args.runs} runs (medians)")
    for name, rows in stats.items():
        p50, p99, worst = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"  {name:9s} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {worst:7.2f} ms")


if __name__ == "__main__":
    main()
