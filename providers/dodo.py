"""Dodo Payments: Standard Webhooks with the `whsec_` base64 secret, payments in minor units.

Dodo follows the Standard Webhooks specification as written: `webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<b64>`, HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed by the
base64-decoded `whsec_...` secret. The delivery id is the `webhook-id` header. Body:
`{"business_id", "type", "timestamp", "data": {"payload_type": ..., ...}}`. Test and live mode
are separate environments with separate secrets, so `livemode` is None.

Sale: `payment.succeeded` — `total_amount` ("total amount charged to the customer including tax,
in smallest currency unit") less `tax`, in `currency`; a payment with a `subscription_id` is a
subscription payment (Dodo does not say which starts it: the core names the first one seen the
creation). Refund: `refund.succeeded` (`amount` in minor units of its payment `payment_id`).
Identity: the payment's `metadata`, then the customer's; Dodo's `customer` (id, email, name, phone).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, ProviderEvent, Refund, Sale
from adapter.money import normalize_currency
from adapter.payload import compact, integer, iso_time, mapping, text
from adapter.plugin import Provider, SourceContext, StandardWebhooksEnvelope
from adapter.samples import SamplesMixin
from adapter.signing import StandardWebhooks

__all__ = ["DodoProvider"]


class DodoProvider(StandardWebhooksEnvelope, SamplesMixin, Provider):
    """Dodo Payments: Standard Webhooks (`whsec_` base64 secret)."""

    name = "dodo"
    label = "Dodo"
    scheme = StandardWebhooks(key_encoding="whsec")
    tax = "excluded"  # `tax` is reported and taken off `total_amount`

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["timestamp"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
        obj = mapping(data.get("data"))
        for key in ("payment_id", "refund_id"):
            if text(obj.get(key)) and (key == "refund_id" or "refund_id" not in obj):
                obj[key] = f"{obj[key]}{unique}"



    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale | Refund]:
        """`payment.succeeded` → Sale, `refund.succeeded` → Refund, `[]` otherwise; raises
        `Ignore("zero_amount")` for a payment of nothing once tax is taken off."""
        obj: dict[str, Any] = event.data["data"]
        if event.type == "payment.succeeded":
            return [self._sale(obj)]
        if event.type == "refund.succeeded":
            return [self._refund(obj)]
        return []

    def _sale(self, pay: dict[str, Any]) -> Sale:
        payment_id = text(pay.get("payment_id"))
        total, tax = integer(pay.get("total_amount")), integer(pay.get("tax") or 0)
        if payment_id is None:
            raise PayloadError("Dodo payment without `payment_id`")
        if total is None or tax is None or total < 0 or tax < 0:
            raise PayloadError(f"Dodo `total_amount` / `tax` are not minor units: {pay.get('total_amount')!r}")
        subscription = text(pay.get("subscription_id"))
        if total - tax <= 0:
            raise Ignore("zero_amount", trial_of=subscription)
        customer = mapping(pay.get("customer"))
        return Sale(
            kind="subscription" if subscription else "purchase", amount=total - tax, gross_amount=total,
            currency=_currency(pay), invoice_id=payment_id, subscription_id=subscription,
            payment_refs=tuple(r for r in (text(pay.get("invoice_id")),) if r and r != payment_id),
            timestamp=iso_time(pay.get("created_at")),
            metadata_sources=(mapping(pay.get("metadata")), mapping(customer.get("metadata"))),
            provider_customer_id=text(customer.get("customer_id")), email=text(customer.get("email")),
            name=text(customer.get("name")), phone=text(customer.get("phone_number")),
            metadata=compact(subscriptionId=subscription, taxAmount=tax),
        )

    def _refund(self, refund: dict[str, Any]) -> Refund:
        payment_id = text(refund.get("payment_id"))
        if payment_id is None:
            raise PayloadError("Dodo refund without `payment_id`")
        amount = integer(refund.get("amount"))
        if refund.get("amount") is not None and (amount is None or amount < 0):
            raise PayloadError(f"Dodo refund `amount` is not minor units: {refund.get('amount')!r}")
        return Refund(reverses=(payment_id,), amount=amount,
                      currency=_currency(refund) if amount is not None else None,
                      includes_tax=amount is not None, refund_id=text(refund.get("refund_id")))


def _currency(obj: dict[str, Any]) -> str:
    try:
        return normalize_currency(text(obj.get("currency")) or "")
    except ValueError:
        raise PayloadError(f"Dodo object without an ISO 4217 `currency`: {obj.get('currency')!r}") from None
