"""Lemon Squeezy: body signatures, order and subscription-invoice Sales, one Sale per payment."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import SignatureError
from adapter.testing import ProviderContract, make_source
from providers.lemonsqueezy import LemonSqueezyProvider
from tests.conftest import fixture, wait_for

SECRET = "ls-signing-secret-7f3a9c"  # Lemon Squeezy secrets are 6 to 40 characters of the merchant's choice
OTHER = "someone-elses-secret"


class TestLemonSqueezyContract(ProviderContract):
    provider_class = LemonSqueezyProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return {"X-Signature": signature(body, secret)}  # Lemon Squeezy's own recipe, not our signer


def signature(body: bytes, secret: str = SECRET) -> str:
    """Computed as Lemon Squeezy's own Laravel package checks it (VerifyWebhookSignature:
    `hash_hmac('sha256', $payload, $secret)`), independently of `LemonSqueezyProvider.sign`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, value: str | None, secrets: list[str] | None = None) -> None:
    src = make_source(LemonSqueezyProvider(), secrets or [SECRET], name="lemonsqueezy")
    src.provider.verify(body, Headers({"X-Signature": value} if value is not None else {}), src.secrets, src.ctx)


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET) -> Any:
    body = json.dumps(event).encode()
    return client.post("/webhooks/lemonsqueezy", content=body, headers={
        "X-Signature": signature(body, secret), "X-Event-Name": event["meta"]["event_name"],
        "Content-Type": "application/json"})


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"lemonsqueezy": {"provider": "lemonsqueezy", "secrets": [SECRET]}})


def event(name: str, **attributes: Any) -> dict[str, Any]:
    data = fixture("lemonsqueezy", name)
    data["data"]["attributes"].update(attributes)
    return data


BODY = json.dumps(fixture("lemonsqueezy", "order_created")).encode()

# -- signatures ---------------------------------------------------------------------------------


def test_signature_as_lemon_squeezy_computes_it_verifies() -> None:
    verify(BODY, signature(BODY))
    src = make_source(LemonSqueezyProvider(), [SECRET])
    assert LemonSqueezyProvider().sign(BODY, SECRET, 0, src.ctx) == {"X-Signature": signature(BODY)}


@pytest.mark.parametrize(("value", "code"), [(None, "missing_signature"), ("", "missing_signature"),
                                             ("sha256=abc", "invalid_signature"), ("0" * 64, "invalid_signature")])
def test_bad_signature_headers_have_clear_codes(value: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, value)
    assert caught.value.code == code


def test_forged_and_tampered_bodies_are_rejected() -> None:
    for body, value in [(BODY, signature(BODY, OTHER)), (BODY.replace(b"1000", b"1", 1), signature(BODY))]:
        with pytest.raises(SignatureError) as caught:
            verify(body, value)
        assert caught.value.code == "invalid_signature" and SECRET not in caught.value.message


def test_rotated_secrets_any_configured_secret_passes() -> None:
    verify(BODY, signature(BODY, "new-secret"), secrets=["old-secret", "new-secret"])


