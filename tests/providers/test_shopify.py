"""Shopify: signatures (Shopify's published vector), mapping, and flows through the core."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Lead, Refund, Sale
from adapter.ingest import parse_event
from adapter.samples import post_sample
from adapter.testing import ProviderContract, Vector, make_source
from providers.shopify import ShopifyProvider
from tests.conftest import fixture, sent_once, wait_for
from tests.providers.flow import mapped

SECRET = "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"
OTHER = "shpss_someone_elses_secret_0000000000"
ORDER_ID = "5893476221162"


def shopify_hmac(body: bytes, secret: str = SECRET) -> str:
    """Shopify's scheme, written out independently of the provider: base64(HMAC-SHA256(body))."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class TestShopifyContract(ProviderContract):
    provider_class = ShopifyProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return {"X-Shopify-Hmac-Sha256": shopify_hmac(body, secret)}

    def vectors(self) -> list[Vector]:
        return [Vector(VECTOR_BODY, {"X-Shopify-Hmac-Sha256": VECTOR_HMAC}, VECTOR_SECRET, timestamp=0,
                       where="shopify-api-php tests/Webhooks/RegistryTest.php")]


def verify(body: bytes, value: str | None, secrets: list[str] | None = None) -> None:
    src = make_source(ShopifyProvider(), secrets or [SECRET], name="shopify")
    headers = Headers({"X-Shopify-Hmac-Sha256": value} if value is not None else {})
    src.provider.verify(body, headers, src.secrets, src.ctx)


def delivery_headers(body: bytes, topic: str, event_id: str = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
                     secret: str = SECRET, **extra: str) -> dict[str, str]:
    return {"X-Shopify-Hmac-Sha256": shopify_hmac(body, secret), "X-Shopify-Topic": topic,
            "X-Shopify-Event-Id": event_id, "X-Shopify-Shop-Domain": "hooktrack-demo.myshopify.com",
            "Content-Type": "application/json", **extra}


def post(client: Any, payload: dict[str, Any], topic: str = "orders/paid", **headers: Any) -> Any:
    body = json.dumps(payload).encode()
    return client.post("/webhooks/shopify", content=body, headers=delivery_headers(body, topic, **headers))


def order(**changes: Any) -> dict[str, Any]:
    data = fixture("shopify", "orders/paid")
    data.update(changes)
    return data


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"shopify": {"provider": "shopify", "secrets": [SECRET]}})


BODY = json.dumps(fixture("shopify", "orders/paid")).encode()

# -- signatures ---------------------------------------------------------------------------------

# Published vector from Shopify's PHP library, tests/Webhooks/RegistryTest.php
# (Shopify/shopify-api-php): body json_encode(['foo' => 'bar']) signed with the API secret key
# 'steffi' (tests/BaseTestCase.php) carries X-Shopify-Hmac-Sha256 below.
VECTOR_BODY = b'{"foo":"bar"}'
VECTOR_SECRET = "steffi"
VECTOR_HMAC = "/Redz4YXHLnSmmSN8grr5/Jl/Ua3d7yX3iWbjb8R8wo="


def test_shopifys_published_vector_verifies() -> None:
    verify(VECTOR_BODY, VECTOR_HMAC, secrets=[VECTOR_SECRET])
    with pytest.raises(SignatureError):
        verify(VECTOR_BODY, VECTOR_HMAC, secrets=["not-steffi"])


def test_our_signer_reproduces_the_published_vector() -> None:
    src = make_source(ShopifyProvider(), [VECTOR_SECRET], name="shopify")
    assert ShopifyProvider().sign(VECTOR_BODY, VECTOR_SECRET, 0, src.ctx) == {"X-Shopify-Hmac-Sha256": VECTOR_HMAC}


@pytest.mark.parametrize(("value", "code"), [(None, "missing_signature"), ("", "missing_signature"),
                                             ("not base64!", "invalid_signature")])
def test_malformed_signature_headers_have_clear_codes(value: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, value)
    assert caught.value.code == code


def test_forged_signature_is_rejected_without_revealing_the_secret() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, shopify_hmac(BODY, OTHER))
    assert caught.value.code == "invalid_signature"
    assert SECRET not in caught.value.message and shopify_hmac(BODY) not in caught.value.message


def test_tampered_body_is_rejected() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY.replace(b'"49.00"', b'"4.90"'), shopify_hmac(BODY))
    assert caught.value.code == "invalid_signature"


def test_rotated_secrets_any_configured_secret_passes() -> None:
    verify(BODY, shopify_hmac(BODY, OTHER), secrets=[SECRET, OTHER])
    verify(BODY, shopify_hmac(BODY, SECRET), secrets=[SECRET, OTHER])


