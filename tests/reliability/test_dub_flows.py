"""End to end against the strict Dub stand-in (adapter/receiver.py, adapter/dubsim): what the
real API counts, not what it was sent. Each case names the Dub behaviour it depends on."""

from __future__ import annotations

import time
from typing import Any

from adapter.journal import journey
from tests.conftest import fixture, post_stripe, wait_for


def _conversion(client: Any, event_id: int) -> dict[str, Any]:
    store, destination = client.app.state.store, client.app.state.destination
    found = client.portal.call(store.read, lambda tx: journey(tx, event_id, destination))
    return found["conversions"][0]  # type: ignore[no-any-return]


def _checkout(n: int) -> dict[str, Any]:
    event = fixture("stripe", "checkout.session.completed")
    event["id"] = f"evt_drain_{n}"
    obj = event["data"]["object"]
    obj["id"], obj["payment_intent"], obj["customer"] = f"cs_{n}", f"pi_drain_{n}", f"cus_drain_{n}"
    obj["metadata"] = {"userId": f"user_drain_{n}"}
    return event


def test_a_sale_sent_right_after_its_lead_is_counted(client: Any, receiver: Any) -> None:
    """track-lead.ts: `mode: "wait"` records the lead before answering; with `async` the sale
    right after is answered 404 "Lead event not found" (Tinybird lag, lead_visibility_delay_s)."""
    receiver.lead_visibility_delay_s = 30  # an async lead would stay invisible for the whole test
    post_stripe(client, fixture("stripe", "customer.created"))
    invoice = fixture("stripe", "invoice.paid")
    r = post_stripe(client, invoice)
    wait_for(lambda: receiver.counted_sales(), timeout=15)
    [lead] = receiver.counted_leads()
    [sale] = receiver.counted_sales()
    assert lead.customer_id == sale.customer_id  # one customer from Lead to Sale
    wait_for(lambda: _conversion(client, r.json()["eventId"])["state"] == "delivered")  # settled after the answer
    assert [q.status for q in receiver.requests] == [200, 200]


def test_a_sale_dub_does_not_count_ends_unattributed(make_client: Any, receiver: Any) -> None:
    """track-sale.ts: an unknown customer without a clickId is answered 200 `sale: null`."""
    client = make_client(forwarder={"attribution_window_s": 1, "max_attempts": 2, "base_delay_s": 0.05})
    r = post_stripe(client, fixture("stripe", "invoice.paid"))  # cus_SUB01: no lead, no click
    conv = wait_for(lambda: (c := _conversion(client, r.json()["eventId"]))["state"] == "unattributed" and c,
                    timeout=15)
    assert conv["reason"] == "customer_not_found"
    assert len(conv["attempts_log"]) > 2  # window-bounded retries do not spend max_attempts
    assert {a["outcome"] for a in conv["attempts_log"]} == {"not_counted"}
    assert receiver.counted_sales() == []


def test_a_key_refused_for_the_first_seconds_dead_letters_nothing(make_client: Any, receiver: Any) -> None:
    """workspace.ts: an unknown key is 401; the destination pauses and probes until it works."""
    receiver.forbidden_keys.add("test_key")  # 403 "Need higher plan" until the plan is upgraded
    client = make_client(forwarder={"pause_probe_s": 0.5, "max_attempts": 1})
    for n in range(5):
        post_stripe(client, _checkout(n))
    wait_for(lambda: "destination dub is paused" in _stats(client) and len(receiver.requests) >= 2, timeout=10)
    receiver.forbidden_keys.discard("test_key")
    wait_for(lambda: len(receiver.counted_sales()) == 5, timeout=20)
    assert 'hooktrack_deliveries{state="dead"} 0.0' in client.get("/metrics").text


def _stats(client: Any) -> str:
    from rich.console import Console

    from adapter.render import stats_view
    from adapter.stats import stats

    data = client.portal.call(client.app.state.store.read, lambda tx: stats(tx, int(time.time() * 1000)))
    console = Console(record=True, width=200)
    stats_view(data, console)
    return console.export_text()


def test_a_backlog_drains_at_the_apis_limit_with_few_429s(make_client: Any, receiver: Any) -> None:
    """upstash slidingWindow: 40 requests per 5 s here (Dub: per minute). 120 sales queued at
    once must go out at a steady pace, not in bursts the limiter refuses."""
    receiver.rate_limit, receiver.window_s = 40, 5.0
    client = make_client(forwarder={"concurrency": 8})
    started = time.monotonic()
    for n in range(120):
        assert post_stripe(client, _checkout(n)).json()["status"] == "accepted"
    wait_for(lambda: len(receiver.counted_sales()) == 120, timeout=60)
    took = time.monotonic() - started
    refused = sum(1 for q in receiver.requests if q.status == 429)
    print(f"\nDRAIN took {took:.1f}s, {refused} x 429, {len(receiver.requests)} requests")
    assert refused <= 5, f"{refused} requests answered 429"
    assert took < 60