def test_forged_webhook_is_a_400_and_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("lemonsqueezy", "order_created"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    time.sleep(0.2)
    assert receiver.requests == []


# -- mapping through the real receiver ----------------------------------------------------------


def test_paid_order_is_a_purchase_excluding_tax(client: Any, receiver: Any) -> None:
    r = post(client, fixture("lemonsqueezy", "order_created"))
    assert r.json()["status"] == "accepted"
    [sale] = wait_for(receiver.delivered)
    assert sale.headers["idempotency-key"] == "sale:lemonsqueezy:e0a87257-7481-4163-984b-1e85f6851d7d"
    body = sale.body
    assert (body["amount"], body["currency"]) == (800, "eur")  # 1000 − 200 discount; 960 total − 160 tax
    assert body["eventName"] == "Purchase"
    assert body["invoiceId"] == "e0a87257-7481-4163-984b-1e85f6851d7d"  # the order's identifier
    assert body["customerExternalId"] == "user_77"
    assert body["clickId"] == "cl_lemon_order"  # `dub_click_id` in meta.custom_data
    assert (body["customerEmail"], body["customerName"]) == ("grace@example.com", "Grace Hopper")
    assert body["paymentProcessor"] == "lemonsqueezy"
    assert body["timestamp"] == "2026-05-03T16:20:59.000Z"
    meta = body["metadata"]
    assert meta["providerEventId"] == "order_created:8241268"
    assert (meta["orderId"], meta["orderNumber"], meta["taxAmount"]) == ("8241268", 3625083, 160)
    assert meta["livemode"] is False and meta["providerCustomerId"] == "8640795"


@pytest.mark.parametrize(("currency", "total", "tax", "expected"), [("JPY", 5500, 500, 5000), ("USD", 1199, 200, 999)])
def test_amounts_are_exact_in_the_orders_own_currency(client: Any, receiver: Any, currency: str, total: int,
                                                      tax: int, expected: int) -> None:
    post(client, event("order_created", currency=currency, total=total, tax=tax, total_usd=99999, tax_usd=1))
    [sale] = wait_for(receiver.delivered)
    assert (sale.body["amount"], sale.body["currency"]) == (expected, currency.lower())


@pytest.mark.parametrize(
    ("name", "change", "reason"),
    [
        ("order_created", {"status": "pending"}, "unpaid"),
        ("order_created", {"status": "failed"}, "unpaid"),
        ("order_created", {"total": 0, "tax": 0}, "zero_amount"),  # a 100 % discount, a free trial's order
        ("subscription_payment_success", {"total": 0, "tax": 0}, "zero_amount"),
        ("subscription_payment_success", {"urls": {}}, "counted_by_order"),
    ],
)
def test_uncountable_events_are_ignored_with_reasons(client: Any, receiver: Any, name: str,
                                                     change: dict[str, Any], reason: str) -> None:
    r = post(client, event(name, **change))
    assert r.status_code == 200 and r.json()["status"] == "ignored" and r.json()["reason"] == reason
    time.sleep(0.2)
    assert receiver.requests == []


@pytest.mark.parametrize("event_name", ["subscription_created", "subscription_updated", "order_refunded",
                                        "subscription_payment_failed", "license_key_created"])
def test_untracked_event_types_are_ignored(client: Any, event_name: str) -> None:
    data = fixture("lemonsqueezy", "order_created")
    data["meta"]["event_name"] = event_name
    r = post(client, data)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "event_type_not_tracked"


def test_redelivery_is_a_duplicate(client: Any, receiver: Any) -> None:
    data = fixture("lemonsqueezy", "order_created")
    first = post(client, data)
    data["meta"]["webhook_id"] = "b2c24961-0000-4000-8000-000000000000"  # a resend from the dashboard
    assert post(client, data).json() == {"status": "duplicate", "eventId": first.json()["eventId"]}
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_amount_that_is_not_an_integer_is_a_400(client: Any) -> None:
    r = post(client, event("order_created", total="9.60"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


@pytest.mark.parametrize(("mode", "status"), [("live", "ignored"), ("test", "accepted"), ("any", "accepted")])
def test_test_mode_events_follow_the_livemode_filter(make_client: Any, mode: str, status: str) -> None:
    client = make_client(sources={"lemonsqueezy": {"provider": "lemonsqueezy", "secrets": [SECRET], "livemode": mode}})
    r = post(client, fixture("lemonsqueezy", "order_created"))  # meta.test_mode = true
    assert r.json()["status"] == status
    if status == "ignored":
        assert r.json()["reason"] == "livemode_mismatch"


# -- a new subscription: order_created + the initial subscription_payment_success -------------

ORDER = "order_created+subscription"
INITIAL = "subscription_payment_success"


@pytest.mark.parametrize("first", [ORDER, INITIAL])
def test_new_subscription_order_and_initial_invoice_are_one_sale(client: Any, receiver: Any, first: str) -> None:
    second = INITIAL if first == ORDER else ORDER
    assert post(client, fixture("lemonsqueezy", first)).json()["status"] == "accepted"
    answer = post(client, fixture("lemonsqueezy", second)).json()
    assert answer["status"] == "duplicate" and answer["reason"] == "business_key"
    wait_for(receiver.delivered)
    time.sleep(0.3)
    [sale] = receiver.delivered()
    assert sale.body["invoiceId"] == "c98d8c12-fe3e-4ba4-8c60-bfd44eee071f"
    assert sale.headers["idempotency-key"] == "sale:lemonsqueezy:c98d8c12-fe3e-4ba4-8c60-bfd44eee071f"
    assert (sale.body["amount"], sale.body["currency"]) == (4000, "eur")
    assert sale.body["customerExternalId"] == "user_88" and sale.body["clickId"] == "cl_lemon_sub"


def test_invoice_first_names_creation_and_the_next_invoice_renewal(client: Any, receiver: Any) -> None:
    post(client, fixture("lemonsqueezy", INITIAL))
    post(client, fixture("lemonsqueezy", ORDER))
    post(client, fixture("lemonsqueezy", "subscription_payment_success+renewal"))
    sales = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    names = {s.body["invoiceId"]: s.body["eventName"] for s in sales}
    assert names == {"c98d8c12-fe3e-4ba4-8c60-bfd44eee071f": "Subscription creation",
                     "subscription_invoice_7301145": "Subscription renewal"}
    assert all(s.body["metadata"]["subscriptionId"] == "2119572" for s in sales)


def test_order_first_still_names_the_subscription_creation(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"lemonsqueezy": {"provider": "lemonsqueezy", "secrets": [SECRET]}},
                         forwarder={"fill_window_s": 1})  # the order's Sale waits for its companion
    post(client, fixture("lemonsqueezy", ORDER))
    post(client, fixture("lemonsqueezy", INITIAL))
    post(client, fixture("lemonsqueezy", "subscription_payment_success+renewal"))
    sales = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    names = {s.body["invoiceId"]: s.body["eventName"] for s in sales}
    assert names == {"c98d8c12-fe3e-4ba4-8c60-bfd44eee071f": "Subscription creation",
                     "subscription_invoice_7301145": "Subscription renewal"}


def test_updated_billing_reason_is_a_subscription_update(client: Any, receiver: Any) -> None:
    post(client, event("subscription_payment_success+renewal", billing_reason="updated"))
    [sale] = wait_for(receiver.delivered)
    assert sale.body["eventName"] == "Subscription update"
    assert sale.body["invoiceId"] == "subscription_invoice_7301145"
    assert sale.body["metadata"]["billingReason"] == "updated"


def test_event_name_comes_from_the_signed_body_not_the_header(client: Any, receiver: Any) -> None:
    body = json.dumps(fixture("lemonsqueezy", "order_created")).encode()
    r = client.post("/webhooks/lemonsqueezy", content=body,
                    headers={"X-Signature": signature(body), "X-Event-Name": "order_refunded"})
    assert r.json()["status"] == "accepted"
    [sale] = wait_for(receiver.delivered)
    assert sale.body["metadata"]["providerEventType"] == "order_created"
