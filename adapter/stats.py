"""Counts for `hooktrack stats`, the admin page's live counters and its per-hour chart.

Every function takes a `Tx` (use it with `store.read`). Plain SQL both engines run; hours are
`received_at / 3600000` (integer division on BIGINT epoch milliseconds in both).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from adapter.journal import EVENT_STATUSES, HOUR_MS, outbox_gauges
from adapter.store import Tx

__all__ = ["hourly", "stats"]


def stats(tx: Tx, now_ms: int, since_ms: int | None = None) -> dict[str, Any]:
    """Events per source and status, rejections per reason, conversions per kind and state
    (of events received since `since_ms`, all when None), and the outbox right now:
    pending (its depth), dead letters and the oldest pending conversion's age."""
    sources: dict[str, dict[str, Any]] = {}
    totals = dict.fromkeys(EVENT_STATUSES, 0)
    for source, status, count in tx.event_counts(since_ms):
        entry = sources.setdefault(source, _source_entry())
        entry["events"][status] = count
        totals[status] = totals.get(status, 0) + count
    rejected = tx.rejection_counts(since_ms)
    conversions: dict[str, dict[str, int]] = {}
    for kind, state, count in tx.conversion_counts(since_ms):
        conversions.setdefault(kind, {})[state] = count
    outbox: dict[str, Any] = {"pending": 0, "dead": 0, "oldest_pending_age_s": None}
    oldest: int | None = None
    for source, gauges in outbox_gauges(tx).items():
        entry = sources.setdefault(source, _source_entry())
        entry["pending"], entry["dead"] = gauges["pending"], gauges["dead"]
        outbox["pending"] += gauges["pending"]
        outbox["dead"] += gauges["dead"]
        if gauges["oldest_pending_ms"] is not None:
            oldest = min(oldest or gauges["oldest_pending_ms"], gauges["oldest_pending_ms"])
    if oldest is not None:
        outbox["oldest_pending_age_s"] = round(max(0, now_ms - oldest) / 1000, 3)
    destinations = [asdict(tx.destination_state(name)) for name in tx.destination_names()]
    return {"generated_at": now_ms, "since": since_ms, "events": totals, "sources": sources,
            "rejected": rejected, "conversions": conversions, "outbox": outbox, "destinations": destinations}


def _source_entry() -> dict[str, Any]:
    return {"events": dict.fromkeys(EVENT_STATUSES, 0), "pending": 0, "dead": 0}


def hourly(tx: Tx, now_ms: int, hours: int = 24, source: str | None = None) -> list[dict[str, int]]:
    """One row per hour for the last `hours` hours, oldest first, zeros included:
    `start` (epoch ms) and counts of events `accepted`, `ignored`, `duplicate`, `rejected`,
    conversions now `dead` (by their event's hour), and `failed` = rejected + dead."""
    first = (now_ms // HOUR_MS - hours + 1) * HOUR_MS
    rows: dict[int, dict[str, int]] = {}
    for i in range(hours):
        start = first + i * HOUR_MS
        rows[start] = {"start": start, **dict.fromkeys(EVENT_STATUSES, 0), "dead": 0, "failed": 0}
    events, dead = tx.hourly_counts(first, source)
    for hour, status, count in events:
        row = rows.get(hour * HOUR_MS)
        if row is not None:
            row[status] = row.get(status, 0) + count
    for hour, count in dead:
        row = rows.get(hour * HOUR_MS)
        if row is not None:
            row["dead"] += count
    for row in rows.values():
        row["failed"] = row["rejected"] + row["dead"]
    return list(rows.values())
