"""Refunds and chargebacks in the ingest transaction (SPEC §9).

A `Refund` a provider maps names the payment it reverses by every id it has; the core finds the
Sale through the ids remembered when the Sale was stored (`payment_refs`) and links learned
later (`PaymentLink`), works out how much of the Sale's own amount this refund takes back (tax
scaled, never more than what remains, cumulative totals as the difference from what was
applied) and stores a Refund conversion for the destination, with the Sale's identity and ids.

A refund that arrives before its Sale is stored `skipped`, `unknown_sale` and remembered by the
ids it names; when a Sale named by one of them is stored within the refund's attribution window,
`revive_refunds` links it through the same path (`_link`) and puts it back in the outbox.

A link learned later (`store_link`) revives such a refund the same way, when the link is what
connects it to a stored Sale (Stripe sends `invoice_payment.paid` in no fixed order).

`plan` is the arithmetic, pure; `store_refund`, `revive_refunds` and `store_link` run inside
`_Apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from adapter.destinations import Destination
from adapter.events import PaymentLink, ProviderEvent, Refund
from adapter.plugin import Source
from adapter.records import Conversion
from adapter.store import Tx

__all__ = ["COUNTED", "Ingest", "Plan", "plan", "revive_refunds", "scale", "store_link", "store_refund"]

COUNTED = ("pending", "delivered")
"""Sale delivery states a refund can act on: a Sale that was (or may still be) counted."""


def scale(amount: int, net: int, gross: int | None) -> int:
    """`amount * net / gross` in exact integer arithmetic, rounded half to even; `amount` as it
    is when the gross amount is unknown (or zero)."""
    if not gross:
        return amount
    q, r = divmod(amount * net, gross)
    if 2 * r > gross or (2 * r == gross and q % 2 == 1):
        q += 1
    return q


Checker = Callable[[Destination, Conversion], tuple[Conversion, str, str | None, str | None]]


class Ingest(Protocol):
    """What a refund needs of the ingest transaction (`adapter.ingest._Apply`)."""

    source: Source
    event: ProviderEvent
    received: int
    destination: Destination
    window_ms: int


@dataclass(frozen=True)
class Plan:
    """What one Refund does to its Sale: `amount` now, `refunded` in all afterwards, the ledger
    `key` it is applied under and the cumulative `total` level reached; or `ignored` (why not)."""

    amount: int = 0
    refunded: int = 0
    key: str = ""
    total: int | None = None
    ignored: str | None = None


def plan(refund: Refund, sale_amount: int, gross: int | None, ledger: Sequence[tuple[str, int, int | None]],
         event_id: str) -> Plan:
    """The refund's effect on a Sale of `sale_amount` (tax excluded; `gross` including tax)
    given what its `ledger` (key, amount, cumulative level) says was applied already."""
    applied = sum(amount for _, amount, _ in ledger)
    remaining = max(sale_amount - applied, 0)
    keys = {key for key, _, _ in ledger}
    wanted = sale_amount if refund.amount is None else \
        scale(refund.amount, sale_amount, gross) if refund.includes_tax else refund.amount
    if refund.cumulative:
        target = min(wanted, sale_amount)
        level = max((total for _, _, total in ledger if total is not None), default=0)
        if target < level:
            return Plan(ignored="stale_refund_total")
        if target == level:
            return Plan(ignored="refund_already_applied")
        key, amount, total = f"total:{target}", min(target - level, remaining), target
    else:
        key = f"refund:{refund.refund_id}" if refund.refund_id else f"event:{event_id}"
        if key in keys:
            return Plan(ignored="refund_already_applied")
        amount, total = min(wanted, remaining), None
    return Plan(amount=amount, refunded=applied + amount, key=key, total=total,
                ignored=None if amount > 0 else "sale_already_refunded")


def store_link(tx: Tx, apply: Ingest, link: PaymentLink, check: Checker) -> dict[str, Any]:
    """Remember a `PaymentLink`; the event is answered `ignored`, `payment_link_recorded`.

    Providers do not promise an order: a refund that named one of the link's ids before the link
    was known (Stripe: `charge.refunded` before `invoice_payment.paid`) was stored `unknown_sale`;
    if the link now connects it to a stored Sale, `revive_refunds` links it, as a Sale would."""
    ids = list(dict.fromkeys(link.ids))
    tx.link_payments(apply.source.name, ids, apply.received)
    revive_refunds(tx, apply, ids, check)
    return {"kind": "link", "id": None, "state": "ignored", "reason": "payment_link_recorded"}


@dataclass(frozen=True)
class _Origin:
    """The event a Refund came in: its stored row, the provider's event id and type, and the
    moment the refund happened (the refund's own time, else the event's)."""

    event_id: int
    provider_event_id: str
    event_type: str
    livemode: bool | None
    occurred: int


_Linked = tuple[Conversion, int, str, str, str | None, str | None]
"""A Refund conversion linked to its Sale: (record, Sale id, business key, state, reason, detail)."""


def store_refund(tx: Tx, apply: Ingest, event_id: int, refund: Refund, check: Checker) -> dict[str, Any]:
    """Store one Refund conversion (pending, or `skipped` with the reason) or say why the event
    is `ignored`. `check` is ingest's `checked` (the destination's rules, before commit).

    A refund of no stored Sale is `skipped`, `unknown_sale`, and remembered by the ids it names
    (`orphan_refunds`): if its Sale is stored later, `revive_refunds` links it then."""
    event = apply.event
    occurred = int((refund.timestamp or event.occurred_at).timestamp() * 1000)
    origin = _Origin(event_id, event.id, event.type, event.livemode, occurred)
    tx.lock_payment_ids(apply.source.name, refund.reverses)  # against its Sale stored at this moment
    linked = _link(tx, apply, origin, refund, check)
    if linked is None:
        out = _insert(tx, apply, event_id, _orphan(apply.source, origin, refund), None, f"refund:event:{event.id}",
                      "skipped", "unknown_sale", None)
        tx.remember_orphan_refund(apply.source.name, refund.reverses, out["id"], refund.model_dump_json(),
                                  apply.received)
        return out
    if isinstance(linked, str):
        return {"kind": "refund", "id": None, "state": "ignored", "reason": linked}
    return _insert(tx, apply, event_id, *linked)


def revive_refunds(tx: Tx, apply: Ingest, refs: Sequence[str | None], check: Checker) -> list[int]:
    """A Sale named by `refs` was just stored (or learned more ids), or `refs` were just linked
    (`store_link`): refunds that named one of them (or an id linked to one) and came first
    (out-of-order delivery, or the Sale's delivery retried after an outage), `skipped` as
    `unknown_sale` and still inside their attribution window, are linked to their Sale now
    exactly as if they had arrived after it (same amounts, ledger and checks), oldest first, and
    their delivery goes back to the outbox (behind the Sale, like any refund) with a fresh window
    to find the commission. A refund skipped for another reason, or whose window ran out, stays
    as it is; one whose ids still reach no Sale is remembered again for the next Sale or link.
    Returns the conversion ids linked."""
    now = apply.received
    revived = []
    wanted = [ref for ref in dict.fromkeys(refs) if ref]
    tx.lock_payment_ids(apply.source.name, wanted, linked=True)  # against its refund stored at this moment
    for conversion_id, delivery_id, event_id, raw, refund_json in tx.orphan_refunds(
            apply.source.name, wanted, apply.destination.name, now):
        orphan = Conversion.from_json(raw)
        refund = Refund.model_validate_json(refund_json)
        origin = _Origin(event_id, orphan.provider_event_id or "", orphan.provider_event_type or "", orphan.livemode,
                         orphan.occurred_at)
        linked = _link(tx, apply, origin, refund, check)
        if linked is None:  # a link reaching no Sale yet, or ids naming what is not a Sale: still unknown,
            tx.remember_orphan_refund(apply.source.name, refund.reverses, conversion_id, refund_json, now)
            continue  # and still findable by its ids
        if isinstance(linked, str):  # what a refund arriving now would be answered: applied already, ...
            tx.set_delivery_state(delivery_id, "skipped", linked, None, now)
            continue
        record, sale_id, key, state, reason, detail = linked
        if tx.revive_refund(conversion_id, delivery_id, {
                "record": record.to_json(), "business_key": key, "reverses": sale_id, "event_name": record.event_name,
                "customer_external_id": record.customer_external_id, "updated_at": now},
                state, reason, detail, now, now + apply.window_ms):
            revived.append(conversion_id)
    return revived


def _link(tx: Tx, apply: Ingest, origin: _Origin, refund: Refund, check: Checker) -> _Linked | str | None:
    """What `refund` does to the Sale it names: the Refund conversion to store, or why the event
    is ignored (a str), or None when no Sale is stored for any id it names. The one path for a
    refund arriving after its Sale and for one revived when its Sale arrives (`revive_refunds`)."""
    src, destination, now = apply.source, apply.destination, apply.received
    found = tx.sale_for_refs(src.name, refund.reverses)
    sale_row = tx.sale_for_refund(found[0], destination.name) if found else None
    if found is None or sale_row is None:
        return None
    sale_id, gross = found
    sale = Conversion.from_json(sale_row[0])
    state = sale_row[1]
    if refund.currency is not None and sale.currency is not None and refund.currency != sale.currency:
        record = _record(src, origin, refund, sale, sale_id, refund.amount or 0, 0)
        return (record, sale_id, f"refund:{sale_id}:event:{origin.provider_event_id}", "skipped", "currency_mismatch",
                None)
    p = plan(refund, sale.amount or 0, gross, tx.refund_ledger(sale_id), origin.provider_event_id)
    if p.ignored in ("stale_refund_total", "refund_already_applied"):
        return p.ignored
    if not tx.record_refund(sale_id, p.key, refund.refund_id, origin.event_id, None, p.amount, p.total, now):
        return "refund_already_applied"
    if p.ignored:  # nothing of the Sale remains: the level is recorded, nothing is sent
        return p.ignored
    record = _record(src, origin, refund, sale, sale_id, p.amount, p.refunded)
    if state not in COUNTED:
        return record, sale_id, f"refund:{sale_id}:{p.key}", "skipped", "sale_not_counted", None
    record, checked_state, reason, detail = check(destination, record)
    return record, sale_id, f"refund:{sale_id}:{p.key}", checked_state, reason, detail


def _insert(tx: Tx, apply: Ingest, event_id: int, record: Conversion, sale_id: int | None, key: str, state: str,
            reason: str | None, detail: str | None) -> dict[str, Any]:
    now = apply.received
    conversion_id = tx.insert_conversion({
        "event_id": event_id, "source": apply.source.name, "kind": "refund", "event_name": record.event_name,
        "business_key": key, "customer_external_id": record.customer_external_id, "identity_explicit": False,
        "record": record.to_json(), "created_at": now, "updated_at": now, "reverses": sale_id,
    })
    tx.insert_delivery({
        "conversion_id": conversion_id, "destination": apply.destination.name, "state": state, "reason": reason,
        "detail": detail, "next_attempt_at": now, "window_until": now + apply.window_ms,
        "created_at": now, "updated_at": now,
    })
    return {"kind": "refund", "id": conversion_id, "state": state, "reason": reason}


def _name(refund: Refund) -> str:
    return "Chargeback" if refund.chargeback else "Refund"


def _record(src: Source, origin: _Origin, refund: Refund, sale: Conversion, sale_id: int, amount: int,
            refunded: int) -> Conversion:
    """The Refund conversion: this refund's amount, the Sale's identity and ids."""
    return Conversion(
        kind="refund", source=src.name, provider=src.ctx.provider, event_name=_name(refund),
        occurred_at=origin.occurred, customer_external_id=sale.customer_external_id, click_id=sale.click_id,
        email=sale.email, name=sale.name,
        provider_customer_id=sale.provider_customer_id, amount=amount, currency=sale.currency,
        invoice_id=sale.invoice_id, invoice_unique=sale.invoice_unique, subscription_id=sale.subscription_id,
        payment_processor=sale.payment_processor, tax=sale.tax, provider_event_id=origin.provider_event_id,
        provider_event_type=origin.event_type, livemode=origin.livemode, metadata=dict(refund.metadata),
        reverses=sale_id, sale_amount=sale.amount, refunded=refunded, chargeback=refund.chargeback,
        refund_id=refund.refund_id,
    )


def _orphan(src: Source, origin: _Origin, refund: Refund) -> Conversion:
    """A refund of no stored Sale, kept for the journey with the ids it named."""
    return Conversion(
        kind="refund", source=src.name, provider=src.ctx.provider, event_name=_name(refund),
        occurred_at=origin.occurred, amount=refund.amount, currency=refund.currency,
        provider_event_id=origin.provider_event_id, provider_event_type=origin.event_type, livemode=origin.livemode,
        metadata={**refund.metadata, "reverses": list(refund.reverses)}, chargeback=refund.chargeback,
        refund_id=refund.refund_id,
    )
