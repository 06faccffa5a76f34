"""`GET /metrics`: counters move as webhooks flow, outbox gauges follow the store."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from adapter.ingest import now_ms
from adapter.metrics import serve_metrics
from adapter.receiver import TrackingReceiver, free_port
from adapter.store import open_store
from tests.adapter.test_admin import AUTH, TOKEN, refuse_once
from tests.conftest import fixture, post_stripe, wait_for


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_gauges_move_as_events_flow(make_client: Callable[..., TestClient],
                                                 receiver: TrackingReceiver) -> None:
    client = make_client(admin={"token": TOKEN})
    before = scrape(client)
    refuse_once(receiver, "Purchase")
    answer = post_stripe(client, fixture("stripe", "checkout.session.completed")).json()
    post_stripe(client, fixture("stripe", "checkout.session.completed"))  # Stripe retries: duplicate
    post_stripe(client, fixture("stripe", "checkout.session.completed+setup"))  # ignored: setup_mode
    post_stripe(client, fixture("stripe", "customer.created"), secret="whsec_forged")  # rejected
    wait_for(lambda: value(scrape(client), "hooktrack_dead_letters", source="stripe") == 1)
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for status in ("accepted", "duplicate", "ignored", "rejected"):
        assert delta("hooktrack_webhooks_received_total", source="stripe", status=status) == 1, status
    assert delta("hooktrack_webhooks_rejected_total", source="stripe", reason="invalid_signature") == 1
    assert delta("hooktrack_webhooks_ignored_total", source="stripe", reason="setup_mode") == 1
    assert delta("hooktrack_conversions_created_total", source="stripe", kind="sale") == 1
    assert delta("hooktrack_forward_attempts_total", kind="sale", outcome="dead") == 1
    assert delta("hooktrack_forward_latency_seconds_count", kind="sale") == 1
    assert value(after, "hooktrack_outbox_depth", source="stripe") == 0
    assert value(after, "hooktrack_store_up") == 1

    conv_id = answer["conversions"][0]["id"]
    client.post("/admin/api/replay", json={"ids": [conv_id]}, headers=AUTH)
    delivered_before = value(before, "hooktrack_forward_attempts_total", kind="sale", outcome="delivered")
    final = wait_for(lambda: (s := scrape(client)) and value(
        s, "hooktrack_forward_attempts_total", kind="sale", outcome="delivered") > delivered_before and s)
    assert value(final, "hooktrack_forward_attempts_total", kind="sale", outcome="delivered") == delivered_before + 1
    assert value(final, "hooktrack_dead_letters", source="stripe") == 0
    assert value(final, "hooktrack_outbox_depth", source="stripe") == 0


def test_oldest_pending_age_grows_while_the_tracking_api_is_down(make_client: Callable[..., TestClient],
                                                                 receiver: TrackingReceiver) -> None:
    receiver.respond = lambda kind, body: (503, {})
    client = make_client(forwarder={"base_delay_s": 5, "max_delay_s": 5})
    post_stripe(client, fixture("stripe", "checkout.session.completed"))
    wait_for(lambda: receiver.requests)
    time.sleep(0.3)
    samples = scrape(client)
    assert value(samples, "hooktrack_outbox_depth", source="stripe") == 1
    assert value(samples, "hooktrack_oldest_pending_age_seconds") >= 0.3
    assert value(samples, "hooktrack_forward_attempts_total", kind="sale", outcome="retry") >= 1


def test_a_worker_process_serves_its_own_metrics(tmp_path: Any) -> None:
    """`hooktrack worker --metrics-port` has no app: the same gauges come from its own thread."""
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.open())

    def pending(tx: Any) -> None:
        event = tx.insert_event({"source": "stripe", "provider": "stripe", "dedup_key": "e1", "received_at": now_ms(),
                                 "status": "accepted"})
        conv = tx.insert_conversion({"event_id": event, "source": "stripe", "kind": "sale", "event_name": "Purchase",
                                     "business_key": "sale:in_1", "customer_external_id": "u1", "record": "{}",
                                     "created_at": now_ms() - 60_000, "updated_at": now_ms()})
        tx.insert_delivery({"conversion_id": conv, "destination": "dub", "state": "pending", "next_attempt_at": 0,
                            "window_until": now_ms(), "created_at": now_ms() - 60_000, "updated_at": now_ms()})

    loop.run_until_complete(store.transact(pending))
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    port = free_port()
    server = serve_metrics(port, store, loop)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
    samples = parse(text)
    assert value(samples, "hooktrack_outbox_depth", source="stripe") == 1
    assert value(samples, "hooktrack_oldest_pending_age_seconds") >= 60
    assert "# TYPE hooktrack_forward_attempts_total counter" in text
    asyncio.run_coroutine_threadsafe(store.close(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
