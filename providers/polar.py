"""Polar: Standard Webhooks headers, keyed by the UTF-8 bytes of the secret as Polar shows it.

Polar signs `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 and sends
`webhook-signature: v1,<base64>` (several space-separated entries during rotation). Unlike
plain Standard Webhooks, the key is not the base64-decoded secret: Polar's SDK (polar-python
`polar_sdk/_webhooks/__init__.py`, `validate_event`) base64-*encodes* the secret string before
handing it to the `standardwebhooks` library, which decodes it straight back, so the HMAC key
is the secret's own UTF-8 bytes (`polar_whs_...`, prefix and all). Polar's newer SDK
(polarsource/polar `sdk/python/polar/webhooks.py`, `_signing_keys`) also accepts, for a secret
of the Standard Webhooks form `whsec_<base64>`, the decoded bytes; so do we. Timestamps further
than `tolerance_s` from now, in either direction, are refused.

The delivery id is the `webhook-id` header (the body has none). Polar has no live/test flag
in payloads: sandbox and production are separate organizations with separate secrets, so
`livemode` is None; point each at its own source.

Sale: `order.paid`, amount `net_amount` (cents, after discounts, before tax), named by
`billing_reason`; `gross_amount` is its `total_amount`. Refund: `order.refunded` (the order
again, `status` `refunded` or `partially_refunded`): `refunded_amount` is the running total
refunded of the order, before tax (Polar keeps the tax in `refunded_tax_amount`), so the Refund is
`cumulative` and reverses the order id. Lead: `customer.created` (`Sign up`). Click and user ids come from the
order's and the customer's `metadata`; `customer.external_id` is the merchant's own user id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, Mapped, ProviderEvent, Refund, Sale, SaleKind
from adapter.payload import compact, integer, iso_time, mapping, text
from adapter.plugin import Provider, SourceContext, StandardWebhooksEnvelope
from adapter.samples import SamplesMixin
from adapter.signing import StandardWebhooks

__all__ = ["PolarProvider"]

_KINDS: dict[str, SaleKind] = {
    "purchase": "purchase",
    "subscription_create": "subscription",
    "subscription_cycle": "subscription",
    "subscription_update": "subscription_update",
}


class PolarProvider(StandardWebhooksEnvelope, SamplesMixin, Provider):
    """Polar: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`),
    HMAC key = the secret string's UTF-8 bytes (and the decoded bytes of a `whsec_` secret)."""

    name = "polar"
    label = "Polar"
    cancellations = frozenset({"subscription.canceled", "subscription.revoked"})
    scheme = StandardWebhooks(key_encoding="utf8+whsec")

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        # The webhook-id is derived from the body, so a new `timestamp` is a new message.
        data["timestamp"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")



    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`order.paid` → Sale, `order.refunded` → cumulative Refund, `customer.created` → Lead,
        `[]` for other types.

        Raises `Ignore("unpaid")` for an order marked unpaid and `Ignore("zero_amount")` for
        an order of nothing (`net_amount` ≤ 0: free products, 100% discounts, trials).
        """
        obj: dict[str, Any] = event.data["data"]
        if event.type == "order.paid":
            return [self._sale(obj)]
        if event.type == "order.refunded":
            return [_refund(obj)]
        if event.type == "customer.created":
            return [self._lead(obj)]
        return []

    def _sale(self, order: dict[str, Any]) -> Sale:
        if order.get("paid") is False:
            raise Ignore("unpaid")
        amount, tax = integer(order.get("net_amount")), integer(order.get("tax_amount", 0))
        if amount is None:
            raise PayloadError(f"order `net_amount` is not an integer: {order.get('net_amount')!r}")
        if amount <= 0:  # a trial's first order is one of nothing: remembered as its trial
            first = text(order.get("billing_reason")) == "subscription_create"
            raise Ignore("zero_amount", trial_of=text(order.get("subscription_id")) if first else None)
        currency, order_id = text(order.get("currency")), text(order.get("id"))
        if currency is None or order_id is None:
            raise PayloadError("order.paid without `id` and `currency`")
        reason = text(order.get("billing_reason"))
        subscription = text(order.get("subscription_id"))
        kind = _KINDS.get(reason or "", "subscription" if subscription else "purchase")
        customer = mapping(order.get("customer"))
        return Sale(
            kind=kind,
            amount=amount,
            currency=currency,
            invoice_id=order_id,
            gross_amount=_gross(order, amount, tax),
            subscription_id=subscription,
            starts_subscription={"subscription_create": True, "subscription_cycle": False}.get(reason or ""),
            provider_customer_id=text(customer.get("id")) or text(order.get("customer_id")),
            email=text(customer.get("email")),
            name=text(customer.get("name")) or text(order.get("billing_name")),
            **_hints(customer, order.get("metadata")),
            metadata=compact(subscriptionId=subscription, billingReason=reason,
                              taxAmount=tax,
                              invoiceNumber=text(order.get("invoice_number"))),
        )

    def _lead(self, customer: dict[str, Any]) -> Lead:
        customer_id = text(customer.get("id"))
        if customer_id is None:
            raise PayloadError("customer.created without `id`")
        return Lead(
            kind="sign_up",
            provider_customer_id=customer_id,
            email=text(customer.get("email")),
            name=text(customer.get("name")),
            **_hints(customer),
        )


def _gross(order: dict[str, Any], net: int, tax: int | None) -> int | None:
    """The order's `total_amount` (net + tax); older payloads without it: net + `tax_amount`."""
    total = integer(order.get("total_amount"))
    if total is not None and total >= net:
        return total
    return net + tax if tax is not None else None


def _refund(order: dict[str, Any]) -> Refund:
    """`order.refunded`: the order's running `refunded_amount` (before tax) as a cumulative
    Refund of the order; the tax refunded (`refunded_tax_amount`) is in metadata."""
    order_id, currency = text(order.get("id")), text(order.get("currency"))
    refunded = integer(order.get("refunded_amount"))
    if order_id is None or currency is None:
        raise PayloadError("order.refunded without `id` and `currency`")
    if refunded is None:
        raise PayloadError(f"order `refunded_amount` is not an integer: {order.get('refunded_amount')!r}")
    return Refund(
        reverses=(order_id,),
        amount=refunded,
        currency=currency,
        cumulative=True,
        timestamp=iso_time(order.get("modified_at")),
        metadata=compact(status=text(order.get("status")),
                         refundedTaxAmount=integer(order.get("refunded_tax_amount"))),
    )


def _hints(customer: dict[str, Any], *metadata: Any) -> dict[str, Any]:
    """Where identity lives: the order's then the customer's metadata; `customer.external_id`
    is Polar's own field for the user id (the same on the customer's Lead and every order)."""
    return {
        "metadata_sources": (*metadata, customer.get("metadata")),
        "external_id": text(customer.get("external_id")),
    }
