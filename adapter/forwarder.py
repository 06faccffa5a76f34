"""The outbox worker: claim due deliveries, pace, send, classify, back off, pause (SPEC §7).

Each round leases a batch of due deliveries (a lease, not a lock: if this process dies, the
lease runs out and any worker claims them again), sends them over one keep-alive HTTP client
at the pace the API allows, and records every attempt. What an answer *means* is the
destination's call (`Destination.classify`); this module knows nothing of any one API.

The client is aiohttp rather than httpx: on the same loopback receiver at 32 requests in
flight, httpx's AsyncClient managed ~300 requests/s and aiohttp ~9,000. A request's timeout
starts when it is sent: concurrency is bounded by a semaphore no wider than the connection
pool, so no request spends its timeout waiting for a pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from adapter.destinations import Answer, Destination, Request, Verdict
from adapter.ingest import now_ms
from adapter.metrics import observe_attempt
from adapter.pacing import Pacer
from adapter.records import Attempt, Claimed, Conversion, DestinationState, Settlement
from adapter.settings import ForwarderSettings, TrackingSettings
from adapter.store import Store, Tx

__all__ = ["Forwarder", "Result", "backoff_delay"]

log = logging.getLogger("hooktrack.forwarder")
MAX_ROUNDS = 4  # a claim takes up to this many rounds of `concurrency` requests
MAX_STEPS = 4  # requests one delivery may take (find, then change)
EXCERPT = 500


@dataclass
class Result:
    """One delivery's attempt: the verdict and every request it took."""

    delivery: Claimed
    verdict: Verdict
    status_code: int | None = None
    latency_ms: int = 0
    error: str | None = None
    excerpt: str | None = None
    transport_failure: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    memo: dict[str, Any] = field(default_factory=dict)
    """`Verdict.memo` values to store for the Sale (`memo_of`), first write wins."""
    memo_of: int | None = None


def _reverses(claimed: Claimed) -> int | None:
    try:
        value = json.loads(claimed.conversion).get("reverses")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _memo_key(conversion_id: int, conversion: Conversion) -> int | None:
    """The Sale a delivery's memo is about: the Sale a Refund reverses, or the Sale itself."""
    if conversion.kind == "refund":
        return conversion.reverses
    return conversion_id if conversion.kind == "sale" else None


