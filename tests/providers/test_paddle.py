"""Paddle Billing: signatures (Paddle's published test vector), mapping, and flows through the core."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Lead, Refund, Sale
from adapter.ingest import parse_event
from adapter.testing import ProviderContract, Vector, make_source
from providers.paddle import PaddleProvider
from tests.conftest import fixture, sent_once
from tests.providers.flow import mapped, one

SECRET = "pdl_ntfset_01jr2k0a1b2c3d4e5f6g7h8j9k_Yc3Xq9vTn2LmR8sKp4Wz6Hb1Jd5Fg7Ae"
OTHER = "pdl_ntfset_01jr2k0a1b2c3d4e5f6g7h8j9k_someone-elses-secret-000000"


class TestPaddleContract(ProviderContract):
    provider_class = PaddleProvider
    secret = SECRET
    other_secret = OTHER

    def vectors(self) -> list[Vector]:
        return [Vector(VECTOR_BODY, {"Paddle-Signature": VECTOR_HEADER}, VECTOR_SECRETS[2], decoys=VECTOR_SECRETS[:2],
                       where="paddle-python-sdk tests/Unit/Notification/test_Verifier.py"),
                Vector(VECTOR_BODY, {"Paddle-Signature": VECTOR_HEADER.replace("h1=dummy;", "")}, VECTOR_SECRETS[2],
                       timestamp=1696195954, where="the same, without its decoy h1")]


def header(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    ts = int(time.time()) if timestamp is None else timestamp
    src = make_source(PaddleProvider(), [secret], name="paddle")
    return PaddleProvider().sign(body, secret, ts, src.ctx)["Paddle-Signature"]


def verify(body: bytes, value: str | None, secrets: list[str] | None = None, **settings: Any) -> None:
    src = make_source(PaddleProvider(), secrets or [SECRET], name="paddle", **settings)
    src.provider.verify(body, Headers({"Paddle-Signature": value} if value is not None else {}), src.secrets, src.ctx)


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET, timestamp: int | None = None) -> Any:
    body = json.dumps(event).encode()
    return client.post("/webhooks/paddle", content=body,
                       headers={"Paddle-Signature": header(body, secret, timestamp), "Content-Type": "application/json"})


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"paddle": {"provider": "paddle", "secrets": [SECRET]}})


BODY = json.dumps(fixture("paddle", "transaction.completed")).encode()

# -- signatures ---------------------------------------------------------------------------------

# Published vector from Paddle's Python SDK, tests/Unit/Notification/test_Verifier.py
# (PaddleHQ/paddle-python-sdk): body "hello-world", three candidate secrets of which the third
# signed it, and a header carrying a bogus h1 before the real one.
VECTOR_BODY = b"hello-world"
VECTOR_HEADER = "ts=1696195954;h1=dummy;h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02"
VECTOR_SECRETS = [
    "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_TjIG2BXbm83HPXqNfziwe506sBEdqL/4",
    "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_vB/yIOnTOCWIvpBadM5jzBZPHc7OmdSo",
    "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh",
]


def test_paddle_sdk_test_vector_verifies() -> None:
    verify(VECTOR_BODY, VECTOR_HEADER, VECTOR_SECRETS, tolerance_s=10**10)  # the SDK test skips the clock too
    with pytest.raises(SignatureError) as caught:
        verify(VECTOR_BODY, VECTOR_HEADER, VECTOR_SECRETS[:2], tolerance_s=10**10)
    assert caught.value.code == "invalid_signature"


def test_paddle_sdk_test_vector_is_stale_today() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(VECTOR_BODY, VECTOR_HEADER, VECTOR_SECRETS)
    assert caught.value.code == "stale_timestamp"


def test_our_signer_reproduces_the_sdk_vector() -> None:
    assert header(VECTOR_BODY, VECTOR_SECRETS[2], 1696195954) == (
        "ts=1696195954;h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02"
    )


@pytest.mark.parametrize(
    ("value", "code"),
    [(None, "missing_signature"), ("", "missing_signature"), ("ts=123", "missing_signature"),
     ("h1=abc", "invalid_signature"), ("garbage", "invalid_signature"), ("ts=abc;h1=abc", "invalid_signature")],
)
def test_malformed_signature_headers_have_clear_codes(value: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, value)
    assert caught.value.code == code


def test_signature_over_a_dot_instead_of_a_colon_is_rejected() -> None:
    ts = int(time.time())
    stripe_style = hmac.new(SECRET.encode(), f"{ts}.".encode() + BODY, hashlib.sha256).hexdigest()
    with pytest.raises(SignatureError) as caught:
        verify(BODY, f"ts={ts};h1={stripe_style}")
    assert caught.value.code == "invalid_signature"
    assert SECRET not in caught.value.message


def test_rotated_secrets_and_several_h1_values() -> None:
    ts = int(time.time())
    good = header(BODY, timestamp=ts).split("h1=")[1]
    verify(BODY, f"ts={ts};h1={'0' * 64};h1={good}", secrets=[OTHER, SECRET])


@pytest.mark.parametrize("age", [301, -301])
def test_default_tolerance_is_300_seconds_both_ways(age: int) -> None:
    verify(BODY, header(BODY, timestamp=int(time.time()) - 60))  # a minute of skew or queueing passes
    with pytest.raises(SignatureError) as caught:
        verify(BODY, header(BODY, timestamp=int(time.time()) - age))
    assert caught.value.code == "stale_timestamp"


def test_tolerance_follows_the_source_setting() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, header(BODY, timestamp=int(time.time()) - 30), tolerance_s=5)
    assert caught.value.code == "stale_timestamp"


def test_missing_header_over_http_is_a_400_with_code(client: Any) -> None:
    r = client.post("/webhooks/paddle", content=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"


def test_forged_webhook_is_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("paddle", "transaction.completed"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    time.sleep(0.2)
    assert receiver.requests == []


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_transaction_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    r = post(client, fixture("paddle", "transaction.completed"))
    assert r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.kind == "sale"
    assert sale.headers["idempotency-key"] == "sale:paddle:txn_01hv8wptq8987qeep44cyrewp9"
    body = sale.body
    assert body["eventName"] == "Purchase"
    assert body["invoiceId"] == "txn_01hv8wptq8987qeep44cyrewp9"
    assert body["customerExternalId"] == "user_42"
    assert body["clickId"] == "cl_paddle_txn"


# -- mapping: parse + map, no HTTP ----------------------------------------------------------------


def source(**settings: Any) -> Any:
    return make_source(PaddleProvider(), [SECRET], name="paddle", **settings)


def test_one_time_transaction_is_a_purchase_after_discount_and_tax() -> None:
    sale = one(source(), fixture("paddle", "transaction.completed"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 8000, "usd")  # 10000 − 2000 discount; 9600 − 1600 tax
    assert sale.invoice_id == "txn_01hv8wptq8987qeep44cyrewp9" and sale.subscription_id is None
    assert (sale.external_id, sale.click_id) == ("user_42", "cl_paddle_txn")
    assert sale.provider_customer_id == "ctm_01hv6y1jedq4p1n0yqn5ba3ky4"
    assert sale.timestamp is None  # the event's occurred_at is the conversion's time
    assert parse_event(source(), BODY, Headers({})).occurred_at.isoformat(timespec="milliseconds") == (
        "2024-04-12T10:18:50.100+00:00")
    assert sale.metadata["taxAmount"] == 1600
    assert parse_event(source(), BODY, Headers({})).livemode is None  # Paddle bodies carry no live/test flag


def _txn(name: str = "transaction.completed+subscription", event_id: str = "evt_x", **changes: Any) -> dict[str, Any]:
    event = fixture("paddle", name)
    event["event_id"] = event_id
    event["data"].update(changes)
    return event


def paddle_flow(make_flow: Any, **settings: Any) -> Any:
    return make_flow(PaddleProvider(), [SECRET], lambda body: {"Paddle-Signature": header(body)}, **settings)


def test_subscription_transactions_are_creation_then_renewal(make_flow: Any) -> None:
    flow = paddle_flow(make_flow)
    assert flow.receive(_txn(event_id="evt_first"))["status"] == "accepted"
    renewal = _txn(event_id="evt_second", id="txn_01hv8renewal000000000000000", origin="subscription_recurring")
    assert flow.receive(renewal)["status"] == "accepted"
    names = {s.invoice_id: s.event_name for s in flow.stored()}
    assert names == {"txn_01hv8x2mfd5p3r4t6v8w0y2z4a": "Subscription creation",
                     "txn_01hv8renewal000000000000000": "Subscription renewal"}
    first = one(source(), _txn())
    assert isinstance(first, Sale) and (first.kind, first.amount, first.currency) == ("subscription", 3000, "eur")
    assert first.subscription_id == first.metadata["subscriptionId"] == "sub_01hv8x29kz0t586xy6zn1a62ny"


@pytest.mark.parametrize("origin", ["subscription_update", "subscription_charge"])
def test_mid_cycle_charges_are_subscription_updates(make_flow: Any, origin: str) -> None:
    sale = one(source(), _txn(origin=origin))
    assert isinstance(sale, Sale) and sale.kind == "subscription_update" and sale.metadata["origin"] == origin
    flow = paddle_flow(make_flow)
    [stored] = flow.stored(flow.receive(_txn(origin=origin)))
    assert stored.event_name == "Subscription update"


@pytest.mark.parametrize(
    ("currency", "totals", "expected"),
    [
        ("JPY", {"subtotal": "5000", "discount": "0", "tax": "500", "total": "5500"}, 5000),
        ("KWD", {"subtotal": "12340", "discount": "0", "tax": "1230", "total": "13570"}, 12340),
        # $100 + 20% tax = $120, a $90 credit from the balance: $30 charged, $5 of it tax.
        ("USD", {"subtotal": "10000", "tax": "2000", "total": "12000", "credit": "9000",
                 "grand_total": "3000", "grand_total_tax": "500"}, 2500),
        # Before Paddle sent grand_total_tax, all of the tax is taken from what was charged.
        ("USD", {"subtotal": "10000", "tax": "2000", "total": "12000", "credit": "9000",
                 "grand_total": "3000", "grand_total_tax": None}, 1000),
    ],
)
def test_amounts_are_exact_minor_units_excluding_tax(currency: str, totals: dict[str, Any], expected: int) -> None:
    event = fixture("paddle", "transaction.completed")
    event["data"]["currency_code"] = currency
    target = event["data"]["details"]["totals"]
    target.update({**totals, "currency_code": currency})
    for key in [k for k, v in totals.items() if v is None]:
        del target[key]
    sale = one(source(), event)
    assert isinstance(sale, Sale) and (sale.amount, sale.currency) == (expected, currency.lower())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"details": {"totals": {"subtotal": "0", "discount": "0", "tax": "0", "total": "0", "credit": "0",
                                 "grand_total": "0", "currency_code": "USD"}}}, "zero_amount"),
        ({"status": "billed"}, "unpaid"),
    ],
)
def test_uncountable_transactions_are_ignored_with_reasons(make_flow: Any, change: dict[str, Any], reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        mapped(source(), _txn("transaction.completed", **change))
    assert caught.value.reason == reason
    flow = paddle_flow(make_flow)
    answer = flow.receive(_txn("transaction.completed", **change))
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


@pytest.mark.parametrize("event_type", ["transaction.paid", "customer.updated", "subscription.activated"])
def test_untracked_event_types_are_ignored(event_type: str) -> None:
    event = fixture("paddle", "transaction.completed")
    event["event_type"] = event_type
    assert mapped(source(), event) == []


def test_amount_that_is_not_minor_units_is_a_400(client: Any) -> None:
    event = fixture("paddle", "transaction.completed")
    event["data"]["details"]["totals"]["total"] = "96.00"
    with pytest.raises(PayloadError):
        mapped(source(), event)
    r = post(client, event)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_redelivery_and_other_destinations_copy_are_duplicates(make_flow: Any) -> None:
    flow = paddle_flow(make_flow)
    event = fixture("paddle", "transaction.completed")
    first = flow.receive(event)
    assert flow.receive(event) == {"status": "duplicate", "eventId": first["eventId"]}
    # A second notification destination gets the same event_id under another notification_id.
    event["notification_id"] = "ntf_01hv8xotherdestination000000"
    assert flow.receive(event)["status"] == "duplicate"
    assert [s.state for s in flow.stored()] == ["pending"]


def test_customer_created_then_transaction_share_identity(make_flow: Any) -> None:
    flow = paddle_flow(make_flow)
    assert flow.receive(fixture("paddle", "customer.created"))["status"] == "accepted"
    sale = _txn(custom_data=None)  # a transaction carries only customer_id: no email, no user id
    assert flow.receive(sale)["status"] == "accepted"
    lead, paid = flow.stored()
    assert (lead.kind, paid.kind) == ("lead", "sale")
    assert lead.event_name == "Sign up" and lead.click_id == "cl_paddle_lead"
    assert paid.external_id == lead.external_id == "user_42"
    assert paid.email == "jo@example.com" and paid.name == "Jo Brown"
    assert paid.click_id == "cl_paddle_lead"  # remembered from the Lead


def test_customer_without_custom_data_is_known_by_its_paddle_id(make_flow: Any) -> None:
    flow = paddle_flow(make_flow, forward_leads_without_click_id=True)
    customer = fixture("paddle", "customer.created")
    customer["data"]["custom_data"] = None
    flow.receive(customer)
    flow.receive(_txn(custom_data=None))
    lead, paid = flow.stored()
    assert lead.external_id == paid.external_id == "ctm_01hv6y1jedq4p1n0yqn5ba3ky4"
    assert (lead.state, paid.state) == ("pending", "pending")
    assert paid.email == "jo@example.com"


def test_trialing_subscription_is_a_started_trial_lead(make_flow: Any) -> None:
    lead = one(source(), fixture("paddle", "subscription.created"))
    assert isinstance(lead, Lead) and lead.kind == "started_trial" and lead.click_id == "cl_paddle_trial"
    assert lead.metadata["subscriptionId"] == "sub_01hv8x29kz0t586xy6zn1a62ny"
    flow = paddle_flow(make_flow)
    flow.receive(fixture("paddle", "customer.created"))
    [trial] = flow.stored(flow.receive(fixture("paddle", "subscription.created")))
    assert trial.event_name == "Started Trial"
    assert trial.external_id == "user_42"  # the subscription has only customer_id


def test_active_subscription_created_is_not_a_lead() -> None:
    event = fixture("paddle", "subscription.created")
    event["data"]["status"] = "active"
    with pytest.raises(Ignore) as caught:
        mapped(source(), event)
    assert caught.value.reason == "not_trialing"


def test_paddle_events_pass_any_livemode_filter() -> None:
    assert len(mapped(source(livemode="live"), fixture("paddle", "transaction.completed"))) == 1


def test_a_renewal_of_a_subscription_hooktrack_never_saw_is_a_renewal(make_flow: Any) -> None:
    """SPEC §8: `origin: subscription_recurring` is a renewal even when it is the first payment
    of the subscription hooktrack sees (installed on an account with existing subscribers)."""
    flow = paddle_flow(make_flow)
    renewal = fixture("paddle", "transaction.completed+renewal")
    assert flow.receive(renewal)["status"] == "accepted"
    [stored] = flow.stored()
    assert stored.event_name == "Subscription renewal"


def test_a_trials_first_recurring_payment_is_the_creation(make_flow: Any) -> None:
    flow = paddle_flow(make_flow)
    trial = fixture("paddle", "subscription.created+trial")
    flow.receive(trial)
    first = _txn(event_id="evt_after_trial", origin="subscription_recurring",
                 subscription_id=trial["data"]["id"])
    assert flow.receive(first)["status"] == "accepted"
    [sale] = [s for s in flow.stored() if s.kind == "sale"]
    assert sale.event_name == "Subscription creation"


# --- refunds and chargebacks: adjustments (SPEC §9) ---------------------------------------------

TXN_ID = "txn_01hv8wptq8987qeep44cyrewp9"


def adjustment(name: str = "adjustment.updated", **changes: Any) -> dict[str, Any]:
    event = fixture("paddle", name)
    event["data"].update(changes)
    return event


def test_an_approved_partial_refund_is_a_refund_of_its_transaction_tax_included() -> None:
    refund = one(source(), adjustment())
    assert isinstance(refund, Refund)
    assert refund.reverses == (TXN_ID,)
    assert (refund.amount, refund.currency) == (1100, "usd")  # totals.total, tax included
    assert refund.includes_tax is True and refund.cumulative is False and refund.chargeback is False
    assert refund.refund_id == "adj_01jr3m7n8p9q0r1s2t3v4w5x6y"


def test_a_full_refund_refunds_the_whole_sale() -> None:
    refund = one(source(), adjustment(type="full", action="refund"))
    assert isinstance(refund, Refund)
    assert (refund.amount, refund.reverses) == (None, (TXN_ID,))


def test_a_chargeback_adjustment_is_a_chargeback_of_the_whole_sale() -> None:
    refund = one(source(), fixture("paddle", "adjustment.created+chargeback"))
    assert isinstance(refund, Refund)
    assert refund.chargeback is True and refund.amount is None
    assert refund.refund_id == "adj_01jr4a1b2c3d4e5f6g7h8j9k0m"


def test_a_refund_pending_approval_does_not_count() -> None:
    with pytest.raises(Ignore) as caught:
        mapped(source(), fixture("paddle", "adjustment.created+pending"))
    assert caught.value.reason == "refund_not_approved"
    for status in ("rejected", "reversed"):
        with pytest.raises(Ignore, match="refund_not_approved"):
            mapped(source(), adjustment(status=status))


@pytest.mark.parametrize("action", ["credit", "chargeback_warning", "chargeback_reverse", "credit_reverse"])
def test_adjustments_that_return_no_money_are_not_refunds(action: str) -> None:
    with pytest.raises(Ignore, match="not_a_refund"):
        mapped(source(), adjustment(action=action))


def test_the_sale_names_the_transaction_a_refund_reverses_and_its_gross() -> None:
    sale = one(source(), fixture("paddle", "transaction.completed"))
    assert isinstance(sale, Sale)
    assert (sale.amount, sale.gross_amount) == (8000, 9600)  # total − tax; total
    assert sale.invoice_id in one(source(), adjustment()).reverses
