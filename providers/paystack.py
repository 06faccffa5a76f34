"""Paystack: `x-paystack-signature`, HMAC-SHA512 hex of the raw body, keyed by the secret key.

The key is the integration's secret API key (`sk_live_...` or `sk_test_...`, Settings → API Keys
& Webhooks); Paystack has no separate webhook secret. The scheme signs no timestamp, so there is
no freshness check. Bodies carry no event id: a delivery is `"<event>:<data.reference>"` (the
transaction reference, unique per transaction), the same on every retry. Events without a
reference use their `*_code` or `id`, and as a last resort a digest of the body.

Sale: `charge.success` (`data.status` `success`). `amount` is an integer in hundredths of the
currency (kobo, pesewas, cents); it is converted to ISO 4217 minor units (the same for NGN,
GHS, ZAR, KES, USD; whole francs for XOF and RWF, whose ISO exponent is 0). Paystack reports no
sales tax on a transaction, so the Sale is the charged amount, tax included where the merchant
priced it in; `fees` are Paystack's processing fees and are not subtracted. When the customer
paid those charges on top (`amount` above `requested_amount`), the Sale is `requested_amount`.
A charge of a plan (`data.plan.plan_code`) is a subscription payment; the charge names no
subscription code, so the subscription is keyed `"<customer_code>:<plan_code>"` (a customer
holds one subscription per plan), which makes the customer's first paid charge of a plan the
`Subscription creation` and later ones renewals.

Identity: `data.customer.email`, `customer_code` as the provider customer id, and click and
user ids from `data.metadata` (an object, a JSON string of one, `""` or `0`: all are accepted),
including its `custom_fields` list of `{display_name, variable_name, value}`, then the
customer's own `metadata`. `data.domain` (`live`/`test`) is the livemode.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from adapter.attribution import first_key
from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, ProviderEvent, Sale, parse_time
from adapter.money import rescale
from adapter.plugin import Headers, Provider, SourceContext
from adapter.signing import BodyHmac

__all__ = ["PaystackProvider"]

_PAYSTACK_EXPONENT = 2  # every Paystack amount is in hundredths of the currency's unit
_KEY_FIELDS = ("reference", "subscription_code", "invoice_code", "transfer_code", "request_code",
               "customer_code", "id")
_TIME_FIELDS = ("paid_at", "paidAt", "created_at", "createdAt", "updated_at", "updatedAt")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A string field, or an integer id as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return (value.strip() or None) if isinstance(value, str) else None


def _metadata(value: Any) -> dict[str, Any]:
    """`data.metadata` as a mapping: Paystack sends an object, a JSON string, `""` or `0`."""
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return {}
    return value if isinstance(value, dict) else {}


def _custom_fields(metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata.custom_fields` (`[{display_name, variable_name, value}]`) by variable name,
    then by display name."""
    fields = [f for f in metadata.get("custom_fields") or [] if isinstance(f, dict)]
    out: dict[str, Any] = {}
    for key in ("variable_name", "display_name"):
        for field in fields:
            if isinstance(field.get(key), str):
                out.setdefault(field[key], field.get("value"))
    return out


def _iso(now: int) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class PaystackProvider(Provider):
    """Paystack: `x-paystack-signature`, HMAC-SHA512 hex of the raw body; no timestamp."""

    name = "paystack"
    scheme = BodyHmac(header="x-paystack-signature", digest="sha512")

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        txn = _dict(data.get("data"))
        txn["reference"] = f"ref_{unique}"
        txn["id"] = int(hashlib.sha256(unique.encode()).hexdigest()[:12], 16)  # any `unique`, not only hex
        txn["paid_at"] = txn["paidAt"] = txn["created_at"] = txn["createdAt"] = _iso(now)

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The delivery `"<event>:<data.reference>"`, at `paid_at` (else `created_at`).

        Raises `PayloadError` without a string `event`, a `data` object or a time.
        """
        payload = self.json_body(body)
        event, data = _text(payload.get("event")), payload.get("data")
        if event is None:
            raise PayloadError("Paystack webhook without a string `event`")
        if not isinstance(data, dict):
            raise PayloadError("Paystack webhook without a `data` object")
        occurred = next((t for t in (parse_time(data.get(f)) for f in _TIME_FIELDS) if t is not None), None)
        if occurred is None:
            raise PayloadError("Paystack webhook without `paid_at` or `created_at`")
        key = next((k for k in (_text(data.get(f)) for f in _KEY_FIELDS) if k is not None), None)
        domain = data.get("domain")
        return ProviderEvent(
            id=f"{event}:{key or 'sha256:' + hashlib.sha256(body).hexdigest()[:32]}",
            type=event,
            occurred_at=occurred,
            livemode={"live": True, "test": False}.get(domain) if isinstance(domain, str) else None,
            data=payload,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale]:
        """`charge.success` → Sale; `[]` for other events.

        Raises `Ignore("unpaid")` when `data.status` is not `success`, `Ignore("zero_amount")`
        for a charge of nothing, `PayloadError` without a reference, an integer amount or a
        currency.
        """
        if event.type != "charge.success":
            return []
        return [self._sale(event.data["data"], ctx)]

    def _sale(self, txn: dict[str, Any], ctx: SourceContext) -> Sale:
        reference, currency, amount = _text(txn.get("reference")), _text(txn.get("currency")), txn.get("amount")
        if reference is None or currency is None:
            raise PayloadError("Paystack charge without `reference` and `currency`")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise PayloadError(f"Paystack charge `amount` is not an integer: {amount!r}")
        if txn.get("status") != "success":
            raise Ignore("unpaid")
        requested = txn.get("requested_amount")
        if isinstance(requested, int) and not isinstance(requested, bool) and 0 < requested < amount:
            amount, charged = requested, amount  # the customer paid Paystack's charges on top
        else:
            charged = amount
        minor = rescale(amount, _PAYSTACK_EXPONENT, currency)
        if minor <= 0:
            raise Ignore("zero_amount")
        customer = _dict(txn.get("customer"))
        plan = txn.get("plan")
        plan_code = _text(_dict(plan).get("plan_code")) or _text(plan)
        customer_code = _text(customer.get("customer_code"))
        subscription = f"{customer_code}:{plan_code}" if plan_code and customer_code else None
        metadata = _metadata(txn.get("metadata"))
        sources = (metadata, _custom_fields(metadata), _metadata(customer.get("metadata")))
        names = [_text(customer.get("first_name")), _text(customer.get("last_name"))]
        return Sale(
            kind="subscription" if subscription else "purchase",
            amount=minor,
            currency=currency,
            invoice_id=reference,
            subscription_id=subscription,
            provider_customer_id=customer_code,
            email=_text(customer.get("email")),
            name=" ".join(n for n in names if n) or None,
            timestamp=parse_time(txn.get("paid_at")) or parse_time(txn.get("paidAt")),
            click_id=first_key(ctx.click_id_keys, *sources),
            external_id=first_key(ctx.customer_id_keys, *sources),
            metadata=_compact(
                reference=reference,
                transactionId=_text(txn.get("id")),
                planCode=plan_code,
                channel=_text(txn.get("channel")),
                chargedAmount=rescale(charged, _PAYSTACK_EXPONENT, currency) if charged != amount else None,
            ),
        )


def _compact(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and not isinstance(v, bool)}
