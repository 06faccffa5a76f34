"""Every installed provider's built-in samples, sent as `hooktrack send` sends them, reach the
strict Dub stand-in without a refusal: no 400/422 (apps/web/lib/zod/schemas/leads.ts,
sales.ts), every Sale sent in Dub's units with a `paymentProcessor` Dub accepts."""

from __future__ import annotations

import time
from typing import Any

import pytest

from adapter.destinations.dub import PAYMENT_PROCESSORS
from tests.conftest import wait_for
from tests.reliability.sources import Delivery, provider_params, source_of


@pytest.mark.parametrize("hooktrack", provider_params(), indirect=True)
def test_every_sample_reaches_dub_without_a_refusal(hooktrack: Any, receiver: Any) -> None:
    client, candidate = hooktrack
    delivery = Delivery(source_of(client, candidate))
    if not delivery.can_sign():
        pytest.skip(f"{candidate.name}: no signable samples")
    accepted = 0
    for sample in delivery.samples:
        name, body = delivery.body(sample)
        answer = client.post(delivery.path(), content=body, headers=delivery.headers(name, body))
        assert answer.status_code == 200, (sample, answer.text)
        accepted += delivery.outcome(answer)["status"] == "accepted"
    store = client.app.state.store

    def answered() -> bool:  # every delivery sent at least once (a Sale Dub did not count stays pending)
        unsent = client.portal.call(store.read, lambda tx: tx.one(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND last_status IS NULL")[0])
        return int(unsent) == 0

    wait_for(answered, timeout=30)
    time.sleep(0.1)
    refused = [(r.kind, r.status, r.body) for r in receiver.requests if r.status in (400, 422)]
    assert refused == []
    for r in receiver.requests:
        if r.kind == "sale":
            assert r.body["paymentProcessor"] in PAYMENT_PROCESSORS
            assert isinstance(r.body["amount"], int) and r.body["amount"] >= 0
    states = client.portal.call(store.read, lambda tx: tx.delivery_states())
    assert states.get("dead", 0) == 0, states
    assert accepted == 0 or receiver.requests
