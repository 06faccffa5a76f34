"""Razorpay: `X-Razorpay-Signature`, HMAC-SHA256 hex of the raw body, keyed by the webhook secret.

The secret is the one typed when the webhook was created (Dashboard → Accounts & Settings →
Webhooks), not the API key secret. The scheme signs no timestamp, so there is no freshness
check; delivery dedup is what stops a replayed body from counting twice. The delivery id is
the `x-razorpay-event-id` header (the same on every retry). Without it, the key is built from
the body: `"<event>:<ids of the entities it contains>:<created_at>"`, which a retry repeats.

Refunds: `refund.processed` (the refund's `amount`, of the payment `payment_id`; an auto-refund of
a payment never captured is `auto_refund`) and `payment.dispute.lost` (a chargeback of the
dispute's `amount`). Both reverse the payment id and its `order_id` / `invoice_id`, which the
Sale remembers as `payment_refs`; the refund or dispute id is the `refund_id`. The amounts are on
the same basis as the Sale (the payment's amount, tax as priced in).

Sales: `payment.captured` and `subscription.charged`, one Sale per payment: both use the
payment id (`pay_...`) as `invoice_id`, so a subscription payment that arrives as both is one
Sale (the core's business dedup). Razorpay links a subscription payment to its subscription
through the payment's `invoice_id` (an invoice of the subscription); only `subscription.charged`
names the subscription itself, so a `payment.captured` with an `invoice_id` is a subscription
payment whose subscription the companion `subscription.charged` fills in.

Amounts are integers in the currency's smallest unit (paise; yen for JPY; fils with a final 0
for KWD, BHD, OMR), which is ISO 4217's. Razorpay payments carry no breakdown of the
merchant's own sales tax, so the Sale is the captured `amount`, tax included where the merchant
priced it in. The payment's `tax` field is not sales tax: it is the GST on Razorpay's own `fee`
(the API reference: `fee` "Fee (including GST) charged by Razorpay", `tax` "GST charged for
the payment"), so it is never subtracted.

Click and user ids come from `notes` (the payment's, then the subscription's); Razorpay sends
empty notes as `[]`. Bodies carry no live/test flag (test and live webhooks are set up
separately), so `livemode` is None.
"""

from __future__ import annotations

import hashlib
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Mapped, ProviderEvent, Refund, Sale
from adapter.payload import compact, epoch_time, integer, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BodyHmac

__all__ = ["RazorpayProvider"]

_PAID = "captured"


def _entity(payload: dict[str, Any], name: str) -> dict[str, Any]:
    """`payload.<name>.entity`, the snapshot of one entity the event carries ({} if absent)."""
    return mapping(mapping(payload.get(name)).get("entity"))


def _body_key(data: dict[str, Any], event: str) -> str:
    """A delivery key from the body alone, for a delivery without `x-razorpay-event-id`."""
    payload = mapping(data.get("payload"))
    names = [n for n in data.get("contains") or [] if isinstance(n, str)] or sorted(payload)
    ids = [text(_entity(payload, n).get("id")) or "-" for n in names]
    return ":".join([event, *ids, str(data.get("created_at"))])


