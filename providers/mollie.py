"""Mollie next-gen webhooks: `X-Mollie-Signature: sha256=<hex>`, full-payload events.

Mollie signs the raw body with HMAC-SHA256 keyed by the webhook's signing secret (its bytes as
shown) and sends `X-Mollie-Signature: sha256=<hex>` (mollie-api-php `SignatureValidator`:
prefix `sha256=`, `hash_hmac('sha256', $payload, $secret)`); during a secret rotation the header
may list two signatures, and either verifies. Classic id-only webhooks (no signature; the status
must be fetched with the API) are out of scope. Subscribe the webhook to *full* payloads.

Body: `{"resource": "event", "id": "event_...", "type", "entityId", "createdAt",
"_embedded": {"entity": {...}}}`; the delivery id is the event `id`; the entity's `mode`
(`live` / `test`) is `livemode`. The entity is the resource's snapshot as its GET endpoint
returns it (docs.mollie.com "Webhooks for the Payments API").

Event types (docs.mollie.com changelog "Add payment and refund webhook events to the Webhooks
API"; mollie-api-typescript `EntityWebhookEventWebhookEventTypes`): `payment.paid` and the other
payment statuses, `refund.queued` ... `refund.refunded`, `payment-link.paid`, `sales-invoice.*`,
balance, payout and transfer events. No chargeback event exists (`dispute.*` is beta).

Sales (`amount` objects are `{"value": "24.95", "currency": "EUR"}` decimal strings, exact):
- `payment.paid`: the payment's `amount`, tax included; when its `lines` carry `vatAmount`, the
  VAT is taken out. Invoice id `tr_...` (what a refund names). A payment of a Mollie subscription
  (`subscriptionId`, `sequenceType` `recurring`) is a subscription renewal. Identity: `metadata`
  (any JSON the merchant set at creation: an object, or a JSON object in a string), `customerId`,
  `billingAddress` email / name / phone.
- `payment-link.paid`: the link's `amount`, tax included (a link has no breakdown). The invoice
  id is the link id (`pl_...`), qualified by the event for a `reusable` link, which is paid more
  than once. A payment link has no `metadata` (mollie-api-typescript `PaymentLinkResponse`):
  identity is the `billingAddress` the merchant pre-filled (email, name, phone) and `customerId`;
  a click id may ride in the query of the `redirectUrl` the merchant set when creating the link
  (`...?dub_id=<clickId>`), read for the click id only.
  The event names no payment id, and the payment names no link: a merchant subscribed to both
  `payment.paid` and `payment-link.paid` has each link payment counted twice (the README says
  to subscribe to one).
- `sales-invoice.paid`: `discountedSubtotalAmount` (excluding VAT), gross `totalAmount`,
  recipient email and name, `metadata`; invoice id `invoice_...`.

Refunds: `refund.refunded` (its `status` `refunded`) reverses the Sale of its `paymentId` by its
`amount`, tax included (scaled to the Sale by the core); the refund id `re_...` is the dedup key.
The other `refund.*` statuses are not money back yet, so they map to nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from adapter.errors import Ignore, PayloadError
from adapter.events import Mapped, ProviderEvent, Refund, Sale
from adapter.money import normalize_currency, to_minor
from adapter.payload import boolean, compact, iso_time, json_value, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BodyHmac

__all__ = ["MollieProvider"]

_MODES = {"live": True, "test": False}


class MollieProvider(SamplesMixin, Provider):
    """Mollie next-gen webhooks: `X-Mollie-Signature: sha256=<hex HMAC-SHA256 of the body>`."""

    name = "mollie"
    scheme = BodyHmac(header="X-Mollie-Signature", prefix="sha256=", separator=",",
                      hint="use the next-gen webhook's signing secret, not the API key")
    tax = "included"  # payment links carry no tax breakdown

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["id"] = f"event_{unique}"
        data["createdAt"] = datetime.fromtimestamp(now, UTC).isoformat()
        entity = mapping(mapping(data.get("_embedded")).get("entity"))
        if text(entity.get("id")):
            entity["id"] = data["entityId"] = f"{entity['id']}{unique}"

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        data = self.json_body(body)
        event_id, event_type = text(data.get("id")), text(data.get("type"))
        if event_id is None or event_type is None:
            raise PayloadError("Mollie event without string `id` and `type`")
        occurred = iso_time(data.get("createdAt"))
        if occurred is None:
            raise PayloadError("Mollie event without an ISO 8601 `createdAt`")
        entity = mapping(mapping(data.get("_embedded")).get("entity"))
        return ProviderEvent(id=event_id, type=event_type, occurred_at=occurred,
                             livemode=_MODES.get(text(entity.get("mode")) or ""), data=data)

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`payment.paid`, `payment-link.paid` and `sales-invoice.paid` → Sale; `refund.refunded`
        → Refund; `[]` otherwise. Raises `Ignore`: `simple_payload` for an event without its
        entity (a *simple* subscription), `unpaid` / `not_refunded` for an entity whose status
        says otherwise, `zero_amount`."""
        if event.type not in _MAPPED:
            return []
        entity = mapping(mapping(event.data.get("_embedded")).get("entity"))
        if not entity:
            raise Ignore("simple_payload")
        if event.type == "payment.paid":
            return [self._payment(entity)]
        if event.type == "refund.refunded":
            return [_refund(entity)]
        if event.type == "payment-link.paid":
            return [self._link(event.id, entity)]
        return [self._invoice(entity)]

    def _payment(self, payment: dict[str, Any]) -> Sale:
        payment_id = text(payment.get("id"))
        if payment_id is None:
            raise PayloadError("Mollie payment without `id`")
        if text(payment.get("status")) not in (None, "paid"):
            raise Ignore("unpaid")
        gross, currency = _money(payment.get("amount"), "amount")
        vat = _lines_vat(payment.get("lines"), currency)
        net = gross - vat if 0 < vat < gross else gross
        if net <= 0:
            raise Ignore("zero_amount")
        subscription = text(payment.get("subscriptionId"))
        sequence = text(payment.get("sequenceType"))
        return Sale(
            kind="subscription" if subscription else "purchase", amount=net, gross_amount=gross,
            currency=currency, invoice_id=payment_id, subscription_id=subscription,
            starts_subscription=False if subscription and sequence == "recurring" else None,
            timestamp=iso_time(payment.get("paidAt")),
            metadata_sources=(_metadata(payment.get("metadata")),),
            provider_customer_id=text(payment.get("customerId")),
            **_address(payment.get("billingAddress")),
            metadata=compact(description=text(payment.get("description")), method=text(payment.get("method")),
                             taxAmount=gross - net if net != gross else None, sequenceType=sequence),
        )

    def _link(self, event_id: str, link: dict[str, Any]) -> Sale:
        link_id = text(link.get("id"))
        if link_id is None:
            raise PayloadError("Mollie payment link without `id`")
        amount, currency = _money(link.get("amount"), "amount")
        if amount <= 0:
            raise Ignore("zero_amount")
        reusable = boolean(link.get("reusable")) is True
        return Sale(
            kind="purchase", amount=amount, gross_amount=amount, currency=currency,
            invoice_id=f"{link_id}:{event_id}" if reusable else link_id,
            payment_refs=(link_id,) if reusable else (),
            timestamp=iso_time(link.get("paidAt")),
            metadata_sources=(_metadata(link.get("metadata")),),
            click_sources=(_query(link.get("redirectUrl")),),
            provider_customer_id=text(link.get("customerId")),
            **_address(link.get("billingAddress")),
            metadata=compact(description=text(link.get("description")), paymentLinkId=link_id),
        )

    def _invoice(self, invoice: dict[str, Any]) -> Sale:
        invoice_id = text(invoice.get("id"))
        if invoice_id is None:
            raise PayloadError("Mollie sales invoice without `id`")
        net, currency = _money(invoice.get("discountedSubtotalAmount") or invoice.get("subtotalAmount"), "subtotal")
        gross, _ = _money(invoice.get("totalAmount"), "totalAmount")
        if net <= 0:
            raise Ignore("zero_amount")
        recipient = _address(invoice.get("recipient"))
        return Sale(
            kind="purchase", amount=net, gross_amount=gross, currency=currency, invoice_id=invoice_id,
            metadata_sources=(_metadata(invoice.get("metadata")),),
            **recipient,
            metadata=compact(taxAmount=gross - net, invoiceNumber=text(invoice.get("invoiceNumber"))),
        )


