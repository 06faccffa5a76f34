"""How many refused deliveries the event journal keeps: a bounded sample per source and minute.

A delivery that fails verification is always counted in `/metrics`
(`hooktrack_webhooks_rejected`), but writing each one to the events table would let anyone
grow the database (and its WAL) by sending forged requests. So only the first
`JOURNALED_PER_MINUTE` of them per source and clock minute are journaled; the rest of that
minute are counted only, and one warning says so. Verified but unreadable deliveries
(`malformed_payload`) are genuine and always kept, so they are not sampled.
"""

from __future__ import annotations

import logging

__all__ = ["JOURNALED_PER_MINUTE", "RejectionSample"]

log = logging.getLogger("hooktrack.ingest")

JOURNALED_PER_MINUTE = 20


class RejectionSample:
    """Decides which refused deliveries are journaled. Memory is one entry per source name
    (sources are configured, so it is bounded); not thread-safe (one event loop calls it)."""

    def __init__(self, per_minute: int = JOURNALED_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._counts: dict[str, tuple[int, int]] = {}

    def take(self, source: str, now_ms: int) -> bool:
        """True if this refused delivery of `source` at `now_ms` should be journaled."""
        minute = now_ms // 60_000
        seen, count = self._counts.get(source, (minute, 0))
        if seen != minute:
            count = 0
        self._counts[source] = (minute, count + 1)
        if count == self.per_minute:
            log.warning("more than %d refused webhooks this minute: the rest are counted in metrics, "
                        "not journaled", self.per_minute, extra={"source": source})
        return count < self.per_minute
