"""Maxio Advanced Billing (Chargify): form-encoded webhooks signed with the site's shared key.

Maxio posts `application/x-www-form-urlencoded` bodies (`id=...&event=...&payload[...]=...`,
nested keys in brackets) and signs the raw body: `X-Chargify-Webhook-Signature-Hmac-Sha-256` is
the hex HMAC-SHA256 of the body keyed by the site's shared key (Maxio's Webhooks Reference and
the `signature_hmac_sha_256` its API keeps per webhook). The delivery id is the webhook `id`
("not changed on a retry/replay of the same webhook"). Nothing in a payload says live or test
(test sites are separate sites), so `livemode` is None.

Sale: `payment_success` — the payment `transaction` (`amount_in_cents`, a gross payment: tax
`included`). A payment whose id is the subscription's `signup_payment_id` starts it; any other is
a renewal. `renewal_success` carries the same payment transaction when it has one: it maps to the
same Sale (invoice id = the transaction id), which the core counts once; without a payment it is
recorded (`renewal_without_payment`). Transaction ids are per-site numbers, so invoice ids are
source-qualified (`invoice_ids = "account"`). Lead: `signup_success` (`Sign up`, or `Started
Trial` when the subscription is `trialing`). Refund: `refund_success` of `payment_id`.
Currency: the payload's `currency` when present, else the source setting `currency` (USD).
Identity: the customer's `reference` (the merchant's own id), id, email and name.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, ProviderEvent, Refund, Sale
from adapter.payload import compact, integer, iso_time, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BodyHmac
from providers.forms import encode_form, parse_form, sample_fields

__all__ = ["MaxioProvider", "MaxioSettings", "nested"]


class MaxioSettings(BaseModel):
    """`currency`: the site's currency, for payloads that do not name one (default USD)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = "USD"


def nested(fields: dict[str, str]) -> dict[str, Any]:
    """`{"payload[transaction][id]": "1"}` → `{"payload": {"transaction": {"id": "1"}}}`."""
    root: dict[str, Any] = {}
    for key, value in fields.items():
        head, _, rest = key.partition("[")
        parts = [head, *(p.rstrip("]") for p in rest.split("[") if rest)] if rest else [head]
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return root


class MaxioProvider(SamplesMixin, Provider):
    """Maxio (Chargify): hex HMAC-SHA256 of the form body with the site's shared key."""

    name = "maxio"
    scheme = BodyHmac(header="X-Chargify-Webhook-Signature-Hmac-Sha-256",
                      hint="the key is the site's Shared Key (Config → Settings)")
    invoice_ids = "account"  # transaction ids are per-site numbers
    tax = "included"  # a payment transaction's amount has no tax breakdown
    settings_model = MaxioSettings

    def samples(self) -> dict[str, bytes]:
        return {name: encode_form(sample_fields(raw)) for name, raw in super().samples().items()}

    def sample(self, name: str, *, unique: str, now: int) -> bytes:
        fields = sample_fields(super().samples()[name])
        number = str(int.from_bytes(unique.encode(), "big") % 10**9)
        fields["id"] = number
        for key in ("payload[transaction][id]", "payload[subscription][signup_payment_id]"):
            if key in fields:
                fields[key] = number
        return encode_form(fields)

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded"}

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        data = nested(parse_form(body))
        webhook_id, event_type = text(data.get("id")), text(data.get("event"))
        if webhook_id is None or event_type is None or not isinstance(data.get("payload"), dict):
            raise PayloadError("Maxio webhook without `id`, `event` and `payload[...]` fields")
        payload = data["payload"]
        occurred = iso_time(mapping(payload.get("transaction")).get("created_at")) or iso_time(payload.get("timestamp"))
        if occurred is None:  # a signup or a refund without a time: the moment of receipt
            return ProviderEvent(id=webhook_id, type=event_type, livemode=None, data=data)
        return ProviderEvent(id=webhook_id, type=event_type, occurred_at=occurred, livemode=None, data=data)

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale | Refund]:
        """`payment_success` / `renewal_success` → one Sale per payment transaction,
        `signup_success` → Lead, `refund_success` → Refund; `[]` otherwise."""
        payload: dict[str, Any] = event.data["payload"]
        settings: MaxioSettings | None = ctx.options
        fallback = settings.currency if settings else "USD"
        if event.type in ("payment_success", "renewal_success"):
            txn = mapping(payload.get("transaction"))
            if text(txn.get("transaction_type")) != "payment":
                if event.type == "renewal_success":
                    raise Ignore("renewal_without_payment")
                raise PayloadError("Maxio payment_success without a payment `transaction`")
            return [self._sale(payload, txn, fallback)]
        if event.type == "signup_success":
            return [self._lead(payload)]
        if event.type == "refund_success":
            return [self._refund(payload, fallback)]
        return []

    def _sale(self, payload: dict[str, Any], txn: dict[str, Any], fallback: str) -> Sale:
        txn_id, amount = text(txn.get("id")), integer(txn.get("amount_in_cents"))
        if txn_id is None or amount is None or amount < 0:
            raise PayloadError("Maxio payment without `id` and integer `amount_in_cents`")
        if txn.get("success") not in (None, "true"):
            raise Ignore("unpaid")
        if amount == 0:
            raise Ignore("zero_amount")
        sub = mapping(payload.get("subscription"))
        subscription = text(txn.get("subscription_id")) or text(sub.get("id"))
        signup = text(sub.get("signup_payment_id"))
        return Sale(
            kind="subscription" if subscription else "purchase", amount=amount, gross_amount=amount,
            currency=text(txn.get("currency")) or text(sub.get("currency")) or fallback,
            invoice_id=txn_id, subscription_id=subscription,
            payment_refs=tuple(r for r in (text(txn.get("gateway_transaction_id")),) if r),
            starts_subscription=(signup == txn_id) if signup else None,
            timestamp=iso_time(txn.get("created_at")),
            **_hints(mapping(sub.get("customer")) or mapping(payload.get("customer"))),
            metadata=compact(subscriptionId=subscription, memo=text(txn.get("memo"))),
        )

    def _lead(self, payload: dict[str, Any]) -> Lead:
        sub = mapping(payload.get("subscription"))
        trial = text(sub.get("state")) == "trialing"
        return Lead(kind="started_trial" if trial else "sign_up", **_hints(mapping(sub.get("customer"))),
                    metadata=compact(subscriptionId=text(sub.get("id")) if trial else None))

    def _refund(self, payload: dict[str, Any], fallback: str) -> Refund:
        payment = text(payload.get("payment_id"))
        if payment is None:
            raise PayloadError("Maxio refund_success without `payment_id`")
        amount = integer(payload.get("refund_amount_in_cents", payload.get("amount_in_cents")))
        return Refund(reverses=(payment,), amount=amount if amount and amount > 0 else None,
                      currency=(text(payload.get("currency")) or fallback) if amount else None,
                      includes_tax=bool(amount), refund_id=text(payload.get("refund_id")))


def _hints(customer: dict[str, Any]) -> dict[str, Any]:
    name = " ".join(p for p in (text(customer.get("first_name")), text(customer.get("last_name"))) if p)
    return {"external_id": text(customer.get("reference")), "provider_customer_id": text(customer.get("id")),
            "email": text(customer.get("email")), "name": name or None, "phone": text(customer.get("phone"))}
