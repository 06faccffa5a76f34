"""Shopify: `X-Shopify-Hmac-Sha256`, base64 HMAC-SHA256 of the raw body, no timestamp.

The key is the app's client secret (app webhooks) or the signing key shown under Settings →
Notifications → Webhooks (webhooks made in the Shopify admin), used as UTF-8 bytes. The scheme
signs no time, so there is no freshness check: delivery dedup (`X-Shopify-Event-Id`) is what
stops a replayed body from counting twice.

Everything but the body lives in headers: the topic (`X-Shopify-Topic`, the event type), the
event id (`X-Shopify-Event-Id`, the same for every retry and every subscription of one event;
`X-Shopify-Webhook-Id` when absent) and the time (`X-Shopify-Triggered-At`, else the object's
`updated_at`/`created_at`).

Sale: `orders/paid` with `financial_status` paid. Amount = `current_subtotal_price` (after
discounts, before shipping), less the tax in it when `taxes_included` (the order's
`current_total_tax` less the tax on shipping lines, which the subtotal does not contain), in
the shop's `currency`; `gross_amount` is `current_total_price` (shipping and tax included).
Refund: `refunds/create`, the refund of an order: its successful `refund` transactions are the
money returned (tax and shipping included, so the core scales it by the Sale's net/gross),
reversing the `order_id`, with the refund's `id`. A refund that returns no money (a restock
only) is `Ignore("zero_amount")`. Lead: `customers/create` (`Sign up`). Click and user ids come from the
order's `note_attributes` (cart attributes), from `metafields` the subscription includes, and
(click id only) from the `landing_site` query string (`/?dub_id=...`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, Mapped, ProviderEvent, Refund, Sale
from adapter.money import to_minor
from adapter.payload import compact, ident, iso_time, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BodyHmac

__all__ = ["ShopifyProvider"]

_SAMPLE_SHOP = "hooktrack-demo.myshopify.com"


def _pairs(items: Any, key: str) -> dict[str, Any]:
    """`[{"name": k, "value": v}, ...]` (note_attributes; metafields use `key`) as a mapping."""
    if not isinstance(items, list):
        return {}
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get(key), str):
            out.setdefault(item[key], item.get("value"))
    return out


def _query(landing_site: Any) -> dict[str, str]:
    """The query parameters of a landing URL (`/?via=x&dub_id=abc`), first value of each."""
    if not isinstance(landing_site, str) or "?" not in landing_site:
        return {}
    out: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(landing_site).query):
        out.setdefault(key, value)
    return out


def _uuid(label: bytes, body: bytes) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(label + body).digest()[:16], version=4))


def _money(order: Mapping[str, Any], key: str, currency: str, default: str | None = None) -> int:
    """A decimal-string amount of the order ("49.00") in minor units, exactly."""
    value = order.get(key, default)
    if not isinstance(value, str):
        raise PayloadError(f"order `{key}` is not a decimal string: {value!r}")
    minor = to_minor(value, currency)
    if minor < 0:  # a negative price or tax would need guessing (issue 12)
        raise PayloadError(f"order `{key}` is negative: {value!r}")
    return minor


def _shipping_tax(order: Mapping[str, Any], currency: str) -> int:
    """Tax charged on shipping: part of `current_total_tax`, but not of the subtotal."""
    total = 0
    for line in order.get("shipping_lines") or []:
        for tax in mapping(line).get("tax_lines") or []:
            total += _money(mapping(tax), "price", currency, "0")
    return total


class ShopifyProvider(SamplesMixin, Provider):
    """Shopify: `X-Shopify-Hmac-Sha256`, base64 HMAC-SHA256 of the raw body (no timestamp)."""

    name = "shopify"
    scheme = BodyHmac(header="X-Shopify-Hmac-Sha256", encoding="base64")

    def samples(self) -> dict[str, bytes]:
        """Samples by topic (`orders/paid`): `samples/shopify/orders/paid.json` and so on."""
        package = self.samples_package or type(self).__module__.rpartition(".")[0]
        folder = files(package).joinpath("samples", self.name)
        found: dict[str, bytes] = {}
        resources = [e for e in folder.iterdir() if e.is_dir()] if folder.is_dir() else []
        for resource in resources:
            for entry in resource.iterdir():
                if entry.name.endswith(".json"):
                    found[f"{resource.name}/{entry.name.removesuffix('.json')}"] = entry.read_bytes()
        return dict(sorted(found.items()))

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        # The event id is derived from the body (see `sample_headers`), so a new `updated_at`
        # makes each send a new delivery.
        data["updated_at"] = datetime.fromtimestamp(now, UTC).isoformat()

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        """The topic and ids Shopify sends in headers; the ids are derived from the body, so a
        redelivery of the same body is a duplicate and a refreshed sample is a new event."""
        return {
            "X-Shopify-Topic": sample.partition("+")[0],
            "X-Shopify-Event-Id": _uuid(b"event:", body),
            "X-Shopify-Webhook-Id": _uuid(b"webhook:", body),
            "X-Shopify-Shop-Domain": _SAMPLE_SHOP,
        }

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by `X-Shopify-Event-Id` (or `X-Shopify-Webhook-Id`), typed by its topic.

        Raises `PayloadError` without a topic, an id or a JSON object body; without any time
        (X-Shopify-Triggered-At, `updated_at`, `created_at`) the event is dated at its receipt.
        """
        data = self.json_body(body)
        topic = text(headers.get("x-shopify-topic"))
        event_id = text(headers.get("x-shopify-event-id")) or text(headers.get("x-shopify-webhook-id"))
        if topic is None:
            raise PayloadError("Shopify webhook without an X-Shopify-Topic header")
        if event_id is None:
            raise PayloadError("Shopify webhook without an X-Shopify-Event-Id or X-Shopify-Webhook-Id header")
        occurred = (iso_time(headers.get("x-shopify-triggered-at")) or iso_time(data.get("updated_at"))
                    or iso_time(data.get("created_at")))
        test = data.get("test")
        return ProviderEvent(
            id=event_id,
            type=topic,
            occurred_at=occurred or datetime.now(UTC),  # none given: the moment of receipt
            livemode=not test if isinstance(test, bool) else None,
            data=data,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`orders/paid` → Sale, `refunds/create` → Refund, `customers/create` → Lead, `[]` for
        other topics.

        Raises `Ignore("unpaid")` for an order whose `financial_status` is not paid and
        `Ignore("zero_amount")` for an order of nothing (after discounts, before tax) and for a
        refund that returns no money.
        """
        if event.type == "orders/paid":
            return [self._sale(event.data)]
        if event.type == "refunds/create":
            return [_refund(event.data)]
        if event.type == "customers/create":
            return [self._lead(event.data)]
        return []

    def _sale(self, order: dict[str, Any]) -> Sale:
        if order.get("financial_status") != "paid":
            raise Ignore("unpaid")
        currency = text(order.get("currency"))
        order_id = ident(order.get("id"))
        if currency is None or order_id is None:
            raise PayloadError("orders/paid without `id` and `currency`")
        subtotal = _money(order, "current_subtotal_price", currency)
        tax = _money(order, "current_total_tax", currency, "0")
        included = tax - _shipping_tax(order, currency) if order.get("taxes_included") is True else 0
        amount = subtotal - included
        if amount <= 0:
            raise Ignore("zero_amount")
        customer = mapping(order.get("customer"))
        return Sale(
            kind="purchase",
            amount=amount,
            currency=currency,
            invoice_id=order_id,
            gross_amount=_gross(order, currency, amount),
            provider_customer_id=ident(customer.get("id")),
            email=text(order.get("email")) or text(order.get("contact_email")) or text(customer.get("email")),
            name=_name(customer) or text(mapping(order.get("billing_address")).get("name")),
            phone=text(order.get("phone")) or text(customer.get("phone")),
            metadata_sources=(_pairs(order.get("note_attributes"), "name"), _pairs(order.get("metafields"), "key")),
            click_sources=(_query(order.get("landing_site")),),
            metadata=compact(orderName=text(order.get("name")), taxAmount=tax,
                              taxesIncluded=order.get("taxes_included") is True),
        )

    def _lead(self, customer: dict[str, Any]) -> Lead:
        customer_id = ident(customer.get("id"))
        if customer_id is None:
            raise PayloadError("customers/create without `id`")
        return Lead(
            kind="sign_up",
            provider_customer_id=customer_id,
            email=text(customer.get("email")),
            name=_name(customer),
            phone=text(customer.get("phone")),
            metadata_sources=(_pairs(customer.get("metafields"), "key"),),
        )


def _gross(order: Mapping[str, Any], currency: str, net: int) -> int | None:
    """`current_total_price` in minor units, when it is a readable amount not below the Sale's:
    only the refund's scale depends on it, so it never makes the Sale itself fail."""
    try:
        total = _money(order, "current_total_price", currency)
    except (PayloadError, ValueError):
        return None
    return total if total >= net else None


def _refund(refund: dict[str, Any]) -> Refund:
    """The money a refund returned: its successful `refund` transactions, in their currency."""
    order_id, refund_id = ident(refund.get("order_id")), ident(refund.get("id"))
    if order_id is None or refund_id is None:
        raise PayloadError("refunds/create without `id` and `order_id`")
    money = [mapping(t) for t in refund.get("transactions") or []]
    returned = [t for t in money if t.get("kind") == "refund" and t.get("status") == "success"]
    currencies = {text(t.get("currency")) for t in returned}
    if len(currencies) > 1 or None in currencies:
        raise PayloadError(f"refund transactions without one `currency`: {sorted(map(str, currencies))}")
    currency = currencies.pop() if currencies else None
    amount = sum(_money(t, "amount", currency) for t in returned) if currency else 0
    if amount <= 0:
        raise Ignore("zero_amount")
    return Refund(
        reverses=(order_id,),
        amount=amount,
        currency=currency,
        includes_tax=True,
        refund_id=refund_id,
        timestamp=iso_time(refund.get("processed_at")) or iso_time(refund.get("created_at")),
        metadata=compact(note=text(refund.get("note"))),
    )


def _name(customer: Mapping[str, Any]) -> str | None:
    parts = [text(customer.get("first_name")), text(customer.get("last_name"))]
    return " ".join(p for p in parts if p) or None