def backoff_delay(attempt: int, settings: ForwarderSettings, retry_after_s: float | None,
                  rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**(attempt-1))]; `Retry-After` is a floor.
    Both are capped at `max_delay_s`."""
    ceiling = min(settings.max_delay_s, settings.base_delay_s * 2 ** min(attempt - 1, 62))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, settings.max_delay_s)


class Forwarder:
    """Drains the outbox to one destination until `stop()`."""

    def __init__(self, store: Store, tracking: TrackingSettings, settings: ForwarderSettings,
                 destination: Destination, owner: str | None = None) -> None:
        self.store = store
        self.tracking = tracking
        self.settings = settings
        self.destination = destination
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"
        # The whole batch is held under one lease, so it must outlast the worst case (every
        # request timing out in turn) or another worker could claim and send it again:
        # claim fewer rounds when the lease is short for the tracking timeout.
        self.rounds = max(1, min(MAX_ROUNDS, int((settings.lease_s - 5) // tracking.timeout_s)))
        if settings.lease_s <= tracking.timeout_s:
            log.warning("forwarder.lease_s (%ss) is not longer than tracking.timeout_s (%ss): a slow "
                        "tracking API can make another worker send a conversion again",
                        settings.lease_s, tracking.timeout_s)
        self.pacer = Pacer(tracking.max_requests_per_minute, getattr(destination, "rate_window_s", 60.0))
        self.failures = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._client: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._halted = False

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll (called after ingest commits)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until stopped; store outages are logged and retried, never fatal."""
        connector = aiohttp.TCPConnector(limit=self.settings.concurrency, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as client:
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
        """Claim one batch, send it, record the results; returns how many were attempted.
        While the destination is paused, only one probe goes out every `pause_probe_s`."""
        name = self.destination.name
        state = await self.store.read(lambda tx: tx.destination_state(name))
        now = now_ms()
        probing = state.paused_reason is not None
        if probing and (state.next_probe_at or 0) > now:
            return 0
        lease_ms = int(self.settings.lease_s * 1000)
        limit = 1 if probing else self._batch_size()
        owner = self.owner
        batch = await self.store.transact(lambda tx: tx.claim(name, owner, now_ms(), lease_ms, limit))
        if not batch:
            return 0
        self._halted = False
        memos = await self._memos(batch)
        if probing:
            results = [await self._send(batch[0], memos)]
        else:
            results = list(await asyncio.gather(*(self._send(c, memos) for c in batch)))
        done = now_ms()
        rows = [self._settlement(r, done) for r in results]
        new_state = self._next_state(state, results, done)
        await self.store.transact(lambda tx: self._record(tx, results, rows, new_state, done))
        for r, row in zip(results, rows, strict=True):
            log.debug("forward %s", r.verdict.outcome, extra={
                "conversion_id": r.delivery.conversion_id, "source": r.delivery.source,
                "status_code": r.status_code, "state": row.state, "attempt": r.delivery.attempts + 1})
        for r in results:  # counted once committed: a transaction the store retries is not counted twice
            observe_attempt(r.delivery.kind, r.verdict.outcome, r.latency_ms)
        return len(batch)

    def _batch_size(self) -> int:
        """A batch must be sent within its lease at the pace the API allows."""
        most = self.settings.concurrency * self.rounds
        interval = self.pacer.interval_s()
        if interval > 0:
            most = min(most, max(1, int((self.settings.lease_s - self.tracking.timeout_s) / interval)))
        return most

    # -- sending -------------------------------------------------------------------------

    async def _memos(self, batch: list[Claimed]) -> dict[int, dict[str, Any]]:
        """What the destination asked to remember about the Sales this batch's refunds reverse."""
        sales = {_reverses(c) for c in batch if c.kind == "refund"} - {None}
        if not sales:
            return {}
        name = self.destination.name
        return await self.store.read(lambda tx: tx.refund_memos([s for s in sales if s is not None], name))

    async def _send(self, delivery: Claimed, memos: dict[int, dict[str, Any]] | None = None) -> Result:
        try:
            conversion = Conversion.from_json(delivery.conversion)
            memo_of = _memo_key(delivery.conversion_id, conversion)
            if conversion.kind == "refund" and memo_of is not None and (memos or {}).get(memo_of):
                conversion = conversion.but(memo=dict((memos or {})[memo_of]))
            request = self.destination.render(conversion)
        except Exception as exc:  # a record this release cannot render: keep it for a replay
            log.error("cannot render conversion %s: %r", delivery.conversion_id, exc)
            return Result(delivery, Verdict.dead("unrenderable"), error=f"{type(exc).__name__}: {exc}"[:EXCERPT])
        result = Result(delivery, Verdict.retry("no_request"), memo_of=memo_of)
        for _ in range(MAX_STEPS):
            await self.pacer.slot()
            if self._halted and not result.attempts:  # the destination paused since this batch was claimed
                return Result(delivery, Verdict.pause("held"))
            answer, latency, error = await self._request(request)
            result.latency_ms += latency
            if answer is None:
                result.verdict, result.error, result.transport_failure = Verdict.retry("transport"), error, True
                result.status_code = None
                result.attempts.append(self._attempt(delivery, None, latency, "retry", error, None, request))
                return result
            self.pacer.learn(self.destination.rate(answer), answer.at_ms, self.destination)
            verdict = self.destination.classify(conversion, request, answer)
            if verdict.memo and memo_of is not None:  # first write wins, also within this delivery
                fresh = {k: v for k, v in verdict.memo.items() if k not in result.memo and k not in conversion.memo}
                result.memo.update(fresh)
                if conversion.kind == "refund" and fresh:
                    conversion = conversion.but(memo={**fresh, **conversion.memo})
            excerpt = None if verdict.outcome == "delivered" else answer.body[:EXCERPT * 4].decode(
                "utf-8", "replace")[:EXCERPT]
            result.verdict, result.status_code, result.excerpt = verdict, answer.status, excerpt
            result.attempts.append(self._attempt(delivery, answer.status, latency, verdict.outcome, None, excerpt,
                                                 request))
            if verdict.outcome == "pause":
                self._halted = True
            if verdict.outcome == "rate_limited":
                self.pacer.block(verdict.after_s if verdict.after_s is not None else self.settings.base_delay_s)
            if verdict.outcome != "follow" or verdict.next is None:
                return result
            request = verdict.next
        result.verdict = Verdict.dead("too_many_steps")
        return result

    async def _request(self, request: Request) -> tuple[Answer | None, int, str | None]:
        client = self._client
        if client is None:
            raise RuntimeError("forwarder is not running")
        data = json.dumps(request.body, separators=(",", ":")).encode() if request.body is not None else None
        async with self._slots:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.tracking.timeout_s), client.request(
                        request.method, f"{self.tracking.url}{request.path}", data=data,
                        headers=dict(request.headers), allow_redirects=False) as response:
                    body = await response.content.read(1 << 20)
                    headers = {k.lower(): v for k, v in response.headers.items()}
                    answer = Answer(response.status, headers, body, now_ms())
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                latency = int((time.perf_counter() - started) * 1000)
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                return None, latency, error[:EXCERPT]
        return answer, int((time.perf_counter() - started) * 1000), None

    @staticmethod
    def _attempt(delivery: Claimed, status: int | None, latency: int, outcome: str, error: str | None,
                 excerpt: str | None, request: Request) -> Attempt:
        step = None if request.step == "send" else request.step
        return Attempt(delivery.id, delivery.conversion_id, status, latency, outcome if not step else
                       f"{step}:{outcome}", error, excerpt)

    # -- recording -----------------------------------------------------------------------

    def _record(self, tx: Tx, results: list[Result], rows: list[Settlement], state: DestinationState | None,
                now: int) -> None:
        attempts = [a for r in results for a in r.attempts]
        tx.settle(self.owner, now, rows, attempts)
        for r in results:
            if r.memo and r.memo_of is not None:
                tx.remember_memo(r.memo_of, self.destination.name, r.memo, now)
        if state is not None:
            tx.set_destination_state(state, now)

    def _next_state(self, state: DestinationState, results: list[Result], now: int) -> DestinationState | None:
        """The destination's state after these results, or None when it does not change.
        Consecutive 5xx answers and transport failures are counted across rounds."""
        for r in results:
            if r.attempts:
                failed = r.transport_failure or (r.status_code or 0) >= 500
                self.failures = self.failures + 1 if failed else 0
        probe_at = now + int(self.settings.pause_probe_s * 1000)
        paused = [r for r in results if r.verdict.outcome == "pause" and r.attempts]
        reason = None
        if paused:
            reason = paused[0].verdict.reason or "paused"
        elif self.failures >= self.settings.pause_after_failures:
            last = results[-1]
            reason = f"{self.failures} consecutive failures (last: {last.error or last.status_code})"[:200]
        if reason is not None:
            if state.paused_reason is None:
                log.warning("destination %s paused: %s", state.name, reason)
            return DestinationState(state.name, reason, state.paused_at or now, probe_at, self.failures)
        if state.paused_reason is not None:
            if any(r.attempts and not r.transport_failure for r in results):
                log.warning("destination %s resumed after a successful probe", state.name)
                return DestinationState(state.name)
            return DestinationState(state.name, state.paused_reason, state.paused_at, probe_at, self.failures)
        return None

    def _settlement(self, r: Result, now: int) -> Settlement:
        d, v = r.delivery, r.verdict
        err = r.error or r.excerpt
        if v.outcome == "delivered":
            return Settlement(d.id, "delivered", v.note, now, r.status_code, None)
        if v.outcome == "unattributed":
            return Settlement(d.id, "unattributed", v.reason, now, r.status_code, err)
        if v.outcome == "dead":
            return Settlement(d.id, "dead", v.reason, now, r.status_code, err)
        if v.outcome == "not_counted":
            if now >= d.window_until:
                return Settlement(d.id, "unattributed", v.reason, now, r.status_code, err, counted=False)
            return Settlement(d.id, "pending", v.reason, now + self._window_delay(d, now), r.status_code, err,
                              counted=False)
        if v.outcome == "pause":
            return Settlement(d.id, "pending", None, now, r.status_code, err, counted=False)
        if v.outcome == "rate_limited":
            wait = v.after_s if v.after_s is not None and v.after_s <= self.settings.max_delay_s else \
                backoff_delay(1, self.settings, None)
            return Settlement(d.id, "pending", None, now + int(wait * 1000), r.status_code, err, counted=False)
        attempt = d.attempts + 1
        if attempt >= self.settings.max_attempts:
            return Settlement(d.id, "dead", "max_attempts", now, r.status_code, err)
        delay = backoff_delay(attempt, self.settings, v.after_s)
        return Settlement(d.id, "pending", None, now + int(delay * 1000), r.status_code, err)

    def _window_delay(self, d: Claimed, now: int) -> int:
        """Within the attribution window, wait half to all of the time since the window opened
        (the conversion was made, or replayed), at least `base_delay_s`, and never past the
        window's end, where the last try goes. Retries thin out geometrically: about 23 in a day
        for a Sale Dub never counts (an organic buyer), most in the first minutes, when the
        API's lag or a late sign-up is likeliest. A cap of `max_delay_s` (an hour) made it ~59,
        each one a request against the API's rate limit."""
        opened = max(d.created_at, d.window_until - int(self.settings.attribution_window_s * 1000))
        waited = max(now - opened, int(self.settings.base_delay_s * 1000))
        return int(min(random.uniform(0.5, 1.0) * waited, max(d.window_until - now, 0)))