def test_a_trailing_newline_after_the_base64_is_accepted() -> None:
    # Ruby's Base64.encode64 (used in Shopify's own Ruby tests) ends the value with "\n".
    verify(BODY, shopify_hmac(BODY) + "\n")


def test_unsigned_request_is_a_400_with_code(client: Any) -> None:
    r = client.post("/webhooks/shopify", content=BODY, headers={"X-Shopify-Topic": "orders/paid"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"


# -- parsing ------------------------------------------------------------------------------------


def parse(body: bytes, **headers: str) -> Any:
    return ShopifyProvider().parse(body, Headers(headers))


def test_event_id_header_is_the_delivery_id_with_webhook_id_as_fallback() -> None:
    both = parse(BODY, **{"X-Shopify-Topic": "orders/paid", "X-Shopify-Event-Id": "evt-1", "X-Shopify-Webhook-Id": "wh-1"})
    assert (both.id, both.type) == ("evt-1", "orders/paid")
    assert parse(BODY, **{"X-Shopify-Topic": "orders/paid", "X-Shopify-Webhook-Id": "wh-1"}).id == "wh-1"


def test_occurred_at_is_the_triggered_at_header_else_updated_at() -> None:
    headers = {"X-Shopify-Topic": "orders/paid", "X-Shopify-Event-Id": "e"}
    triggered = parse(BODY, **headers, **{"X-Shopify-Triggered-At": "2026-04-10T12:35:01.123456789Z"})
    assert triggered.occurred_at.isoformat() == "2026-04-10T12:35:01.123456+00:00"
    assert parse(BODY, **headers).occurred_at.isoformat() == "2026-04-10T12:34:56+00:00"  # 08:34:56-04:00


@pytest.mark.parametrize("missing", ["X-Shopify-Topic", "X-Shopify-Event-Id"])
def test_signed_delivery_without_topic_or_id_is_400(client: Any, missing: str) -> None:
    headers = delivery_headers(BODY, "orders/paid")
    del headers[missing]
    r = client.post("/webhooks/shopify", content=BODY, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_test_orders_are_not_live(make_client: Any) -> None:
    client = make_client(sources={"shopify": {"provider": "shopify", "secrets": [SECRET], "livemode": "live"}})
    r = post(client, order(test=True))
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "livemode_mismatch"


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_paid_order_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    r = post(client, order())
    assert r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.kind == "sale"
    assert sale.headers["idempotency-key"] == f"sale:shopify:{ORDER_ID}"
    assert sale.body["eventName"] == "Purchase" and sale.body["invoiceId"] == ORDER_ID
    assert sale.body["customerExternalId"] == "user_shop_42"
    assert sale.body["clickId"] == "cl_shop_click"


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------


def source(**settings: Any) -> Any:
    return make_source(ShopifyProvider(), [SECRET], name="shopify", **settings)


def shop(payload: dict[str, Any], topic: str = "orders/paid", event_id: str = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
         **settings: Any) -> list[Lead | Sale]:
    body = json.dumps(payload).encode()
    return mapped(source(**settings), body, delivery_headers(body, topic, event_id))


def sale_of(payload: dict[str, Any], **settings: Any) -> Sale:
    [sale] = shop(payload, **settings)
    assert isinstance(sale, Sale)
    return sale


class ShopFlow:
    """The ingest transaction for a Shopify source: topic and event id travel in headers."""

    def __init__(self, make_flow: Any) -> None:
        self.flow = make_flow(ShopifyProvider(), [SECRET], lambda body: {})

    def receive(self, payload: dict[str, Any], topic: str = "orders/paid", **headers: Any) -> Any:
        body = json.dumps(payload).encode()
        return self.flow.receive(body, delivery_headers(body, topic, **headers))


def test_paid_order_is_a_purchase_excluding_tax_and_shipping() -> None:
    sale = sale_of(order())
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 4900, "usd")  # $59 − $10; tax, shipping excluded
    assert sale.invoice_id == ORDER_ID
    assert sale.external_id == "user_shop_42"  # note_attributes (cart attributes)
    assert sale.click_id == "cl_shop_click"  # landing_site query string
    assert (sale.email, sale.name, sale.provider_customer_id) == ("ada@example.com", "Ada Lovelace", "7423187321066")
    assert sale.metadata["taxAmount"] == 540 and sale.metadata["orderName"] == "#1042"
    assert parse_event(source(), BODY, Headers(delivery_headers(BODY, "orders/paid"))).livemode is True


def test_tax_inclusive_order_excludes_only_the_tax_on_the_items() -> None:
    # €50.00 subtotal with VAT included; VAT €8.93 of which €0.95 is on shipping (not in the subtotal).
    sale = sale_of(fixture("shopify", "orders/paid+taxes_included"))
    assert (sale.amount, sale.currency) == (4202, "eur")
    assert sale.metadata["taxAmount"] == 893 and sale.metadata["taxesIncluded"] is True


@pytest.mark.parametrize(
    ("currency", "subtotal", "tax", "included", "expected"),
    [
        ("JPY", "1000", "100", False, 1000),
        ("JPY", "1100", "100", True, 1000),
        ("KWD", "12.345", "1.234", False, 12345),
        ("KWD", "12.345", "1.122", True, 11223),
        ("USD", "49.00", "4.90", True, 4410),
    ],
)
def test_amounts_are_exact_in_iso_minor_units(currency: str, subtotal: str, tax: str, included: bool,
                                              expected: int) -> None:
    sale = sale_of(order(currency=currency, current_subtotal_price=subtotal, current_total_tax=tax,
                         taxes_included=included, shipping_lines=[]))
    assert (sale.amount, sale.currency) == (expected, currency.lower())


def test_shop_currency_is_used_not_the_presentment_currency() -> None:
    sale = sale_of(order(presentment_currency="EUR"))
    assert (sale.amount, sale.currency) == (4900, "usd")


def test_amount_with_more_decimals_than_the_currency_is_400(client: Any) -> None:
    with pytest.raises(PayloadError):
        shop(order(currency="JPY", current_subtotal_price="1000.5"))
    r = post(client, order(currency="JPY", current_subtotal_price="1000.5"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"financial_status": "pending"}, "unpaid"),
        ({"financial_status": "partially_paid"}, "unpaid"),
        ({"current_subtotal_price": "0.00", "current_total_tax": "0.00"}, "zero_amount"),
        ({"current_subtotal_price": "5.40", "taxes_included": True, "shipping_lines": []}, "zero_amount"),
    ],
)
def test_uncountable_orders_are_ignored_with_reasons(make_flow: Any, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        shop(order(**changes))
    assert caught.value.reason == reason
    flow = ShopFlow(make_flow)
    answer = flow.receive(order(**changes))
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.flow.stored(answer) == []


def test_untracked_topic_is_ignored() -> None:
    assert shop(order(), topic="orders/create") == []


def test_redelivery_with_the_same_event_id_is_a_duplicate(make_flow: Any) -> None:
    flow = ShopFlow(make_flow)
    first, second = flow.receive(order()), flow.receive(order())
    assert first["status"] == "accepted"
    assert second == {"status": "duplicate", "eventId": first["eventId"]}
    assert [s.state for s in flow.flow.stored()] == ["pending"]


def test_a_second_event_for_the_same_order_is_one_sale(make_flow: Any) -> None:
    flow = ShopFlow(make_flow)
    flow.receive(order())
    answer = flow.receive(order(), event_id="5c1b1a8e-0000-4000-8000-000000000002")
    assert (answer["status"], answer["reason"]) == ("duplicate", "business_key")
    assert len(flow.flow.stored()) == 1


def test_click_id_from_cart_attributes_and_a_full_landing_url() -> None:
    notes = [{"name": "dub_click_id", "value": "cl_from_cart"}, {"name": "customer_external_id", "value": "u_9"}]
    sale = sale_of(order(note_attributes=notes, landing_site="https://shop.example/?dub_id=cl_from_url"))
    # Key order decides (dub_click_id comes before dub_id in the default click_id_keys).
    assert (sale.click_id, sale.external_id) == ("cl_from_cart", "u_9")


def test_landing_url_never_supplies_the_customer_id(make_flow: Any) -> None:
    # Anyone can craft a landing URL; only merchant-set attributes name the user.
    payload = order(note_attributes=[], landing_site="/?userId=attacker&dub_id=cl_x")
    sale = sale_of(payload)
    assert (sale.click_id, sale.external_id) == ("cl_x", None)
    flow = ShopFlow(make_flow)
    [stored] = flow.flow.stored(flow.receive(payload))
    assert stored.external_id == "7423187321066"  # the Shopify customer id


def test_click_id_keys_are_configurable() -> None:
    assert sale_of(order(landing_site="/?ref=cl_ref&dub_id=cl_default"), click_id_keys=["ref"]).click_id == "cl_ref"


def test_guest_checkout_is_identified_by_email(make_flow: Any) -> None:
    payload = order(customer=None, note_attributes=[])
    sale = sale_of(payload)
    assert sale.name == "Ada Lovelace"  # from the billing address
    flow = ShopFlow(make_flow)
    [stored] = flow.flow.stored(flow.receive(payload))
    assert stored.external_id == "ada@example.com"


def test_customer_created_is_a_sign_up_lead_and_its_order_shares_the_id(make_flow: Any) -> None:
    flow = ShopFlow(make_flow)
    answer = flow.receive(fixture("shopify", "customers/create"), topic="customers/create", event_id="c-1")
    assert answer["status"] == "accepted"
    # The order carries only the Shopify customer; identity memory supplies user id and click id.
    flow.receive(order(note_attributes=[], landing_site=None))
    lead, sale = flow.flow.stored()
    assert lead.kind == "lead" and lead.event_name == "Sign up"
    assert lead.external_id == "user_shop_42"
    assert lead.click_id == "cl_shop_click"  # from the customer's metafields
    assert lead.name == "Ada Lovelace" and "livemode" not in lead.metadata
    assert (sale.external_id, sale.click_id) == ("user_shop_42", "cl_shop_click")


def test_customer_without_click_id_is_recorded_not_forwarded(make_flow: Any) -> None:
    customer = fixture("shopify", "customers/create")
    customer["metafields"] = []
    answer = ShopFlow(make_flow).receive(customer, topic="customers/create")
    assert (answer["status"], answer["reason"]) == ("ignored", "no_click_id")


# -- `hooktrack send` -----------------------------------------------------------------------------


def test_every_sample_is_accepted_the_way_hooktrack_send_posts_it(client: Any, receiver: Any) -> None:
    src = client.app.state.sources["shopify"]
    for name in src.provider.samples():
        r = post_sample(src, name, "", client=client)
        assert r.status_code == 200 and r.json()["status"] == "accepted", (name, r.text)
    got = wait_for(lambda: len(receiver.delivered()) == 3 and receiver.delivered())
    assert sorted(g.body["eventName"] for g in got) == ["Purchase", "Purchase", "Sign up"]


def test_refreshed_samples_are_new_events_and_identical_bodies_are_not() -> None:
    provider = ShopifyProvider()
    first = provider.sample("orders/paid", unique="a", now=1_775_000_000)
    later = provider.sample("orders/paid", unique="b", now=1_775_000_001)
    event_id = "X-Shopify-Event-Id"
    assert provider.sample_headers("orders/paid", first)[event_id] != provider.sample_headers("orders/paid", later)[event_id]
    assert provider.sample_headers("orders/paid", first) == provider.sample_headers("orders/paid", first)
    assert provider.sample_headers("orders/paid+taxes_included", first)["X-Shopify-Topic"] == "orders/paid"


# --- refunds (SPEC §9) ---------------------------------------------------------------------------


def refund_of(payload: dict[str, Any]) -> Refund:
    [refund] = shop(payload, topic="refunds/create")
    assert isinstance(refund, Refund)
    return refund


def test_a_refund_is_the_money_its_transactions_returned_tax_included() -> None:
    refund = refund_of(fixture("shopify", "refunds/create"))
    assert refund.reverses == (ORDER_ID,)
    assert (refund.amount, refund.currency) == (1078, "usd")  # 9.80 + 0.98 tax
    assert refund.includes_tax is True and refund.cumulative is False and refund.chargeback is False
    assert refund.refund_id == "929361463"


def test_a_full_refund_returns_the_whole_total() -> None:
    payload = fixture("shopify", "refunds/create")
    payload["transactions"][0]["amount"] = "59.40"
    refund = refund_of(payload)
    assert refund.amount == 5940
    sale = sale_of(fixture("shopify", "orders/paid"))
    assert (sale.amount, sale.gross_amount) == (4900, 5940)  # the core scales 5940 by 4900/5940
    assert sale.invoice_id in refund.reverses


def test_failed_and_pending_refund_transactions_are_not_money_returned() -> None:
    payload = fixture("shopify", "refunds/create")
    ok = payload["transactions"][0]
    payload["transactions"] = [ok, {**ok, "id": 2, "status": "failure", "amount": "40.00"},
                               {**ok, "id": 3, "status": "pending", "amount": "5.00"},
                               {**ok, "id": 4, "kind": "sale", "amount": "7.00"}]
    assert refund_of(payload).amount == 1078


def test_a_restock_only_refund_returns_no_money_and_is_ignored() -> None:
    payload = fixture("shopify", "refunds/create")
    payload["transactions"] = []
    with pytest.raises(Ignore, match="zero_amount"):
        shop(payload, topic="refunds/create")
