"""The outbox worker: claim due conversions, send them, back off, dead-letter (SPEC §7).

Each round leases a batch of due conversions (a lease, not a lock: if this process dies, the
lease runs out and any worker claims them again), sends them concurrently over one keep-alive
HTTP client, and records every attempt. The client is aiohttp rather than httpx: on the same
loopback receiver at 32 requests in flight, httpx's AsyncClient managed ~300 requests/s and
aiohttp ~9,000 (bench/bench_forward.py measures the forwarder against that baseline).
2xx delivers; 408, 425, 429, 5xx, timeouts and connection errors retry with exponential
backoff and full jitter (`Retry-After` is a floor); any other answer dead-letters at once with
the response kept; so does the last allowed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

from adapter.ingest import now_ms
from adapter.metrics import observe_attempt
from adapter.settings import ForwarderSettings, TrackingSettings
from adapter.store import Claimed, Store, Tx
from adapter.store.sql import Attempt, Settlement

__all__ = ["Forwarder", "Result", "backoff_delay", "classify"]

log = logging.getLogger("hooktrack.forwarder")
RETRYABLE = frozenset({408, 425, 429})
MAX_ROUNDS = 4  # a claim takes up to this many rounds of `concurrency` requests
EXCERPT = 500


@dataclass(frozen=True)
class Result:
    """One attempt's outcome, as recorded."""

    conversion: Claimed
    outcome: str  # delivered | retry | dead
    status_code: int | None
    latency_ms: int
    error: str | None
    excerpt: str | None
    retry_after_s: float | None = None


def classify(status: int) -> str:
    """`delivered`, `retry` or `dead` for an HTTP status from the tracking API."""
    if 200 <= status < 300:
        return "delivered"
    if status in RETRYABLE or status >= 500:
        return "retry"
    return "dead"


def backoff_delay(attempt: int, settings: ForwarderSettings, retry_after_s: float | None,
                  rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**(attempt-1))]; `Retry-After` is a floor.
    Both are capped at `max_delay_s`."""
    ceiling = min(settings.max_delay_s, settings.base_delay_s * 2 ** min(attempt - 1, 62))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, settings.max_delay_s)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


class Forwarder:
    """Drains the outbox to `{tracking.url}/track/{lead|sale}` until `stop()`."""

    def __init__(self, store: Store, tracking: TrackingSettings, settings: ForwarderSettings,
                 owner: str | None = None) -> None:
        self.store = store
        self.tracking = tracking
        self.settings = settings
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"
        # The whole batch is held under one lease, so it must outlast the worst case (every
        # request timing out in turn) or another worker could claim and send it again:
        # claim fewer rounds when the lease is short for the tracking timeout.
        self.rounds = max(1, min(MAX_ROUNDS, int((settings.lease_s - 5) // tracking.timeout_s)))
        if settings.lease_s <= tracking.timeout_s:
            log.warning("forwarder.lease_s (%ss) is not longer than tracking.timeout_s (%ss): a slow "
                        "tracking API can make another worker send a conversion again",
                        settings.lease_s, tracking.timeout_s)
        self._wake = asyncio.Event()
        self._stopping = False
        self._client: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll (called after ingest commits)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until stopped; store outages are logged and retried, never fatal."""
        connector = aiohttp.TCPConnector(limit=self.settings.concurrency, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.tracking.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
            self._client = client
            while not self._stopping:
                try:
                    sent = await self.run_once()
                except Exception as exc:  # the store may be down; keep trying
                    log.warning("forwarder round failed: %s", exc)
                    sent = 0
                if sent == 0 and not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)
                    self._wake.clear()
            self._client = None

    async def run_once(self) -> int:
        """Claim one batch, send it, record the results; returns how many were attempted."""
        lease_ms = int(self.settings.lease_s * 1000)
        limit = self.settings.concurrency * self.rounds
        owner = self.owner
        batch = await self.store.transact(lambda tx: tx.claim(owner, now_ms(), lease_ms, limit))
        if not batch:
            return 0
        results = await asyncio.gather(*(self._send(c) for c in batch))  # the connector bounds concurrency
        await self.store.transact(lambda tx: self._record(tx, results))
        for r in results:  # counted once committed: a transaction the store retries is not counted twice
            observe_attempt(r.conversion.kind, r.outcome, r.latency_ms)
        return len(batch)

    async def _send(self, conv: Claimed) -> Result:
        client = self._client
        if client is None:
            raise RuntimeError("forwarder is not running")
        url = f"{self.tracking.url}/track/{conv.kind}"
        headers = {
            "Authorization": f"Bearer {self.tracking.api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": conv.idempotency_key,
        }
        started = time.perf_counter()
        try:
            async with client.post(url, data=conv.payload.encode(), headers=headers,
                                   allow_redirects=False) as response:
                outcome = classify(response.status)
                excerpt = None
                if outcome != "delivered":
                    excerpt = (await response.content.read(EXCERPT * 4)).decode("utf-8", "replace")[:EXCERPT]
                else:
                    await response.read()
                status, retry_after = response.status, _retry_after(response.headers.get("retry-after"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            latency = int((time.perf_counter() - started) * 1000)
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Result(conv, "retry", None, latency, error[:EXCERPT], None)
        latency = int((time.perf_counter() - started) * 1000)
        return Result(conv, outcome, status, latency, None, excerpt, retry_after)

    def _record(self, tx: Tx, results: list[Result]) -> None:
        now = now_ms()
        attempts, rows = [], []
        for r in results:
            conv = r.conversion
            attempts.append(Attempt(conv.id, r.status_code, r.latency_ms, r.outcome, r.error, r.excerpt))
            rows.append(self._settlement(r, now))
        tx.settle(self.owner, now, rows, attempts)
        for r, row in zip(results, rows, strict=True):
            log.info("forward %s", r.outcome, extra={"conversion_id": r.conversion.id, "source": r.conversion.source,
                                                      "status_code": r.status_code, "state": row.state,
                                                      "attempt": r.conversion.attempts + 1})

    def _settlement(self, r: Result, now: int) -> Settlement:
        conv, attempt = r.conversion, r.conversion.attempts + 1
        if r.outcome == "delivered":
            return Settlement(conv.id, "delivered", None, now, r.status_code, None)
        if r.outcome == "dead":
            return Settlement(conv.id, "dead", f"http_{r.status_code}", now, r.status_code, r.excerpt)
        if attempt >= self.settings.max_attempts:
            return Settlement(conv.id, "dead", "max_attempts", now, r.status_code, r.error or r.excerpt)
        delay = backoff_delay(attempt, self.settings, r.retry_after_s)
        return Settlement(conv.id, "pending", None, now + int(delay * 1000), r.status_code, r.error or r.excerpt)
