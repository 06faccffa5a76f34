"""The operator's read models (journal, stats) on both engines, over really ingested events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import stripe
from starlette.datastructures import Headers

from adapter.ingest import now_ms
from adapter.journal import dead_conversion_ids, journey, list_events, parse_since, requeue
from adapter.stats import hourly, stats
from adapter.store import Tx
from tests.conftest import fixture
from tests.store.conftest import Harness
from tests.store.test_contract import receive_all, signed, stripe_source


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
        claimed = tx.claim("w1", now_ms(), 60_000, 10)
        assert [c.id for c in claimed] == [sale_id]
        tx.record_attempt(sale_id, now_ms(), 422, 12, "dead", None, '{"error": "unknown customer"}')
        tx.finish(sale_id, "w1", "dead", "http_422", now_ms(), now_ms(), 422, '{"error": "unknown customer"}')

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
    ev = store.read(lambda tx: journey(tx, day["purchase_event"]))
    assert ev is not None and ev["livemode"] is False and json.loads(ev["body"])["type"] == "checkout.session.completed"
    (conv,) = ev["conversions"]
    assert conv["state"] == "dead" and conv["reason"] == "http_422" and "replay" in conv["reason_text"]
    assert conv["payload"]["eventName"] == "Purchase"
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
    later = store.read(lambda tx: stats(tx, now_ms(), since_ms=now_ms() + 60_000))
    assert later["events"]["accepted"] == 0 and later["outbox"]["dead"] == 1  # the outbox is always now


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
