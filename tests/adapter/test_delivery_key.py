"""Delivery-key dedup (`ProviderEvent.delivery_key`) against PayPal's CRC32 replay.

PayPal signs `transmission_id|time|webhook_id|crc32(body)`, so whoever captures one genuine
delivery can rewrite its body to the same CRC32 and replay it under the same headers. Here the
forgery is built for real (a new event id, capture id and amount, with 64 letters inside a JSON
string chosen to restore the CRC32), signed headers come from a certificate pinned in the source,
and the replay goes to a second hooktrack app on the same store (SQLite file, PostgreSQL schema)
whose process never saw the genuine delivery.
"""

from __future__ import annotations

import copy
import json
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest

from adapter.operate import reprocess
from adapter.store import Tx
from tests.conftest import config, fixture, sent_once
from tests.providers.test_paypal import PEM, WEBHOOK_ID, signed
from tests.store.conftest import Harness, migrated_pg_url, pg_database, pg_url, store, store_url  # noqa: F401

GENUINE = fixture("paypal", "PAYMENT.CAPTURE.COMPLETED")
BODY = json.dumps(GENUINE).encode()
MARKER = "@" * 64
PAYPAL = {"paypal": {"provider": "paypal", "webhook_id": WEBHOOK_ID, "pinned_certificates": [PEM.decode()]}}


def crc_collision(template: bytes, target: int, marker: bytes = MARKER.encode()) -> bytes:
    """`template` with `marker` rewritten to letters `a` / `c` so that its CRC32 is `target`.

    CRC32 is affine over GF(2): for messages of one length, flipping one bit changes the CRC by a
    mask that does not depend on the rest of the message. Flipping bit 1 of a letter turns `a`
    into `c`; the 64 masks of the marker's letters span all 32 bits, so the flips that add up
    to `crc ^ target` are found by Gaussian elimination."""
    at = template.index(marker)
    base = bytearray(template[:at] + b"a" * len(marker) + template[at + len(marker):])
    start = zlib.crc32(base)

    def mask(i: int) -> int:
        flipped = bytearray(base)
        flipped[at + i] ^= 0x02
        return zlib.crc32(flipped) ^ start

    basis: dict[int, tuple[int, int]] = {}  # highest bit -> (mask, the letters flipped for it)
    for i in range(len(marker)):
        vector, letters = mask(i), 1 << i
        for bit in range(31, -1, -1):
            if not vector >> bit & 1:
                continue
            if bit not in basis:
                basis[bit] = (vector, letters)
                break
            vector, letters = vector ^ basis[bit][0], letters ^ basis[bit][1]
    want, flips = start ^ target, 0
    for bit in range(31, -1, -1):
        if want >> bit & 1:
            want, flips = want ^ basis[bit][0], flips ^ basis[bit][1]
    assert want == 0, "the marker's letters do not span CRC32"
    for i in range(len(marker)):
        if flips >> i & 1:
            base[at + i] ^= 0x02
    forged = bytes(base)
    assert zlib.crc32(forged) == target
    return forged


def forged_capture() -> bytes:
    """Another capture of another amount, with ids of its own, under the genuine body's CRC32."""
    event = copy.deepcopy(GENUINE)
    event["id"] = "WH-FORGED0000000000-000000000000000000"
    event["resource"]["id"] = "FORGEDCAPTURE0001"
    event["resource"]["amount"]["value"] = "999.00"
    event["resource"]["note_to_payer"] = MARKER
    return crc_collision(json.dumps(event).encode(), zlib.crc32(BODY))


