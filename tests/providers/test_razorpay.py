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

from adapter.errors import SignatureError
from adapter.testing import ProviderContract, Vector, make_source
from providers.razorpay import RazorpayProvider
from tests.conftest import FIXTURES, fixture, wait_for

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


@pytest.mark.parametrize("name", sorted(p.stem for p in (FIXTURES / "razorpay").glob("*.json")))
def test_razorpays_sdk_accepts_our_signatures_and_we_accept_its(name: str) -> None:
    body = (FIXTURES / "razorpay" / f"{name}.json").read_bytes()
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


# -- mapping through the real receiver ----------------------------------------------------------


def test_captured_payment_is_a_purchase_with_notes_identity(client: Any, receiver: Any) -> None:
    r = post(client, fixture("razorpay", "payment.captured"), event_id="Gb5kMCdcAZ8jJ8")
    assert r.json()["status"] == "accepted"
    [sale] = wait_for(receiver.delivered)
    assert sale.headers["idempotency-key"] == "sale:razorpay:pay_DESlfW9H8K9uqM"
    body = sale.body
    # `tax` (900) is the GST on Razorpay's own fee, not sales tax: the amount is what was captured.
    assert (body["amount"], body["currency"]) == (249900, "inr")
    assert body["eventName"] == "Purchase" and body["invoiceId"] == "pay_DESlfW9H8K9uqM"
    assert body["customerExternalId"] == "user_42" and body["clickId"] == "cl_razorpay_demo"
    assert body["customerEmail"] == "gaurav.kumar@example.com"
    assert body["paymentProcessor"] == "razorpay"
    assert body["timestamp"] == "2019-09-05T09:10:06.000Z"  # the event's created_at: the capture
    meta = body["metadata"]
    assert meta["providerEventId"] == "Gb5kMCdcAZ8jJ8" and meta["orderId"] == "order_DESlLckIVRkHWj"
    assert "livemode" not in meta and "subscriptionId" not in meta


def test_empty_notes_arrive_as_a_list_and_the_email_identifies(client: Any, receiver: Any) -> None:
    r = post(client, payment_event(notes=[]))
    assert r.json()["status"] == "accepted"
    [sale] = wait_for(receiver.delivered)
    assert sale.body["customerExternalId"] == "gaurav.kumar@example.com"
    assert "clickId" not in sale.body


@pytest.mark.parametrize(("currency", "amount"), [("JPY", 5000), ("KWD", 12340), ("USD", 1999)])
def test_amounts_are_exact_iso_minor_units(client: Any, receiver: Any, currency: str, amount: int) -> None:
    post(client, payment_event(currency=currency, amount=amount))
    [sale] = wait_for(receiver.delivered)
    assert (sale.body["amount"], sale.body["currency"]) == (amount, currency.lower())


@pytest.mark.parametrize(("changes", "reason"), [({"status": "authorized", "captured": False}, "unpaid"),
                                                 ({"status": "failed", "captured": False}, "unpaid"),
                                                 ({"amount": 0}, "zero_amount")])
def test_uncountable_payments_are_ignored_with_reasons(client: Any, receiver: Any, changes: dict[str, Any],
                                                       reason: str) -> None:
    r = post(client, payment_event(**changes))
    assert r.status_code == 200 and r.json()["status"] == "ignored" and r.json()["reason"] == reason
    time.sleep(0.2)
    assert receiver.requests == []


@pytest.mark.parametrize("event_name", ["payment.authorized", "payment.failed", "order.paid",
                                        "subscription.activated", "refund.processed"])
def test_untracked_event_types_are_ignored(client: Any, event_name: str) -> None:
    event = fixture("razorpay", "payment.captured")
    event["event"] = event_name
    r = post(client, event)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "event_type_not_tracked"


