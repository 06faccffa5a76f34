"""Paystack: HMAC-SHA512 body signatures, charge.success Sales, metadata in all its shapes."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import SignatureError
from adapter.testing import ProviderContract, Vector, make_source
from providers.paystack import PaystackProvider
from tests.conftest import fixture, wait_for

SECRET = "sk_test_6b1c0f3d2e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
OTHER = "sk_test_00000000000000000000someone0else0000"


class TestPaystackContract(ProviderContract):
    provider_class = PaystackProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False

    def vectors(self) -> list[Vector]:  # Paystack publishes the recipe but no signed example
        return [Vector(b"what do ya want for nothing?", {"x-paystack-signature": RFC4231_SHA512}, "Jefe", timestamp=0,
                       where="RFC 4231 test case 2 (HMAC-SHA512)")]


def signature(body: bytes, secret: str = SECRET) -> str:
    src = make_source(PaystackProvider(), [secret], name="paystack")
    return PaystackProvider().sign(body, secret, 0, src.ctx)["x-paystack-signature"]


def verify(body: bytes, value: str | None, secrets: list[str] | None = None) -> None:
    src = make_source(PaystackProvider(), secrets or [SECRET], name="paystack")
    headers = Headers({"x-paystack-signature": value} if value is not None else {})
    src.provider.verify(body, headers, src.secrets, src.ctx)


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET) -> Any:
    body = json.dumps(event).encode()
    return client.post("/webhooks/paystack", content=body,
                       headers={"x-paystack-signature": signature(body, secret), "Content-Type": "application/json"})


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"paystack": {"provider": "paystack", "secrets": [SECRET]}})


def charge(name: str = "charge.success", **changes: Any) -> dict[str, Any]:
    event = fixture("paystack", name)
    event["data"].update(changes)
    return event


BODY = json.dumps(fixture("paystack", "charge.success")).encode()

# -- signatures ---------------------------------------------------------------------------------

# Paystack publishes no signed test vector; RFC 4231 test case 2 pins the algorithm (HMAC-SHA512,
# hex): key "Jefe", data "what do ya want for nothing?".
RFC4231_SHA512 = ("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                  "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")


def test_rfc_4231_hmac_sha512_vector_verifies() -> None:
    verify(b"what do ya want for nothing?", RFC4231_SHA512, ["Jefe"])
    assert signature(b"what do ya want for nothing?", "Jefe") == RFC4231_SHA512


def test_signature_is_hmac_sha512_hex_of_the_raw_body() -> None:
    assert signature(BODY) == hmac.new(SECRET.encode(), BODY, hashlib.sha512).hexdigest()
    verify(BODY, signature(BODY))


@pytest.mark.parametrize(("value", "code"), [
    (None, "missing_signature"), ("", "missing_signature"), ("0" * 128, "invalid_signature"),
    ("sha512=abc", "invalid_signature"),
    # a SHA-256 HMAC of the right body is the wrong scheme
    (hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest(), "invalid_signature"),
])
def test_bad_signature_headers_have_clear_codes(value: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, value)
    assert caught.value.code == code


def test_forged_and_tampered_bodies_are_rejected() -> None:
    for body, value in [(BODY, signature(BODY, OTHER)), (BODY.replace(b"4500000", b"4500", 1), signature(BODY))]:
        with pytest.raises(SignatureError) as caught:
            verify(body, value)
        assert caught.value.code == "invalid_signature" and SECRET not in caught.value.message


def test_test_and_live_secret_keys_can_share_a_source() -> None:
    verify(BODY, signature(BODY, "sk_live_abc"), secrets=[SECRET, "sk_live_abc"])


def test_forged_and_unsigned_webhooks_are_400s_and_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("paystack", "charge.success"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    r = client.post("/webhooks/paystack", content=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"
    time.sleep(0.2)
    assert receiver.requests == []


# -- mapping through the real receiver ----------------------------------------------------------


def test_successful_charge_is_a_purchase(client: Any, receiver: Any) -> None:
    r = post(client, fixture("paystack", "charge.success"))
    assert r.json()["status"] == "accepted"
    [sale] = wait_for(receiver.delivered)
    assert sale.headers["idempotency-key"] == "sale:paystack:re4lyvq3s3"
    body = sale.body
    assert (body["amount"], body["currency"]) == (4500000, "ngn")  # ₦45,000.00 in kobo; fees not taken off
    assert body["eventName"] == "Purchase" and body["invoiceId"] == "re4lyvq3s3"
    assert body["customerExternalId"] == "user_42"
    assert body["clickId"] == "cl_paystack_demo"  # from metadata.custom_fields[].variable_name
    assert (body["customerEmail"], body["customerName"]) == ("ada.obi@example.com", "Ada Obi")
    assert body["timestamp"] == "2026-05-03T16:20:59.000Z"  # paid_at
    meta = body["metadata"]
    assert meta["providerEventId"] == "charge.success:re4lyvq3s3"
    assert meta["providerCustomerId"] == "CUS_1rkzaqsv4rrhqo6" and meta["livemode"] is False
    assert meta["reference"] == "re4lyvq3s3" and meta["transactionId"] == "4099260516"


@pytest.mark.parametrize(("metadata", "external", "click"), [
    ('{"user_id": "user_9", "clickId": "cl_str"}', "user_9", "cl_str"),  # a JSON string
    ({"custom_fields": [{"display_name": "userId", "variable_name": "uid", "value": "user_5"}]}, "user_5", None),
    ("", "CUS_1rkzaqsv4rrhqo6", None),
    (0, "CUS_1rkzaqsv4rrhqo6", None),  # Paystack's own samples send `"metadata": 0`
    (None, "CUS_1rkzaqsv4rrhqo6", None),
    ("not json", "CUS_1rkzaqsv4rrhqo6", None),
])
def test_metadata_in_every_shape_paystack_sends(client: Any, receiver: Any, metadata: Any, external: str,
                                                click: str | None) -> None:
    assert post(client, charge(metadata=metadata)).json()["status"] == "accepted"
    [sale] = wait_for(receiver.delivered)
    assert sale.body["customerExternalId"] == external
    assert sale.body.get("clickId") == click


def test_customer_metadata_is_read_after_the_transactions(client: Any, receiver: Any) -> None:
    event = charge(metadata="")
    event["data"]["customer"]["metadata"] = {"externalId": "user_from_customer", "dub_id": "cl_cust"}
    post(client, event)
    [sale] = wait_for(receiver.delivered)
    assert (sale.body["customerExternalId"], sale.body["clickId"]) == ("user_from_customer", "cl_cust")


@pytest.mark.parametrize(("currency", "amount", "expected"), [("GHS", 12345, 12345), ("ZAR", 9900, 9900),
                                                              ("KES", 150000, 150000), ("XOF", 250000, 2500)])
def test_amounts_are_converted_to_iso_minor_units(client: Any, receiver: Any, currency: str, amount: int,
                                                 expected: int) -> None:
    post(client, charge(currency=currency, amount=amount, requested_amount=amount))
    [sale] = wait_for(receiver.delivered)
    assert (sale.body["amount"], sale.body["currency"]) == (expected, currency.lower())


def test_a_fraction_of_a_franc_is_a_400_not_a_guess(client: Any) -> None:
    r = post(client, charge(currency="XOF", amount=250050, requested_amount=250050))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_charges_the_customer_paid_on_top_are_not_revenue(client: Any, receiver: Any) -> None:
    post(client, charge(amount=4577500, requested_amount=4500000))
    [sale] = wait_for(receiver.delivered)
    assert sale.body["amount"] == 4500000 and sale.body["metadata"]["chargedAmount"] == 4577500


@pytest.mark.parametrize(("changes", "reason"), [({"status": "failed"}, "unpaid"),
                                                 ({"status": "abandoned"}, "unpaid"),
                                                 ({"amount": 0, "requested_amount": 0}, "zero_amount")])
def test_uncountable_charges_are_ignored_with_reasons(client: Any, receiver: Any, changes: dict[str, Any],
                                                      reason: str) -> None:
    r = post(client, charge(**changes))
    assert r.status_code == 200 and r.json()["status"] == "ignored" and r.json()["reason"] == reason
    time.sleep(0.2)
    assert receiver.requests == []


@pytest.mark.parametrize("event_name", ["charge.dispute.create", "transfer.success", "subscription.create",
                                        "invoice.update", "refund.processed"])
def test_untracked_events_are_ignored(client: Any, event_name: str) -> None:
    event = fixture("paystack", "charge.success")
    event["event"] = event_name
    r = post(client, event)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "event_type_not_tracked"


def test_amount_that_is_not_an_integer_is_a_400(client: Any) -> None:
    r = post(client, charge(amount="45000.00"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_redelivery_of_a_reference_is_a_duplicate(client: Any, receiver: Any) -> None:
    event = fixture("paystack", "charge.success")
    first = post(client, event)
    assert post(client, event).json() == {"status": "duplicate", "eventId": first.json()["eventId"]}
    event["data"]["log"] = {"attempts": 2}  # a resend whose body differs: still the same reference
    assert post(client, event).json()["status"] == "duplicate"
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(("mode", "status"), [("live", "ignored"), ("test", "accepted"), ("any", "accepted")])
def test_domain_is_the_livemode(make_client: Any, mode: str, status: str) -> None:
    client = make_client(sources={"paystack": {"provider": "paystack", "secrets": [SECRET], "livemode": mode}})
    r = post(client, fixture("paystack", "charge.success"))  # data.domain = "test"
    assert r.json()["status"] == status
    if status == "ignored":
        assert r.json()["reason"] == "livemode_mismatch"


def test_plan_charges_are_subscription_creation_then_renewal(client: Any, receiver: Any) -> None:
    assert post(client, fixture("paystack", "charge.success+subscription")).json()["status"] == "accepted"
    renewal = charge("charge.success+subscription", reference="sub_charge_9kq2m4n8", id=4101000001,
                     paid_at="2026-06-04T09:00:09.000Z", metadata=None)
    assert post(client, renewal).json()["status"] == "accepted"
    sales = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    names = {s.body["invoiceId"]: (s.body["eventName"], s.body["amount"], s.body["currency"]) for s in sales}
    assert names == {"sub_charge_8bvfx2k1": ("Subscription creation", 500000, "ghs"),
                     "sub_charge_9kq2m4n8": ("Subscription renewal", 500000, "ghs")}
    # the renewal has no metadata: identity memory keyed by the customer code fills it
    assert {s.body["customerExternalId"] for s in sales} == {"user_88"}
    assert {s.body["clickId"] for s in sales} == {"cl_paystack_sub"}
    assert all(s.body["metadata"]["planCode"] == "PLN_gx2wn530m0i3w3m" for s in sales)