_MAPPED = frozenset({"payment.paid", "refund.refunded", "payment-link.paid", "sales-invoice.paid"})


def _refund(refund: dict[str, Any]) -> Refund:
    """A refunded `re_...` of the payment `paymentId`: its `amount`, tax included."""
    refund_id, payment_id = text(refund.get("id")), text(refund.get("paymentId"))
    if refund_id is None or payment_id is None:
        raise PayloadError("Mollie refund without `id` and `paymentId`")
    if text(refund.get("status")) not in (None, "refunded"):
        raise Ignore("not_refunded")
    amount, currency = _money(refund.get("amount"), "amount")
    return Refund(
        reverses=(payment_id,), amount=amount, currency=currency, includes_tax=True, refund_id=refund_id,
        metadata=compact(description=text(refund.get("description"))),
    )


def _metadata(value: Any) -> dict[str, Any]:
    """Mollie `metadata` as a mapping: it is any JSON the merchant set, so an object, or an
    object encoded in a string (as Mollie's own payment example shows); else `{}`."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json_value(value)
        except (ValueError, RecursionError):
            return {}
    return value if isinstance(value, dict) else {}


def _query(url: Any) -> dict[str, str]:
    """The query parameters of a URL the merchant set (`https://shop/thanks?dub_id=cl_1`), first
    value of each."""
    if not isinstance(url, str) or "?" not in url:
        return {}
    out: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(url).query):
        out.setdefault(key, value)
    return out


def _address(value: Any) -> dict[str, Any]:
    """Identity hints of a Mollie address (a payment's or link's `billingAddress`, an invoice's
    `recipient`): email, phone, and the person's or else the organization's name."""
    address = mapping(value)
    name = " ".join(p for p in (text(address.get("givenName")), text(address.get("familyName"))) if p)
    return {"email": text(address.get("email")), "phone": text(address.get("phone")),
            "name": name or text(address.get("organizationName"))}


def _lines_vat(lines: Any, currency: str) -> int:
    """The VAT of a payment's `lines` in minor units (0 when they give none); a line's
    `vatAmount` in another currency, or malformed, counts as no breakdown at all."""
    if not isinstance(lines, list):
        return 0
    total = 0
    for line in lines:
        vat = line.get("vatAmount") if isinstance(line, dict) else None
        if vat is None:
            continue
        try:
            amount, code = _money(vat, "vatAmount")
        except PayloadError:
            return 0
        if code != currency:
            return 0
        total += amount
    return total


def _money(value: Any, field: str) -> tuple[int, str]:
    """A Mollie amount object (`{"value": "10.00", "currency": "EUR"}`) as exact minor units."""
    money = mapping(value)
    amount, currency = text(money.get("value")), text(money.get("currency"))
    if amount is None or currency is None:
        raise PayloadError(f"Mollie `{field}` is not a {{value, currency}} amount")
    try:
        code = normalize_currency(currency)
        return to_minor(amount, code), code
    except (ValueError, TypeError) as exc:
        raise PayloadError(f"Mollie `{field}`: {exc}") from None
