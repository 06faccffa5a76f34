"""Whop: Standard Webhooks headers, keyed by the UTF-8 bytes of the secret as Whop shows it.

Whop signs `{webhook-id}.{webhook-timestamp}.{body}` (HMAC-SHA256, `webhook-signature: v1,<b64>`).
The key is the secret's own bytes (`ws_...`): Whop's docs and SDK examples hand the secret to the
`standardwebhooks` verifier as `btoa(WHOP_WEBHOOK_SECRET)`, which the verifier decodes straight
back. The delivery id is the `webhook-id` header; the body's `timestamp` is when it happened.
Sandbox and production are separate companies with separate secrets, so `livemode` is None.

Sale: `payment.succeeded` — `total` (a decimal number in major units, read exactly) less
`tax_amount`, in `currency`; named by `billing_reason` (`subscription_create` starts the
membership's subscription, `subscription_cycle` renews it, `one_time` is a purchase). Lead:
`membership.activated` of a `trialing` membership (`Started Trial`). Refund: `refund.created` /
`refund.updated` once `status` is `succeeded` (the refund's `amount`, gross of tax, of its `payment`).
Identity: the payment's `metadata`, Whop's `user` (id, email, name), the member's phone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, ProviderEvent, Refund, Sale, SaleKind
from adapter.money import exponent, normalize_currency
from adapter.payload import compact, iso_time, mapping, text
from adapter.plugin import Provider, SourceContext, StandardWebhooksEnvelope
from adapter.samples import SamplesMixin
from adapter.signing import StandardWebhooks

__all__ = ["WhopProvider"]

_KINDS: dict[str, SaleKind] = {"one_time": "purchase", "manual": "purchase",
                               "subscription_update": "subscription_update"}


class WhopProvider(StandardWebhooksEnvelope, SamplesMixin, Provider):
    """Whop: Standard Webhooks, HMAC key = the secret string's UTF-8 bytes."""

    name = "whop"
    label = "Whop"
    scheme = StandardWebhooks(key_encoding="utf8")
    tax = "excluded"  # `tax_amount` is reported and taken off `total`

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["timestamp"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
        obj = mapping(data.get("data"))
        if text(obj.get("id")):
            obj["id"] = f"{obj['id']}_{unique}"



    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale | Refund]:
        """`payment.succeeded` → Sale, trialing `membership.activated` → Lead, succeeded
        `refund.*` → Refund; `[]` otherwise. Raises `Ignore("zero_amount")` for a payment of
        nothing and `Ignore("refund_not_succeeded")` for a pending or failed refund."""
        obj: dict[str, Any] = event.data["data"]
        if event.type == "payment.succeeded":
            return [self._sale(obj)]
        if event.type == "membership.activated":
            return [self._trial(obj)] if text(obj.get("status")) == "trialing" else []
        if event.type in ("refund.created", "refund.updated"):
            return [self._refund(obj)]
        return []

    def _sale(self, pay: dict[str, Any]) -> Sale:
        payment_id, currency = text(pay.get("id")), _currency(pay)
        if payment_id is None:
            raise PayloadError("Whop payment without `id`")
        total = _decimal(pay, "total")
        if total is None:
            raise PayloadError("Whop payment without `total`")
        gross = _minor(total, currency)
        tax = _minor(_decimal(pay, "tax_amount") or Decimal(0), currency)
        reason = text(pay.get("billing_reason"))
        membership = text(mapping(pay.get("membership")).get("id"))
        if gross - tax <= 0:
            raise Ignore("zero_amount", trial_of=membership if reason == "subscription_create" else None)
        kind = _KINDS.get(reason or "", "subscription" if reason else "purchase")
        subscription = membership if kind != "purchase" else None
        return Sale(
            kind=kind, amount=gross - tax, gross_amount=gross, currency=currency, invoice_id=payment_id,
            subscription_id=subscription,
            starts_subscription={"subscription_create": True, "subscription_cycle": False}.get(reason or ""),
            timestamp=iso_time(pay.get("paid_at")),
            **_hints(pay),
            metadata=compact(subscriptionId=subscription, billingReason=reason, taxAmount=tax,
                             productId=text(mapping(pay.get("product")).get("id")),
                             planId=text(mapping(pay.get("plan")).get("id"))),
        )

    def _trial(self, membership: dict[str, Any]) -> Lead:
        return Lead(kind="started_trial", **_hints(membership),
                    metadata=compact(subscriptionId=text(membership.get("id"))))

    def _refund(self, refund: dict[str, Any]) -> Refund:
        if text(refund.get("status")) != "succeeded":
            raise Ignore("refund_not_succeeded")
        payment = text(mapping(refund.get("payment")).get("id"))
        if payment is None:
            raise PayloadError("Whop refund without its `payment`")
        amount = _decimal(refund, "amount")
        currency = _currency(refund) if amount is not None else None
        return Refund(reverses=(payment,), amount=_minor(amount, currency) if amount and currency else None,
                      currency=currency, includes_tax=True, refund_id=text(refund.get("id")))


def _currency(obj: dict[str, Any]) -> str:
    try:
        return normalize_currency(text(obj.get("currency")) or "")
    except ValueError:
        raise PayloadError(f"Whop object without an ISO 4217 `currency`: {obj.get('currency')!r}") from None


def _decimal(obj: dict[str, Any], key: str) -> Decimal | None:
    """A JSON number in major units, read exactly from its shortest text (`9.99`, never its binary value)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise PayloadError(f"Whop `{key}` is not a number: {value!r}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise PayloadError(f"Whop `{key}` is not a number: {value!r}") from None
    if not number.is_finite() or number < 0:
        raise PayloadError(f"Whop `{key}` is not an amount: {value!r}")
    return number


def _minor(amount: Decimal, currency: str) -> int:
    minor = amount.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise PayloadError(f"{amount} has more decimals than {currency.upper()} allows")
    return int(minor)


def _hints(obj: dict[str, Any]) -> dict[str, Any]:
    user = mapping(obj.get("user"))
    return {
        "metadata_sources": (obj.get("metadata"),),
        "provider_customer_id": text(user.get("id")),
        "email": text(user.get("email")),
        "name": text(user.get("name")),
        "phone": text(mapping(obj.get("member")).get("phone")),
    }
