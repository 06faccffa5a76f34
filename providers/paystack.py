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
paid those charges on top (`amount` above `requested_amount` by no more than `fees`), the Sale
is `requested_amount`; any other gap (a Terminal charge whose `requested_amount` is not what was
paid) leaves the Sale at `amount`.
A charge of a plan (`data.plan.plan_code`) is a subscription payment; the charge names no
subscription code, so the subscription is keyed `"<customer_code>:<plan_code>"` (a customer
holds one subscription per plan), which makes the customer's first paid charge of a plan the
`Subscription creation` and later ones renewals.

Identity: `data.customer.email` (and `phone`), `customer_code` as the provider customer id, and
click and user ids from `data.metadata` (an object, a JSON string of one, `""` or `0`: all are accepted),
including its `custom_fields` list of `{display_name, variable_name, value}`, then the
customer's own `metadata`. `data.domain` (`live`/`test`) is the livemode.

Refund: `refund.processed` (`data.status` `processed`): its `amount` (hundredths, like the charge's)
in `currency`, reversing `transaction_reference` (the charge's `reference`, the Sale's invoice id)
and the transaction's id when the refund names it (the Sale remembers the transaction `id` as a
payment ref); the refund's `id` (else `refund_reference`) is the refund id. The amount is on the
Sale's own basis (the charged amount, tax as priced in). Disputes are not mapped: Paystack's
`charge.dispute.resolve` does not say that money left the merchant. Refund events carry no
`paid_at`/`created_at` in Paystack's samples, so an event without a time is dated at its receipt.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Mapped, ProviderEvent, Refund, Sale
from adapter.money import rescale
from adapter.payload import compact, ident, integer, iso_time, json_value, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BodyHmac

__all__ = ["PaystackProvider"]

_PAYSTACK_EXPONENT = 2  # every Paystack amount is in hundredths of the currency's unit
_KEY_FIELDS = ("reference", "subscription_code", "invoice_code", "transfer_code", "request_code",
               "customer_code", "id")
_TIME_FIELDS = ("paid_at", "paidAt", "created_at", "createdAt", "updated_at", "updatedAt")


def _metadata(value: Any) -> dict[str, Any]:
    """`data.metadata` as a mapping: Paystack sends an object, a JSON string, `""` or `0`."""
    if isinstance(value, str) and value.strip():
        try:
            value = json_value(value)
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


