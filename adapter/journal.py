"""Read models of what became of every event: lists, one event's journey, counts, replay.

Shared by the CLI, the demo, the admin API and `/metrics`; every function takes a `Tx` (use it
with `store.read`, or `store.transact` for `requeue`). The SQL is plain SQL that SQLite and
PostgreSQL both run: times are epoch-ms BIGINTs, hours are `received_at / 3600000`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from adapter.destinations import Destination
from adapter.records import Conversion
from adapter.store import Tx

__all__ = [
    "EVENT_STATUSES",
    "REASONS",
    "STATES",
    "conversions_of",
    "dead_conversion_ids",
    "explain",
    "journey",
    "list_events",
    "outbox_gauges",
    "outbox_summary",
    "parse_since",
    "requeue",
]

EVENT_STATUSES = ("accepted", "duplicate", "ignored", "rejected")
STATES = ("pending", "delivered", "unattributed", "dead", "skipped")
HOUR_MS = 3_600_000
MAX_LIMIT = 1000

REASONS: dict[str, str] = {
    "event_type_not_tracked": "hooktrack does not turn this event type into a conversion.",
    "unpaid": "the payment was not collected (yet), so it is not a Sale.",
    "zero_amount": "nothing was paid (a $0 invoice or a 100% discount), so it is not a Sale.",
    "setup_mode": "a Checkout in setup mode saves a card; no money moved.",
    "not_trialing": "a subscription that is not trialing is not a 'Started Trial' Lead; its payment is the Sale.",
    "livemode_mismatch": "the event's live/test mode differs from the source's `livemode` setting.",
    "no_identifier": "no customerExternalId, customer id or email: the tracking API could not attribute it.",
    "no_click_id": "a Lead without a clickId cannot be attributed "
                   "(set forward_leads_without_click_id = true to send it anyway).",
    "business_key": "another event already produced this Sale or Lead (same invoice or lead key).",
    "invalid_signature": "the signature did not match any configured secret; the body was not stored.",
    "missing_signature": "the request carried no signature header; the body was not stored.",
    "stale_timestamp": "the signature's timestamp is outside `tolerance_s` (a replay, or a skewed clock).",
    "replayed_transmission": "a genuine transmission's signed headers (PayPal's) came again with another body "
                             "(a forgery: the signature covers only a CRC32); refused, its body not stored.",
    "malformed_payload": "the signature was valid but the body could not be read as this provider's event.",
    "invalid_credentials": "the source's credentials (HTTP Basic, URL token) were missing or wrong.",
    "max_attempts": "the tracking API kept failing until forwarder.max_attempts ran out.",
    "invalid_for_destination": "the tracking API would refuse this conversion (the rule is named); "
                               "it was never sent.",
    "customer_not_found": "the tracking API accepted the sale but counted nothing: it knew no customer "
                          "(no lead, no clickId) within the attribution window.",
    "lead_not_found": "the tracking API found no lead of this customer within the attribution window.",
    "click_not_found": "the tracking API knows no click with this clickId, so nothing was attributed.",
    "duplicate_at_api": "the tracking API already had this lead for the customer and event name.",
    "unrenderable": "this release cannot turn the stored conversion into a request; see the log.",
    "too_many_steps": "the destination asked for more requests than one delivery may take.",
    "unknown_sale": "a refund of a payment hooktrack has no Sale for (never received, or stored before the "
                    "upgrade that remembers payment ids): nothing to reverse yet. If its Sale, or the link "
                    "to it, arrives within the attribution window, the refund is linked then and sent after it.",
    "sale_not_counted": "the refunded Sale was never counted (unattributed, dead or skipped): nothing to reverse.",
    "currency_mismatch": "the refund's currency differs from its Sale's; it was not applied.",
    "stale_refund_total": "an older cumulative refund total arrived after a larger one; already applied.",
    "refund_already_applied": "this refund (or this refunded total, or this dispute) was applied already.",
    "sale_already_refunded": "nothing of the Sale remains to refund.",
    "payment_link_recorded": "the ids of one payment were linked, so a later refund naming either finds its Sale.",
    "cancellation_recorded": "a cancellation is recorded; the tracking API has nothing to send it to.",
    "dispute_not_lost": "a dispute that closed without being lost reverses nothing.",
    "no_payment_link": "the invoice payment names no payment intent or charge to link.",
    "no_commission": "the tracking API has no partner commission for this sale (the sale had no partner): "
                     "nothing to reverse.",
    "no_program": "the workspace has no partner program, so there is no commission to reverse.",
    "commission_paid": "the partner commission was already paid out (or is in a payout being paid): the "
                       "tracking API will not change it; settle it with the partner by hand.",
    "already_refunded": "the partner commission was already marked refunded.",
    "already_applied": "the partner commission already has the sale amount this refund leaves.",
    "reprocessed": "this body was mapped again by `hooktrack reprocess`; see the newer event.",
}

_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": HOUR_MS, "d": 24 * HOUR_MS, "w": 7 * 24 * HOUR_MS}


def explain(reason: str | None) -> str | None:
    """A sentence for a reason code (`http_422` included), or None for no reason."""
    if not reason:
        return None
    if reason.startswith("http_"):
        return (f"the tracking API answered {reason[5:]}, a refusal that retrying cannot fix; "
                "fix the cause, then replay it.")
    return REASONS.get(reason, reason)


def parse_since(text: str, now_ms: int) -> int:
    """`30m`, `2h`, `7d`, `1w` ago, an ISO 8601 date or time (UTC unless it says), or epoch ms.
    Raises `ValueError` with a message naming the accepted forms."""
    value = text.strip()
    found = _SINCE.match(value)
    if found:
        return now_ms - int(found.group(1)) * _UNIT_MS[found.group(2)]
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since {text!r}: use a duration (30m, 2h, 7d), an ISO date/time or epoch ms") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def list_events(tx: Tx, *, source: str | None = None, status: str | None = None,
                since_ms: int | None = None, limit: int = 50, state: str | None = None,
                before_id: int | None = None) -> list[dict[str, Any]]:
    """Newest events first, each with a summary of its conversions.

    `state` keeps events with a conversion in that state (`dead` finds what needs a replay);
    `before_id` pages further back.
    """
    events = tx.list_events(source=source, status=status, since_ms=since_ms, limit=max(1, min(limit, MAX_LIMIT)),
                            state=state, before_id=before_id)
    owners = sorted({ev["duplicate_of"] or ev["id"] for ev in events})
    by_event: dict[int, list[dict[str, Any]]] = {}
    for conv in _conversions(tx, owners, None):
        by_event.setdefault(conv["event_id"], []).append(conv)
    for ev in events:
        ev["conversions"] = by_event.get(ev["duplicate_of"] or ev["id"], [])
    return events


def conversions_of(tx: Tx, event_id: int, destination: Destination | None = None) -> list[dict[str, Any]]:
    """Conversions an event produced (a delivery duplicate shows its original's); with a
    destination, each with the request it sends (`payload`, `idempotency_key`)."""
    return _conversions(tx, [event_id], destination, with_record=True)


def _conversions(tx: Tx, event_ids: list[int], destination: Destination | None, *,
                 with_record: bool = False) -> list[dict[str, Any]]:
    out = []
    for conv in tx.conversions_of_events(event_ids):
        raw = conv.pop("record")
        conv["reason_text"] = explain(conv["reason"])
        if conv.get("detail"):
            conv["reason_text"] = f"{conv['reason_text'] or 'sent'}; {conv['detail']}" if conv["reason"] else \
                f"mended for the destination: {conv['detail']}"
        if with_record and raw:
            record = Conversion.from_json(raw)
            conv["record"] = json.loads(raw)
            if destination is not None:
                request = destination.render(record)
                conv["payload"] = request.body or {}
                conv["idempotency_key"] = request.headers.get("Idempotency-Key", "")
                conv["request"] = f"{request.method} {request.path}"
            if record.reverses is not None:
                conv["reverses"] = record.reverses  # the Sale a Refund reverses (its conversion id)
        out.append(conv)
    return out


def journey(tx: Tx, event_id: int, destination: Destination | None = None) -> dict[str, Any] | None:
    """One event: the receipt, its body (if kept), conversions and every delivery attempt."""
    event = tx.event(event_id)
    if event is None:
        return None
    event["livemode"] = None if event["livemode"] is None else bool(event["livemode"])
    event["reason_text"] = explain(event["reason"])
    event["conversions"] = conversions_of(tx, event["duplicate_of"] or event["id"], destination)
    for conv in event["conversions"]:
        conv["attempts_log"] = tx.attempts_of(conv["id"])
    return event


def outbox_summary(tx: Tx) -> dict[str, int]:
    """Deliveries by state (`pending`, `delivered`, `unattributed`, `dead`, `skipped`)."""
    return tx.delivery_states()


def outbox_gauges(tx: Tx) -> dict[str, dict[str, Any]]:
    """Pending and dead deliveries per source, with the oldest pending one's creation time.

    Only the (small) pending and dead sets are read, through the `deliveries_state` index, so
    this is cheap enough for every Prometheus scrape.
    """
    out: dict[str, dict[str, Any]] = {}
    for source, state, count, oldest in tx.outbox_by_source():
        entry = out.setdefault(source, {"pending": 0, "dead": 0, "oldest_pending_ms": None})
        entry[state] = count
        if state == "pending":
            entry["oldest_pending_ms"] = oldest
    return out


def dead_conversion_ids(tx: Tx, *, source: str | None = None, since_ms: int | None = None) -> list[int]:
    """Ids of dead-lettered conversions, oldest first; `since_ms` keeps those that died since."""
    return tx.dead_conversion_ids(source=source, since_ms=since_ms)


def requeue(tx: Tx, ids: list[int], now_ms: int, window_ms: int = 86_400_000) -> list[int]:
    """Put the dead conversions among `ids` back in the outbox; returns those that moved
    (an id that is not dead, or unknown, is left alone)."""
    return tx.requeue(sorted(set(ids)), now_ms, window_ms)
