"""Creem: body signatures, one-time and subscription Sales net of tax, one Sale per payment."""

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
from providers.creem import CreemProvider
from tests.conftest import fixture, sent_once
from tests.providers.flow import mapped, one

SECRET = "whsec_5uvCSFpjMq3RcwBxRQXqGs"
OTHER = "whsec_someone_elses_secret_00"


class TestCreemContract(ProviderContract):
    provider_class = CreemProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False

    def vectors(self) -> list[Vector]:  # Creem publishes the recipe but no signed example
        return [Vector(b"what do ya want for nothing?", {"creem-signature": RFC4231_SHA256}, "Jefe", timestamp=0,
                       where="RFC 4231 test case 2 (HMAC-SHA256)")]


def signature(body: bytes, secret: str = SECRET) -> str:
    src = make_source(CreemProvider(), [secret], name="creem")
    return CreemProvider().sign(body, secret, 0, src.ctx)["creem-signature"]


def verify(body: bytes, value: str | None, secrets: list[str] | None = None) -> None:
    src = make_source(CreemProvider(), secrets or [SECRET], name="creem")
    src.provider.verify(body, Headers({"creem-signature": value} if value is not None else {}), src.secrets, src.ctx)


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET) -> Any:
    body = json.dumps(event).encode()
    return client.post("/webhooks/creem", content=body,
                       headers={"creem-signature": signature(body, secret), "Content-Type": "application/json"})


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"creem": {"provider": "creem", "secrets": [SECRET]}})


def event(name: str, **changes: Any) -> dict[str, Any]:
    data = fixture("creem", name)
    data["object"].update(changes)
    return data


def checkout(name: str = "checkout.completed", **order: Any) -> dict[str, Any]:
    data = fixture("creem", name)
    data["object"]["order"].update(order)
    return data


BODY = json.dumps(fixture("creem", "checkout.completed")).encode()

# -- signatures ---------------------------------------------------------------------------------

# Creem publishes the scheme (docs "Webhooks → How to verify Creem signature?": HMAC-SHA256,
# webhook secret as key, raw request body as message, hex) but no signed vector; RFC 4231 test
# case 2 pins the algorithm: key "Jefe", data "what do ya want for nothing?".
RFC4231_SHA256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_rfc_4231_hmac_sha256_vector_verifies() -> None:
    verify(b"what do ya want for nothing?", RFC4231_SHA256, ["Jefe"])
    assert signature(b"what do ya want for nothing?", "Jefe") == RFC4231_SHA256


def test_signature_is_hmac_sha256_hex_of_the_raw_body() -> None:
    assert signature(BODY) == hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(("value", "code"), [(None, "missing_signature"), ("", "missing_signature"),
                                             ("t=1,v1=abc", "invalid_signature"), ("0" * 64, "invalid_signature")])
def test_bad_signature_headers_have_clear_codes(value: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, value)
    assert caught.value.code == code


def test_forged_and_tampered_bodies_are_rejected() -> None:
    for body, value in [(BODY, signature(BODY, OTHER)), (BODY.replace(b"5929", b"1", 1), signature(BODY))]:
        with pytest.raises(SignatureError) as caught:
            verify(body, value)
        assert caught.value.code == "invalid_signature" and SECRET not in caught.value.message


def test_rotated_secrets_any_configured_secret_passes() -> None:
    verify(BODY, signature(BODY, "whsec_new"), secrets=["whsec_old", "whsec_new"])


