"""Stripe: `Stripe-Signature: t=..,v1=..`, HMAC-SHA256 hex over `t.body`, keyed by `whsec_...`.

Sales: `checkout.session.completed` (paid, not setup mode),
`checkout.session.async_payment_succeeded` and `invoice.paid` (amount > 0).
Leads: `customer.created` (`Sign up`) and a trialing `customer.subscription.created`
(`Started Trial`). Amounts exclude tax and are converted from Stripe's unit to ISO 4217's
(Stripe counts MGA in whole ariary and ISK in hundredths).
Refunds (SPEC §9): `charge.refunded` (the charge's cumulative `amount_refunded`), and a lost
dispute (`charge.dispute.funds_withdrawn`, `charge.dispute.closed` with status `lost`) as a
chargeback applied once per dispute id. In Stripe's current API a Charge names no invoice and an
Invoice no payment intent: `invoice_payment.paid` links the two. `customer.subscription.deleted`
is recorded as `cancellation_recorded`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapter.attribution import ClientReferenceSettings
from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, Mapped, PaymentLink, ProviderEvent, Refund, Sale, SaleKind
from adapter.money import rescale
from adapter.payload import compact, epoch_time, integer, mapping, object_id, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import TimestampedHmac

__all__ = ["StripeProvider", "StripeSettings"]

# https://docs.stripe.com/currencies: Stripe's own minor units where they differ from 2.
_STRIPE_ZERO_DECIMAL = frozenset(
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]
)
_STRIPE_THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


def _stripe_exponent(currency: str) -> int:
    cur = currency.lower()
    return 0 if cur in _STRIPE_ZERO_DECIMAL else 3 if cur in _STRIPE_THREE_DECIMAL else 2


def _amount(obj: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """An integer amount field of a Stripe object; `PayloadError` when absent or not an integer."""
    raw = obj.get(key)
    value = default if raw is None else integer(raw)
    if value is None:
        raise PayloadError(f"Stripe `{key}` is not an integer amount: {obj.get(key)!r}")
    return value


class StripeSettings(ClientReferenceSettings):
    """Source settings: `client_reference_prefix` (default `dub_id_`), the prefix that makes a
    Checkout Session's `client_reference_id` a click id rather than the merchant's user id."""


_STARTS = {"subscription_create": True, "subscription_cycle": False}
"""Invoice `billing_reason` → whether the payment starts its subscription (SPEC §8); other
reasons (`manual`, `subscription_threshold`, `subscription`) say nothing."""


class StripeProvider(SamplesMixin, Provider):
    """Stripe: `Stripe-Signature: t=..,v1=..`, HMAC-SHA256 hex over `t.body`."""

    name = "stripe"
    cancellations = frozenset({"customer.subscription.deleted"})
    settings_model = StripeSettings
    scheme = TimestampedHmac(header="Stripe-Signature", ts="t", sig="v1", signed="{ts}.{body}")

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["id"] = f"evt_{unique}"
        data["created"] = now

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        data = self.json_body(body)
        event_id, event_type = text(data.get("id")), text(data.get("type"))
        created, obj = data.get("created"), mapping(data.get("data")).get("object")
        if event_id is None or event_type is None:
            raise PayloadError("Stripe event without string `id` and `type`")
        occurred = epoch_time(created) if isinstance(created, int) else None
        if occurred is None:
            raise PayloadError("Stripe event without integer `created`")
        if not isinstance(obj, dict):
            raise PayloadError("Stripe event without `data.object`")
        livemode = data.get("livemode")
        return ProviderEvent(
            id=event_id,
            type=event_type,
            occurred_at=occurred,
            livemode=livemode if isinstance(livemode, bool) else None,
            data=data,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        obj: dict[str, Any] = event.data["data"]["object"]
        if event.type == "charge.refunded":
            return [self._charge_refund(obj)]
        if event.type in ("charge.dispute.funds_withdrawn", "charge.dispute.closed"):
            return [self._chargeback(event.type, obj)]
        if event.type == "invoice_payment.paid":
            return [self._payment_link(obj)]
        if event.type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            return [self._checkout_sale(obj)]
        if event.type == "invoice.paid":
            return [self._invoice_sale(obj)]
        if event.type == "customer.created":
            return [self._lead(obj, "sign_up", object_id(obj.get("id")))]
        if event.type == "customer.subscription.created":
            if obj.get("status") != "trialing":
                raise Ignore("not_trialing")
            return [self._lead(obj, "started_trial", object_id(obj.get("customer")))]
        return []

    def _checkout_sale(self, session: dict[str, Any]) -> Sale:
        mode = session.get("mode")
        if mode == "setup":
            raise Ignore("setup_mode")
        if session.get("payment_status") != "paid":
            raise Ignore("unpaid")
        currency = text(session.get("currency"))
        if currency is None:
            raise PayloadError("Checkout Session without `currency`")
        tax = _amount(mapping(session.get("total_details")), "amount_tax", 0)
        if tax < 0 or _amount(session, "amount_total") < 0:  # would need guessing (issue 12)
            raise PayloadError(f"Checkout Session with a negative amount_total or amount_tax ({tax})")
        amount = rescale(_amount(session, "amount_total") - tax, _stripe_exponent(currency), currency)
        if amount <= 0:
            raise Ignore("zero_amount")
        details = mapping(session.get("customer_details"))
        kind: SaleKind = "subscription" if mode == "subscription" else "purchase"
        subscription = object_id(session.get("subscription"))
        ids = [object_id(session.get("invoice")), object_id(session.get("payment_intent")), text(session.get("id"))]
        known = [i for i in ids if i]
        if not known:
            raise PayloadError("Checkout Session without `id`")
        return Sale(
            kind=kind,
            amount=amount,
            currency=currency,
            invoice_id=known[0],
            payment_refs=tuple(known[1:]),
            gross_amount=rescale(_amount(session, "amount_total"), _stripe_exponent(currency), currency),
            subscription_id=subscription,
            starts_subscription=True if mode == "subscription" else None,  # a checkout starts it
            provider_customer_id=object_id(session.get("customer")),
            email=text(details.get("email")) or text(session.get("customer_email")),
            name=text(details.get("name")),
            metadata_sources=(mapping(session.get("metadata")),),
            client_reference=text(session.get("client_reference_id")),
            metadata=compact(
                checkoutSessionId=session.get("id"),
                subscriptionId=subscription,
                taxAmount=rescale(tax, _stripe_exponent(currency), currency),
            ),
        )

    def _invoice_sale(self, invoice: dict[str, Any]) -> Sale:
        parent_details = mapping(mapping(invoice.get("parent")).get("subscription_details"))
        legacy_details = mapping(invoice.get("subscription_details"))
        subscription = object_id(invoice.get("subscription")) or object_id(parent_details.get("subscription"))
        reason = invoice.get("billing_reason")
        kind: SaleKind = "purchase"
        if subscription:
            kind = "subscription_update" if reason == "subscription_update" else "subscription"
        currency = text(invoice.get("currency"))
        if currency is None:
            raise PayloadError("invoice without `currency`")
        total, paid = _amount(invoice, "total"), _amount(invoice, "amount_paid")
        excluding = invoice.get("total_excluding_tax")
        tax = total - _amount(invoice, "total_excluding_tax") if excluding is not None else _invoice_tax(invoice)
        if tax < 0 or paid < 0:  # a negative tax would inflate the amount (issue 12)
            raise PayloadError(f"invoice with a negative tax ({tax}) or amount_paid ({paid})")
        # Credits and customer balance lower what was paid; tax was still part of what was due.
        net = total - tax if paid == total else max(0, paid - tax)
        amount = rescale(net, _stripe_exponent(currency), currency)
        if amount <= 0:  # a trial's first invoice is one of nothing: remembered as its trial
            raise Ignore("zero_amount", trial_of=subscription if reason == "subscription_create" else None)
        paid_at = mapping(invoice.get("status_transitions")).get("paid_at")
        paid_time = epoch_time(paid_at) if isinstance(paid_at, int) else None
        if isinstance(paid_at, int) and paid_time is None:
            raise PayloadError(f"invoice `status_transitions.paid_at` is not a time: {paid_at!r}")
        return Sale(
            kind=kind,
            amount=amount,
            currency=currency,
            invoice_id=invoice["id"],
            payment_refs=_invoice_refs(invoice),
            gross_amount=rescale(paid, _stripe_exponent(currency), currency),
            subscription_id=subscription,
            starts_subscription=_STARTS.get(reason) if isinstance(reason, str) else None,
            provider_customer_id=object_id(invoice.get("customer")),
            email=text(invoice.get("customer_email")),
            name=text(invoice.get("customer_name")),
            timestamp=paid_time,
            metadata_sources=(
                mapping(invoice.get("metadata")),
                mapping(legacy_details.get("metadata")),
                mapping(parent_details.get("metadata")),
            ),
            metadata=compact(
                subscriptionId=subscription,
                billingReason=reason,
                taxAmount=rescale(tax, _stripe_exponent(currency), currency),
            ),
        )

    def _charge_refund(self, charge: dict[str, Any]) -> Refund:
        """`charge.refunded`: `amount_refunded` is the charge's total refunded so far (tax
        included, in Stripe's unit); the latest refund's id when the payload lists it."""
        currency = text(charge.get("currency"))
        if currency is None:
            raise PayloadError("charge without `currency`")
        refunds = [r for r in mapping(charge.get("refunds")).get("data") or [] if isinstance(r, Mapping)]
        latest = max(refunds, key=lambda r: integer(r.get("created")) or 0, default=None)
        charge_id = object_id(charge.get("id"))
        return Refund(
            reverses=_ids(charge_id, object_id(charge.get("payment_intent")), object_id(charge.get("invoice"))),
            amount=rescale(_amount(charge, "amount_refunded"), _stripe_exponent(currency), currency),
            currency=currency,
            cumulative=True,
            includes_tax=True,
            refund_id=(text(latest.get("id")) if latest is not None else None) or charge_id,
            metadata=compact(chargeId=charge_id),
        )

    def _chargeback(self, event_type: str, dispute: dict[str, Any]) -> Refund:
        """A lost dispute: `funds_withdrawn` (the money left the balance) or `closed` as `lost`;
        both carry the dispute id, so whichever comes second changes nothing."""
        if event_type == "charge.dispute.closed" and dispute.get("status") != "lost":
            raise Ignore("dispute_not_lost")
        currency = text(dispute.get("currency"))
        if currency is None:
            raise PayloadError("dispute without `currency`")
        dispute_id = object_id(dispute.get("id"))
        return Refund(
            reverses=_ids(object_id(dispute.get("charge")), object_id(dispute.get("payment_intent"))),
            amount=rescale(_amount(dispute, "amount"), _stripe_exponent(currency), currency),
            currency=currency,
            includes_tax=True,
            chargeback=True,
            refund_id=dispute_id,
            metadata=compact(disputeId=dispute_id, disputeReason=text(dispute.get("reason"))),
        )

    def _payment_link(self, payment: dict[str, Any]) -> PaymentLink:
        """`invoice_payment.paid`: the invoice and the payment intent (or charge) that paid it.
        Its invoice's own `invoice.paid` is the Sale; this only links the ids."""
        pay = mapping(payment.get("payment"))
        ids = _ids(object_id(payment.get("invoice")), object_id(pay.get("payment_intent")),
                   object_id(pay.get("charge")))
        if len(ids) < 2:
            raise Ignore("no_payment_link")
        return PaymentLink(ids=ids)

    def _lead(self, obj: dict[str, Any], kind: str, customer: str | None) -> Lead:
        return Lead(
            kind="started_trial" if kind == "started_trial" else "sign_up",
            provider_customer_id=customer,
            email=text(obj.get("email")),
            name=text(obj.get("name")),
            metadata_sources=(mapping(obj.get("metadata")),),
            metadata=compact(subscriptionId=obj.get("id") if kind == "started_trial" else None),
        )


def _invoice_tax(invoice: Mapping[str, Any]) -> int:
    """Tax of an invoice from API versions without `total_excluding_tax`."""
    if integer(invoice.get("tax")) is not None:
        return _amount(invoice, "tax")
    amounts = invoice.get("total_taxes") or invoice.get("total_tax_amounts") or []
    return sum(_amount(t, "amount", 0) for t in amounts if isinstance(t, Mapping))


def _ids(*found: str | None) -> tuple[str, ...]:
    """The ids that are present, each once, in order."""
    return tuple(dict.fromkeys(i for i in found if i))


def _invoice_refs(invoice: Mapping[str, Any]) -> tuple[str, ...]:
    """Other ids of an invoice's payment: `charge` and `payment_intent` (API versions before
    2025-03-31 basil) and the payment intents or charges of `payments` when it is expanded."""
    found = [object_id(invoice.get("charge")), object_id(invoice.get("payment_intent"))]
    for item in mapping(invoice.get("payments")).get("data") or []:
        pay = mapping(mapping(item).get("payment"))
        found += [object_id(pay.get("payment_intent")), object_id(pay.get("charge"))]
    return _ids(*found)
