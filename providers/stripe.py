"""Stripe: `Stripe-Signature: t=..,v1=..`, HMAC-SHA256 hex over `t.body`, keyed by `whsec_...`.

Sales: `checkout.session.completed` (paid, not setup mode),
`checkout.session.async_payment_succeeded` and `invoice.paid` (amount > 0).
Leads: `customer.created` (`Sign up`) and a trialing `customer.subscription.created`
(`Started Trial`). Amounts exclude tax and are converted from Stripe's unit to ISO 4217's
(Stripe counts MGA in whole ariary and ISK in hundredths).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from adapter.attribution import first_key, from_client_reference
from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, ProviderEvent, Sale, SaleKind
from adapter.money import rescale
from adapter.plugin import Headers, Provider, SourceContext
from adapter.signing import TimestampedHmac

__all__ = ["StripeProvider"]

# https://docs.stripe.com/currencies: Stripe's own minor units where they differ from 2.
_STRIPE_ZERO_DECIMAL = frozenset(
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]
)
_STRIPE_THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


def _stripe_exponent(currency: str) -> int:
    cur = currency.lower()
    return 0 if cur in _STRIPE_ZERO_DECIMAL else 3 if cur in _STRIPE_THREE_DECIMAL else 2


def _id(value: Any) -> str | None:
    """An id field that may arrive expanded (`{"id": ...}`) or as a plain string."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class StripeProvider(Provider):
    """Stripe: `Stripe-Signature: t=..,v1=..`, HMAC-SHA256 hex over `t.body`."""

    name = "stripe"
    scheme = TimestampedHmac(header="Stripe-Signature", ts="t", sig="v1", signed="{ts}.{body}")

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["id"] = f"evt_{unique}"
        data["created"] = now

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        data = self.json_body(body)
        event_id, event_type, created = data.get("id"), data.get("type"), data.get("created")
        obj = _dict(data.get("data")).get("object")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise PayloadError("Stripe event without string `id` and `type`")
        if isinstance(created, bool) or not isinstance(created, int):
            raise PayloadError("Stripe event without integer `created`")
        if not isinstance(obj, dict):
            raise PayloadError("Stripe event without `data.object`")
        livemode = data.get("livemode")
        return ProviderEvent(
            id=event_id,
            type=event_type,
            occurred_at=datetime.fromtimestamp(created, UTC),
            livemode=livemode if isinstance(livemode, bool) else None,
            data=data,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale]:
        obj: dict[str, Any] = event.data["data"]["object"]
        if event.type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            return [self._checkout_sale(obj, ctx)]
        if event.type == "invoice.paid":
            return [self._invoice_sale(obj, ctx)]
        if event.type == "customer.created":
            return [self._lead(obj, "sign_up", _id(obj.get("id")), ctx)]
        if event.type == "customer.subscription.created":
            if obj.get("status") != "trialing":
                raise Ignore("not_trialing")
            return [self._lead(obj, "started_trial", _id(obj.get("customer")), ctx)]
        return []

    def _hints(self, ctx: SourceContext, *metadata: Any, reference: Any = None) -> dict[str, Any]:
        from_reference = from_client_reference(reference, ctx.client_reference_prefix)
        click = first_key(ctx.click_id_keys, *metadata) or from_reference
        external = first_key(ctx.customer_id_keys, *metadata)
        if external is None and from_reference is None and isinstance(reference, str) and reference.strip():
            external = reference.strip()  # a plain client_reference_id is the merchant's own user id
        return {"click_id": click, "external_id": external}

    def _checkout_sale(self, session: dict[str, Any], ctx: SourceContext) -> Sale:
        mode = session.get("mode")
        if mode == "setup":
            raise Ignore("setup_mode")
        if session.get("payment_status") != "paid":
            raise Ignore("unpaid")
        currency = str(session["currency"])
        tax = _dict(session.get("total_details")).get("amount_tax") or 0
        amount = rescale(int(session["amount_total"]) - int(tax), _stripe_exponent(currency), currency)
        if amount <= 0:
            raise Ignore("zero_amount")
        details = _dict(session.get("customer_details"))
        kind: SaleKind = "subscription" if mode == "subscription" else "purchase"
        subscription = _id(session.get("subscription"))
        return Sale(
            kind=kind,
            amount=amount,
            currency=currency,
            invoice_id=_id(session.get("invoice")) or _id(session.get("payment_intent")) or session["id"],
            subscription_id=subscription,
            provider_customer_id=_id(session.get("customer")),
            email=details.get("email") or session.get("customer_email"),
            name=details.get("name"),
            **self._hints(ctx, session.get("metadata"), reference=session.get("client_reference_id")),
            metadata=_compact(
                checkoutSessionId=session.get("id"),
                subscriptionId=subscription,
                taxAmount=rescale(int(tax), _stripe_exponent(currency), currency),
            ),
        )

    def _invoice_sale(self, invoice: dict[str, Any], ctx: SourceContext) -> Sale:
        parent_details = _dict(_dict(invoice.get("parent")).get("subscription_details"))
        legacy_details = _dict(invoice.get("subscription_details"))
        subscription = _id(invoice.get("subscription")) or _id(parent_details.get("subscription"))
        reason = invoice.get("billing_reason")
        kind: SaleKind = "purchase"
        if subscription:
            kind = "subscription_update" if reason == "subscription_update" else "subscription"
        currency = str(invoice["currency"])
        total, paid = int(invoice["total"]), int(invoice["amount_paid"])
        excluding = invoice.get("total_excluding_tax")
        tax = total - int(excluding) if excluding is not None else _invoice_tax(invoice)
        # Credits and customer balance lower what was paid; tax was still part of what was due.
        net = total - tax if paid == total else max(0, paid - tax)
        amount = rescale(net, _stripe_exponent(currency), currency)
        if amount <= 0:
            raise Ignore("zero_amount")
        paid_at = _dict(invoice.get("status_transitions")).get("paid_at")
        return Sale(
            kind=kind,
            amount=amount,
            currency=currency,
            invoice_id=invoice["id"],
            subscription_id=subscription,
            provider_customer_id=_id(invoice.get("customer")),
            email=invoice.get("customer_email"),
            name=invoice.get("customer_name"),
            timestamp=datetime.fromtimestamp(paid_at, UTC) if isinstance(paid_at, int) else None,
            **self._hints(
                ctx,
                invoice.get("metadata"),
                legacy_details.get("metadata"),
                parent_details.get("metadata"),
            ),
            metadata=_compact(
                subscriptionId=subscription,
                billingReason=reason,
                taxAmount=rescale(tax, _stripe_exponent(currency), currency),
            ),
        )

    def _lead(self, obj: dict[str, Any], kind: str, customer: str | None, ctx: SourceContext) -> Lead:
        return Lead(
            kind="started_trial" if kind == "started_trial" else "sign_up",
            provider_customer_id=customer,
            email=obj.get("email"),
            name=obj.get("name"),
            **self._hints(ctx, obj.get("metadata")),
            metadata=_compact(subscriptionId=obj.get("id") if kind == "started_trial" else None),
        )


def _invoice_tax(invoice: Mapping[str, Any]) -> int:
    """Tax of an invoice from API versions without `total_excluding_tax`."""
    if isinstance(invoice.get("tax"), int):
        return int(invoice["tax"])
    amounts = invoice.get("total_taxes") or invoice.get("total_tax_amounts") or []
    return sum(int(t.get("amount", 0)) for t in amounts if isinstance(t, Mapping))


def _compact(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
