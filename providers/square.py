"""Square: `x-square-hmacsha256-signature`, base64 HMAC-SHA256 over notification URL + raw body.

The key is the webhook subscription's signature key (Developer Console → Webhooks →
Subscriptions), used as UTF-8 bytes. The signed message starts with the subscription's
notification URL exactly as Square has it, so the source must be told that URL
(`notification_url`); a proxy or load balancer that changes the scheme, host, path or query on
the way makes every signature fail. Square signs no timestamp (`Square-Initial-Delivery-Timestamp`
is not signed), so there is no freshness check; delivery dedup on the body's `event_id` (the
same on every retry) stops a replayed body from counting twice.

Sale: `payment.updated` (and `payment.created`, which Square sends already `COMPLETED` for
payments completed at once) whose `data.object.payment.status` is `COMPLETED`; other statuses
are `unpaid`. The Sale's `invoice_id` is the payment id, so the `payment.created` and
`payment.updated` of one payment, and the `payment.updated` Square sends again (still
`COMPLETED`) when the payment is refunded, are one Sale. The amount is `amount_money` (minor
units of its currency; without the tip, which is `tip_money`). A Square payment carries no tax
breakdown, so this amount INCLUDES any sales tax: it is the one provider whose Sale amount is
not net of tax. Its `gross_amount` is `total_money` (tip included).

Refund: `refund.updated` (and `refund.created`) once the refund's `status` is `COMPLETED`
(`PENDING` and the rest are `Ignore("refund_not_completed")`): `amount_money` of the payment
`payment_id`, keyed by the refund id. Square refunds up to the payment's `total_money`, tip
included, so the Refund is marked `includes_tax` and the core scales it by the Sale's
`amount / total_money` (a full refund of the total is exactly the Sale). A dispute whose `state`
becomes `LOST` (`dispute.state.changed`, formerly `dispute.state.updated`) is a chargeback of its
`disputed_payment`. The refund's `order_id` is not used: an order may be paid by several
payments, so it does not name one Sale.

Lead: `customer.created` (`Sign up`). Square has no free-form metadata on payments or customers:
the merchant's user id is the customer's `reference_id`, and `key=value` pairs in a payment's or
customer's `note` (`clickId=cl_abc userId=user_42`) carry click and user ids; a `reference_id`
of the form `dub_id_<id>` (the source's `client_reference_prefix`) is a click id. Payments carry
`customer_id`, so identity memory links them to the customer's Lead. Square bodies have no
live/test flag (sandbox and production are separate applications): `livemode` is None.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import field_validator

from adapter.attribution import ClientReferenceSettings
from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, Mapped, ProviderEvent, Refund, Sale
from adapter.payload import compact, integer, iso_time, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BodyHmac

__all__ = ["SquareProvider", "SquareSettings"]

_PAIR = re.compile(r"([A-Za-z_][\w.-]*)\s*[=:]\s*([^\s;,&]+)")
_PAYMENT_EVENTS = ("payment.created", "payment.updated")
_REFUND_EVENTS = ("refund.created", "refund.updated")
_DISPUTE_EVENTS = ("dispute.state.changed", "dispute.state.updated")


class SquareSettings(ClientReferenceSettings):
    """Source settings: `notification_url`, the subscription's URL exactly as entered in Square;
    `client_reference_prefix` (default `dub_id_`), which makes a `reference_id` a click id."""

    notification_url: str

    @field_validator("notification_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        url = value.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError("must be the webhook subscription's absolute URL, e.g. https://example.com/webhooks/square")
        return url


def _note_pairs(note: Any) -> dict[str, str]:
    """`key=value` (or `key: value`) pairs in a free-text note, first value of each key."""
    out: dict[str, str] = {}
    for key, value in _PAIR.findall(note if isinstance(note, str) else ""):
        out.setdefault(key, value)
    return out


def _url(ctx: SourceContext) -> str:
    if not isinstance(ctx.options, SquareSettings):
        raise TypeError(f"source {ctx.source!r} has no square settings (notification_url)")
    return ctx.options.notification_url


def _scheme(ctx: SourceContext) -> BodyHmac:
    """Square's scheme for this source: the notification URL (literal text) before the body."""
    url = _url(ctx).replace("{", "{{").replace("}", "}}")
    return BodyHmac(header="x-square-hmacsha256-signature", encoding="base64", signed=url + "{body}",
                    hint="check the signature key and that notification_url is exactly the subscription's URL")


