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
STATES = ("pending", "delivered", "dead", "skipped")
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
    "malformed_payload": "the signature was valid but the body could not be read as this provider's event.",
    "invalid_credentials": "the source's credentials (HTTP Basic, URL token) were missing or wrong.",
    "max_attempts": "the tracking API kept failing until forwarder.max_attempts ran out.",
}

_EVENT_COLS = ("id", "source", "provider", "provider_event_id", "event_type", "received_at",
               "status", "reason", "duplicate_of")
_CONV_COLS = ("id", "event_id", "kind", "event_name", "customer_external_id", "idempotency_key",
              "state", "reason", "attempts", "next_attempt_at", "delivered_at", "last_status", "payload")
_ATTEMPT_COLS = ("attempted_at", "status_code", "latency_ms", "outcome", "error", "response_excerpt")
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
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    for col, value in (("source", source), ("status", status)):
        if value:
            where.append(f"{col} = ?")
            params.append(value)
    if since_ms is not None:
        where.append("received_at >= ?")
        params.append(since_ms)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    if state:
        where.append("EXISTS (SELECT 1 FROM conversions c WHERE c.state = ? "
                     "AND c.event_id = COALESCE(events.duplicate_of, events.id))")
        params.append(state)
    rows = tx.all(
        f"SELECT {', '.join(_EVENT_COLS)} FROM events WHERE {' AND '.join(where)} "
        "ORDER BY id DESC LIMIT ?",
        [*params, max(1, min(limit, MAX_LIMIT))],
    )
    events = [dict(zip(_EVENT_COLS, r, strict=True)) for r in rows]
    owners = sorted({ev["duplicate_of"] or ev["id"] for ev in events})
    by_event: dict[int, list[dict[str, Any]]] = {}
    if owners:
        marks = ", ".join("?" for _ in owners)
        for conv in _conversions(tx, f"c.event_id IN ({marks})", owners, with_payload=False):
            by_event.setdefault(conv["event_id"], []).append(conv)
    for ev in events:
        ev["conversions"] = by_event.get(ev["duplicate_of"] or ev["id"], [])
    return events


def conversions_of(tx: Tx, event_id: int, *, with_payload: bool = True) -> list[dict[str, Any]]:
    """Conversions an event produced (a delivery duplicate shows its original's)."""
    return _conversions(tx, "c.event_id = ?", [event_id], with_payload=with_payload)


def _conversions(tx: Tx, where: str, params: list[Any], *, with_payload: bool) -> list[dict[str, Any]]:
    rows = tx.all(
        f"SELECT {', '.join('c.' + c for c in _CONV_COLS)} FROM conversions c WHERE {where} ORDER BY c.id",
        params,
    )
    out = []
    for r in rows:
        conv = dict(zip(_CONV_COLS, r, strict=True))
        payload = conv.pop("payload")
        if with_payload:
            conv["payload"] = json.loads(payload)
        conv["reason_text"] = explain(conv["reason"])
        out.append(conv)
    return out


def journey(tx: Tx, event_id: int) -> dict[str, Any] | None:
    """One event: the receipt, its body (if kept), conversions and every delivery attempt."""
    row = tx.one(
        f"SELECT {', '.join(_EVENT_COLS)}, occurred_at, livemode, body FROM events WHERE id = ?",
        (event_id,),
    )
    if row is None:
        return None
    event = dict(zip((*_EVENT_COLS, "occurred_at", "livemode", "body"), row, strict=True))
    event["livemode"] = None if event["livemode"] is None else bool(event["livemode"])
    event["reason_text"] = explain(event["reason"])
    event["conversions"] = conversions_of(tx, event["duplicate_of"] or event["id"])
    for conv in event["conversions"]:
        conv["attempts_log"] = [
            dict(zip(_ATTEMPT_COLS, a, strict=True))
            for a in tx.all(
                f"SELECT {', '.join(_ATTEMPT_COLS)} FROM attempts WHERE conversion_id = ? ORDER BY id",
                (conv["id"],),
            )
        ]
    return event


def outbox_summary(tx: Tx) -> dict[str, int]:
    """Conversions by state (`pending`, `delivered`, `dead`, `skipped`)."""
    return {str(state): int(n) for state, n in tx.all("SELECT state, COUNT(*) FROM conversions GROUP BY state")}


def outbox_gauges(tx: Tx) -> dict[str, dict[str, Any]]:
    """Pending and dead conversions per source, with the oldest pending one's creation time.

    Only the (small) pending and dead sets are read, through the `conversions_state` index, so
    this is cheap enough for every Prometheus scrape.
    """
    out: dict[str, dict[str, Any]] = {}
    rows = tx.all("SELECT source, state, COUNT(*), MIN(created_at) FROM conversions "
                  "WHERE state IN ('pending', 'dead') GROUP BY source, state")
    for source, state, count, oldest in rows:
        entry = out.setdefault(str(source), {"pending": 0, "dead": 0, "oldest_pending_ms": None})
        entry[str(state)] = int(count)
        if state == "pending":
            entry["oldest_pending_ms"] = int(oldest)
    return out


def dead_conversion_ids(tx: Tx, *, source: str | None = None, since_ms: int | None = None) -> list[int]:
    """Ids of dead-lettered conversions, oldest first; `since_ms` keeps those that died since."""
    where: list[str] = ["state = 'dead'"]
    params: list[Any] = []
    if source:
        where.append("source = ?")
        params.append(source)
    if since_ms is not None:
        where.append("updated_at >= ?")
        params.append(since_ms)
    return [int(r[0]) for r in tx.all(f"SELECT id FROM conversions WHERE {' AND '.join(where)} ORDER BY id", params)]


def requeue(tx: Tx, ids: list[int], now_ms: int) -> list[int]:
    """Put the dead conversions among `ids` back in the outbox; returns those that moved
    (an id that is not dead, or unknown, is left alone)."""
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    dead = [int(r[0]) for r in tx.all(
        f"SELECT id FROM conversions WHERE state = 'dead' AND id IN ({marks}) ORDER BY id", ids)]
    tx.requeue(dead, now_ms)
    return dead
