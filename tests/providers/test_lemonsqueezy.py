"""Lemon Squeezy: body signatures, order and subscription-invoice Sales, one Sale per payment."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Refund, Sale
from adapter.ingest import parse_event
from adapter.testing import ProviderContract, make_source
from providers.lemonsqueezy import LemonSqueezyProvider
from tests.conftest import fixture, sent_once
from tests.providers.flow import mapped, one

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


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_paid_order_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    r = post(client, fixture("lemonsqueezy", "order_created"))
    assert r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.headers["idempotency-key"] == "sale:lemonsqueezy:e0a87257-7481-4163-984b-1e85f6851d7d"
    assert sale.body["eventName"] == "Purchase"
    assert sale.body["invoiceId"] == "e0a87257-7481-4163-984b-1e85f6851d7d"
    assert sale.body["customerExternalId"] == "user_77" and sale.body["clickId"] == "cl_lemon_order"


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------


def source(**settings: Any) -> Any:
    return make_source(LemonSqueezyProvider(), [SECRET], name="lemonsqueezy", **settings)


def lemon_flow(make_flow: Any, **settings: Any) -> Any:
    def sign(body: bytes) -> dict[str, str]:
        return {"X-Signature": signature(body), "X-Event-Name": json.loads(body)["meta"]["event_name"]}

    return make_flow(LemonSqueezyProvider(), [SECRET], sign, **settings)


def sale_of(data: dict[str, Any]) -> Sale:
    sale = one(source(), data)
    assert isinstance(sale, Sale)
    return sale


def test_paid_order_is_a_purchase_excluding_tax() -> None:
    sale = sale_of(fixture("lemonsqueezy", "order_created"))
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 800, "eur")  # 1000 − 200 discount; 960 − 160 tax
    assert sale.invoice_id == "e0a87257-7481-4163-984b-1e85f6851d7d"  # the order's identifier
    assert sale.external_id == "user_77"
    assert sale.click_id == "cl_lemon_order"  # `dub_click_id` in meta.custom_data
    assert (sale.email, sale.name, sale.provider_customer_id) == ("grace@example.com", "Grace Hopper", "8640795")
    assert sale.timestamp is not None and sale.timestamp.isoformat() == "2026-05-03T16:20:59+00:00"
    assert (sale.metadata["orderId"], sale.metadata["orderNumber"], sale.metadata["taxAmount"]) == (
        "8241268", 3625083, 160)
    event = parse_event(source(), BODY, Headers({}))
    assert (event.id, event.livemode) == ("order_created:8241268", False)


@pytest.mark.parametrize(("currency", "total", "tax", "expected"), [("JPY", 5500, 500, 5000), ("USD", 1199, 200, 999)])
def test_amounts_are_exact_in_the_orders_own_currency(currency: str, total: int, tax: int, expected: int) -> None:
    sale = sale_of(event("order_created", currency=currency, total=total, tax=tax, total_usd=99999, tax_usd=1))
    assert (sale.amount, sale.currency) == (expected, currency.lower())


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
def test_uncountable_events_are_ignored_with_reasons(make_flow: Any, name: str, change: dict[str, Any],
                                                     reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        mapped(source(), event(name, **change))
    assert caught.value.reason == reason
    flow = lemon_flow(make_flow)
    answer = flow.receive(event(name, **change))
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


@pytest.mark.parametrize("event_name", ["subscription_created", "subscription_updated",
                                        "subscription_payment_failed", "license_key_created"])
def test_untracked_event_types_are_ignored(event_name: str) -> None:
    data = fixture("lemonsqueezy", "order_created")
    data["meta"]["event_name"] = event_name
    assert mapped(source(), data) == []


def test_redelivery_is_a_duplicate(make_flow: Any) -> None:
    flow = lemon_flow(make_flow)
    data = fixture("lemonsqueezy", "order_created")
    first = flow.receive(data)
    data["meta"]["webhook_id"] = "b2c24961-0000-4000-8000-000000000000"  # a resend from the dashboard
    assert flow.receive(data) == {"status": "duplicate", "eventId": first["eventId"]}
    assert [s.state for s in flow.stored()] == ["pending"]


def test_amount_that_is_not_an_integer_is_a_400(client: Any) -> None:
    with pytest.raises(PayloadError):
        mapped(source(), event("order_created", total="9.60"))
    r = post(client, event("order_created", total="9.60"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


@pytest.mark.parametrize(("mode", "status"), [("live", "ignored"), ("test", "accepted"), ("any", "accepted")])
def test_test_mode_events_follow_the_livemode_filter(make_flow: Any, mode: str, status: str) -> None:
    answer = lemon_flow(make_flow, livemode=mode).receive(fixture("lemonsqueezy", "order_created"))  # test_mode
    assert answer["status"] == status
    if status == "ignored":
        assert answer["reason"] == "livemode_mismatch"


# -- a new subscription: order_created + the initial subscription_payment_success -------------

ORDER = "order_created+subscription"
INITIAL = "subscription_payment_success"


@pytest.mark.parametrize("first", [ORDER, INITIAL])
def test_new_subscription_order_and_initial_invoice_are_one_sale(make_flow: Any, first: str) -> None:
    second = INITIAL if first == ORDER else ORDER
    for name in (first, second):
        sale = sale_of(fixture("lemonsqueezy", name))
        assert (sale.invoice_id, sale.amount, sale.currency) == ("c98d8c12-fe3e-4ba4-8c60-bfd44eee071f", 4000, "eur")
    flow = lemon_flow(make_flow)
    assert flow.receive(fixture("lemonsqueezy", first))["status"] == "accepted"
    answer = flow.receive(fixture("lemonsqueezy", second))
    assert (answer["status"], answer["reason"]) == ("duplicate", "business_key")
    [stored] = flow.stored()
    assert stored.invoice_id == "c98d8c12-fe3e-4ba4-8c60-bfd44eee071f"
    assert (stored.external_id, stored.click_id) == ("user_88", "cl_lemon_sub")


def test_invoice_first_names_creation_and_the_next_invoice_renewal(make_flow: Any) -> None:
    flow = lemon_flow(make_flow)
    flow.receive(fixture("lemonsqueezy", INITIAL))
    flow.receive(fixture("lemonsqueezy", ORDER))
    flow.receive(fixture("lemonsqueezy", "subscription_payment_success+renewal"))
    sales = flow.stored()
    assert {s.invoice_id: s.event_name for s in sales} == {
        "c98d8c12-fe3e-4ba4-8c60-bfd44eee071f": "Subscription creation",
        "subscription_invoice_7301145": "Subscription renewal"}
    assert all(s.metadata["subscriptionId"] == "2119572" for s in sales)


def test_order_first_still_names_the_subscription_creation(make_flow: Any) -> None:
    flow = lemon_flow(make_flow)  # the order's Sale is still pending when its companion arrives
    flow.receive(fixture("lemonsqueezy", ORDER))
    flow.receive(fixture("lemonsqueezy", INITIAL))
    flow.receive(fixture("lemonsqueezy", "subscription_payment_success+renewal"))
    assert {s.invoice_id: s.event_name for s in flow.stored()} == {
        "c98d8c12-fe3e-4ba4-8c60-bfd44eee071f": "Subscription creation",
        "subscription_invoice_7301145": "Subscription renewal"}


def test_updated_billing_reason_is_a_subscription_update(make_flow: Any) -> None:
    data = event("subscription_payment_success+renewal", billing_reason="updated")
    sale = sale_of(data)
    assert (sale.kind, sale.invoice_id, sale.metadata["billingReason"]) == (
        "subscription_update", "subscription_invoice_7301145", "updated")
    flow = lemon_flow(make_flow)
    [stored] = flow.stored(flow.receive(data))
    assert stored.event_name == "Subscription update"


def test_event_name_comes_from_the_signed_body_not_the_header(make_flow: Any) -> None:
    body = json.dumps(fixture("lemonsqueezy", "order_created")).encode()
    assert parse_event(source(), body, Headers({"X-Event-Name": "order_refunded"})).type == "order_created"
    flow = lemon_flow(make_flow)
    answer = flow.receive(body, {"X-Signature": signature(body), "X-Event-Name": "order_refunded"})
    assert answer["status"] == "accepted"
    [stored] = flow.stored(answer)
    assert stored.metadata["providerEventType"] == "order_created"


# --- refunds (SPEC §9) ---------------------------------------------------------------------------

ORDER_UUID = "e0a87257-7481-4163-984b-1e85f6851d7d"
SUBSCRIPTION_ORDER_UUID = "c98d8c12-fe3e-4ba4-8c60-bfd44eee071f"


def refund_of(data: dict[str, Any]) -> Refund:
    refund = one(source(), data)
    assert isinstance(refund, Refund)
    return refund


def test_a_partially_refunded_order_is_a_cumulative_refund_tax_included() -> None:
    refund = refund_of(fixture("lemonsqueezy", "order_refunded"))
    assert refund.reverses == (ORDER_UUID, "order_8241268")
    assert (refund.amount, refund.currency) == (480, "eur")  # refunded_amount: the running total
    assert refund.cumulative is True and refund.includes_tax is True and refund.chargeback is False
    assert refund.refund_id is None  # Lemon Squeezy names no refund
    assert refund.metadata["status"] == "partial_refund"


def test_a_fully_refunded_order_carries_its_whole_total() -> None:
    refund = refund_of(event("order_refunded", status="refunded", refunded_amount=960))
    assert (refund.amount, refund.cumulative) == (960, True)


def test_the_order_sale_remembers_what_its_refund_names() -> None:
    sale = sale_of(fixture("lemonsqueezy", "order_created"))
    refund = refund_of(fixture("lemonsqueezy", "order_refunded"))
    assert (sale.amount, sale.gross_amount) == (800, 960)
    assert set(refund.reverses) == {sale.invoice_id, *sale.payment_refs}


def test_a_refunded_initial_invoice_reverses_the_subscriptions_first_sale() -> None:
    refund = refund_of(fixture("lemonsqueezy", "subscription_payment_refunded"))
    assert refund.reverses == ("subscription_invoice_6958066", SUBSCRIPTION_ORDER_UUID)
    assert (refund.amount, refund.cumulative, refund.includes_tax) == (4800, True, True)
    order_sale = sale_of(fixture("lemonsqueezy", "order_created+subscription"))
    invoice_sale = sale_of(fixture("lemonsqueezy", "subscription_payment_success"))
    assert order_sale.invoice_id in refund.reverses  # whichever of the two was counted
    assert "subscription_invoice_6958066" in invoice_sale.payment_refs


def test_a_refunded_renewal_reverses_only_its_own_invoice() -> None:
    """Every invoice URL names the subscription's first order: a renewal's refund must not."""
    refund = refund_of(fixture("lemonsqueezy", "subscription_payment_refunded+renewal"))
    renewal = sale_of(fixture("lemonsqueezy", "subscription_payment_success+renewal"))
    assert refund.reverses == (renewal.invoice_id,) == ("subscription_invoice_7301145",)
    assert refund.amount == 1200


def test_a_refund_event_of_a_resource_not_refunded_is_ignored() -> None:
    with pytest.raises(Ignore, match="not_refunded"):
        mapped(source(), event("order_refunded", status="paid", refunded=False, refunded_amount=0))


def test_each_step_of_a_partial_refund_is_its_own_delivery() -> None:
    first = parse_event(source(), json.dumps(fixture("lemonsqueezy", "order_refunded")).encode(), Headers({}))
    again = parse_event(source(), json.dumps(fixture("lemonsqueezy", "order_refunded")).encode(), Headers({}))
    more = parse_event(source(), json.dumps(event("order_refunded", refunded_amount=960)).encode(), Headers({}))
    assert first.id == again.id != more.id