class SquareProvider(SamplesMixin, Provider):
    """Square: `x-square-hmacsha256-signature`, base64 HMAC-SHA256 of notification URL + body."""

    name = "square"
    tax = "included"  # a payment has no tax breakdown: `amount_money` includes any sales tax
    settings_model = SquareSettings

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """HMAC(signature key, notification_url + body), base64, for every key (`adapter.signing`).

        Raises `SignatureError`: `missing_signature` (no header), `invalid_signature` (not
        base64, or no key matches: a wrong key or a `notification_url` that differs from the
        subscription's).
        """
        _scheme(ctx).verify(body, headers, secrets, ctx.settings.tolerance_s)

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """The header Square would send for this source's `notification_url` (no timestamp)."""
        return _scheme(ctx).sign(body, secret, timestamp)

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["event_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"hooktrack:{unique}"))
        data["created_at"] = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        payment = mapping(mapping(mapping(data.get("data")).get("object")).get("payment"))
        if payment:
            payment["id"] = mapping(data.get("data"))["id"] = f"sq{unique}"

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by `event_id`, typed by `type`, at `created_at`.

        Raises `PayloadError` without those or without a `data.object`.
        """
        data = self.json_body(body)
        event_id, event_type = text(data.get("event_id")), text(data.get("type"))
        if event_id is None or event_type is None:
            raise PayloadError("Square event without string `event_id` and `type`")
        if not isinstance(mapping(data.get("data")).get("object"), dict):
            raise PayloadError("Square event without `data.object`")
        created, occurred = text(data.get("created_at")), iso_time(data.get("created_at"))
        if occurred is None:
            raise PayloadError(f"Square `created_at` is not an RFC 3339 time: {str(created)[:40]!r}")
        return ProviderEvent(id=event_id, type=event_type, occurred_at=occurred, livemode=None, data=data)

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """A `COMPLETED` payment → Sale, a `COMPLETED` refund → Refund, a dispute `LOST` →
        chargeback Refund, `customer.created` → Lead, `[]` for other types.

        Raises `Ignore("unpaid")` for a payment not `COMPLETED`, `Ignore("zero_amount")` for a
        payment of nothing, `Ignore("refund_not_completed")` / `Ignore("dispute_not_lost")`,
        `PayloadError` without the payment, refund, dispute or customer object.
        """
        obj: dict[str, Any] = event.data["data"]["object"]
        merchant = text(event.data.get("merchant_id"))
        if event.type in _PAYMENT_EVENTS:
            return [self._sale(mapping(obj.get("payment")), merchant)]
        if event.type in _REFUND_EVENTS:
            return [_refund(mapping(obj.get("refund")))]
        if event.type in _DISPUTE_EVENTS:
            return [_dispute(mapping(obj.get("dispute")), text(event.data["data"].get("id")))]
        if event.type == "customer.created":
            return [self._lead(mapping(obj.get("customer")), merchant)]
        return []

    def _sale(self, payment: dict[str, Any], merchant: str | None) -> Sale:
        payment_id, money = text(payment.get("id")), mapping(payment.get("amount_money"))
        amount, currency = integer(money.get("amount")), text(money.get("currency"))
        if payment_id is None or currency is None:
            raise PayloadError("Square payment without `id` and `amount_money.currency`")
        if amount is None:
            raise PayloadError(f"Square `amount_money.amount` is not an integer: {money.get('amount')!r}")
        if payment.get("status") != "COMPLETED":
            raise Ignore("unpaid")
        if amount <= 0:
            raise Ignore("zero_amount")
        return Sale(
            kind="purchase",
            amount=amount,
            currency=currency,
            invoice_id=payment_id,
            gross_amount=_total(payment, amount),
            provider_customer_id=text(payment.get("customer_id")),
            email=text(payment.get("buyer_email_address")),
            metadata_sources=(_note_pairs(payment.get("note")),),
            click_reference=text(payment.get("reference_id")),
            metadata=compact(
                orderId=text(payment.get("order_id")),
                locationId=text(payment.get("location_id")),
                receiptNumber=text(payment.get("receipt_number")),
                merchantId=merchant,
                tipAmount=mapping(payment.get("tip_money")).get("amount"),
                refundedAmount=mapping(payment.get("refunded_money")).get("amount"),
                amountIncludesTax=True,
            ),
        )

    def _lead(self, customer: dict[str, Any], merchant: str | None) -> Lead:
        customer_id = text(customer.get("id"))
        if customer_id is None:
            raise PayloadError("Square customer without `id`")
        names = [text(customer.get("given_name")), text(customer.get("family_name"))]
        return Lead(
            kind="sign_up",
            provider_customer_id=customer_id,
            email=text(customer.get("email_address")),
            phone=text(customer.get("phone_number")),
            name=" ".join(n for n in names if n) or None,
            metadata_sources=(_note_pairs(customer.get("note")),),
            client_reference=text(customer.get("reference_id")),
            metadata=compact(merchantId=merchant, creationSource=text(customer.get("creation_source"))),
        )


def _total(payment: dict[str, Any], amount: int) -> int | None:
    """`total_money` (the amount plus the tip) when it is a whole amount not below the Sale's."""
    total = integer(mapping(payment.get("total_money")).get("amount"))
    return total if total is not None and total >= amount else None


def _money(obj: dict[str, Any], what: str) -> tuple[int, str]:
    money = mapping(obj.get("amount_money"))
    amount, currency = integer(money.get("amount")), text(money.get("currency"))
    if amount is None or currency is None:
        raise PayloadError(f"Square {what} without an integer `amount_money.amount` and its currency")
    return amount, currency


def _refund(refund: dict[str, Any]) -> Refund:
    """A completed refund of the payment `payment_id`, on the payment's total (tip included)."""
    payment_id, refund_id = text(refund.get("payment_id")), text(refund.get("id"))
    if payment_id is None:
        raise PayloadError("Square refund without `payment_id`")
    if refund.get("status") != "COMPLETED":
        raise Ignore("refund_not_completed")
    amount, currency = _money(refund, "refund")
    return Refund(
        reverses=(payment_id,),
        amount=amount,
        currency=currency,
        includes_tax=True,  # on total_money: tip included, scaled by the Sale's amount / total
        refund_id=refund_id,
        timestamp=iso_time(refund.get("updated_at")),
        metadata=compact(reason=text(refund.get("reason"))),
    )


def _dispute(dispute: dict[str, Any], data_id: str | None) -> Refund:
    """A dispute Square decided for the cardholder (`state` `LOST`): a chargeback."""
    payment_id = text(mapping(dispute.get("disputed_payment")).get("payment_id"))
    if payment_id is None:
        raise PayloadError("Square dispute without `disputed_payment.payment_id`")
    if dispute.get("state") != "LOST":
        raise Ignore("dispute_not_lost")
    amount, currency = _money(dispute, "dispute")
    return Refund(
        reverses=(payment_id,),
        amount=amount,
        currency=currency,
        includes_tax=True,
        chargeback=True,
        refund_id=text(dispute.get("id")) or text(dispute.get("dispute_id")) or data_id,
        timestamp=iso_time(dispute.get("updated_at")),
        metadata=compact(reason=text(dispute.get("reason"))),
    )
