"""The ingest transaction alone, on SQLite and on PostgreSQL: no HTTP, no forwarder.

    uv run python bench/bench_store_txn.py [--webhooks 600] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Stores unique Stripe-signed checkouts through `Ingestor.receive` (verify, parse, map, one
transaction), first one at a time, then all at once, and prints per engine: ms per webhook in
sequence, webhooks/s concurrently, and the statements each webhook ran (`Tx.execute`, without
BEGIN/COMMIT). The PostgreSQL database is created fresh on the URL's server and dropped after
(`bench_ingest.PostgresRuns`).
What it says: how much of a webhook's cost is the store's, and how many round trips PostgreSQL
pays for it, the figure a one-statement design would cut.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import stripe
from starlette.datastructures import Headers

from adapter.destinations.dub import DubDestination
from adapter.ingest import Ingestor
from adapter.settings import TrackingSettings
from adapter.store import open_store, sql
from adapter.testing import make_source
from providers.stripe import StripeProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import PostgresRuns

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_bench_secret_0123456789abcdef"
FIXTURE = ROOT / "tests" / "fixtures" / "stripe" / "checkout.session.completed.json"
STATEMENTS: collections.Counter[str] = collections.Counter()


def _counted() -> None:
    execute = sql.Tx.execute

    def counting(self: sql.Tx, statement: str, params: Any = ()) -> Any:
        STATEMENTS[" ".join(statement.split()[:3])] += 1
        return execute(self, statement, params)

    sql.Tx.execute = counting  # type: ignore[method-assign]


def deliveries(count: int) -> list[tuple[bytes, Headers]]:
    base = json.loads(FIXTURE.read_text())
    out = []
    for i in range(count):
        event = copy.deepcopy(base)
        session = event["data"]["object"]
        event["id"], session["id"], session["payment_intent"] = f"evt_txn_{i}", f"cs_txn_{i}", f"pi_txn_{i}"
        session["customer"], session["metadata"]["userId"] = f"cus_txn_{i % 500}", f"user_txn_{i % 500}"
        body = json.dumps(event, separators=(",", ":"))
        header = stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=int(time.time()))
        out.append((body.encode(), Headers({"stripe-signature": header})))
    return out


async def measure(url: str, count: int) -> dict[str, float]:
    open_store(url).migrate()
    store = open_store(url)
    await store.open()
    try:
        ingestor = Ingestor(store, DubDestination(TrackingSettings(url="http://127.0.0.1:9", api_key="bench")),
                            fill_window_s=0, attribution_window_s=86_400)
        source = make_source(StripeProvider(), [SECRET], tolerance_s=86_400)
        todo = deliveries(count)
        half = count // 2
        started = time.perf_counter()
        for body, headers in todo[:half]:
            assert (await ingestor.receive(source, body, headers)).status == "accepted"
        sequential = (time.perf_counter() - started) / half
        STATEMENTS.clear()
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(ingestor.receive(source, b, h) for b, h in todo[half:]))
        concurrent = (count - half) / (time.perf_counter() - started)
        assert {o.status for o in outcomes} == {"accepted"}
        return {"sequential_ms": sequential * 1000, "concurrent_per_s": concurrent,
                "statements": sum(STATEMENTS.values()) / (count - half)}
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=600)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    _counted()
    postgres = PostgresRuns(args.postgres)
    try:
        with tempfile.TemporaryDirectory() as folder:
            results = {
                "SQLite": asyncio.run(measure(f"sqlite:///{Path(folder) / 'txn.db'}", args.webhooks)),
                "PostgreSQL": asyncio.run(measure(postgres.fresh(0), args.webhooks)),
            }
    finally:
        postgres.drop_all()
    print(f"\ningest transaction, {args.webhooks} unique Stripe checkouts per engine")
    for engine, r in results.items():
        print(f"  {engine:10s} {r['sequential_ms']:5.2f} ms/webhook in sequence   "
              f"{r['concurrent_per_s']:6.0f} webhooks/s concurrently   {r['statements']:.1f} statements/webhook")
    pg, lite = results["PostgreSQL"], results["SQLite"]
    print(f"  ratio PostgreSQL / SQLite: {pg['concurrent_per_s'] / lite['concurrent_per_s']:.2f} concurrently, "
          f"{lite['sequential_ms'] / pg['sequential_ms']:.2f} in sequence")


if __name__ == "__main__":
    main()