def test_amount_that_is_not_an_integer_is_a_400(client: Any) -> None:
    r = post(client, payment_event(amount="2499.00"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_redelivery_with_the_same_event_id_is_a_duplicate(client: Any, receiver: Any) -> None:
    event = fixture("razorpay", "payment.captured")
    first = post(client, event, event_id="Gb5kMCdcAZ8jJ8")
    assert post(client, event, event_id="Gb5kMCdcAZ8jJ8").json() == {
        "status": "duplicate", "eventId": first.json()["eventId"]}
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_without_the_event_id_header_the_body_is_the_delivery_key(client: Any, receiver: Any) -> None:
    event = fixture("razorpay", "payment.captured")
    first = post(client, event, event_id=None)
    assert first.json()["status"] == "accepted"
    again = post(client, event, event_id=None).json()
    assert again == {"status": "duplicate", "eventId": first.json()["eventId"]}
    [sale] = wait_for(receiver.delivered)
    assert sale.body["metadata"]["providerEventId"] == "payment.captured:pay_DESlfW9H8K9uqM:1567674606"


def test_events_pass_any_livemode_filter(make_client: Any) -> None:
    client = make_client(sources={"razorpay": {"provider": "razorpay", "secrets": [SECRET], "livemode": "live"}})
    assert post(client, fixture("razorpay", "payment.captured")).json()["status"] == "accepted"


# -- subscriptions: subscription.charged and payment.captured of one payment -------------------

CHARGED = "subscription.charged"
CAPTURED = "payment.captured+subscription"


def test_subscription_charge_then_its_captured_payment_are_one_sale(client: Any, receiver: Any) -> None:
    assert post(client, fixture("razorpay", CHARGED)).json()["status"] == "accepted"
    answer = post(client, fixture("razorpay", CAPTURED)).json()
    assert answer["status"] == "duplicate" and answer["reason"] == "business_key"
    wait_for(receiver.delivered)
    time.sleep(0.3)
    [sale] = receiver.delivered()
    assert sale.headers["idempotency-key"] == "sale:razorpay:pay_DEXFWroJ6LikKT"
    body = sale.body
    assert (body["amount"], body["currency"], body["eventName"]) == (99900, "inr", "Subscription creation")
    assert body["customerExternalId"] == "user_77" and body["clickId"] == "cl_razorpay_sub"  # subscription notes
    meta = body["metadata"]
    assert meta["subscriptionId"] == "sub_DEX6xcJ1HSW4CR" and meta["razorpayInvoiceId"] == "inv_DEXFWVuM6pKTxE"
    assert meta["providerCustomerId"] == "cust_C0WlbKhp3aLA7W"


def test_captured_payment_first_is_renamed_by_its_subscription_charge(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"razorpay": {"provider": "razorpay", "secrets": [SECRET]}},
                         forwarder={"fill_window_s": 1})  # the payment's Sale waits for its companion
    assert post(client, fixture("razorpay", CAPTURED)).json()["status"] == "accepted"
    assert post(client, fixture("razorpay", CHARGED)).json()["reason"] == "business_key"
    [sale] = wait_for(receiver.delivered)
    assert sale.body["invoiceId"] == "pay_DEXFWroJ6LikKT"
    assert sale.body["eventName"] == "Subscription creation"
    assert sale.body["customerExternalId"] == "user_77"  # filled from the subscription's notes
    assert sale.body["metadata"]["subscriptionId"] == "sub_DEX6xcJ1HSW4CR"


def test_next_charge_of_the_subscription_is_a_renewal(client: Any, receiver: Any) -> None:
    post(client, fixture("razorpay", CHARGED))
    post(client, fixture("razorpay", "subscription.charged+renewal"))
    sales = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    names = {s.body["invoiceId"]: s.body["eventName"] for s in sales}
    assert names == {"pay_DEXFWroJ6LikKT": "Subscription creation", "pay_DGq5kxAKKKOfb7": "Subscription renewal"}
    assert {s.body["customerExternalId"] for s in sales} == {"user_77"}


def test_captured_subscription_payment_alone_is_still_counted_once(client: Any, receiver: Any) -> None:
    event = fixture("razorpay", CAPTURED)
    assert post(client, event).json()["status"] == "accepted"
    assert post(client, event).json()["status"] == "duplicate"
    [sale] = wait_for(receiver.delivered)
    assert sale.body["customerExternalId"] == "cust_C0WlbKhp3aLA7W"  # no notes: the Razorpay customer id
    assert sale.body["metadata"]["razorpayInvoiceId"] == "inv_DEXFWVuM6pKTxE"

