"""Forwarding through a real loopback receiver: retries, dead letters, Retry-After, order."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from adapter.forwarder import backoff_delay, classify
from adapter.journal import journey
from adapter.settings import ForwarderSettings
from tests.conftest import fixture, post_stripe, wait_for


def _journey(client: Any, event_id: int) -> dict[str, Any]:
    store = client.app.state.store
    return client.portal.call(store.read, lambda tx: journey(tx, event_id))  # type: ignore[no-any-return]


def _sale_state(client: Any, event_id: int) -> dict[str, Any]:
    return _journey(client, event_id)["conversions"][0]  # type: ignore[no-any-return]


def test_503_three_times_then_200_is_delivered_once_with_attempts_recorded(client: Any, receiver: Any) -> None:
    receiver.script.extend([(503, {})] * 3)
    r = post_stripe(client, fixture("stripe", "checkout.session.completed"))
    wait_for(receiver.delivered)
    conv = wait_for(lambda: (c := _sale_state(client, r.json()["eventId"]))["state"] == "delivered" and c)
    assert len(receiver.requests) == 4
    assert len(receiver.delivered()) == 1
    assert [a["status_code"] for a in conv["attempts_log"]] == [503, 503, 503, 200]
    assert [a["outcome"] for a in conv["attempts_log"]] == ["retry", "retry", "retry", "delivered"]
    assert "scripted 503" in conv["attempts_log"][0]["response_excerpt"]
    keys = {req.headers["idempotency-key"] for req in receiver.requests}
    assert keys == {"sale:stripe:pi_3PaymentIntent01"}  # the same key on every retry


def test_400_is_dead_lettered_at_once_with_the_response_kept(client: Any, receiver: Any) -> None:
    receiver.script.append((400, {}))
    r = post_stripe(client, fixture("stripe", "checkout.session.completed"))
    conv = wait_for(lambda: (c := _sale_state(client, r.json()["eventId"]))["state"] == "dead" and c)
    assert conv["reason"] == "http_400"
    assert conv["attempts"] == 1
    assert "scripted 400" in conv["attempts_log"][0]["response_excerpt"]
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_max_attempts_dead_letters(make_client: Any, receiver: Any) -> None:
    receiver.respond = lambda kind, body: (500, {})
    client = make_client(forwarder={"max_attempts": 3})
    r = post_stripe(client, fixture("stripe", "checkout.session.completed"))
    conv = wait_for(lambda: (c := _sale_state(client, r.json()["eventId"]))["state"] == "dead" and c)
    assert conv["reason"] == "max_attempts"
    assert len(receiver.requests) == 3


def test_retry_after_is_honoured(make_client: Any, receiver: Any) -> None:
    receiver.script.append((429, {"Retry-After": "1"}))
    client = make_client(forwarder={"base_delay_s": 0.01, "max_delay_s": 5})
    post_stripe(client, fixture("stripe", "checkout.session.completed"))
    wait_for(receiver.delivered)
    first, second = receiver.requests
    assert second.at - first.at >= 1.0


def test_connection_refused_is_retried_until_the_api_is_back(make_client: Any, receiver: Any,
                                                              tmp_path: Any) -> None:
    from adapter.receiver import free_port, run_in_thread

    port = free_port()
    client = make_client(tracking={"url": f"http://127.0.0.1:{port}"})
    r = post_stripe(client, fixture("stripe", "checkout.session.completed"))
    wait_for(lambda: _sale_state(client, r.json()["eventId"])["attempts"] >= 2)
    with run_in_thread(receiver.app(), port=port):
        wait_for(receiver.delivered)
        assert _sale_state(client, r.json()["eventId"])["attempts_log"][0]["error"].startswith("ClientConnectorError")


def test_sale_waits_for_its_customers_pending_lead(client: Any, receiver: Any) -> None:
    receiver.respond = lambda kind, body: (503, {}) if kind == "lead" and len(receiver.requests) < 3 else None
    lead = post_stripe(client, fixture("stripe", "customer.created"))
    sale = post_stripe(client, fixture("stripe", "invoice.paid"))
    assert lead.json()["status"] == sale.json()["status"] == "accepted"
    wait_for(lambda: len(receiver.delivered()) == 2)
    kinds = [r.kind for r in receiver.requests]
    assert kinds[-2:] == ["lead", "sale"]
    assert "sale" not in kinds[:-1]  # never sent while the Lead was pending


def test_dead_lead_does_not_hold_back_its_sales(client: Any, receiver: Any) -> None:
    receiver.respond = lambda kind, body: (422, {}) if kind == "lead" else None
    post_stripe(client, fixture("stripe", "customer.created"))
    post_stripe(client, fixture("stripe", "invoice.paid"))
    [sale] = wait_for(receiver.delivered)
    assert sale.kind == "sale" and sale.body["customerExternalId"] == "user_43"


@pytest.mark.parametrize(("status", "outcome"), [(200, "delivered"), (202, "delivered"), (408, "retry"),
                                                  (425, "retry"), (429, "retry"), (500, "retry"),
                                                  (503, "retry"), (400, "dead"), (401, "dead"),
                                                  (404, "dead"), (422, "dead")])
def test_classify(status: int, outcome: str) -> None:
    assert classify(status) == outcome


def test_backoff_is_full_jitter_capped_and_floored_by_retry_after() -> None:
    settings = ForwarderSettings(base_delay_s=1, max_delay_s=60)
    rng = random.Random(7)
    delays = [backoff_delay(5, settings, None, rng) for _ in range(2000)]
    assert 0 <= min(delays) < 1 and 15 < max(delays) <= 16  # uniform in [0, 16]
    assert all(d <= 60 for d in (backoff_delay(40, settings, None, rng) for _ in range(100)))
    assert backoff_delay(1, settings, 30, rng) >= 30
    assert backoff_delay(1, settings, 7200, rng) == 60


def test_lease_expiry_lets_another_worker_claim(tmp_path: Any) -> None:
    from adapter.store import open_store

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        store = open_store(f"sqlite:///{tmp_path / 'lease.db'}")
        await store.open()
        try:
            def seed(tx: Any) -> None:
                for i in range(3):
                    tx.insert_conversion({
                        "event_id": 1, "source": "s", "kind": "sale", "event_name": "Purchase",
                        "business_key": f"sale:{i}", "customer_external_id": f"u{i}", "idempotency_key": f"k{i}",
                        "payload": "{}", "state": "pending", "next_attempt_at": 0, "created_at": 0,
                        "updated_at": 0})

            await store.transact(seed)
            a = await store.transact(lambda tx: tx.claim("a", 1000, 500, 10))
            b = await store.transact(lambda tx: tx.claim("b", 1200, 500, 10))
            c = await store.transact(lambda tx: tx.claim("c", 1600, 500, 10))
            return [x.id for x in a], [x.id for x in b], [x.id for x in c]
        finally:
            await store.close()

    a, b, c = asyncio.run(scenario())
    assert a == [1, 2, 3] and b == [] and c == [1, 2, 3]


@pytest.mark.parametrize(("lease_s", "timeout_s", "rounds"), [(60, 10, 4), (60, 30, 1), (35, 10, 3), (3, 30, 1)])
def test_claims_never_hold_more_than_the_lease_can_cover(lease_s: float, timeout_s: float, rounds: int) -> None:
    from adapter.forwarder import Forwarder
    from adapter.settings import TrackingSettings

    fwd = Forwarder(None, TrackingSettings(url="http://127.0.0.1:9", api_key="k", timeout_s=timeout_s),  # type: ignore[arg-type]
                    ForwarderSettings(lease_s=lease_s))
    assert fwd.rounds == rounds
