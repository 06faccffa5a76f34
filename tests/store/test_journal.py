"""The operator's read models (journal, stats) on both engines, over really ingested events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import stripe
from starlette.datastructures import Headers

from adapter.ingest import now_ms
from adapter.journal import dead_conversion_ids, journey, list_events, outbox_summary, parse_since, requeue
from adapter.records import Attempt, DestinationState, Settlement
from adapter.stats import hourly, stats
from adapter.store import Tx
from tests.conftest import fixture
from tests.store.conftest import Harness
from tests.store.test_contract import dub, receive_all, signed, stripe_source


def _forged(event: dict[str, Any]) -> tuple[bytes, Headers]:
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, "whsec_not_the_secret")
    return body.encode(), Headers({"stripe-signature": header})


def _ingest_a_day(store: Harness, tmp_path: Path) -> dict[str, Any]:
    """A purchase (then dead-lettered with a 422), its redelivery, a setup-mode checkout
    (ignored), a forged delivery (rejected)."""
    source = stripe_source(tmp_path)
    purchase = signed(fixture("stripe", "checkout.session.completed"))
    answers = []
    for delivery in (purchase, purchase, signed(fixture("stripe", "checkout.session.completed+setup")),
                     _forged(fixture("stripe", "customer.created"))):
        answers += receive_all(store, source, [delivery])  # one at a time: ids in this order
    sale_id = answers[0]["conversions"][0]["id"]

    def dead_letter(tx: Tx) -> None:
        claimed = tx.claim("dub", "w1", now_ms(), 60_000, 10)
        assert [c.conversion_id for c in claimed] == [sale_id]
        answer = '{"error": "unknown customer"}'
        tx.settle("w1", now_ms(), [Settlement(claimed[0].id, "dead", "http_422", now_ms(), 422, answer)],
                  [Attempt(claimed[0].id, sale_id, 422, 12, "dead", None, answer)])

    store.tx(dead_letter)
    return {"answers": answers, "sale_id": sale_id, "purchase_event": answers[0]["eventId"]}


def test_events_filter_by_status_source_state_and_since(store: Harness, tmp_path: Path) -> None:
    day = _ingest_a_day(store, tmp_path)
    everything = store.read(lambda tx: list_events(tx))
    assert [e["status"] for e in everything] == ["rejected", "ignored", "duplicate", "accepted"]
    assert everything[0]["reason"] == "invalid_signature"
    assert everything[1]["reason"] == "setup_mode"
    # the redelivery shows what became of the original's conversion
    assert everything[2]["conversions"][0]["id"] == day["sale_id"]
    dead = store.read(lambda tx: list_events(tx, state="dead"))
    assert [e["status"] for e in dead] == ["duplicate", "accepted"]
    assert store.read(lambda tx: list_events(tx, status="ignored", source="stripe"))[0]["reason"] == "setup_mode"
    assert store.read(lambda tx: list_events(tx, source="paddle")) == []
    assert store.read(lambda tx: list_events(tx, since_ms=now_ms() + 60_000)) == []
    assert len(store.read(lambda tx: list_events(tx, limit=2))) == 2


def test_journey_tells_why_and_every_attempt(store: Harness, tmp_path: Path) -> None:
    day = _ingest_a_day(store, tmp_path)
    ev = store.read(lambda tx: journey(tx, day["purchase_event"], dub(tmp_path)))
    assert ev is not None and ev["livemode"] is False and json.loads(ev["body"])["type"] == "checkout.session.completed"
    (conv,) = ev["conversions"]
    assert conv["state"] == "dead" and conv["reason"] == "http_422" and "replay" in conv["reason_text"]
    assert conv["destination"] == "dub" and conv["record"]["event_name"] == "Purchase"
    assert conv["payload"]["eventName"] == "Purchase"  # the request Dub was sent
    assert conv["idempotency_key"].startswith("sale:stripe:")
    (attempt,) = conv["attempts_log"]
    assert attempt["status_code"] == 422 and attempt["latency_ms"] == 12 and "unknown customer" in attempt["response_excerpt"]
    rejected = store.read(lambda tx: list_events(tx, status="rejected"))[0]
    shown = store.read(lambda tx: journey(tx, rejected["id"]))
    assert shown is not None and shown["body"] is None and "not stored" in shown["reason_text"]


def test_stats_count_sources_statuses_outbox_and_dead_letters(store: Harness, tmp_path: Path) -> None:
    _ingest_a_day(store, tmp_path)
    counts = store.read(lambda tx: stats(tx, now_ms()))
    assert counts["events"] == {"accepted": 1, "duplicate": 1, "ignored": 1, "rejected": 1}
    assert counts["sources"]["stripe"]["events"]["accepted"] == 1 and counts["sources"]["stripe"]["dead"] == 1
    assert counts["rejected"] == {"invalid_signature": 1}
    assert counts["conversions"] == {"sale": {"dead": 1}}
    assert counts["outbox"] == {"pending": 0, "dead": 1, "oldest_pending_age_s": None}
    assert counts["destinations"] == []  # never paused
    assert store.read(outbox_summary) == {"dead": 1}
    later = store.read(lambda tx: stats(tx, now_ms(), since_ms=now_ms() + 60_000))
    assert later["events"]["accepted"] == 0 and later["outbox"]["dead"] == 1  # the outbox is always now


def test_stats_say_why_a_destination_is_paused_and_unattributed_is_its_own_state(
        store: Harness, tmp_path: Path) -> None:
    day = _ingest_a_day(store, tmp_path)
    at = now_ms()
    store.tx(lambda tx: tx.set_destination_state(DestinationState("dub", "http_401: Unauthorized", at, at + 60_000, 1),
                                                 at))
    store.tx(lambda tx: tx.execute("UPDATE deliveries SET state = 'unattributed', reason = 'customer_not_found' "
                                   "WHERE conversion_id = ?", (day["sale_id"],)))
    counts = store.read(lambda tx: stats(tx, now_ms()))
    assert counts["destinations"] == [{"name": "dub", "paused_reason": "http_401: Unauthorized", "paused_at": at,
                                       "next_probe_at": at + 60_000, "failures": 1}]
    assert counts["conversions"] == {"sale": {"unattributed": 1}}
    assert counts["outbox"] == {"pending": 0, "dead": 0, "oldest_pending_age_s": None}
    assert store.read(outbox_summary) == {"unattributed": 1}
    (conv,) = store.read(lambda tx: journey(tx, day["purchase_event"]))["conversions"]  # type: ignore[index]
    assert conv["state"] == "unattributed" and "counted nothing" in conv["reason_text"]
    assert "payload" not in conv  # no destination given: the neutral record only
    assert store.read(lambda tx: list_events(tx, state="unattributed"))[-1]["id"] == day["purchase_event"]


def test_hourly_buckets_accepted_ignored_and_failed(store: Harness, tmp_path: Path) -> None:
    _ingest_a_day(store, tmp_path)
    hours = store.read(lambda tx: hourly(tx, now_ms(), hours=3))
    assert len(hours) == 3 and hours[0]["start"] < hours[-1]["start"]
    last = hours[-1]
    assert (last["accepted"], last["ignored"], last["rejected"], last["dead"], last["failed"]) == (1, 1, 1, 1, 2)
    assert hours[0]["accepted"] == 0


def test_requeue_moves_only_dead_conversions(store: Harness, tmp_path: Path) -> None:
    day = _ingest_a_day(store, tmp_path)
    assert store.read(lambda tx: dead_conversion_ids(tx, source="stripe")) == [day["sale_id"]]
    assert store.read(lambda tx: dead_conversion_ids(tx, since_ms=now_ms() + 60_000)) == []
    moved = store.tx(lambda tx: requeue(tx, [day["sale_id"], 999_999], now_ms()))
    assert moved == [day["sale_id"]]
    assert store.tx(lambda tx: requeue(tx, [day["sale_id"]], now_ms())) == []  # pending now: not dead
    counts = store.read(lambda tx: stats(tx, now_ms()))
    assert counts["outbox"]["pending"] == 1 and counts["outbox"]["dead"] == 0
    assert counts["outbox"]["oldest_pending_age_s"] is not None


def test_since_accepts_durations_dates_and_epoch_ms() -> None:
    now = 1_800_000_000_000
    assert parse_since("90m", now) == now - 90 * 60_000
    assert parse_since("2d", now) == now - 2 * 86_400_000
    assert parse_since("2027-01-15T08:00:00Z", now) == now
    assert parse_since("2027-01-15T09:00:00+01:00", now) == now
    assert parse_since("2027-01-15", now) == now - 8 * 3_600_000
    assert parse_since("1799971200000", now) == 1_799_971_200_000
    try:
        parse_since("yesterday", now)
    except ValueError as exc:
        assert "duration" in str(exc)
    else:
        raise AssertionError("parse_since accepted 'yesterday'")
