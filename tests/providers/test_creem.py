"""Creem: body signatures, one-time and subscription Sales net of tax, one Sale per payment."""

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
from providers.creem import CreemProvider
from tests.conftest import fixture, wait_for

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


# -- one-time checkouts -------------------------------------------------------------------------


def test_one_time_checkout_is_a_purchase_excluding_tax(client: Any, receiver: Any) -> None:
    assert post(client, fixture("creem", "checkout.completed")).json()["status"] == "accepted"
    [sale] = wait_for(receiver.delivered)
    assert sale.headers["idempotency-key"] == "sale:creem:tran_3pUYoC8cDJSSwl1bzL3SwL"
    body = sale.body
    assert (body["amount"], body["currency"]) == (4900, "eur")  # 5929 paid − 1029 VAT
    assert body["eventName"] == "Purchase" and body["invoiceId"] == "tran_3pUYoC8cDJSSwl1bzL3SwL"
    assert body["customerExternalId"] == "user_42" and body["clickId"] == "cl_creem_demo"
    assert (body["customerEmail"], body["customerName"]) == ("marie@example.com", "Marie Curie")
    assert body["timestamp"] == "2026-05-03T09:20:59.000Z"  # created_at, epoch ms
    meta = body["metadata"]
    assert meta["providerEventId"] == "evt_5WHHcZPv7VS0YUsberIuOz" and meta["taxAmount"] == 1029
    assert meta["orderId"] == "ord_4aDwWXjMLpes4Kj4XqNnUA" and meta["requestId"] == "order_2026_0042"
    assert meta["livemode"] is False and meta["providerCustomerId"] == "cust_1OcIK1GEuVvXZwD19tjq2z"


@pytest.mark.parametrize(("order", "expected"), [
    ({"discount_amount": 490, "amount_paid": 5336, "tax_amount": 926}, 4410),  # 10 % off, VAT on the rest
    ({"amount_paid": None, "amount_due": None, "tax_amount": 1029}, 4900),  # only `amount`: before tax
    ({"currency": "USD", "amount_paid": 1999, "tax_amount": 0}, 1999),
])
def test_amounts_are_after_discount_and_before_tax(client: Any, receiver: Any, order: dict[str, Any],
                                                   expected: int) -> None:
    data = checkout(**order)
    data["object"]["order"] = {k: v for k, v in data["object"]["order"].items() if v is not None}
    post(client, data)
    [sale] = wait_for(receiver.delivered)
    assert sale.body["amount"] == expected


@pytest.mark.parametrize(("order", "reason"), [({"status": "pending"}, "unpaid"),
                                               ({"amount_paid": 0, "tax_amount": 0}, "zero_amount")])
def test_uncountable_checkouts_are_ignored_with_reasons(client: Any, receiver: Any, order: dict[str, Any],
                                                        reason: str) -> None:
    r = post(client, checkout(**order))
    assert r.status_code == 200 and r.json()["status"] == "ignored" and r.json()["reason"] == reason
    time.sleep(0.2)
    assert receiver.requests == []


