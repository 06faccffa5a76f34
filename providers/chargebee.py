"""Chargebee: unsigned JSON events; the source requires HTTP Basic credentials (`basic_auth`).

Chargebee signs nothing. Its webhook settings can protect the URL with HTTP Basic auth, and
hooktrack refuses a delivery without one of the source's `basic_auth = ["user:password", ...]`
pairs with 401 (`CredentialsError`). Several pairs may be listed while rotating; `secrets` are
not used. Credentials authenticate the sender, not the body: use HTTPS.

Delivery dedup is on the event `id` (`ev_...`): Chargebee retries for two days and changes
`webhook_status` between attempts, so nothing but the id is compared. `occurred_at` (epoch
seconds) is the conversions' timestamp. Chargebee also delivers out of order, so each tracked
event names the object it is about (`ProviderEvent.object_key`) and the core ignores an event
older than one it already stored for that object (`out_of_order`). Payments are keyed by their
invoice, not their subscription: a late renewal must still count when a later cycle came first.

Sale: `payment_succeeded` — the transaction's `amount` (cents) applied to `content.invoice`,
minus the invoice's `tax`; `invoiceId` is the invoice id (the transaction id when there is no
invoice). An invoice with a `subscription_id` is a subscription payment (the core names it
creation or renewal; `first_invoice` is its `starts_subscription` and kept in metadata); it
remembers the transaction id (`payment_refs`) and what was paid with tax as `gross_amount`.
Refund: `payment_refunded` — the refund transaction's `amount` (cents, tax included, so the
core scales it by the Sale's net/gross), reversing the refunded invoice (`content.invoice`, the
credit note's `reference_invoice_id`) and the payment transaction (`reference_transaction_id`),
keyed by the refund transaction's id. Lead: `customer_created`.
Click and user ids come from `meta_data` and from custom fields: `cf_click_id` counts as the key
`click_id`, `cf_user_id` as `user_id` (and a configured key `cf_...` matches exactly).
Chargebee test sites are separate sites, so `livemode` is None. Events of API version v1 are
ignored (`api_version_v1`): their content has another shape.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from adapter.errors import CredentialsError, Ignore, PayloadError
from adapter.events import Lead, Mapped, ProviderEvent, Refund, Sale, SaleKind
from adapter.payload import boolean, compact, epoch_time, ident, mapping, minor_amount, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BasicAuthPairs, basic_credentials, secret_in

__all__ = ["ChargebeeProvider", "ChargebeeSettings"]

_TRACKED = frozenset({"payment_succeeded", "payment_refunded", "customer_created"})


class ChargebeeSettings(BaseModel):
    """`basic_auth = ["user:password", ...]`: the credentials Chargebee is configured with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    basic_auth: BasicAuthPairs


def _cents(obj: dict[str, Any], key: str, default: int | None = None) -> int:
    value = minor_amount(obj.get(key, default))  # negative: never a payment or a tax
    if value is None:
        raise PayloadError(f"Chargebee `{key}` is not an amount in cents: {obj.get(key, default)!r}")
    return value


class ChargebeeProvider(SamplesMixin, Provider):
    """Chargebee: HTTP Basic credentials on the source (401 otherwise); events deduped on `id`."""

    name = "chargebee"
    cancellations = frozenset({"subscription_cancelled"})
    invoice_ids = "account"  # invoice ids are per-site sequence numbers (`123`, or a site-chosen prefix)
    requires_secrets = False
    settings_model = ChargebeeSettings

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Require one of the source's `basic_auth` pairs; raises `CredentialsError` (401)."""
        settings: ChargebeeSettings = ctx.options
        given = basic_credentials(headers.get("authorization"))
        if not secret_in(given, [pair.encode() for pair in settings.basic_auth]):  # every pair compared
            raise CredentialsError("HTTP Basic credentials do not match the source's basic_auth")

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """The `Authorization` header Chargebee sends. `secret` is sent as `user:password`,
        except that an empty one or one of the source's `secrets` (what `hooktrack send` passes;
        Chargebee uses none) stands for the source's first `basic_auth` pair."""
        settings: ChargebeeSettings = ctx.options
        genuine = not secret or secret in ctx.settings.secrets
        credentials = settings.basic_auth[0] if genuine else secret
        return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["id"] = f"ev_{unique}"
        data["occurred_at"] = now

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by its `id`, at `occurred_at`, about the object named by `object_key`."""
        data = self.json_body(body)
        event_id, event_type = text(data.get("id")), text(data.get("event_type"))
        occurred = epoch_time(data.get("occurred_at"))
        if event_id is None or event_type is None:
            raise PayloadError("Chargebee event without string `id` and `event_type`")
        if occurred is None:
            raise PayloadError("Chargebee event without integer `occurred_at`")
        content = data.get("content")
        if not isinstance(content, dict):
            raise PayloadError("Chargebee event without a `content` object")
        return ProviderEvent(
            id=event_id,
            type=event_type,
            occurred_at=occurred,
            livemode=None,
            data=data,
            object_key=_object_key(event_type, content),
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`payment_succeeded` → Sale, `payment_refunded` → Refund, `customer_created` → Lead,
        `[]` otherwise. Raises `Ignore` for a v1 event (`api_version_v1`), a transaction that did
        not succeed (`unpaid`; a refund transaction: `refund_not_succeeded`) and a payment of
        nothing once tax is taken off (`zero_amount`)."""
        if event.type not in _TRACKED:
            return []
        if event.data.get("api_version", "v2") != "v2":
            raise Ignore("api_version_v1")
        content: dict[str, Any] = event.data["content"]
        if event.type == "payment_succeeded":
            return [self._sale(content)]
        if event.type == "payment_refunded":
            return [_refund(content)]
        customer = mapping(content.get("customer"))
        if not customer:
            raise PayloadError("customer_created without `content.customer`")
        return [Lead(kind="sign_up", provider_customer_id=ident(customer.get("id")), email=text(customer.get("email")),
                     name=_name(customer), **_hints(customer))]

    def _sale(self, content: dict[str, Any]) -> Sale:
        txn, invoice = mapping(content.get("transaction")), mapping(content.get("invoice"))
        customer, subscription = mapping(content.get("customer")), mapping(content.get("subscription"))
        if not txn:
            raise PayloadError("payment_succeeded without `content.transaction`")
        if txn.get("status", "success") != "success":
            raise Ignore("unpaid")
        currency = text(txn.get("currency_code")) or text(invoice.get("currency_code"))
        if currency is None:
            raise PayloadError("payment_succeeded without `currency_code`")
        invoice_id = ident(invoice.get("id"))
        paid_for = invoice_id or ident(txn.get("id"))
        if paid_for is None:
            raise PayloadError("payment_succeeded without an invoice or transaction id")
        paid = _applied(txn, invoice_id)
        tax = _cents(invoice, "tax", 0)
        if paid - tax <= 0:
            raise Ignore("zero_amount")
        subscription_id = ident(invoice.get("subscription_id")) if invoice.get("recurring", True) else None
        kind: SaleKind = "subscription" if subscription_id else "purchase"
        billing = mapping(invoice.get("billing_address"))
        return Sale(
            kind=kind,
            amount=paid - tax,
            currency=currency,
            invoice_id=paid_for,
            payment_refs=tuple(i for i in (ident(txn.get("id")),) if i and i != paid_for),
            gross_amount=paid,
            subscription_id=subscription_id,
            # Chargebee says whether the invoice is the subscription's first (SPEC §8); absent → unknown
            starts_subscription=boolean(invoice.get("first_invoice")) if kind == "subscription" else None,
            provider_customer_id=ident(customer.get("id")) or ident(txn.get("customer_id")),
            email=text(customer.get("email")) or text(billing.get("email")),
            name=_name(customer) or _name(billing),
            **_hints(subscription, customer),
            metadata=compact(subscriptionId=subscription_id, taxAmount=tax, transactionId=ident(txn.get("id")),
                              firstInvoice=invoice.get("first_invoice") if kind == "subscription" else None),
        )


