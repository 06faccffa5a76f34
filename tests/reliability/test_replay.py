"""Replay attacks on every installed provider: an old (or future) signature, a signature moved
onto another body, and the same delivery sent again.

A captured delivery is only worth something to an attacker if it can be replayed later or
reused for a body of their choosing. Schemes with a signed timestamp refuse the first outside
`tolerance_s`; every scheme that signs the body refuses the second; an identical replay inside
the window is a duplicate delivery and never a second conversion.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from starlette.testclient import TestClient

from adapter.receiver import TrackingReceiver
from tests.conftest import wait_for
from tests.reliability.sources import Candidate, Delivery, assert_nothing_kept, provider_params, source_of, tamper

TOLERANCE_S = 300


@pytest.fixture
def replayable(hooktrack: tuple[TestClient, Candidate]) -> tuple[TestClient, Delivery]:
    """The `hooktrack` of a provider whose samples we can sign (else the test is skipped)."""
    client, candidate = hooktrack
    delivery = Delivery(source_of(client, candidate))
    if not delivery.can_sign():
        pytest.skip(f"{candidate.name} has no samples or cannot sign them: no delivery to replay")
    return client, delivery


@pytest.mark.parametrize("hooktrack", provider_params(), indirect=True)
@pytest.mark.parametrize("age_s", [TOLERANCE_S + 60, 86_400, -(TOLERANCE_S + 60)], ids=["old", "day-old", "future"])
def test_signature_outside_the_tolerance_is_rejected(replayable: tuple[TestClient, Delivery], age_s: int,
                                                     tmp_path: Path, receiver: TrackingReceiver) -> None:
    client, delivery = replayable
    if not delivery.signs_timestamp():
        pytest.skip(f"{delivery.source.name} signs no timestamp: freshness cannot be checked")
    for sample in delivery.samples:
        signed_at = int(time.time()) - age_s
        _, body = delivery.body(sample, now=signed_at)
        r = client.post(delivery.path(), content=body, headers=delivery.headers(sample, body, timestamp=signed_at))
        assert r.status_code == 400, (sample, r.status_code, r.text)
        assert r.json()["error"]["code"] == "stale_timestamp", sample
    assert_nothing_kept(client, tmp_path / "hooktrack.db", receiver)


@pytest.mark.parametrize("hooktrack", provider_params(), indirect=True)
def test_signature_inside_the_tolerance_is_accepted(replayable: tuple[TestClient, Delivery]) -> None:
    """The other side of the window: a delivery signed 4 minutes ago (a provider's retry
    queue, a slow network) still verifies, so the stale check is about time, not luck."""
    client, delivery = replayable
    if not delivery.signs_timestamp():
        pytest.skip(f"{delivery.source.name} signs no timestamp")
    signed_at = int(time.time()) - (TOLERANCE_S - 60)
    sample, body = delivery.body(now=signed_at)
    r = client.post(delivery.path(), content=body, headers=delivery.headers(sample, body, timestamp=signed_at))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("hooktrack", provider_params(), indirect=True)
def test_signature_replayed_onto_another_body_is_rejected(replayable: tuple[TestClient, Delivery],
                                                          tmp_path: Path, receiver: TrackingReceiver) -> None:
    client, delivery = replayable
    if not delivery.signs_body():
        pytest.skip(f"{delivery.source.name} authenticates by credentials, not a signature over the body")
    for sample in delivery.samples:
        _, captured = delivery.body(sample)
        signature = delivery.sign(captured, int(time.time()))
        other_sample = next((s for s in delivery.samples if s != sample), sample)
        other = delivery.body(other_sample)[1]  # another genuine-looking delivery, never signed
        forgeries = [(other_sample, other), (sample, tamper(captured)), (sample, captured + b"\n"),
                     (sample, b" " + captured), *((sample, b) for b in _crossed_forms(captured, other))]
        for name, forged in forgeries:
            if forged == captured or delivery.verifies(forged, {}, delivery.query()):
                continue  # carries a genuine signature of its own (Braintree's is in the body)
            headers = {"Content-Type": "application/json", **delivery.provider.sample_headers(name, forged),
                       **signature}
            r = client.post(delivery.path(), content=forged, headers=headers)
            assert r.status_code == 400, (sample, forged[:300], r.status_code, r.text)
            # (`missing_signature` where the signature was a field of the body we rearranged)
            assert r.json()["error"]["code"] in ("invalid_signature", "missing_signature"), sample
    assert_nothing_kept(client, tmp_path / "hooktrack.db", receiver)


@pytest.mark.parametrize("hooktrack", provider_params(), indirect=True)
def test_identical_replay_is_a_duplicate_not_a_second_conversion(replayable: tuple[TestClient, Delivery],
                                                                 tmp_path: Path,
                                                                 receiver: TrackingReceiver) -> None:
    client, delivery = replayable
    for sample in delivery.samples:
        _, body = delivery.body(sample)
        headers = delivery.headers(sample, body)
        first = client.post(delivery.path(), content=body, headers=headers)
        assert first.status_code == 200, (sample, first.text)
        first_ids = _event_ids(delivery.outcome(first))
        for _ in range(3):
            again = client.post(delivery.path(), content=body, headers=headers)
            assert again.status_code == 200, (sample, again.text)
            answer = delivery.outcome(again)
            assert answer["status"] == "duplicate", (sample, answer)
            assert _event_ids(answer) == first_ids
    wait_for(lambda: _pending(tmp_path) == 0)
    time.sleep(0.3)
    # Sent once each; the only repeat is a Sale Dub answered `sale: null`, tried again within
    # the attribution window. Whatever Dub counted, it counted once.
    counted = {s.invoice_id for s in receiver.counted_sales()}
    for key, sent in receiver.by_key().items():
        if len(sent) > 1:
            assert all(r.kind == "sale" and r.body["invoiceId"] not in counted for r in sent), key
    invoices = [s.invoice_id for s in receiver.counted_sales()]
    assert len(invoices) == len(set(invoices)), invoices


def _crossed_forms(captured: bytes, other: bytes) -> list[bytes]:
    """For form bodies whose signature is a field (Braintree's `bt_signature`): the captured
    form with one field taken from another delivery, e.g. its signature over their payload."""
    try:
        mine = parse_qsl(captured.decode(), keep_blank_values=True, strict_parsing=True)
        theirs = dict(parse_qsl(other.decode(), keep_blank_values=True, strict_parsing=True))
    except ValueError:
        return []
    return [urlencode([(k, theirs[k] if k == swapped else v) for k, v in mine]).encode()
            for swapped, value in mine if theirs.get(swapped, value) != value]


def _pending(tmp_path: Path) -> int:
    import sqlite3

    with sqlite3.connect(tmp_path / "hooktrack.db") as conn:
        # Not yet sent at all: a Sale Dub did not count yet stays pending within its window.
        return int(conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending' "
                                "AND last_status IS NULL").fetchone()[0])


def _event_ids(answer: dict[str, Any]) -> list[int]:
    """The stored event ids an answer names: one, or one per event of a delivery of several."""
    if "events" in answer:
        return [e["eventId"] for e in answer["events"]]
    return [answer["eventId"]]
