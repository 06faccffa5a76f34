"""The HTTP interface around ingest: health, readiness, store outages, durability."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from adapter.receiver import TrackingReceiver, free_port, run_in_thread
from tests.conftest import STRIPE_SECRET, fixture, post_stripe, wait_for


def test_healthz_and_readyz(client: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_locked_store_answers_503_then_recovers(make_client: Any, receiver: Any, tmp_path: Path) -> None:
    client = make_client(store={"url": f"sqlite:///{tmp_path / 'hooktrack.db'}"})
    client.app.state.store.lock_timeout_s = 0.3
    blocker = sqlite3.connect(tmp_path / "hooktrack.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the file: nothing can commit
    try:
        r = post_stripe(client, fixture("stripe", "checkout.session.completed"))
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "store_unavailable"
        assert client.get("/readyz").status_code == 503
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert client.get("/readyz").status_code == 200
    r = post_stripe(client, fixture("stripe", "checkout.session.completed"))
    assert r.json()["status"] == "accepted"  # the provider's retry is taken once the store is back
    wait_for(receiver.delivered)


def _write_config(tmp_path: Path, tracking_url: str) -> Path:
    path = tmp_path / "hooktrack.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "crash.db"}"\n'
        f'[tracking]\nurl = "{tracking_url}"\napi_key = "test_key"\ntimeout_s = 2\n'
        '[forwarder]\nbase_delay_s = 0.05\nmax_delay_s = 0.2\npoll_interval_s = 0.05\nfill_window_s = 0\n'
        "lease_s = 2\n"
        f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n'
    )
    return path


def _serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapter", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: _up(port), timeout=20)
    return proc


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_sigkill_with_pending_conversions_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    receiver = TrackingReceiver(api_key="test_key")
    receiver.delay_s = 0.05  # slow API: many conversions are pending or in flight at the kill
    with run_in_thread(receiver.app()) as tracking_url:
        config = _write_config(tmp_path, tracking_url)
        port = free_port()
        proc = _serve(config, port)
        acked: set[str] = set()
        stop = threading.Event()

        def load() -> None:
            i = 0
            with httpx.Client(timeout=5) as http:
                while not stop.is_set():
                    event = fixture("stripe", "checkout.session.completed")
                    event["id"] = f"evt_crash_{i}"
                    event["data"]["object"]["payment_intent"] = f"pi_crash_{i}"
                    body = json.dumps(event)
                    header = stripe.WebhookSignature.generate_signature_header(body, STRIPE_SECRET)
                    try:
                        r = http.post(f"http://127.0.0.1:{port}/webhooks/stripe", content=body,
                                      headers={"Stripe-Signature": header})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200 and r.json()["status"] == "accepted":
                        acked.add(f"sale:stripe:pi_crash_{i}")
                    i += 1

        loader = threading.Thread(target=load)
        loader.start()
        wait_for(lambda: len(acked) >= 100, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        loader.join()
        delivered_before = set(receiver.by_key())
        assert acked - delivered_before, "the kill should leave acknowledged conversions undelivered"
        proc = _serve(config, port)
        try:
            wait_for(lambda: acked <= set(receiver.by_key()), timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        by_key = receiver.by_key()
        assert acked <= set(by_key)
        # At-least-once over HTTP: a request in flight at the kill may be repeated, always with
        # the same Idempotency-Key and body, which the tracking API dedupes on.
        repeated = {k: v for k, v in by_key.items() if len(v) > 1}
        from adapter.forwarder import MAX_ROUNDS

        assert len(repeated) <= 32 * MAX_ROUNDS  # at most the one claimed batch (concurrency x rounds)
        for copies in repeated.values():
            assert all(c.body == copies[0].body for c in copies)


def test_a_failing_write_job_fails_alone(tmp_path: Path) -> None:
    import asyncio

    from adapter.store import open_store

    async def scenario() -> tuple[list[object], int]:
        store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
        await store.open()
        try:
            def ok(i: int) -> Any:
                return lambda tx: tx.execute("INSERT INTO hooktrack_meta (key, value) VALUES (?, 'x')", (f"k{i}",))

            def boom(tx: Any) -> None:
                tx.execute("INSERT INTO hooktrack_meta (key, value) VALUES ('k_boom', 'x')")
                raise RuntimeError("job failed")

            jobs = [store.transact(ok(1)), store.transact(boom), store.transact(ok(2))]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            count = await store.read(lambda tx: tx.one("SELECT COUNT(*) FROM hooktrack_meta WHERE key LIKE 'k%'")[0])
            return list(results), int(count)
        finally:
            await store.close()

    results, count = asyncio.run(scenario())
    assert isinstance(results[1], RuntimeError)
    assert count == 2  # the two good jobs committed, the failing one left nothing behind


def test_an_older_event_for_the_same_object_is_ignored_as_out_of_order(tmp_path: Path) -> None:
    import asyncio
    from datetime import UTC, datetime

    from adapter.destinations.dub import DubDestination
    from adapter.events import ProviderEvent, Sale
    from adapter.ingest import Ingestor, _Apply
    from adapter.settings import TrackingSettings
    from adapter.store import open_store
    from adapter.testing import make_source
    from providers.stripe import StripeProvider

    src = make_source(StripeProvider(), ["whsec_x"], name="s")

    def apply(event_id: str, day: int) -> Any:
        event = ProviderEvent(id=event_id, type="payment", occurred_at=datetime(2026, 4, day, tzinfo=UTC),
                              object_key="subscription:sub_1")
        sale = Sale(amount=100, currency="usd", invoice_id=f"in_{event_id}", external_id="u1")
        ingestor = Ingestor(None, DubDestination(TrackingSettings(url="http://127.0.0.1:9", api_key="k")))  # type: ignore[arg-type]
        return _Apply(src, event, b"{}", 0, [sale], None, ingestor)

    async def scenario() -> list[str]:
        store = open_store(f"sqlite:///{tmp_path / 'order.db'}")
        await store.open()
        try:
            return [(await store.transact(apply(i, day))).status for i, day in (("e2", 2), ("e1", 1), ("e3", 3))]
        finally:
            await store.close()

    assert asyncio.run(scenario()) == ["accepted", "ignored", "accepted"]
