"""AcmePay, an example processor: `Acme-Signature: t=<unix>,v1=<hex>`, HMAC-SHA256 of `t.body`.

Its webhooks look like `{"id": "evt_..", "type": "payment.paid", "created": 1775824496,
"live": false, "payment": {"id": "pay_..", "amount": "49.00", "tax": "4.90", "currency": "EUR",
"customer": {"id": "cus_..", "email": ..}, "metadata": {"clickId": .., "userId": ..}}}`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, ProviderEvent, Sale
from adapter.money import to_minor
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import TimestampedHmac

__all__ = ["AcmePayProvider"]


class AcmePayProvider(SamplesMixin, Provider):
    """AcmePay: `Acme-Signature: t=..,v1=..`, HMAC-SHA256 hex over `t.body`."""

    name = "acmepay"
    # Declared, not written: hooktrack's core verifies (every secret, constant time, both-way
    # tolerance) and signs (`hooktrack send`) from this one line.
    scheme = TimestampedHmac(header="Acme-Signature", ts="t", sig="v1", signed="{ts}.{body}")

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["id"], data["created"] = f"evt_{unique}", now
        data["payment"]["id"] = f"pay_{unique}"

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        data = self.json_body(body)
        if not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
            raise PayloadError("AcmePay event without string `id` and `type`")
        if not isinstance(data.get("created"), int):
            raise PayloadError("AcmePay event without integer `created`")
        live = data.get("live")
        return ProviderEvent(id=data["id"], type=data["type"], data=data,
                             occurred_at=datetime.fromtimestamp(data["created"], UTC),
                             livemode=live if isinstance(live, bool) else None)

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale]:
        if event.type == "customer.created":
            customer = event.data["customer"]
            meta = customer.get("metadata")
            # Say where identity lives; hooktrack reads the source's click/customer id keys from it.
            return [Lead(provider_customer_id=customer["id"], email=customer.get("email"),
                         metadata_sources=(meta,))]
        if event.type != "payment.paid":
            return []
        payment = event.data["payment"]
        currency = payment["currency"]
        amount = to_minor(payment["amount"], currency) - to_minor(payment.get("tax") or "0", currency)
        if amount <= 0:
            raise Ignore("zero_amount")
        meta, customer = payment.get("metadata"), payment.get("customer") or {}
        return [Sale(amount=amount, currency=currency, invoice_id=payment["id"],
                     provider_customer_id=customer.get("id"), email=customer.get("email"),
                     metadata_sources=(meta,))]
