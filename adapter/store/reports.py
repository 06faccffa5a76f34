"""The store's read queries for operators: event lists, journeys, counts (mixed into `Tx`).

`adapter.journal` and `adapter.stats` shape these rows for the CLI, the admin API and
`/metrics`; the SQL lives here so the store stays the only place that knows it. Plain SQL both
engines run: times are epoch-ms BIGINTs, hours are `received_at / 3600000`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["CONVERSION_COLUMNS", "EVENT_COLUMNS", "Reports"]

EVENT_COLUMNS = ("id", "source", "provider", "provider_event_id", "event_type", "received_at",
                 "status", "reason", "duplicate_of")
CONVERSION_COLUMNS = ("id", "event_id", "kind", "event_name", "customer_external_id", "destination", "state",
                      "reason", "detail", "attempts", "next_attempt_at", "delivered_at", "last_status", "record")
_CONV_SQL = ("c.id, c.event_id, c.kind, c.event_name, c.customer_external_id, d.destination, d.state, d.reason, "
             "d.detail, d.attempts, d.next_attempt_at, d.delivered_at, d.last_status, c.record")
_ATTEMPT_COLUMNS = ("attempted_at", "status_code", "latency_ms", "outcome", "error", "response_excerpt")
_HOUR_MS = 3_600_000


class Reports:
    """Read queries; every method is one or two statements on the open transaction."""

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:  # provided by Tx
        raise NotImplementedError

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:  # provided by Tx
        raise NotImplementedError

    def list_events(self, *, source: str | None, status: str | None, since_ms: int | None, limit: int,
                    state: str | None, before_id: int | None) -> list[dict[str, Any]]:
        """Newest events first (`EVENT_COLUMNS`). `state` keeps events with a conversion whose
        delivery is in that state; `before_id` pages further back."""
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
            where.append("EXISTS (SELECT 1 FROM conversions c JOIN deliveries d ON d.conversion_id = c.id "
                         "WHERE d.state = ? AND c.event_id = COALESCE(events.duplicate_of, events.id))")
            params.append(state)
        rows = self.all(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE {' AND '.join(where)} "
                        "ORDER BY id DESC LIMIT ?", [*params, limit])
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]

    def event(self, event_id: int) -> dict[str, Any] | None:
        """One event with its body, time and mode; None when unknown."""
        cols = (*EVENT_COLUMNS, "occurred_at", "livemode", "body")
        row = self.one(f"SELECT {', '.join(cols)} FROM events WHERE id = ?", (event_id,))
        return dict(zip(cols, row, strict=True)) if row else None

    def conversions_of_events(self, event_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Conversions of these events, one row per delivery (`CONVERSION_COLUMNS`), by id."""
        if not event_ids:
            return []
        marks = ", ".join("?" for _ in event_ids)
        rows = self.all(f"SELECT {_CONV_SQL} FROM conversions c LEFT JOIN deliveries d ON d.conversion_id = c.id "
                        f"WHERE c.event_id IN ({marks}) ORDER BY c.id, d.id", list(event_ids))
        return [dict(zip(CONVERSION_COLUMNS, r, strict=True)) for r in rows]

    def attempts_of(self, conversion_id: int) -> list[dict[str, Any]]:
        """Every request sent for a conversion, oldest first."""
        rows = self.all(f"SELECT {', '.join(_ATTEMPT_COLUMNS)} FROM attempts WHERE conversion_id = ? ORDER BY id",
                        (conversion_id,))
        return [dict(zip(_ATTEMPT_COLUMNS, a, strict=True)) for a in rows]

    def delivery_states(self) -> dict[str, int]:
        """Deliveries by state."""
        return {str(s): int(n) for s, n in self.all("SELECT state, COUNT(*) FROM deliveries GROUP BY state")}

    def outbox_by_source(self) -> list[tuple[str, str, int, int]]:
        """(source, state, count, oldest created_at) of pending and dead deliveries, through
        the `deliveries_state` index: cheap enough for every scrape."""
        rows = self.all("SELECT c.source, d.state, COUNT(*), MIN(d.created_at) FROM deliveries d "
                        "JOIN conversions c ON c.id = d.conversion_id WHERE d.state IN ('pending', 'dead') "
                        "GROUP BY c.source, d.state")
        return [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    def dead_conversion_ids(self, *, source: str | None = None, since_ms: int | None = None) -> list[int]:
        """Ids of conversions with a dead-lettered delivery, oldest first; `since_ms` keeps those
        that died since."""
        where: list[str] = ["d.state = 'dead'"]
        params: list[Any] = []
        if source:
            where.append("c.source = ?")
            params.append(source)
        if since_ms is not None:
            where.append("d.updated_at >= ?")
            params.append(since_ms)
        return [int(r[0]) for r in self.all(
            "SELECT DISTINCT c.id FROM conversions c JOIN deliveries d ON d.conversion_id = c.id "
            f"WHERE {' AND '.join(where)} ORDER BY c.id", params)]

    def conversion_states(self, ids: Sequence[int]) -> list[tuple[int, str, str | None]]:
        """(conversion id, delivery state, reason) for these conversions."""
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        return [(int(r[0]), str(r[1]), r[2]) for r in self.all(
            f"SELECT conversion_id, state, reason FROM deliveries WHERE conversion_id IN ({marks}) ORDER BY id",
            list(ids))]

    def event_counts(self, since_ms: int | None) -> list[tuple[str, str, int]]:
        """(source, status, count) of events received since `since_ms` (all when None)."""
        window, params = _window(since_ms)
        return [(str(a), str(b), int(n)) for a, b, n in self.all(
            f"SELECT e.source, e.status, COUNT(*) FROM events e {window} GROUP BY e.source, e.status", params)]

    def rejection_counts(self, since_ms: int | None) -> dict[str, int]:
        """Rejected deliveries by reason since `since_ms`."""
        window, params = _window(since_ms)
        where = f"{window} AND" if window else "WHERE"
        return {str(r): int(n) for r, n in self.all(
            f"SELECT e.reason, COUNT(*) FROM events e {where} e.status = 'rejected' GROUP BY e.reason", params)}

    def conversion_counts(self, since_ms: int | None) -> list[tuple[str, str, int]]:
        """(kind, delivery state, count) of conversions of events received since `since_ms`."""
        window, params = _window(since_ms)
        return [(str(k), str(s), int(n)) for k, s, n in self.all(
            "SELECT c.kind, d.state, COUNT(*) FROM conversions c JOIN events e ON e.id = c.event_id "
            f"JOIN deliveries d ON d.conversion_id = c.id {window} GROUP BY c.kind, d.state", params)]

    def hourly_counts(self, first_ms: int, source: str | None) -> tuple[list[tuple[int, str, int]],
                                                                         list[tuple[int, int]]]:
        """Per hour since `first_ms`: (hour, event status, count) and (hour, dead deliveries)."""
        where = "WHERE e.received_at >= ?"
        params: list[Any] = [first_ms]
        if source:
            where += " AND e.source = ?"
            params.append(source)
        events = [(int(h), str(s), int(n)) for h, s, n in self.all(
            f"SELECT e.received_at / {_HOUR_MS}, e.status, COUNT(*) FROM events e {where} "
            f"GROUP BY e.received_at / {_HOUR_MS}, e.status", params)]
        dead = [(int(h), int(n)) for h, n in self.all(
            f"SELECT e.received_at / {_HOUR_MS}, COUNT(*) FROM conversions c JOIN events e ON e.id = c.event_id "
            f"JOIN deliveries d ON d.conversion_id = c.id {where} AND d.state = 'dead' "
            f"GROUP BY e.received_at / {_HOUR_MS}", params)]
        return events, dead


def _window(since_ms: int | None) -> tuple[str, list[Any]]:
    return ("WHERE e.received_at >= ?", [since_ms]) if since_ms is not None else ("", [])