def test_amount_that_is_not_an_integer_is_a_400(client: Any) -> None:
    r = post(client, checkout(amount_paid="59.29"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


@pytest.mark.parametrize("event_type", ["subscription.active", "subscription.canceled", "subscription.update",
                                        "refund.created", "dispute.created"])
def test_untracked_event_types_are_ignored(client: Any, event_type: str) -> None:
    data = fixture("creem", "checkout.completed")
    data["eventType"] = event_type
    r = post(client, data)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "event_type_not_tracked"


def test_redelivery_and_dashboard_resend_are_duplicates(client: Any, receiver: Any) -> None:
    data = fixture("creem", "checkout.completed")
    first = post(client, data)
    assert post(client, data).json() == {"status": "duplicate", "eventId": first.json()["eventId"]}
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(("mode", "source_mode", "status"), [("test", "live", "ignored"), ("prod", "live", "accepted"),
                                                            ("sandbox", "test", "accepted"), ("prod", "test", "ignored")])
def test_mode_is_the_livemode(make_client: Any, mode: str, source_mode: str, status: str) -> None:
    client = make_client(sources={"creem": {"provider": "creem", "secrets": [SECRET], "livemode": source_mode}})
    r = post(client, event("checkout.completed", mode=mode))
    assert r.json()["status"] == status


# -- subscriptions: checkout.completed + subscription.paid of one payment ------------------------

SUB_CHECKOUT = "checkout.completed+subscription"
PAID = "subscription.paid"


@pytest.mark.parametrize("first", [SUB_CHECKOUT, PAID])
def test_subscription_checkout_and_its_first_payment_are_one_sale(make_client: Any, receiver: Any,
                                                                   first: str) -> None:
    client = make_client(sources={"creem": {"provider": "creem", "secrets": [SECRET]}},
                         forwarder={"fill_window_s": 1})
    second = PAID if first == SUB_CHECKOUT else SUB_CHECKOUT
    assert post(client, fixture("creem", first)).json()["status"] == "accepted"
    answer = post(client, fixture("creem", second)).json()
    assert answer["status"] == "duplicate" and answer["reason"] == "business_key"
    wait_for(receiver.delivered)
    time.sleep(0.3)
    [sale] = receiver.delivered()
    body = sale.body
    assert body["invoiceId"] == "tran_5yMaWzAl3jxuGJMCOrYWwk"  # the transaction both payloads name
    assert (body["amount"], body["currency"], body["eventName"]) == (1000, "eur", "Subscription creation")
    assert body["customerExternalId"] == "user_77"  # Creem's `referenceId` metadata key
    assert body["clickId"] == "cl_creem_sub"
    assert body["metadata"]["subscriptionId"] == "sub_6pC2lNB6joCRQIZ1aMrTpi"


def test_next_paid_cycle_is_a_renewal_known_by_identity_memory(client: Any, receiver: Any) -> None:
    post(client, fixture("creem", PAID))
    post(client, fixture("creem", "subscription.paid+renewal"))  # its metadata is null
    sales = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    names = {s.body["invoiceId"]: s.body["eventName"] for s in sales}
    assert names == {"tran_5yMaWzAl3jxuGJMCOrYWwk": "Subscription creation",
                     "tran_6ZeTvMqMkGdAIIjw5aAcnh": "Subscription renewal"}
    assert {s.body["customerExternalId"] for s in sales} == {"user_77"}


def test_subscription_checkout_without_its_transaction_leaves_the_sale_to_subscription_paid(
        client: Any, receiver: Any) -> None:
    data = fixture("creem", SUB_CHECKOUT)
    del data["object"]["order"]["transaction"]  # the older payload shape
    r = post(client, data)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "counted_by_subscription_paid"
    assert post(client, fixture("creem", PAID)).json()["status"] == "accepted"
    [sale] = wait_for(receiver.delivered)
    assert sale.body["invoiceId"] == "tran_5yMaWzAl3jxuGJMCOrYWwk"


def test_subscription_paid_without_its_transaction_object_uses_the_product_price(client: Any,
                                                                                receiver: Any) -> None:
    data = fixture("creem", PAID)
    del data["object"]["last_transaction"]
    post(client, data)
    [sale] = wait_for(receiver.delivered)
    assert (sale.body["invoiceId"], sale.body["amount"]) == ("tran_5yMaWzAl3jxuGJMCOrYWwk", 1000)
    assert sale.body["metadata"]["amountFrom"] == "product_price"


@pytest.mark.parametrize(("status", "paid", "reason"), [("pending", 1210, "unpaid"), ("declined", 1210, "unpaid"),
                                                        ("paid", 0, "zero_amount")])
def test_unpaid_or_empty_subscription_payments_are_ignored(client: Any, status: str, paid: int, reason: str) -> None:
    data = fixture("creem", PAID)
    data["object"]["last_transaction"].update(status=status, amount_paid=paid, tax_amount=0)
    assert post(client, data).json()["reason"] == reason


def test_trialing_subscription_is_a_started_trial_lead(client: Any, receiver: Any) -> None:
    assert post(client, fixture("creem", "subscription.trialing")).json()["status"] == "accepted"
    [lead] = wait_for(receiver.delivered)
    assert lead.kind == "lead" and lead.body["eventName"] == "Started Trial"
    assert (lead.body["customerExternalId"], lead.body["clickId"]) == ("user_99", "cl_creem_trial")
    assert lead.body["metadata"]["subscriptionId"] == "sub_dxiauR8zZOwULx5QM70wJ"
