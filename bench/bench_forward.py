"""Forward throughput: drain N pending conversions to a local tracking API stand-in.

    uv run python bench/bench_forward.py [--conversions 20000] [--runs 3] [--customers 5000]

Seeds N pending conversions (Leads and Sales of `--customers` customers, so per-customer
ordering is in play) straight into a SQLite store, starts `hooktrack worker`, and reports
conversions/s until the outbox is empty (median of runs), against a baseline of the same number
of POSTs sent by a bare keep-alive aiohttp client (the forwarder's HTTP client) at the same
concurrency, in the same run; `--httpx` also measures an httpx AsyncClient for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import ROOT, free_port, start_uvicorn

from adapter.records import Conversion


def seed(db: Path, count: int, customers: int) -> None:
    """`count` due conversions (the schema is made by `hooktrack migrate`): each a neutral
    record and its pending `dub` delivery, as ingest stores them."""
    now = int(time.time() * 1000)
    conn = sqlite3.connect(db)
    conn.execute("BEGIN")
    rows = []
    for i in range(count):
        customer = f"user_{i % customers}"
        if i < customers:
            rec = Conversion(kind="lead", source="bench", provider="stripe", event_name="Sign up", occurred_at=now,
                             customer_external_id=customer, click_id=f"cl_{i}")
            key = f"lead:{customer}:Sign up"
        else:
            rec = Conversion(kind="sale", source="bench", provider="stripe", event_name="Purchase", occurred_at=now,
                             customer_external_id=customer, click_id=f"cl_{i}", amount=4900, currency="usd",
                             invoice_id=f"in_{i}")
            key = f"sale:in_{i}"
        rows.append((i + 1, rec.kind, rec.event_name, key, customer, rec.to_json(), now, now))
    conn.executemany(
        "INSERT INTO conversions (event_id, source, kind, event_name, business_key, customer_external_id,"
        " record, created_at, updated_at) VALUES (?, 'bench', ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute(
        "INSERT INTO deliveries (conversion_id, destination, state, next_attempt_at, window_until, created_at,"
        " updated_at) SELECT id, 'dub', 'pending', ?, ?, ?, ? FROM conversions",
        (now, now + 86_400_000, now, now),
    )
    conn.commit()
    conn.close()


def pending(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0])
    finally:
        conn.close()


def run_worker(folder: Path, tracking_url: str, count: int, customers: int, concurrency: int) -> float:
    config = folder / "hooktrack.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{folder / "bench.db"}"\n'
        f'[tracking]\nurl = "{tracking_url}"\napi_key = "bench"\n'
        f"[forwarder]\nconcurrency = {concurrency}\npoll_interval_s = 0.05\n"
    )
    subprocess.run([sys.executable, "-m", "adapter", "migrate", "--config", str(config)], cwd=ROOT,
                   check=True, capture_output=True)
    seed(folder / "bench.db", count, customers)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "adapter", "worker", "--config", str(config),
                             "--log-level", "WARNING"], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        while pending(folder / "bench.db"):
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        conn = sqlite3.connect(folder / "bench.db")
        delivered = conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'").fetchone()[0]
        conn.close()
        if delivered != count:
            raise SystemExit(f"only {delivered} of {count} conversions were delivered: the run is not valid")
        return count / elapsed
    finally:
        proc.terminate()
        proc.wait()


def run_baseline(tracking_url: str, count: int, concurrency: int) -> float:
    """The same POSTs from a bare aiohttp client: the ceiling for the forwarder."""
    body = json.dumps({"customerExternalId": "u", "amount": 4900, "currency": "usd"}).encode()

    async def go() -> float:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def one() -> None:
                async with session.post(f"{tracking_url}/track/sale", data=body) as response:
                    await response.read()
                    assert response.status == 200, response.status

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(count)))
            return count / (time.perf_counter() - started)

    return asyncio.run(go())


def run_httpx(tracking_url: str, count: int, concurrency: int) -> float:
    body = json.dumps({"customerExternalId": "u", "amount": 4900, "currency": "usd"}).encode()

    async def go() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits) as client:
            sem = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with sem:
                    await client.post(f"{tracking_url}/track/sale", content=body)

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(count)))
            return count / (time.perf_counter() - started)

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversions", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--httpx", action="store_true", help="also time an httpx AsyncClient")
    args = parser.parse_args()
    port = free_port()
    receiver = start_uvicorn("bench.bare:app", port)
    url = f"http://127.0.0.1:{port}"
    worker_rates: list[float] = []
    baseline_rates: list[float] = []
    httpx_rates: list[float] = []
    try:
        for run in range(args.runs):
            baseline_rates.append(run_baseline(url, args.conversions, args.concurrency))
            if args.httpx:
                httpx_rates.append(run_httpx(url, min(args.conversions, 5000), args.concurrency))
            with tempfile.TemporaryDirectory() as tmp:
                worker_rates.append(run_worker(Path(tmp), url, args.conversions, args.customers, args.concurrency))
            print(f"run {run + 1}: worker {worker_rates[-1]:.0f}/s, bare client {baseline_rates[-1]:.0f}/s",
                  flush=True)
    finally:
        receiver.terminate()
    worker, baseline = statistics.median(worker_rates), statistics.median(baseline_rates)
    print(f"\nforward {args.conversions:,} conversions ({args.customers:,} customers, Leads first), "
          f"concurrency {args.concurrency} (medians of {args.runs})")
    print(f"  hooktrack worker      {worker:8.0f} conversions/s")
    print(f"  bare aiohttp client   {baseline:8.0f} requests/s")
    if httpx_rates:
        print(f"  bare httpx client     {statistics.median(httpx_rates):8.0f} requests/s (for comparison)")
    print(f"  ratio worker / client {worker / baseline:.2f}")


if __name__ == "__main__":
    main()
