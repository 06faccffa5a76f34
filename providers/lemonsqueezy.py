"""Lemon Squeezy: `X-Signature`, HMAC-SHA256 hex of the raw body, keyed by the webhook's secret.

The scheme signs no timestamp, so there is no freshness check; delivery dedup makes a replay a
`duplicate`. Bodies carry no event id: a delivery is `"{meta.event_name}:{data.id}"`, the same
on every retry and on a resend from the dashboard.

Sales: `order_created` (status `paid`) and `subscription_payment_success` (a subscription
invoice; `billing_reason` `initial`/`renewal` → a subscription payment, `updated` → a
subscription update). Amounts are `total - tax`, integers in the order currency's smallest unit.

Lemon Squeezy sends both `order_created` and an `initial` `subscription_payment_success` for the
first payment of a new subscription, and neither names the other's id. What they share is the
order's `identifier` (UUID): the order carries it, and a subscription invoice's `invoice_url` is
`.../my-orders/<order identifier>/subscription-invoice/<id>`. Both Sales therefore use that UUID
as `invoice_id`, and the core's business dedup keeps one. An initial invoice whose URL does not
have that shape is ignored (`counted_by_order`) rather than risk counting the payment twice.
An order's Sale also remembers `order_<id>`, and an initial invoice's `subscription_invoice_<id>`
(`payment_refs`); `gross_amount` is the `total`, tax included.

Refunds: `order_refunded` (the order) and `subscription_payment_refunded` (the invoice), status
`refunded` or `partial_refund`. `refunded_amount` is the running total refunded, tax included:
a `cumulative` Refund, `includes_tax`. It reverses the order's identifier and `order_<id>`, or the
invoice's `subscription_invoice_<id>` and, for an `initial` invoice, the order identifier of its
`invoice_url` (a renewal's URL names the subscription's first order too, so it is not used). Lemon
Squeezy names no refund id; the delivery id of a refund event adds the `refunded_amount`, so a
second partial refund of the same order is a new delivery rather than a duplicate of the first.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Mapped, ProviderEvent, Refund, Sale, SaleKind
from adapter.payload import compact, ident, iso_time, mapping, minor_amount, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BodyHmac

__all__ = ["LemonSqueezyProvider"]

_ORDER_IN_INVOICE_URL = re.compile(
    r"/my-orders/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/subscription-invoice/",
    re.IGNORECASE,
)


_REFUNDS = frozenset({"order_refunded", "subscription_payment_refunded"})


def _cents(attrs: dict[str, Any], key: str) -> int:
    value = minor_amount(attrs.get(key))  # negative: never a payment or a tax
    if value is None:
        raise PayloadError(f"`{key}` is not an integer amount: {attrs.get(key)!r}")
    return value


def _iso(now: int) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LemonSqueezyProvider(SamplesMixin, Provider):
    """Lemon Squeezy: `X-Signature`, HMAC-SHA256 hex of the raw body; no timestamp."""

    name = "lemonsqueezy"
    cancellations = frozenset({"subscription_cancelled", "subscription_expired"})
    scheme = BodyHmac(header="X-Signature")

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        """The unsigned `X-Event-Name` header every delivery carries."""
        try:
            event_name = mapping(self.json_body(body).get("meta")).get("event_name")
        except PayloadError:
            return {}
        return {"X-Event-Name": event_name} if isinstance(event_name, str) else {}

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        resource = mapping(data.get("data"))
        resource["id"] = str(int(unique[:12], 16))
        attrs = mapping(resource.get("attributes"))
        attrs["created_at"] = attrs["updated_at"] = _iso(now)

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The delivery `"{event_name}:{data.id}"`; the event name from the signed body
        (`meta.event_name`), else the `X-Event-Name` header. Raises `PayloadError`."""
        payload = self.json_body(body)
        meta, resource = mapping(payload.get("meta")), payload.get("data")
        event_name = meta.get("event_name") or headers.get("x-event-name")
        if not isinstance(event_name, str) or not event_name:
            raise PayloadError("Lemon Squeezy webhook without `meta.event_name`")
        if not isinstance(resource, dict) or ident(resource.get("id")) is None:
            raise PayloadError("Lemon Squeezy webhook without a `data` resource and its `id`")
        attrs = mapping(resource.get("attributes"))
        first, second = ("created_at", "updated_at")
        if not event_name.endswith("_created"):
            first, second = second, first  # the resource's last change is what the event reports
        occurred = iso_time(attrs.get(first)) or iso_time(attrs.get(second))
        test_mode = meta.get("test_mode", attrs.get("test_mode"))
        delivery = f"{event_name}:{ident(resource['id'])}"
        if event_name in _REFUNDS:  # one resource is refunded in several steps: one delivery each
            delivery += f":{ident(attrs.get('refunded_amount'))}"
        return ProviderEvent(
            id=delivery,
            type=event_name,
            occurred_at=occurred or datetime.now(UTC),  # none given: the moment of receipt
            livemode=not test_mode if isinstance(test_mode, bool) else None,
            data=payload,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`order_created` and `subscription_payment_success` → one Sale; `order_refunded` and
        `subscription_payment_refunded` → one cumulative Refund; `[]` otherwise. Raises
        `Ignore`: `unpaid`, `zero_amount`, `counted_by_order` (see the module doc), and
        `not_refunded` for a refund event of a resource that is not refunded."""
        resource: dict[str, Any] = event.data["data"]
        attrs = mapping(resource.get("attributes"))
        custom = mapping(event.data.get("meta")).get("custom_data")
        if event.type == "order_created":
            return [self._order_sale(ident(resource["id"]), attrs, custom)]
        if event.type == "subscription_payment_success":
            return [self._invoice_sale(ident(resource["id"]), attrs, custom)]
        if event.type in _REFUNDS:
            return [_refund(event.type, ident(resource["id"]), attrs)]
        return []

    def _order_sale(self, order_id: str | None, attrs: dict[str, Any], custom: Any) -> Sale:
        amount, tax, currency = _paid_net(attrs)
        identifier = ident(attrs.get("identifier"))
        if identifier is None:
            raise PayloadError("order without `identifier`")
        return Sale(
            kind="purchase",
            amount=amount,
            currency=currency,
            invoice_id=identifier.lower(),
            payment_refs=(f"order_{order_id}",) if order_id else (),
            gross_amount=amount + tax,
            timestamp=iso_time(attrs.get("created_at")),
            **_hints(attrs, custom),
            metadata=compact(orderId=order_id, orderNumber=attrs.get("order_number"), taxAmount=tax),
        )

    def _invoice_sale(self, invoice_id: str | None, attrs: dict[str, Any], custom: Any) -> Sale:
        amount, tax, currency = _paid_net(attrs)
        subscription = ident(attrs.get("subscription_id"))
        if subscription is None:
            raise PayloadError("subscription invoice without `subscription_id`")
        reason = attrs.get("billing_reason")
        key = f"subscription_invoice_{invoice_id}"
        if reason == "initial":
            found = _ORDER_IN_INVOICE_URL.search(str(mapping(attrs.get("urls")).get("invoice_url") or ""))
            if found is None:
                raise Ignore("counted_by_order")
            key = found.group(1).lower()  # the order's identifier: one Sale with order_created
        kind: SaleKind = "subscription_update" if reason == "updated" else "subscription"
        return Sale(
            kind=kind,
            amount=amount,
            currency=currency,
            invoice_id=key,
            payment_refs=(f"subscription_invoice_{invoice_id}",) if key != f"subscription_invoice_{invoice_id}" else (),
            gross_amount=amount + tax,
            subscription_id=subscription,
            starts_subscription={"initial": True, "renewal": False}.get(str(reason)),
            timestamp=iso_time(attrs.get("created_at")),
            **_hints(attrs, custom),
            metadata=compact(subscriptionId=subscription, billingReason=text(reason),
                              subscriptionInvoiceId=invoice_id, taxAmount=tax),
        )


def _refund(event_type: str, resource_id: str | None, attrs: dict[str, Any]) -> Refund:
    """The running `refunded_amount` (tax included) of a refunded order or subscription invoice."""
    if attrs.get("refunded") is not True and attrs.get("status") not in ("refunded", "partial_refund"):
        raise Ignore("not_refunded")
    currency = text(attrs.get("currency"))
    if currency is None or resource_id is None:
        raise PayloadError("refund event without `id` and `currency`")
    if event_type == "order_refunded":
        identifier = ident(attrs.get("identifier"))
        ids = [identifier.lower()] if identifier else []
        ids.append(f"order_{resource_id}")
    else:
        ids = [f"subscription_invoice_{resource_id}"]
        # The URL names the subscription's first order on every invoice: only an initial
        # invoice is that order's payment (a renewal's refund must not reverse the first Sale).
        found = _ORDER_IN_INVOICE_URL.search(str(mapping(attrs.get("urls")).get("invoice_url") or ""))
        if found is not None and attrs.get("billing_reason") == "initial":
            ids.append(found.group(1).lower())
    return Refund(
        reverses=tuple(ids),
        amount=_cents(attrs, "refunded_amount"),
        currency=currency,
        cumulative=True,
        includes_tax=True,
        timestamp=iso_time(attrs.get("refunded_at")),
        metadata=compact(status=text(attrs.get("status")), subscriptionId=ident(attrs.get("subscription_id"))),
    )


def _paid_net(attrs: dict[str, Any]) -> tuple[int, int, str]:
    """(total - tax, tax, currency) of a paid order or invoice; `Ignore` when unpaid or zero.

    The amounts are the ones in the order's own currency, never the `_usd` conversions."""
    if attrs.get("status") != "paid":
        raise Ignore("unpaid")
    currency = text(attrs.get("currency"))
    if currency is None:
        raise PayloadError("no `currency`")
    tax = _cents(attrs, "tax")
    amount = _cents(attrs, "total") - tax
    if amount <= 0:
        raise Ignore("zero_amount")
    return amount, tax, currency


def _hints(attrs: dict[str, Any], custom: Any) -> dict[str, Any]:
    """Where identity lives: the customer, and `meta.custom_data` (checkout `custom` data)."""
    return {
        "provider_customer_id": ident(attrs.get("customer_id")),
        "email": text(attrs.get("user_email")),
        "name": text(attrs.get("user_name")),
        "metadata_sources": (custom,),
    }
