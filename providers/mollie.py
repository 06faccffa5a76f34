"""Mollie next-gen webhooks: `X-Mollie-Signature: sha256=<hex>`, full-payload events.

Mollie signs the raw body with HMAC-SHA256 keyed by the webhook's signing secret (its bytes as
shown) and sends `X-Mollie-Signature: sha256=<hex>` (mollie-api-php `SignatureValidator`:
prefix `sha256=`, `hash_hmac('sha256', $payload, $secret)`); during a secret rotation the header
may list two signatures, and either verifies. Classic id-only webhooks (no signature; the status
must be fetched with the API) are out of scope. Subscribe the webhook to *full* payloads.

Body: `{"resource": "event", "id": "event_...", "type", "entityId", "createdAt",
"_embedded": {"entity": {...}}}`; the delivery id is the event `id`; the entity's `mode`
(`live` / `test`) is `livemode`. Mollie's next-gen event types (mollie-api-php
`WebhookEventType`) are `payment-link.paid`, `sales-invoice.*`, `balance-transaction.created`
and profile events — there is no `payment.paid` and no refund event yet.

Sales: `payment-link.paid` — the link's `amount` (a `{"value": "24.95", "currency": "EUR"}`
decimal string, exact) with tax included (tax `included`: a link has no breakdown); the invoice
id is the link id (`pl_...`), qualified by the event for a `reusable` link, which is paid more
than once. `sales-invoice.paid` — `discountedSubtotalAmount` (excluding VAT), gross `totalAmount`,
recipient email and name; invoice id `invoice_...`. Identity: the email/name where given; the
entity's `metadata` when present.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, ProviderEvent, Refund, Sale
from adapter.money import normalize_currency, to_minor
from adapter.payload import boolean, compact, iso_time, mapping, text
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

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale | Refund]:
        """`payment-link.paid` and `sales-invoice.paid` → Sale, `[]` otherwise. Raises
        `Ignore("simple_payload")` for an event without its entity (a *simple* subscription)."""
        if event.type not in ("payment-link.paid", "sales-invoice.paid"):
            return []
        entity = mapping(mapping(event.data.get("_embedded")).get("entity"))
        if not entity:
            raise Ignore("simple_payload")
        if event.type == "payment-link.paid":
            return [self._link(event.id, entity)]
        return [self._invoice(entity)]

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
            metadata_sources=(mapping(link.get("metadata")),),
            provider_customer_id=text(link.get("customerId")),
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
        recipient = mapping(invoice.get("recipient"))
        name = " ".join(p for p in (text(recipient.get("givenName")), text(recipient.get("familyName"))) if p)
        return Sale(
            kind="purchase", amount=net, gross_amount=gross, currency=currency, invoice_id=invoice_id,
            metadata_sources=(mapping(invoice.get("metadata")),),
            email=text(recipient.get("email")), name=name or text(recipient.get("organizationName")),
            metadata=compact(taxAmount=gross - net, invoiceNumber=text(invoice.get("invoiceNumber"))),
        )


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
