"""Forged floods: counted in full, journaled as a bounded sample, and the WAL kept small.

Every forged request used to write an event row: 10,000 of them grew the database by 1.9 MB
and its WAL by 25.7 MB, never truncated. Now metrics count every refused delivery, the journal
keeps at most `JOURNALED_PER_MINUTE` per source and minute, and the checkpoint loop truncates a
grown WAL.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import httpx
import stripe

from adapter.app import create_app
from adapter.metrics import REGISTRY
from adapter.plugin import load_providers
from adapter.receiver import TrackingReceiver, run_in_thread
from adapter.sampling import JOURNALED_PER_MINUTE
from adapter.store.sqlite import SQLiteStore
from tests.conftest import STRIPE_SECRET, config, fixture, wait_for


def _store_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
               if p.exists())


def _rejected(source: str) -> float:
    total = 0.0
    for reason in ("invalid_signature", "missing_signature", "stale_timestamp"):
        total += REGISTRY.get_sample_value("hooktrack_webhooks_rejected_total",
                                           {"source": source, "reason": reason}) or 0.0
    return total


def _genuine(http: httpx.Client, url: str, n: str) -> httpx.Response:
    event = fixture("stripe", "checkout.session.completed")
    event["id"], event["data"]["object"]["payment_intent"] = f"evt_flood_{n}", f"pi_flood_{n}"
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, STRIPE_SECRET)
    return http.post(f"{url}/webhooks/stripe", content=body, headers={"Stripe-Signature": header})


def test_3000_forged_requests_grow_the_store_by_under_1_mb(tmp_path: Path, receiver: TrackingReceiver) -> None:
    settings = config(tmp_path, receiver.url)  # type: ignore[attr-defined]
    db = tmp_path / "hooktrack.db"
    body = json.dumps(fixture("stripe", "checkout.session.completed")).encode()
    forged = [
        {"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"},  # invalid_signature
        {},  # missing_signature
        {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
            body.decode(), STRIPE_SECRET, timestamp=int(time.time()) - 86_400)},  # stale_timestamp
    ]
    with run_in_thread(create_app(settings, registry=load_providers())) as url, httpx.Client(timeout=10) as http:
        assert _genuine(http, url, "before").json()["status"] == "accepted"
        time.sleep(1.5)  # let a checkpoint pass settle the WAL after startup
        before, counted = _store_bytes(db), _rejected("stripe")
        started_min = int(time.time() // 60)
        for i in range(3000):
            r = http.post(f"{url}/webhooks/stripe", content=body, headers=forged[i % 3])
            assert r.status_code == 400, r.text
        minutes = int(time.time() // 60) - started_min + 1
        assert _genuine(http, url, "after").json()["status"] == "accepted"
        time.sleep(1.5)
        grown = _store_bytes(db) - before
    assert grown < 1_000_000, f"the store grew by {grown} bytes"
    assert _rejected("stripe") - counted == 3000  # metrics count every one
    with sqlite3.connect(db) as conn:
        journaled = conn.execute("SELECT COUNT(*) FROM events WHERE status = 'rejected'").fetchone()[0]
        accepted = conn.execute("SELECT COUNT(*) FROM events WHERE status = 'accepted'").fetchone()[0]
    assert 0 < journaled <= JOURNALED_PER_MINUTE * minutes
    assert accepted == 2
    wait_for(lambda: len(receiver.delivered()) == 2)


def test_verified_but_malformed_deliveries_are_always_journaled(tmp_path: Path,
                                                                 receiver: TrackingReceiver) -> None:
    """They are genuine (kept for `reprocess`), so the sample does not apply to them."""
    settings = config(tmp_path, receiver.url)  # type: ignore[attr-defined]
    with run_in_thread(create_app(settings, registry=load_providers())) as url, httpx.Client(timeout=10) as http:
        for _ in range(JOURNALED_PER_MINUTE + 5):
            body = '{"id": "evt_malformed", "type": "checkout.session.completed", "data": 7}'
            header = stripe.WebhookSignature.generate_signature_header(body, STRIPE_SECRET)
            r = http.post(f"{url}/webhooks/stripe", content=body, headers={"Stripe-Signature": header})
            assert r.json()["error"]["code"] == "malformed_payload"
    with sqlite3.connect(tmp_path / "hooktrack.db") as conn:
        kept = conn.execute("SELECT COUNT(*) FROM events WHERE reason = 'malformed_payload' "
                            "AND body IS NOT NULL").fetchone()[0]
    assert kept == JOURNALED_PER_MINUTE + 5


def test_a_grown_wal_is_truncated(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'hooktrack.db'}")
    store.wal_truncate_every_s = 0.5
    store.wal_truncate_above_bytes = 64 * 1024
    wal = tmp_path / "hooktrack.db-wal"

    async def run() -> tuple[int, float]:
        await store.open()
        try:
            row = {"source": "s", "provider": "stripe", "received_at": 1, "status": "accepted", "body": "x" * 4000}
            for i in range(200):
                await store.transact(lambda tx, i=i: tx.insert_event({**row, "dedup_key": f"e{i}"}))
            peak = wal.stat().st_size
            started = time.monotonic()
            while wal.exists() and wal.stat().st_size > 0 and time.monotonic() - started < 10:
                await asyncio.sleep(0.1)
            return peak, time.monotonic() - started
        finally:
            await store.close()

    peak, took = asyncio.run(run())
    assert peak > 512 * 1024, peak
    assert not wal.exists() or wal.stat().st_size == 0, f"WAL still {wal.stat().st_size} bytes after {took:.1f} s"