def post(client: Any, body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/webhooks/paypal", content=body, headers={**headers, "Content-Type": "application/json"})


def stored(client: Any, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return client.portal.call(client.app.state.store.read,  # type: ignore[no-any-return]
                              lambda tx: tx.all(sql, params))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_section(request: pytest.FixtureRequest) -> dict[str, Any]:
    """No override (the tests' SQLite file, shared by every app of a test), or a PostgreSQL schema."""
    if request.param == "sqlite":
        return {}
    return {"store": {"url": request.getfixturevalue("migrated_pg_url")}}


def test_the_forgery_really_collides_and_would_count_as_a_sale() -> None:
    forged = forged_capture()
    assert zlib.crc32(forged) == zlib.crc32(BODY) and forged != BODY
    event = json.loads(forged)
    assert (event["id"], event["resource"]["id"], event["resource"]["amount"]["value"]) == (
        "WH-FORGED0000000000-000000000000000000", "FORGEDCAPTURE0001", "999.00")


def test_a_crc_collided_body_replayed_to_another_replica_is_refused_and_never_counted(
        make_client: Any, receiver: Any, store_section: dict[str, Any]) -> None:
    first = make_client(sources=PAYPAL, **store_section)
    second = make_client(sources=PAYPAL, **store_section)  # another process: it saw nothing of the first
    headers = signed(BODY)
    assert post(first, BODY, headers).json()["status"] == "accepted"

    forged = forged_capture()
    for replica in (second, first):
        r = post(replica, forged, headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "replayed_transmission"

    # PayPal's own redelivery, to either replica: the same transmission id and body, or a new
    # transmission of the same event (PayPal's docs do not say which a retry is): a duplicate.
    assert post(second, BODY, headers).json()["status"] == "duplicate"
    assert post(second, BODY, signed(BODY)).json()["status"] == "duplicate"

    rows = stored(second, "SELECT status, reason, body, dedup_key FROM events "
                          "WHERE provider_event_id = 'WH-FORGED0000000000-000000000000000000'")
    assert rows == [("rejected", "replayed_transmission", None, None)] * 2
    assert stored(second, "SELECT kind, business_key FROM conversions") == [("sale", "sale:42311647XV020574X")]
    sale = sent_once(receiver)
    assert (sale.body["invoiceId"], sale.body["amount"]) == ("42311647XV020574X", 4999)

    # The refused body, had PayPal truly sent it under a transmission of its own, is a Sale:
    # what was refused above was the replay, not the body.
    assert post(second, forged, signed(forged)).json()["status"] == "accepted"
    assert len(stored(first, "SELECT id FROM conversions")) == 2


def test_a_delivery_key_is_claimed_per_source(make_client: Any) -> None:
    """The same transmission id under two sources (two PayPal webhooks) claims nothing of the other."""
    both = {**PAYPAL, "paypal2": {**PAYPAL["paypal"]}}
    client = make_client(sources=both)
    tid = str(uuid.uuid1())
    assert post(client, BODY, signed(BODY, transmission_id=tid)).json()["status"] == "accepted"
    other = json.loads(forged_capture())
    other["resource"]["note_to_payer"] = "x"
    body = json.dumps(other).encode()
    r = client.post("/webhooks/paypal2", content=body, headers=signed(body, transmission_id=tid))
    assert r.json()["status"] == "accepted", r.text


def test_reprocess_of_a_stored_paypal_event_is_not_refused_by_its_own_claim(
        make_client: Any, receiver: Any, tmp_path: Path) -> None:
    client = make_client(sources=PAYPAL)
    untracked = copy.deepcopy(GENUINE)
    untracked.update(id="WH-UNTRACKED", event_type="CHECKOUT.ORDER.APPROVED")
    other = json.dumps(untracked).encode()
    sale_event = post(client, BODY, signed(BODY)).json()["eventId"]
    ignored_event = post(client, other, signed(other)).json()["eventId"]

    settings = config(tmp_path, receiver.url, sources=PAYPAL)  # type: ignore[attr-defined]
    report = reprocess(settings, [sale_event, ignored_event])
    assert report.results[sale_event]["status"] == "duplicate"  # the Sale is counted once, by its invoice
    assert report.results[sale_event]["reason"] == "business_key"
    assert report.results[ignored_event]["status"] == "ignored"
    assert report.results[ignored_event]["reason"] == "event_type_not_tracked"
    assert len(stored(client, "SELECT id FROM conversions")) == 1


def test_concurrent_claims_of_one_key_have_one_winner(store: Harness) -> None:  # noqa: F811
    digests = [f"{n:064x}" for n in range(8)]
    won = store.concurrently([lambda tx, d=d: tx.claim_delivery_key("paypal", "tid-1", d, 1) for d in digests])
    assert sorted(won) == [False] * 7 + [True]
    winner = digests[won.index(True)]

    def again(tx: Tx) -> list[bool]:
        return [tx.claim_delivery_key("paypal", "tid-1", d, 2) for d in digests]

    assert store.tx(again) == [d == winner for d in digests]  # the same body again passes, no other
    assert store.tx(lambda tx: tx.claim_delivery_key("other", "tid-1", digests[0], 3))  # per source


def test_delivery_rows_are_not_read_as_sales_or_leads(store: Harness) -> None:  # noqa: F811
    """`business_keys` rows of a delivery key never answer a Sale's or a Lead's claim, and survive
    pruning (business keys are never pruned)."""
    store.tx(lambda tx: tx.claim_delivery_key("paypal", "sale:in_1", "0" * 64, 1))
    assert store.tx(lambda tx: tx.claim_business_key("paypal", "sale:in_1", 2)) is None
    assert store.tx(lambda tx: tx.prune_events(10**15, 100)) == 0
    keys = store.read(lambda tx: tx.all("SELECT key FROM business_keys WHERE source = 'paypal' ORDER BY key"))
    assert [k for (k,) in keys] == [f"delivery-body:{'0' * 64}:sale:in_1", "delivery:sale:in_1", "sale:in_1"]

