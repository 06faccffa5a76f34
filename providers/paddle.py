"""Paddle Billing: `Paddle-Signature: ts=..;h1=..`, HMAC-SHA256 hex over `ts:body`.

The key is the notification destination's secret (`pdl_ntfset_...`), used as UTF-8 bytes.
During secret rotation Paddle sends several `h1=` values; any match passes.

Sale: `transaction.completed`. Amounts are strings in the currency's lowest denomination under
`data.details.totals`; the Sale is `total - tax` (after discounts, tax excluded), or
`grand_total - grand_total_tax` when a credit paid part of the transaction. A transaction with a
`subscription_id` is a subscription payment (`origin` `subscription_update`/`subscription_charge`:
a mid-cycle charge, named `Subscription update`); without one it is a one-time purchase.
The Sale's `gross_amount` is what was charged including tax (`total`, or `grand_total`).
Refund: `adjustment.created` / `adjustment.updated` with `action` `refund` or `chargeback`, only
once its `status` is `approved` (most live refunds are created `pending_approval` and approved
later by Paddle; anything else is `Ignore("refund_not_approved")`). It reverses the adjustment's
`transaction_id`; a `type` `full` adjustment refunds the whole Sale (amount None), a partial one
`totals.total` (tax included, so the core scales it by the Sale's net/gross). Other actions
(`credit`, `chargeback_warning`, `chargeback_reverse`, ...) are `Ignore("not_a_refund")`.
Leads: `customer.created` (`Sign up`) and a trialing `subscription.created` (`Started Trial`).
Transactions carry only `customer_id` (`ctm_...`): the customer's email, name and user id come
from identity memory, learned from the customer's own events.

Paddle bodies have no live/test flag (sandbox and live are separate accounts with separate
destinations and secrets), so `livemode` is None; point each at its own source.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, Mapped, ProviderEvent, Refund, Sale, SaleKind
from adapter.payload import compact, iso_time, mapping, minor_amount, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import TimestampedHmac

__all__ = ["PaddleProvider"]

# Charges in the middle of a cycle: a plan change billed now, or a one-time charge on a
# subscription (Paddle used `subscription_update` for both until July 2023).
_MID_CYCLE_ORIGINS = frozenset({"subscription_update", "subscription_charge"})


def _starts(origin: str | None) -> bool | None:
    """A transaction's `origin` → whether it starts its subscription (SPEC §8): `web` (checkout)
    and `api` create one, `subscription_recurring` is a renewal (Paddle's transaction object
    reference, "origin"); anything else says nothing."""
    if origin in ("web", "api"):
        return True
    if origin == "subscription_recurring":
        return False
    return None


def _minor(totals: dict[str, Any], key: str, default: str | None = None) -> int:
    """An amount string of `totals` ("4900") as an int; PayloadError when absent or not whole."""
    value = minor_amount(totals.get(key, default))  # negative: never a payment or a tax
    if value is None:
        raise PayloadError(f"transaction totals.{key} is not an amount in minor units: {totals.get(key, default)!r}")
    return value


def _timestamp(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise PayloadError(f"Paddle event without string `{field}`")
    moment = iso_time(value)
    if moment is None:
        raise PayloadError(f"Paddle `{field}` is not an ISO 8601 time: {value[:40]!r}")
    return moment


def _iso(now: int) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PaddleProvider(SamplesMixin, Provider):
    """Paddle Billing: `Paddle-Signature: ts=..;h1=..`, HMAC-SHA256 hex over `ts:body`."""

    name = "paddle"
    cancellations = frozenset({"subscription.canceled"})
    scheme = TimestampedHmac(header="Paddle-Signature", ts="ts", sig="h1", signed="{ts}:{body}", separator=";")

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["event_id"] = f"evt_{unique}"
        data["notification_id"] = f"ntf_{unique}"
        data["occurred_at"] = _iso(now)

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by its `event_id` (the same on every retry and every destination)."""
        data = self.json_body(body)
        event_id, event_type = data.get("event_id"), data.get("event_type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise PayloadError("Paddle event without string `event_id` and `event_type`")
        if not isinstance(data.get("data"), dict):
            raise PayloadError("Paddle event without a `data` object")
        return ProviderEvent(
            id=event_id,
            type=event_type,
            occurred_at=_timestamp(data.get("occurred_at"), "occurred_at"),
            livemode=None,
            data=data,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`transaction.completed` → Sale; `customer.created` and trialing
        `subscription.created` → Leads; an approved refund or chargeback adjustment
        (`adjustment.created`/`adjustment.updated`) → Refund; `[]` for other types. Raises
        `Ignore` for a transaction of nothing (`zero_amount`), a transaction not yet paid
        (`unpaid`), a subscription that is not trialing (`not_trialing`: its payment arrives as
        a transaction), an adjustment not (yet) approved (`refund_not_approved`) and one that
        returns no money (`not_a_refund`: credits, chargeback warnings and reversals)."""
        obj: dict[str, Any] = event.data["data"]
        if event.type == "transaction.completed":
            return [self._sale(obj)]
        if event.type in ("adjustment.created", "adjustment.updated"):
            return [_refund(obj)]
        if event.type == "customer.created":
            return [self._lead(obj, "sign_up", text(obj.get("id")))]
        if event.type == "subscription.created":
            if obj.get("status") != "trialing":
                raise Ignore("not_trialing")
            return [self._lead(obj, "started_trial", text(obj.get("customer_id")))]
        return []

    def _sale(self, txn: dict[str, Any]) -> Sale:
        if txn.get("status", "completed") not in ("completed", "paid"):
            raise Ignore("unpaid")
        totals = mapping(mapping(txn.get("details")).get("totals"))
        currency = text(txn.get("currency_code")) or text(totals.get("currency_code"))
        if currency is None:
            raise PayloadError("transaction without `currency_code`")
        amount, tax = _net_and_tax(totals)
        if amount <= 0:  # a trial's first transaction is one of nothing: remembered as its trial
            first = _starts(text(txn.get("origin"))) is True
            raise Ignore("zero_amount", trial_of=text(txn.get("subscription_id")) if first else None)
        subscription = text(txn.get("subscription_id"))
        origin = text(txn.get("origin"))
        kind: SaleKind = "purchase"
        if subscription:
            kind = "subscription_update" if origin in _MID_CYCLE_ORIGINS else "subscription"
        return Sale(
            kind=kind,
            amount=amount,
            currency=currency,
            invoice_id=txn["id"],
            gross_amount=amount + tax,
            subscription_id=subscription,
            starts_subscription=_starts(origin) if subscription else None,
            provider_customer_id=text(txn.get("customer_id")),
            metadata_sources=(mapping(txn.get("custom_data")),),
            metadata=compact(subscriptionId=subscription, origin=origin, taxAmount=tax,
                              invoiceNumber=text(txn.get("invoice_number"))),
        )

    def _lead(self, obj: dict[str, Any], kind: str, customer: str | None) -> Lead:
        trial = kind == "started_trial"
        return Lead(
            kind="started_trial" if trial else "sign_up",
            provider_customer_id=customer,
            email=text(obj.get("email")),
            name=text(obj.get("name")),
            metadata_sources=(mapping(obj.get("custom_data")),),
            metadata=compact(subscriptionId=text(obj.get("id")) if trial else None),
        )


def _refund(adjustment: dict[str, Any]) -> Refund:
    """An approved `refund` or `chargeback` adjustment of a transaction as a Refund."""
    action = text(adjustment.get("action"))
    if action not in ("refund", "chargeback"):
        raise Ignore("not_a_refund")
    if adjustment.get("status") != "approved":
        raise Ignore("refund_not_approved")
    transaction, adjustment_id = text(adjustment.get("transaction_id")), text(adjustment.get("id"))
    if transaction is None or adjustment_id is None:
        raise PayloadError("adjustment without `id` and `transaction_id`")
    totals = mapping(adjustment.get("totals"))
    currency = text(adjustment.get("currency_code")) or text(totals.get("currency_code"))
    whole = adjustment.get("type") == "full"
    return Refund(
        reverses=(transaction,),
        amount=None if whole else _minor(totals, "total"),
        currency=currency,
        includes_tax=not whole,
        chargeback=action == "chargeback",
        refund_id=adjustment_id,
        timestamp=iso_time(adjustment.get("updated_at")) or iso_time(adjustment.get("created_at")),
        metadata=compact(action=action, reason=text(adjustment.get("reason")),
                         subscriptionId=text(adjustment.get("subscription_id"))),
    )


def _net_and_tax(totals: dict[str, Any]) -> tuple[int, int]:
    """What the customer paid excluding tax, and that tax, from a transaction's totals.

    `total` is after discount and including tax. A credit (from the customer's balance) pays
    part of it: then `grand_total` is what was charged and `grand_total_tax` the tax in it
    (transactions older than that field: all of `tax`, the conservative reading).
    """
    total, tax = _minor(totals, "total"), _minor(totals, "tax")
    if _minor(totals, "credit", "0") == 0:
        return total - tax, tax
    charged = _minor(totals, "grand_total")
    charged_tax = _minor(totals, "grand_total_tax", totals.get("tax"))
    return charged - charged_tax, charged_tax