class RazorpayProvider(SamplesMixin, Provider):
    """Razorpay: `X-Razorpay-Signature`, HMAC-SHA256 hex of the raw body; no timestamp."""

    name = "razorpay"
    cancellations = frozenset({"subscription.cancelled", "subscription.completed"})
    scheme = BodyHmac(header="X-Razorpay-Signature")

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        """The unsigned `x-razorpay-event-id` a delivery carries, derived from the sample's body
        so that a refreshed sample is a new event and a resent body a duplicate."""
        return {"X-Razorpay-Event-Id": hashlib.sha256(b"razorpay-event:" + body).hexdigest()[:14]}

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["created_at"] = now
        payment = _entity(mapping(data.get("payload")), "payment")
        if payment:
            payment["id"] = f"pay_{unique[:14]}"
            payment["created_at"] = now

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by `x-razorpay-event-id` (else a key from the body, see the module doc).

        Raises `PayloadError` without a string `event`, a `payload` object or integer `created_at`.
        """
        data = self.json_body(body)
        event, created = text(data.get("event")), epoch_time(data.get("created_at"))
        if event is None:
            raise PayloadError("Razorpay webhook without a string `event`")
        if not isinstance(data.get("payload"), dict):
            raise PayloadError("Razorpay webhook without a `payload` object")
        if created is None:
            raise PayloadError("Razorpay webhook without integer `created_at`")
        return ProviderEvent(
            id=text(headers.get("x-razorpay-event-id")) or _body_key(data, event),
            type=event,
            occurred_at=created,
            livemode=None,
            data=data,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`payment.captured` and `subscription.charged` → one Sale per payment id;
        `refund.processed` → Refund, `payment.dispute.lost` → chargeback Refund; `[]` otherwise.

        Raises `Ignore("unpaid")` for a payment that is not captured, `Ignore("zero_amount")`
        for a payment of nothing, `Ignore("auto_refund")` for Razorpay's refund of a payment
        that was never captured (never a Sale), `PayloadError` without a payment entity.
        """
        payload: dict[str, Any] = event.data["payload"]
        if event.type == "refund.processed":
            return [_reversal(_entity(payload, "refund"), _entity(payload, "payment"), chargeback=False)]
        if event.type == "payment.dispute.lost":
            return [_reversal(_entity(payload, "dispute"), _entity(payload, "payment"), chargeback=True)]
        if event.type == "payment.captured":
            return [self._sale(_entity(payload, "payment"), {})]
        if event.type == "subscription.charged":
            return [self._sale(_entity(payload, "payment"), _entity(payload, "subscription"))]
        return []

    def _sale(self, payment: dict[str, Any], subscription: dict[str, Any]) -> Sale:
        payment_id, currency = text(payment.get("id")), text(payment.get("currency"))
        amount = integer(payment.get("amount"))
        if payment_id is None or currency is None:
            raise PayloadError("Razorpay payment without `id` and `currency`")
        if amount is None:
            raise PayloadError(f"Razorpay payment `amount` is not an integer: {payment.get('amount')!r}")
        if payment.get("status") != _PAID and payment.get("captured") is not True:
            raise Ignore("unpaid")
        if amount <= 0:
            raise Ignore("zero_amount")
        subscription_id = text(subscription.get("id")) or text(payment.get("subscription_id"))
        invoice = text(payment.get("invoice_id"))
        return Sale(
            kind="subscription" if subscription_id or invoice else "purchase",
            amount=amount,
            currency=currency,
            invoice_id=payment_id,
            payment_refs=_refs(payment),
            subscription_id=subscription_id,
            provider_customer_id=text(payment.get("customer_id")) or text(subscription.get("customer_id")),
            email=text(payment.get("email")),
            phone=text(payment.get("contact")),
            metadata_sources=(mapping(payment.get("notes")), mapping(subscription.get("notes"))),  # `[]` when empty
            metadata=compact(
                subscriptionId=subscription_id,
                razorpayInvoiceId=invoice,
                orderId=text(payment.get("order_id")),
                method=text(payment.get("method")),
            ),
        )


def _refs(payment: dict[str, Any]) -> tuple[str, ...]:
    """The payment's order (`order_...`) and subscription invoice (`inv_...`): other ids of it."""
    return tuple(i for i in (text(payment.get("order_id")), text(payment.get("invoice_id"))) if i)


def _reversal(entity: dict[str, Any], payment: dict[str, Any], *, chargeback: bool) -> Refund:
    """A processed refund or a lost dispute (`entity`) of `payment`: its `amount` in the
    payment's currency, reversing the payment id and its order and invoice ids."""
    payment_id = text(entity.get("payment_id")) or text(payment.get("id"))
    amount, currency = integer(entity.get("amount")), text(entity.get("currency")) or text(payment.get("currency"))
    if payment_id is None or currency is None or amount is None:
        raise PayloadError("Razorpay refund or dispute without `payment_id`, integer `amount` and `currency`")
    if not chargeback and payment.get("captured") is False:
        raise Ignore("auto_refund")
    return Refund(
        reverses=(payment_id, *_refs(payment)),
        amount=amount,
        currency=currency,
        chargeback=chargeback,
        refund_id=text(entity.get("id")),
        timestamp=epoch_time(entity.get("created_at")),
        metadata=compact(paymentRefundStatus=text(payment.get("refund_status")),
                         reasonCode=text(entity.get("reason_code")) if chargeback else None),
    )
