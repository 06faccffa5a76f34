"""Counts for `hooktrack stats`, the admin page's live counters and its per-hour chart.

Every function takes a `Tx` (use it with `store.read`). Plain SQL both engines run; hours are
`received_at / 3600000` (integer division on BIGINT epoch milliseconds in both).
"""

from __future__ import annotations

from typing import Any

from adapter.journal import EVENT_STATUSES, HOUR_MS, outbox_gauges
from adapter.store import Tx

__all__ = ["hourly", "stats"]


def stats(tx: Tx, now_ms: int, since_ms: int | None = None) -> dict[str, Any]:
    """Events per source and status, rejections per reason, conversions per kind and state
    (of events received since `since_ms`, all when None), and the outbox right now:
    pending (its depth), dead letters and the oldest pending conversion's age."""
    window = "WHERE e.received_at >= ?" if since_ms is not None else ""
    params: list[Any] = [since_ms] if since_ms is not None else []
    sources: dict[str, dict[str, Any]] = {}
    totals = dict.fromkeys(EVENT_STATUSES, 0)
    for source, status, count in tx.all(
            f"SELECT e.source, e.status, COUNT(*) FROM events e {window} GROUP BY e.source, e.status", params):
        entry = sources.setdefault(str(source), _source_entry())
        entry["events"][str(status)] = int(count)
        totals[str(status)] = totals.get(str(status), 0) + int(count)
    rejected: dict[str, int] = {}
    rejected_where = f"{window} AND" if window else "WHERE"
    for reason, count in tx.all(
            f"SELECT e.reason, COUNT(*) FROM events e {rejected_where} e.status = 'rejected' GROUP BY e.reason",
            params):
        rejected[str(reason)] = int(count)
    conversions: dict[str, dict[str, int]] = {}
    for kind, state, count in tx.all(
            "SELECT c.kind, c.state, COUNT(*) FROM conversions c JOIN events e ON e.id = c.event_id "
            f"{window} GROUP BY c.kind, c.state", params):
        conversions.setdefault(str(kind), {})[str(state)] = int(count)
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
    return {"generated_at": now_ms, "since": since_ms, "events": totals, "sources": sources,
            "rejected": rejected, "conversions": conversions, "outbox": outbox}


def _source_entry() -> dict[str, Any]:
    return {"events": dict.fromkeys(EVENT_STATUSES, 0), "pending": 0, "dead": 0}


def hourly(tx: Tx, now_ms: int, hours: int = 24, source: str | None = None) -> list[dict[str, int]]:
    """One row per hour for the last `hours` hours, oldest first, zeros included:
    `start` (epoch ms) and counts of events `accepted`, `ignored`, `duplicate`, `rejected`,
    conversions now `dead` (by their event's hour), and `failed` = rejected + dead."""
    first = (now_ms // HOUR_MS - hours + 1) * HOUR_MS
    where = "WHERE e.received_at >= ?"
    params: list[Any] = [first]
    if source:
        where += " AND e.source = ?"
        params.append(source)
    rows: dict[int, dict[str, int]] = {}
    for i in range(hours):
        start = first + i * HOUR_MS
        rows[start] = {"start": start, **dict.fromkeys(EVENT_STATUSES, 0), "dead": 0, "failed": 0}
    for hour, status, count in tx.all(
            f"SELECT e.received_at / {HOUR_MS}, e.status, COUNT(*) FROM events e {where} "
            f"GROUP BY e.received_at / {HOUR_MS}, e.status", params):
        row = rows.get(int(hour) * HOUR_MS)
        if row is not None:
            row[str(status)] = row.get(str(status), 0) + int(count)
    for hour, count in tx.all(
            f"SELECT e.received_at / {HOUR_MS}, COUNT(*) FROM conversions c JOIN events e ON e.id = c.event_id "
            f"{where} AND c.state = 'dead' GROUP BY e.received_at / {HOUR_MS}", params):
        row = rows.get(int(hour) * HOUR_MS)
        if row is not None:
            row["dead"] += int(count)
    for row in rows.values():
        row["failed"] = row["rejected"] + row["dead"]
    return list(rows.values())
