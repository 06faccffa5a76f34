"""Retention: prune old events and settled conversions in small batches (SPEC §3.4).

Every `interval_s` (the first time after a random delay, so replicas started together do not
all prune at once), events received more than `store.retention_days` ago are deleted together
with their delivered or skipped conversions and those conversions' attempts, `batch` events per
transaction with a pause between transactions so webhooks are never held up for long. Events
with a pending or dead-lettered conversion stay (dead letters wait for `hooktrack replay` or an
explicit purge); identity memory, business keys and subscriptions are never pruned. The delivery
dedup record of an event goes with it, so the window is never below the providers' three days
of retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from adapter.ingest import now_ms
from adapter.settings import MIN_RETENTION_DAYS
from adapter.store import Store

__all__ = ["Retention"]

log = logging.getLogger("hooktrack.retention")
DAY_MS = 86_400_000


class Retention:
    """The periodic pruning job of one process; safe to run in every replica at once."""

    def __init__(self, store: Store, retention_days: int, *, interval_s: float = 3600, batch: int = 500,
                 pause_s: float = 0.05, first_delay_s: tuple[float, float] = (30, 120)) -> None:
        self.store = store
        self.retention_days = max(retention_days, MIN_RETENTION_DAYS)
        self.interval_s = interval_s
        self.batch = batch
        self.pause_s = pause_s
        self.first_delay_s = first_delay_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def cutoff(self, now: int | None = None) -> int:
        """Events received before this epoch-ms moment may go."""
        return (now if now is not None else now_ms()) - self.retention_days * DAY_MS

    async def run_once(self, now: int | None = None) -> int:
        """Prune everything past the cutoff, batch by batch; returns how many events went.
        Raises `StoreUnavailable` if the store fails midway (what went before stays pruned)."""
        cutoff = self.cutoff(now)
        total = 0
        while not self._stopping.is_set():
            pruned = await self.store.transact(lambda tx: tx.prune_events(cutoff, self.batch))
            total += pruned
            if pruned == 0:
                break
            await asyncio.sleep(self.pause_s)
        if total:
            log.info("retention pruned %s events", total, extra={"retention_days": self.retention_days})
        return total

    async def run(self) -> None:
        """Prune every `interval_s` until `stop()`; store failures are logged, never fatal."""
        delay = random.uniform(*self.first_delay_s)
        while not await self._sleep(delay):
            try:
                await self.run_once()
            except Exception as exc:  # the store may be down; the next round tries again
                log.warning("retention round failed: %s", exc)
            delay = self.interval_s

    def start(self) -> Retention:
        """Run in the background of the current event loop; returns self (for `stop`)."""
        self._task = asyncio.create_task(self.run(), name="retention")
        return self

    async def stop(self) -> None:
        """Stop after the current batch (at most a few seconds) and wait for it."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=10)
            self._task = None

    async def _sleep(self, seconds: float) -> bool:
        """Wait `seconds`; True if stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()