def _refund(content: dict[str, Any]) -> Refund:
    """A refund transaction: its `amount` (tax included) of the invoice and payment it names."""
    txn, invoice, note = (mapping(content.get(k)) for k in ("transaction", "invoice", "credit_note"))
    if not txn:
        raise PayloadError("payment_refunded without `content.transaction`")
    if txn.get("status", "success") != "success":
        raise Ignore("refund_not_succeeded")
    links = [mapping(link) for link in txn.get("linked_credit_notes") or []]
    ids = [ident(invoice.get("id")), ident(note.get("reference_invoice_id")),
           *(ident(link.get("cn_reference_invoice_id")) for link in links),
           ident(txn.get("reference_transaction_id"))]
    reverses = tuple(dict.fromkeys(i for i in ids if i))
    currency = text(txn.get("currency_code")) or text(invoice.get("currency_code"))
    if not reverses or currency is None:
        raise PayloadError("payment_refunded without the refunded invoice or transaction and `currency_code`")
    return Refund(
        reverses=reverses,
        amount=_cents(txn, "amount"),
        currency=currency,
        includes_tax=True,
        refund_id=ident(txn.get("id")),
        timestamp=epoch_time(txn.get("date")),
        metadata=compact(creditNoteId=ident(note.get("id")), reason=text(note.get("create_reason_code"))),
    )


def _object_key(event_type: str, content: dict[str, Any]) -> str | None:
    """The object a tracked event is about: its invoice (or transaction) for a payment, the
    customer for `customer_created`. Untracked events need none: the core never orders them."""
    if event_type == "payment_succeeded":
        invoice = ident(mapping(content.get("invoice")).get("id"))
        transaction = ident(mapping(content.get("transaction")).get("id"))
        return f"invoice:{invoice}" if invoice else f"transaction:{transaction}" if transaction else None
    if event_type == "customer_created":
        customer = ident(mapping(content.get("customer")).get("id"))
        return f"customer:{customer}" if customer else None
    return None


def _applied(txn: dict[str, Any], invoice_id: str | None) -> int:
    """What the transaction paid towards `invoice_id`: its `linked_invoices` entry, else all of it."""
    amount = _cents(txn, "amount")
    for link in txn.get("linked_invoices") or []:
        if isinstance(link, dict) and invoice_id is not None and ident(link.get("invoice_id")) == invoice_id:
            return min(amount, _cents(link, "applied_amount", amount))
    return amount


def _hints(*objects: dict[str, Any]) -> dict[str, Any]:
    """Where identity lives: each object's `meta_data`, then its `cf_*` custom fields (read both
    without the `cf_` prefix and with it, so a configured key `cf_ref` matches exactly), in order."""
    sources: list[dict[str, Any]] = []
    for obj in objects:
        custom = {k: v for k, v in obj.items() if k.startswith("cf_")}
        sources += [mapping(obj.get("meta_data")), {k[3:]: v for k, v in custom.items()}, custom]
    return {"metadata_sources": tuple(sources)}


def _name(obj: dict[str, Any]) -> str | None:
    parts = [text(obj.get("first_name")), text(obj.get("last_name"))]
    return " ".join(p for p in parts if p) or None
