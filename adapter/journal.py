"""Read models of what became of every event: lists, one event's journey, counts.

Shared by the CLI, the demo and the admin API; every function takes a `Tx` (use it with
`store.read`).
"""

from __future__ import annotations

import json
from typing import Any

from adapter.store import Tx

__all__ = ["conversions_of", "journey", "list_events", "outbox_summary"]

_EVENT_COLS = ("id", "source", "provider", "provider_event_id", "event_type", "received_at",
               "status", "reason", "duplicate_of")
_CONV_COLS = ("id", "event_id", "kind", "event_name", "customer_external_id", "idempotency_key",
              "state", "reason", "attempts", "next_attempt_at", "delivered_at", "last_status", "payload")


def list_events(tx: Tx, *, source: str | None = None, status: str | None = None,
                since_ms: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest events first, each with a one-line summary of its conversions."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    for col, value in (("source", source), ("status", status)):
        if value:
            where.append(f"{col} = ?")
            params.append(value)
    if since_ms is not None:
        where.append("received_at >= ?")
        params.append(since_ms)
    rows = tx.all(
        f"SELECT {', '.join(_EVENT_COLS)} FROM events WHERE {' AND '.join(where)} "
        "ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    events = [dict(zip(_EVENT_COLS, r, strict=True)) for r in rows]
    for ev in events:
        ev["conversions"] = conversions_of(tx, ev["duplicate_of"] or ev["id"], with_payload=False)
    return events


def conversions_of(tx: Tx, event_id: int, *, with_payload: bool = True) -> list[dict[str, Any]]:
    """Conversions an event produced, or filled as a business duplicate (by its business key)."""
    rows = tx.all(
        f"SELECT {', '.join('c.' + c for c in _CONV_COLS)} FROM conversions c "
        "WHERE c.event_id = ? ORDER BY c.id",
        (event_id,),
    )
    out = []
    for r in rows:
        conv = dict(zip(_CONV_COLS, r, strict=True))
        payload = conv.pop("payload")
        if with_payload:
            conv["payload"] = json.loads(payload)
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
    event["conversions"] = conversions_of(tx, event["duplicate_of"] or event["id"])
    for conv in event["conversions"]:
        conv["attempts_log"] = [
            dict(zip(("attempted_at", "status_code", "latency_ms", "outcome", "error", "response_excerpt"),
                     a, strict=True))
            for a in tx.all(
                "SELECT attempted_at, status_code, latency_ms, outcome, error, response_excerpt "
                "FROM attempts WHERE conversion_id = ? ORDER BY id",
                (conv["id"],),
            )
        ]
    return event


def outbox_summary(tx: Tx) -> dict[str, int]:
    """Conversions by state (`pending`, `delivered`, `dead`, `skipped`)."""
    return {str(state): int(n) for state, n in tx.all("SELECT state, COUNT(*) FROM conversions GROUP BY state")}
