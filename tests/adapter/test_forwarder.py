"""Forwarding through a real loopback receiver: retries, dead letters, Retry-After, order."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import pytest

from adapter.forwarder import backoff_delay
from adapter.journal import journey
from adapter.settings import ForwarderSettings
from tests.conftest import fixture, post_stripe, sent_once, wait_for


def _journey(client: Any, event_id: int) -> dict[str, Any]:
    store, destination = client.app.state.store, client.app.state.destination
    return client.portal.call(store.read, lambda tx: journey(tx, event_id, destination))  # type: ignore[no-any-return]


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
    assert conv["attempts_log"][0]["response_excerpt"]
    keys = {req.headers["idempotency-key"] for req in receiver.requests}
    assert keys == {"sale:stripe:pi_3PaymentIntent01"}  # the same key on every retry


def test_422_is_dead_lettered_at_once_with_the_response_kept(client: Any, receiver: Any) -> None:
    receiver.script.append((422, {}))
    r = post_stripe(client, fixture("stripe", "checkout.session.completed"))
    conv = wait_for(lambda: (c := _sale_state(client, r.json()["eventId"]))["state"] == "dead" and c)
    assert conv["reason"] == "http_422"
    assert conv["attempts"] == 1
    assert conv["attempts_log"][0]["response_excerpt"]
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_max_attempts_dead_letters(make_client: Any, receiver: Any) -> None:
    receiver.respond = lambda kind, body: (500, {})
    client = make_client(forwarder={"max_attempts": 3})
    r = post_stripe(client, fixture("stripe", "checkout.session.completed"))
    conv = wait_for(lambda: (c := _sale_state(client, r.json()["eventId"]))["state"] == "dead" and c)
    assert conv["reason"] == "max_attempts"
    assert len(receiver.requests) == 3


def test_retry_after_in_seconds_is_honoured(make_client: Any, receiver: Any) -> None:
    receiver.script.append((429, {"Retry-After": "1"}))
    client = make_client(forwarder={"base_delay_s": 0.01, "max_delay_s": 5})
    post_stripe(client, fixture("stripe", "checkout.session.completed"))
    wait_for(receiver.delivered)
    first, second = receiver.requests[:2]
    assert second.at - first.at >= 1.0


def test_dubs_millisecond_retry_after_is_a_moment_not_an_hour(make_client: Any, receiver: Any) -> None:
    """Dub sends `Retry-After` as a Unix time in ms (apps/web/lib/auth/workspace.ts); read as
    seconds it would be capped at max_delay_s and the sale would wait for the full hour."""
    at = str(int((time.time() + 1.5) * 1000))
    receiver.script.append((429, {"Retry-After": at, "X-RateLimit-Reset": at}))
    client = make_client(forwarder={"base_delay_s": 0.01, "max_delay_s": 3600})
    post_stripe(client, fixture("stripe", "checkout.session.completed"))
    wait_for(receiver.delivered, timeout=10)
    first, second = receiver.requests[:2]
    assert 1.0 <= second.at - first.at < 5


def test_a_retry_after_on_a_success_is_not_a_reason_to_wait(make_client: Any, receiver: Any) -> None:
    later = str(int((time.time() + 600) * 1000))
    receiver.respond = lambda kind, body: (200, {"Retry-After": later})
    client = make_client()
    post_stripe(client, fixture("stripe", "customer.created"))
    post_stripe(client, fixture("stripe", "invoice.paid"))
    wait_for(lambda: len(receiver.delivered()) == 2, timeout=5)


def test_a_refused_key_pauses_the_destination_and_dead_letters_nothing(make_client: Any, receiver: Any) -> None:
    receiver.script.extend([(401, {})] * 3)
    client = make_client(forwarder={"pause_probe_s": 0.3, "max_attempts": 2})
    for n in range(3):
        event = fixture("stripe", "checkout.session.completed")
        event["id"] = f"evt_pause_{n}"
        event["data"]["object"]["payment_intent"] = f"pi_pause_{n}"
        post_stripe(client, event)
    metrics = wait_for(lambda: (m := client.get("/metrics").text) and
                       'hooktrack_destination_paused{destination="dub"} 1.0' in m and m)
    assert 'hooktrack_deliveries{state="dead"} 0.0' in metrics
    wait_for(lambda: len(receiver.delivered()) == 3, timeout=10)
    statuses = [r.status for r in receiver.requests]
    assert statuses[:3] == [401, 401, 401]  # one probe at a time while paused
    assert 'hooktrack_destination_paused{destination="dub"} 0.0' in client.get("/metrics").text


def test_a_requests_timeout_counts_its_own_time_not_the_wait_for_a_connection(
        make_client: Any, receiver: Any) -> None:
    """With aiohttp's `total` timeout the wait for a pooled connection counted: against an API
    answering in 1.2 s with timeout_s = 2 and 4 connections, a third of the sales timed out and
    were sent twice though the API was healthy."""
    receiver.delay_s = 1.2
    client = make_client(tracking={"timeout_s": 2}, forwarder={"concurrency": 4, "max_attempts": 1})
    for n in range(12):
        event = fixture("stripe", "checkout.session.completed")
        event["id"] = f"evt_slow_{n}"
        event["data"]["object"]["payment_intent"] = f"pi_slow_{n}"
        post_stripe(client, event)
    wait_for(lambda: len(receiver.requests) >= 12, timeout=30)
    time.sleep(0.5)
    assert len(receiver.requests) == 12 and len(receiver.by_key()) == 12  # each once, none refused


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
    receiver.respond = lambda kind, body: (422, {}) if kind == "lead" else None  # a defect: dead at once
    post_stripe(client, fixture("stripe", "customer.created"))
    post_stripe(client, fixture("stripe", "invoice.paid"))
    sale = sent_once(receiver)
    assert sale.kind == "sale" and sale.body["customerExternalId"] == "user_43"


def test_backoff_is_full_jitter_capped_and_floored_by_retry_after() -> None:
    settings = ForwarderSettings(base_delay_s=1, max_delay_s=60)
    rng = random.Random(7)
    delays = [backoff_delay(5, settings, None, rng) for _ in range(2000)]
    assert 0 <= min(delays) < 1 and 15 < max(delays) <= 16  # uniform in [0, 16]
    assert all(d <= 60 for d in (backoff_delay(40, settings, None, rng) for _ in range(100)))
    assert backoff_delay(1, settings, 30, rng) >= 30
    assert backoff_delay(1, settings, 7200, rng) == 60


@pytest.mark.parametrize(("lease_s", "timeout_s", "rounds"), [(60, 10, 4), (60, 30, 1), (35, 10, 3), (3, 30, 1)])
def test_claims_never_hold_more_than_the_lease_can_cover(lease_s: float, timeout_s: float, rounds: int) -> None:
    from adapter.destinations.dub import DubDestination
    from adapter.forwarder import Forwarder
    from adapter.settings import TrackingSettings

    tracking = TrackingSettings(url="http://127.0.0.1:9", api_key="k", timeout_s=timeout_s)
    fwd = Forwarder(None, tracking, ForwarderSettings(lease_s=lease_s), DubDestination(tracking))  # type: ignore[arg-type]
    assert fwd.rounds == rounds


def _window_tries(fwd: Any, created_at: int, window_until: int, now: int) -> list[int]:
    """When a Sale the API keeps answering `sale: null` is sent, from `now` until its window ends."""
    from adapter.records import Claimed

    tries = [now]
    while now < window_until:
        now += fwd._window_delay(Claimed(1, 1, "sale", "stripe", "{}", 0, created_at, window_until), now)
        tries.append(now)
    return tries


def test_a_sale_dub_never_counts_is_tried_a_few_dozen_times_a_day_mostly_early_and_last_at_the_window_end() -> None:
    """An organic buyer's Sale is answered `sale: null` all day: each try is a request against the
    API's rate limit, so they thin out with the Sale's age (they were ~59 a day with an hourly cap)."""
    from adapter.destinations.dub import DubDestination
    from adapter.forwarder import Forwarder
    from adapter.settings import TrackingSettings

    tracking = TrackingSettings(url="http://127.0.0.1:9", api_key="k")
    fwd = Forwarder(None, tracking, ForwarderSettings(), DubDestination(tracking))  # type: ignore[arg-type]
    day, made = 86_400_000, 1_800_000_000_000
    random.seed(11)
    runs = [_window_tries(fwd, made, made + day, made) for _ in range(200)]
    counts = sorted(len(t) for t in runs)
    assert counts[0] >= 15 and counts[-1] <= 30, counts
    for tries in runs:
        assert tries[-1] == made + day  # the last try is at the window's end, not after it
        assert sum(1 for t in tries if t - made <= 60_000) >= 5  # the API's lag is seconds: tried early
        assert all(b - a >= 500 for a, b in itertools.pairwise(tries[:-1]))  # base_delay_s, jittered
    # A replay opens a fresh window for an old conversion: it is tried early again, not once a day.
    replayed = made + 30 * day
    tries = _window_tries(fwd, made, replayed + day, replayed)
    assert sum(1 for t in tries if t - replayed <= 60_000) >= 5