class PaystackProvider(SamplesMixin, Provider):
    """Paystack: `x-paystack-signature`, HMAC-SHA512 hex of the raw body; no timestamp."""

    name = "paystack"
    # `reference` is kept as sent: Paystack references are unique per integration and the corpus
    # (shared/corpus/EXPECTED.tsv) expects them unprefixed, so invoice ids stay "global" here.
    tax = "included"  # Paystack reports no tax: the charged amount includes whatever tax the merchant priced in
    scheme = BodyHmac(header="x-paystack-signature", digest="sha512")

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        txn = mapping(data.get("data"))
        txn["reference"] = f"ref_{unique}"
        txn["id"] = int(hashlib.sha256(unique.encode()).hexdigest()[:12], 16)  # any `unique`, not only hex
        txn["paid_at"] = txn["paidAt"] = txn["created_at"] = txn["createdAt"] = _iso(now)

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The delivery `"<event>:<data.reference>"`, at `paid_at` (else `created_at`, else the
        moment of receipt: a verified event is never refused for a missing time).

        Raises `PayloadError` without a string `event` or a `data` object.
        """
        payload = self.json_body(body)
        event, data = text(payload.get("event")), payload.get("data")
        if event is None:
            raise PayloadError("Paystack webhook without a string `event`")
        if not isinstance(data, dict):
            raise PayloadError("Paystack webhook without a `data` object")
        occurred = next((t for t in (iso_time(data.get(f)) for f in _TIME_FIELDS) if t is not None), None)
        key = next((k for k in (ident(data.get(f)) for f in _KEY_FIELDS) if k is not None), None)
        domain = data.get("domain")
        return ProviderEvent(
            id=f"{event}:{key or 'sha256:' + hashlib.sha256(body).hexdigest()[:32]}",
            type=event,
            occurred_at=occurred or datetime.now(UTC),
            livemode={"live": True, "test": False}.get(domain) if isinstance(domain, str) else None,
            data=payload,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`charge.success` → Sale, `refund.processed` → Refund; `[]` for other events.

        Raises `Ignore("unpaid")` when `data.status` is not `success`, `Ignore("zero_amount")`
        for a charge of nothing, `Ignore("refund_not_processed")` for a refund event whose status
        is not `processed`, `PayloadError` without a reference, an integer amount or a currency.
        """
        if event.type == "refund.processed":
            return [_refund(event.data["data"])]
        if event.type != "charge.success":
            return []
        return [self._sale(event.data["data"])]

    def _sale(self, txn: dict[str, Any]) -> Sale:
        reference, currency, amount = ident(txn.get("reference")), text(txn.get("currency")), integer(txn.get("amount"))
        if reference is None or currency is None:
            raise PayloadError("Paystack charge without `reference` and `currency`")
        if amount is None:  # an integer, or an integer string ("5000", Paystack Terminal)
            raise PayloadError(f"Paystack charge `amount` is not an integer: {txn.get('amount')!r}")
        if txn.get("status") != "success":
            raise Ignore("unpaid")
        requested, fees = integer(txn.get("requested_amount")), integer(txn.get("fees"))
        if requested is not None and fees is not None and 0 < amount - requested <= fees:
            amount, charged = requested, amount  # the customer paid Paystack's charges on top
        else:
            charged = amount
        minor = rescale(amount, _PAYSTACK_EXPONENT, currency)
        if minor <= 0:
            raise Ignore("zero_amount")
        customer = mapping(txn.get("customer"))
        plan = txn.get("plan")
        plan_code = ident(mapping(plan).get("plan_code")) or ident(plan)
        customer_code = ident(customer.get("customer_code"))
        subscription = f"{customer_code}:{plan_code}" if plan_code and customer_code else None
        metadata = _metadata(txn.get("metadata"))
        names = [text(customer.get("first_name")), text(customer.get("last_name"))]
        return Sale(
            kind="subscription" if subscription else "purchase",
            amount=minor,
            currency=currency,
            invoice_id=reference,
            payment_refs=tuple(i for i in (ident(txn.get("id")),) if i and i != reference),
            subscription_id=subscription,
            provider_customer_id=customer_code,
            email=text(customer.get("email")),
            phone=text(customer.get("phone")),
            name=" ".join(n for n in names if n) or None,
            timestamp=iso_time(txn.get("paid_at")) or iso_time(txn.get("paidAt")),
            metadata_sources=(metadata, _custom_fields(metadata), _metadata(customer.get("metadata"))),
            metadata=compact(
                reference=reference,
                transactionId=ident(txn.get("id")),
                planCode=plan_code,
                channel=text(txn.get("channel")),
                chargedAmount=rescale(charged, _PAYSTACK_EXPONENT, currency) if charged != amount else None,
            ),
        )


def _refund(refund: dict[str, Any]) -> Refund:
    """A processed refund of the charge `transaction_reference`, in the charge's units."""
    if refund.get("status", "processed") != "processed":
        raise Ignore("refund_not_processed")
    reference, currency = ident(refund.get("transaction_reference")), text(refund.get("currency"))
    amount = integer(refund.get("amount"))
    transaction = refund.get("transaction")
    transaction_id = ident(mapping(transaction).get("id")) or ident(transaction)
    ids = tuple(i for i in (reference, transaction_id) if i)
    if not ids or currency is None:
        raise PayloadError("Paystack refund without `transaction_reference` and `currency`")
    if amount is None:
        raise PayloadError(f"Paystack refund `amount` is not an integer: {refund.get('amount')!r}")
    return Refund(
        reverses=ids,
        amount=rescale(amount, _PAYSTACK_EXPONENT, currency),
        currency=currency,
        refund_id=ident(refund.get("id")) or ident(refund.get("refund_reference")),
        timestamp=next((t for t in (iso_time(refund.get(f)) for f in _TIME_FIELDS) if t is not None), None),
        metadata=compact(refundReference=ident(refund.get("refund_reference")),
                         processor=text(refund.get("processor"))),
    )
