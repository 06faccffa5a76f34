"""Razorpay: body signatures (checked against Razorpay's own SDK), one Sale per payment id."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytest
import razorpay  # type: ignore[import-untyped]
from razorpay.errors import SignatureVerificationError  # type: ignore[import-untyped]
from starlette.datastructures import Headers

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Refund, Sale
from adapter.ingest import parse_event
from adapter.testing import ProviderContract, Vector, make_source
from providers.razorpay import RazorpayProvider
from tests.conftest import FIXTURES, fixture, fixture_names, fixture_path, sent_once
from tests.providers.flow import mapped

SECRET = "rzp_webhook_secret_Zq8sV1mK"
OTHER = "someone_elses_webhook_secret"
SDK = razorpay.Client(auth=("rzp_test_key", "rzp_test_key_secret")).utility


class TestRazorpayContract(ProviderContract):
    provider_class = RazorpayProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False

    def vectors(self) -> list[Vector]:
        return [Vector(VECTOR_BODY, {"X-Razorpay-Signature": mac}, secret, timestamp=0,
                       where="razorpay-python tests/test_client_utility.py, razorpay-ruby test_utility.rb")
                for secret, mac in VECTORS]

    def reference_verify(self, body: bytes, headers: Mapping[str, str], secret: str) -> bool:
        try:  # Razorpay's SDK verifies but cannot sign
            return bool(SDK.verify_webhook_signature(body.decode(), headers["X-Razorpay-Signature"], secret))
        except SignatureVerificationError:
            return False


def signature(body: bytes, secret: str = SECRET) -> str:
    src = make_source(RazorpayProvider(), [secret], name="razorpay")
    return RazorpayProvider().sign(body, secret, 0, src.ctx)["X-Razorpay-Signature"]


def verify(body: bytes, value: str | None, secrets: list[str] | None = None) -> None:
    src = make_source(RazorpayProvider(), secrets or [SECRET], name="razorpay")
    headers = Headers({"X-Razorpay-Signature": value} if value is not None else {})
    src.provider.verify(body, headers, src.secrets, src.ctx)


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET, event_id: str | None = "auto") -> Any:
    body = json.dumps(event).encode()
    headers = {"X-Razorpay-Signature": signature(body, secret), "Content-Type": "application/json"}
    if event_id == "auto":
        headers.update(RazorpayProvider().sample_headers("", body))
    elif event_id is not None:
        headers["X-Razorpay-Event-Id"] = event_id
    return client.post("/webhooks/razorpay", content=body, headers=headers)


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"razorpay": {"provider": "razorpay", "secrets": [SECRET]}})


def payment_event(name: str = "payment.captured", **changes: Any) -> dict[str, Any]:
    event = fixture("razorpay", name)
    event["payload"]["payment"]["entity"].update(changes)
    return event


BODY = json.dumps(fixture("razorpay", "payment.captured")).encode()

# -- signatures ---------------------------------------------------------------------------------

# Published vector from Razorpay's Python SDK (razorpay/razorpay-python):
# tests/test_client_utility.py::test_verify_webhook_signature signs the exact bytes of
# tests/mocks/fake_payment_authorized_webhook.json (kept byte for byte as our fixture) with the
# test client's key secret "key_secret" (tests/helpers.py). Razorpay's Ruby SDK signs the same
# file with "chosen_webhook_secret" (test/razorpay/test_utility.rb).
VECTOR_BODY = (FIXTURES / "razorpay" / "payment.authorized+sdk_vector.json").read_bytes()
VECTORS = [("key_secret", "d60e67fd884556c045e9be7dad57903e33efc7172c17c6e3ef77db42d2b366e9"),
           ("chosen_webhook_secret", "dda9ca344c56ccbd90167b1be0fd99dfa92fe2b827020f27e2a46024e31c7c99")]


@pytest.mark.parametrize(("secret", "expected"), VECTORS)
def test_razorpay_sdk_test_vectors_verify(secret: str, expected: str) -> None:
    assert len(VECTOR_BODY) == 971  # the mock file as published, trailing newline included
    verify(VECTOR_BODY, expected, [secret])
    assert signature(VECTOR_BODY, secret) == expected
    with pytest.raises(SignatureError) as caught:
        verify(VECTOR_BODY.rstrip(b"\n"), expected, [secret])  # one byte less is another body
    assert caught.value.code == "invalid_signature"


@pytest.mark.parametrize("name", fixture_names("razorpay"))
def test_razorpays_sdk_accepts_our_signatures_and_we_accept_its(name: str) -> None:
    body = fixture_path("razorpay", name).read_bytes()
    ours = signature(body)
    assert SDK.verify_webhook_signature(body.decode(), ours, SECRET) is True
    with pytest.raises(SignatureVerificationError):
        SDK.verify_webhook_signature(body.decode(), signature(body, OTHER), SECRET)
    verify(body, ours)


@pytest.mark.parametrize(("value", "code"), [(None, "missing_signature"), ("", "missing_signature"),
                                             ("sha256=abc", "invalid_signature"),
                                             ("0" * 64, "invalid_signature"),
                                             ("z" * 64, "invalid_signature")])
def test_bad_signature_headers_have_clear_codes(value: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, value)
    assert caught.value.code == code


def test_forged_and_tampered_bodies_are_rejected() -> None:
    for body, value in [(BODY, signature(BODY, OTHER)), (BODY.replace(b"249900", b"1", 1), signature(BODY))]:
        with pytest.raises(SignatureError) as caught:
            verify(body, value)
        assert caught.value.code == "invalid_signature" and SECRET not in caught.value.message


def test_uppercase_hex_and_rotated_secrets_verify() -> None:
    verify(BODY, signature(BODY, "new-secret").upper(), secrets=["old-secret", "new-secret"])


def test_forged_webhook_is_a_400_and_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("razorpay", "payment.captured"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    r = client.post("/webhooks/razorpay", content=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"
    time.sleep(0.2)
    assert receiver.requests == []


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_captured_payment_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    r = post(client, fixture("razorpay", "payment.captured"), event_id="Gb5kMCdcAZ8jJ8")
    assert r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.headers["idempotency-key"] == "sale:razorpay:pay_DESlfW9H8K9uqM"
    assert sale.body["eventName"] == "Purchase" and sale.body["invoiceId"] == "pay_DESlfW9H8K9uqM"
    assert sale.body["customerExternalId"] == "user_42" and sale.body["clickId"] == "cl_razorpay_demo"


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------


def source(**settings: Any) -> Any:
    return make_source(RazorpayProvider(), [SECRET], name="razorpay", **settings)


def headers_for(body: bytes, event_id: str | None = "auto") -> dict[str, str]:
    headers = {"X-Razorpay-Signature": signature(body), "Content-Type": "application/json"}
    if event_id == "auto":
        headers.update(RazorpayProvider().sample_headers("", body))
    elif event_id is not None:
        headers["X-Razorpay-Event-Id"] = event_id
    return headers


def sale_of(event: dict[str, Any]) -> Sale:
    body = json.dumps(event).encode()
    [sale] = mapped(source(), body, headers_for(body))
    assert isinstance(sale, Sale)
    return sale


class RazorpayFlow:
    def __init__(self, make_flow: Any) -> None:
        self.flow = make_flow(RazorpayProvider(), [SECRET], lambda body: {})

    def receive(self, event: dict[str, Any], event_id: str | None = "auto") -> Any:
        body = json.dumps(event).encode()
        return self.flow.receive(body, headers_for(body, event_id))

    def stored(self, answer: Any = None) -> Any:
        return self.flow.stored(answer)


def test_captured_payment_is_a_purchase_with_notes_identity() -> None:
    body = json.dumps(fixture("razorpay", "payment.captured")).encode()
    [sale] = mapped(source(), body, headers_for(body, "Gb5kMCdcAZ8jJ8"))
    assert isinstance(sale, Sale)
    # `tax` (900) is the GST on Razorpay's own fee, not sales tax: the amount is what was captured.
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 249900, "inr")
    assert sale.invoice_id == "pay_DESlfW9H8K9uqM"
    assert (sale.external_id, sale.click_id) == ("user_42", "cl_razorpay_demo")
    assert sale.email == "gaurav.kumar@example.com" and sale.phone == "+919876543210"  # `contact`: the identifier of last resort
    event = parse_event(source(), body, Headers(headers_for(body, "Gb5kMCdcAZ8jJ8")))
    assert event.id == "Gb5kMCdcAZ8jJ8" and event.livemode is None
    assert event.occurred_at.isoformat() == "2019-09-05T09:10:06+00:00"  # the event's created_at: the capture
    assert sale.metadata["orderId"] == "order_DESlLckIVRkHWj" and "subscriptionId" not in sale.metadata


def test_empty_notes_arrive_as_a_list_and_the_email_identifies(make_flow: Any) -> None:
    sale = sale_of(payment_event(notes=[]))
    assert (sale.external_id, sale.click_id) == (None, None)
    flow = RazorpayFlow(make_flow)
    answer = flow.receive(payment_event(notes=[]))
    assert answer["status"] == "accepted"
    [stored] = flow.stored(answer)
    assert (stored.external_id, stored.click_id) == ("gaurav.kumar@example.com", None)


@pytest.mark.parametrize(("currency", "amount"), [("JPY", 5000), ("KWD", 12340), ("USD", 1999)])
def test_amounts_are_exact_iso_minor_units(currency: str, amount: int) -> None:
    sale = sale_of(payment_event(currency=currency, amount=amount))
    assert (sale.amount, sale.currency) == (amount, currency.lower())


@pytest.mark.parametrize(("changes", "reason"), [({"status": "authorized", "captured": False}, "unpaid"),
                                                 ({"status": "failed", "captured": False}, "unpaid"),
                                                 ({"amount": 0}, "zero_amount")])
def test_uncountable_payments_are_ignored_with_reasons(make_flow: Any, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        sale_of(payment_event(**changes))
    assert caught.value.reason == reason
    flow = RazorpayFlow(make_flow)
    answer = flow.receive(payment_event(**changes))
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


@pytest.mark.parametrize("event_name", ["payment.authorized", "payment.failed", "order.paid",
                                        "subscription.activated", "refund.created", "refund.failed"])
def test_untracked_event_types_are_ignored(event_name: str) -> None:
    event = fixture("razorpay", "payment.captured")
    event["event"] = event_name
    assert mapped(source(), event) == []


def test_amount_that_is_not_an_integer_is_a_400(client: Any) -> None:
    with pytest.raises(PayloadError):
        sale_of(payment_event(amount="2499.00"))
    r = post(client, payment_event(amount="2499.00"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_redelivery_with_the_same_event_id_is_a_duplicate(make_flow: Any) -> None:
    flow = RazorpayFlow(make_flow)
    event = fixture("razorpay", "payment.captured")
    first = flow.receive(event, event_id="Gb5kMCdcAZ8jJ8")
    assert flow.receive(event, event_id="Gb5kMCdcAZ8jJ8") == {"status": "duplicate", "eventId": first["eventId"]}
    assert [s.state for s in flow.stored()] == ["pending"]


def test_without_the_event_id_header_the_body_is_the_delivery_key(make_flow: Any) -> None:
    event = fixture("razorpay", "payment.captured")
    body = json.dumps(event).encode()
    assert parse_event(source(), body, Headers(headers_for(body, None))).id == (
        "payment.captured:pay_DESlfW9H8K9uqM:1567674606")
    flow = RazorpayFlow(make_flow)
    first = flow.receive(event, event_id=None)
    assert first["status"] == "accepted"
    assert flow.receive(event, event_id=None) == {"status": "duplicate", "eventId": first["eventId"]}


def test_events_pass_any_livemode_filter() -> None:
    assert len(mapped(source(livemode="live"), fixture("razorpay", "payment.captured"))) == 1


# -- subscriptions: subscription.charged and payment.captured of one payment -------------------

CHARGED = "subscription.charged"
CAPTURED = "payment.captured+subscription"


def test_subscription_charge_then_its_captured_payment_are_one_sale(make_flow: Any) -> None:
    charged = sale_of(fixture("razorpay", CHARGED))
    assert (charged.kind, charged.amount, charged.currency) == ("subscription", 99900, "inr")
    assert (charged.external_id, charged.click_id) == ("user_77", "cl_razorpay_sub")  # subscription notes
    assert charged.subscription_id == charged.metadata["subscriptionId"] == "sub_DEX6xcJ1HSW4CR"
    assert charged.metadata["razorpayInvoiceId"] == "inv_DEXFWVuM6pKTxE"
    assert charged.provider_customer_id == "cust_C0WlbKhp3aLA7W"
    flow = RazorpayFlow(make_flow)
    assert flow.receive(fixture("razorpay", CHARGED))["status"] == "accepted"
    answer = flow.receive(fixture("razorpay", CAPTURED))
    assert (answer["status"], answer["reason"]) == ("duplicate", "business_key")
    [sale] = flow.stored()
    assert (sale.invoice_id, sale.event_name, sale.external_id) == (
        "pay_DEXFWroJ6LikKT", "Subscription creation", "user_77")


def test_captured_payment_first_is_renamed_by_its_subscription_charge(make_flow: Any) -> None:
    flow = RazorpayFlow(make_flow)  # the payment's Sale is still pending when its companion arrives
    assert flow.receive(fixture("razorpay", CAPTURED))["status"] == "accepted"
    assert flow.receive(fixture("razorpay", CHARGED))["reason"] == "business_key"
    [sale] = flow.stored()
    assert sale.invoice_id == "pay_DEXFWroJ6LikKT"
    assert sale.event_name == "Subscription creation"
    assert sale.external_id == "user_77"  # filled from the subscription's notes
    assert sale.metadata["subscriptionId"] == "sub_DEX6xcJ1HSW4CR"


def test_next_charge_of_the_subscription_is_a_renewal(make_flow: Any) -> None:
    flow = RazorpayFlow(make_flow)
    flow.receive(fixture("razorpay", CHARGED))
    flow.receive(fixture("razorpay", "subscription.charged+renewal"))
    sales = flow.stored()
    names = {s.invoice_id: s.event_name for s in sales}
    assert names == {"pay_DEXFWroJ6LikKT": "Subscription creation", "pay_DGq5kxAKKKOfb7": "Subscription renewal"}
    assert {s.external_id for s in sales} == {"user_77"}


def test_captured_subscription_payment_alone_is_still_counted_once(make_flow: Any) -> None:
    event = fixture("razorpay", CAPTURED)
    flow = RazorpayFlow(make_flow)
    assert flow.receive(event)["status"] == "accepted"
    assert flow.receive(event)["status"] == "duplicate"
    [sale] = flow.stored()
    assert sale.external_id == "cust_C0WlbKhp3aLA7W"  # no notes: the Razorpay customer id
    assert sale.metadata["razorpayInvoiceId"] == "inv_DEXFWVuM6pKTxE"


# --- refunds and lost disputes (SPEC §9) ---------------------------------------------------------


def refund_of(event: dict[str, Any]) -> Refund:
    body = json.dumps(event).encode()
    [refund] = mapped(source(), body, headers_for(body))
    assert isinstance(refund, Refund)
    return refund


def test_a_processed_refund_reverses_the_payment_by_all_its_ids() -> None:
    refund = refund_of(fixture("razorpay", "refund.processed"))
    assert refund.reverses == ("pay_DESlfW9H8K9uqM", "order_DESlLckIVRkHWj")
    assert (refund.amount, refund.currency) == (20000, "inr")  # partial: of 249900
    assert (refund.cumulative, refund.includes_tax, refund.chargeback) == (False, False, False)
    assert refund.refund_id == "rfnd_QsT9bYdVw3LmPq"
    assert refund.metadata["paymentRefundStatus"] == "partial"


def test_a_full_refund_carries_the_whole_amount() -> None:
    event = fixture("razorpay", "refund.processed")
    event["payload"]["refund"]["entity"]["amount"] = 249900
    event["payload"]["payment"]["entity"].update(amount_refunded=249900, refund_status="full", status="refunded")
    assert refund_of(event).amount == 249900


def test_a_lost_dispute_is_a_chargeback() -> None:
    refund = refund_of(fixture("razorpay", "payment.dispute.lost"))
    assert refund.chargeback is True
    assert (refund.amount, refund.refund_id) == (249900, "disp_QsU2cXeWx4MnRr")
    assert refund.reverses[0] == "pay_DESlfW9H8K9uqM"


def test_an_auto_refund_of_an_uncaptured_payment_is_ignored() -> None:
    event = fixture("razorpay", "refund.processed")
    event["payload"]["payment"]["entity"].update(captured=False, status="refunded")
    body = json.dumps(event).encode()
    with pytest.raises(Ignore, match="auto_refund"):
        mapped(source(), body, headers_for(body))


def test_sales_remember_the_order_and_invoice_a_refund_names() -> None:
    sale = sale_of(fixture("razorpay", "payment.captured"))
    assert (sale.invoice_id, sale.payment_refs) == ("pay_DESlfW9H8K9uqM", ("order_DESlLckIVRkHWj",))
    assert set(refund_of(fixture("razorpay", "refund.processed")).reverses) == {sale.invoice_id, *sale.payment_refs}
    subscription = sale_of(fixture("razorpay", "payment.captured+subscription"))
    assert subscription.payment_refs == ("order_DEXFWXJSfDYDGK", "inv_DEXFWVuM6pKTxE")