def test_forged_and_unsigned_webhooks_are_400s_and_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("creem", "checkout.completed"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    r = client.post("/webhooks/creem", content=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"
    time.sleep(0.2)
    assert receiver.requests == []


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_checkout_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    assert post(client, fixture("creem", "checkout.completed")).json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.headers["idempotency-key"] == "sale:creem:tran_3pUYoC8cDJSSwl1bzL3SwL"
    assert sale.body["eventName"] == "Purchase" and sale.body["invoiceId"] == "tran_3pUYoC8cDJSSwl1bzL3SwL"
    assert sale.body["customerExternalId"] == "user_42" and sale.body["clickId"] == "cl_creem_demo"


# -- one-time checkouts: parse + map, and the ingest transaction without HTTP ---------------------


def source(**settings: Any) -> Any:
    return make_source(CreemProvider(), [SECRET], name="creem", **settings)


def creem_flow(make_flow: Any, **settings: Any) -> Any:
    return make_flow(CreemProvider(), [SECRET], lambda body: {"creem-signature": signature(body)}, **settings)


def sale_of(data: dict[str, Any]) -> Sale:
    sale = one(source(), data)
    assert isinstance(sale, Sale)
    return sale


def test_one_time_checkout_is_a_purchase_excluding_tax() -> None:
    sale = sale_of(fixture("creem", "checkout.completed"))
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 4900, "eur")  # 5929 paid − 1029 VAT
    assert sale.invoice_id == "tran_3pUYoC8cDJSSwl1bzL3SwL"
    assert (sale.external_id, sale.click_id) == ("user_42", "cl_creem_demo")
    assert (sale.email, sale.name, sale.provider_customer_id) == (
        "marie@example.com", "Marie Curie", "cust_1OcIK1GEuVvXZwD19tjq2z")
    meta = sale.metadata
    assert meta["taxAmount"] == 1029
    assert meta["orderId"] == "ord_4aDwWXjMLpes4Kj4XqNnUA" and meta["requestId"] == "order_2026_0042"
    event = parse_event(source(), BODY, Headers({}))
    assert (event.id, event.livemode) == ("evt_5WHHcZPv7VS0YUsberIuOz", False)
    assert event.occurred_at.isoformat() == "2026-05-03T09:20:59+00:00"  # created_at, epoch ms


@pytest.mark.parametrize(("order", "expected"), [
    ({"discount_amount": 490, "amount_paid": 5336, "tax_amount": 926}, 4410),  # 10 % off, VAT on the rest
    ({"amount_paid": None, "amount_due": None, "tax_amount": 1029}, 4900),  # only `amount`: before tax
    ({"currency": "USD", "amount_paid": 1999, "tax_amount": 0}, 1999),
])
def test_amounts_are_after_discount_and_before_tax(order: dict[str, Any], expected: int) -> None:
    data = checkout(**order)
    data["object"]["order"] = {k: v for k, v in data["object"]["order"].items() if v is not None}
    assert sale_of(data).amount == expected


@pytest.mark.parametrize(("order", "reason"), [({"status": "pending"}, "unpaid"),
                                               ({"amount_paid": 0, "tax_amount": 0}, "zero_amount")])
def test_uncountable_checkouts_are_ignored_with_reasons(make_flow: Any, order: dict[str, Any], reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        mapped(source(), checkout(**order))
    assert caught.value.reason == reason
    flow = creem_flow(make_flow)
    answer = flow.receive(checkout(**order))
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


def test_amount_that_is_not_an_integer_is_a_400(client: Any) -> None:
    with pytest.raises(PayloadError):
        mapped(source(), checkout(amount_paid="59.29"))
    r = post(client, checkout(amount_paid="59.29"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


@pytest.mark.parametrize("event_type", ["subscription.active", "subscription.update", "dispute.created"])
def test_untracked_event_types_are_ignored(event_type: str) -> None:
    data = fixture("creem", "checkout.completed")
    data["eventType"] = event_type
    assert mapped(source(), data) == []


@pytest.mark.parametrize("event_type", ["subscription.canceled", "subscription.expired"])
def test_cancellations_are_recorded(event_type: str) -> None:
    data = fixture("creem", "checkout.completed")
    data["eventType"] = event_type
    with pytest.raises(Ignore) as caught:
        mapped(source(), data)
    assert caught.value.reason == "cancellation_recorded"


def test_redelivery_and_dashboard_resend_are_duplicates(make_flow: Any) -> None:
    flow = creem_flow(make_flow)
    data = fixture("creem", "checkout.completed")
    first = flow.receive(data)
    assert flow.receive(data) == {"status": "duplicate", "eventId": first["eventId"]}
    assert [s.state for s in flow.stored()] == ["pending"]


@pytest.mark.parametrize(("mode", "source_mode", "status"), [("test", "live", "ignored"), ("prod", "live", "accepted"),
                                                            ("sandbox", "test", "accepted"), ("prod", "test", "ignored")])
def test_mode_is_the_livemode(make_flow: Any, mode: str, source_mode: str, status: str) -> None:
    answer = creem_flow(make_flow, livemode=source_mode).receive(event("checkout.completed", mode=mode))
    assert answer["status"] == status


# -- subscriptions: checkout.completed + subscription.paid of one payment ------------------------

SUB_CHECKOUT = "checkout.completed+subscription"
PAID = "subscription.paid"


@pytest.mark.parametrize("first", [SUB_CHECKOUT, PAID])
def test_subscription_checkout_and_its_first_payment_are_one_sale(make_flow: Any, first: str) -> None:
    second = PAID if first == SUB_CHECKOUT else SUB_CHECKOUT
    for name in (first, second):
        sale = sale_of(fixture("creem", name))
        assert (sale.invoice_id, sale.amount, sale.currency) == ("tran_5yMaWzAl3jxuGJMCOrYWwk", 1000, "eur")
        assert sale.subscription_id == "sub_6pC2lNB6joCRQIZ1aMrTpi"
    flow = creem_flow(make_flow)
    assert flow.receive(fixture("creem", first))["status"] == "accepted"
    answer = flow.receive(fixture("creem", second))
    assert (answer["status"], answer["reason"]) == ("duplicate", "business_key")
    [stored] = flow.stored()
    assert stored.invoice_id == "tran_5yMaWzAl3jxuGJMCOrYWwk"  # the transaction both payloads name
    assert stored.event_name == "Subscription creation"
    assert stored.external_id == "user_77"  # Creem's `referenceId` metadata key
    assert stored.click_id == "cl_creem_sub"
    assert stored.metadata["subscriptionId"] == "sub_6pC2lNB6joCRQIZ1aMrTpi"


def test_next_paid_cycle_is_a_renewal_known_by_identity_memory(make_flow: Any) -> None:
    flow = creem_flow(make_flow)
    flow.receive(fixture("creem", PAID))
    flow.receive(fixture("creem", "subscription.paid+renewal"))  # its metadata is null
    sales = flow.stored()
    assert {s.invoice_id: s.event_name for s in sales} == {"tran_5yMaWzAl3jxuGJMCOrYWwk": "Subscription creation",
                                                          "tran_6ZeTvMqMkGdAIIjw5aAcnh": "Subscription renewal"}
    assert {s.external_id for s in sales} == {"user_77"}


def test_subscription_checkout_without_its_transaction_leaves_the_sale_to_subscription_paid(make_flow: Any) -> None:
    data = fixture("creem", SUB_CHECKOUT)
    del data["object"]["order"]["transaction"]  # the older payload shape
    flow = creem_flow(make_flow)
    answer = flow.receive(data)
    assert (answer["status"], answer["reason"]) == ("ignored", "counted_by_subscription_paid")
    assert flow.receive(fixture("creem", PAID))["status"] == "accepted"
    [sale] = flow.stored()
    assert sale.invoice_id == "tran_5yMaWzAl3jxuGJMCOrYWwk"


def test_subscription_paid_without_its_transaction_object_uses_the_product_price() -> None:
    data = fixture("creem", PAID)
    del data["object"]["last_transaction"]
    sale = sale_of(data)
    assert (sale.invoice_id, sale.amount) == ("tran_5yMaWzAl3jxuGJMCOrYWwk", 1000)
    assert sale.metadata["amountFrom"] == "product_price"


@pytest.mark.parametrize(("status", "paid", "reason"), [("pending", 1210, "unpaid"), ("declined", 1210, "unpaid"),
                                                        ("paid", 0, "zero_amount")])
def test_unpaid_or_empty_subscription_payments_are_ignored(status: str, paid: int, reason: str) -> None:
    data = fixture("creem", PAID)
    data["object"]["last_transaction"].update(status=status, amount_paid=paid, tax_amount=0)
    with pytest.raises(Ignore) as caught:
        mapped(source(), data)
    assert caught.value.reason == reason


def test_trialing_subscription_is_a_started_trial_lead(make_flow: Any) -> None:
    lead = one(source(), fixture("creem", "subscription.trialing"))
    assert isinstance(lead, Lead) and lead.kind == "started_trial"
    assert (lead.external_id, lead.click_id) == ("user_99", "cl_creem_trial")
    assert lead.metadata["subscriptionId"] == "sub_dxiauR8zZOwULx5QM70wJ"
    flow = creem_flow(make_flow)
    [stored] = flow.stored(flow.receive(fixture("creem", "subscription.trialing")))
    assert (stored.kind, stored.event_name) == ("lead", "Started Trial")


# --- refunds (SPEC §9) ---------------------------------------------------------------------------


def refund_of(data: dict[str, Any]) -> Refund:
    refund = one(source(), data)
    assert isinstance(refund, Refund)
    return refund


def test_a_partial_refund_reverses_the_transaction_order_and_checkout_tax_included() -> None:
    refund = refund_of(fixture("creem", "refund.created"))
    assert refund.reverses == ("tran_3pUYoC8cDJSSwl1bzL3SwL", "ord_4aDwWXjMLpes4Kj4XqNnUA", "ch_4l0N34kxo16AhRKUHFUuXr")
    assert (refund.amount, refund.currency) == (2000, "eur")  # of amount_paid 5929
    assert refund.includes_tax is True and refund.cumulative is False and refund.chargeback is False
    assert refund.refund_id == "ref_3DB9NQFvk18TJwSqd0N6bd"
    sale = sale_of(fixture("creem", "checkout.completed"))
    assert (sale.amount, sale.gross_amount) == (4900, 5929)
    assert set(refund.reverses) == {sale.invoice_id, *sale.payment_refs}


def test_a_full_refund_of_a_subscription_payment() -> None:
    refund = refund_of(fixture("creem", "refund.created+subscription"))
    assert refund.reverses == ("tran_5yMaWzAl3jxuGJMCOrYWwk", "ord_57bf8042UmG8fFypxZrfnj")
    assert refund.amount == 1210
    sale = sale_of(fixture("creem", "subscription.paid"))
    assert (sale.invoice_id, sale.payment_refs, sale.gross_amount) == (
        "tran_5yMaWzAl3jxuGJMCOrYWwk", ("ord_57bf8042UmG8fFypxZrfnj",), 1210)


def test_a_refund_that_did_not_succeed_does_not_count() -> None:
    data = fixture("creem", "refund.created")
    data["object"]["status"] = "failed"
    with pytest.raises(Ignore, match="refund_not_succeeded"):
        mapped(source(), data)
