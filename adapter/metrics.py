"""Prometheus metrics at `GET /metrics` (and `hooktrack worker --metrics-port`).

Two kinds, on purpose:

- **Counters and the latency histogram** count what *this process* did (webhooks answered,
  conversions created, forward attempts) and are incremented in memory where it happens: no
  store query on the hot path. Each replica and worker exposes its own; sum them in PromQL.
- **Gauges of the outbox** (depth, dead letters, oldest pending age) are read from the store at
  scrape time by a custom collector, so they are right whichever process did the work. Every
  replica reports the same values: aggregate them with `max`, not `sum`.

If the store cannot be read during a scrape, the counters are still served and
`hooktrack_store_up` is 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from adapter.journal import outbox_gauges
from adapter.store import Store, Tx

__all__ = [
    "REGISTRY",
    "metrics_endpoint",
    "observe_attempt",
    "observe_provider_error",
    "observe_webhook",
    "serve_metrics",
    "short_error",
]

log = logging.getLogger("hooktrack.metrics")

# No `*_created` series: they double the output and nobody graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry()
"""hooktrack's own registry (not prometheus_client's global one), plus process metrics."""
ProcessCollector(registry=REGISTRY)

WEBHOOKS = Counter("hooktrack_webhooks_received", "Webhook deliveries answered, by source and status "
                   "(accepted, duplicate, ignored, rejected, unavailable).", ["source", "status"], registry=REGISTRY)
REJECTED = Counter("hooktrack_webhooks_rejected", "Webhook deliveries refused, by source and reason "
                   "(invalid_signature, stale_timestamp, malformed_payload, ...).", ["source", "reason"],
                   registry=REGISTRY)
IGNORED = Counter("hooktrack_webhooks_ignored", "Verified webhooks that produced nothing to forward, by source "
                  "and reason.", ["source", "reason"], registry=REGISTRY)
CONVERSIONS = Counter("hooktrack_conversions_created", "Conversions put in the outbox, by source and kind "
                      "(lead, sale).", ["source", "kind"], registry=REGISTRY)
ATTEMPTS = Counter("hooktrack_forward_attempts", "Deliveries tried at the tracking API, by kind and the "
                   "destination's verdict (delivered, not_counted, unattributed, retry, rate_limited, pause, dead).",
                   ["kind", "outcome"], registry=REGISTRY)
LATENCY = Histogram("hooktrack_forward_latency_seconds", "Tracking API response time per attempt.", ["kind"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)


PROVIDER_ERRORS = Counter("hooktrack_provider_errors", "Unexpected exceptions inside a provider's parse or map "
                          "(a bug to report, not bad input: logged once at error level), by source and "
                          "provider.", ["source", "provider"], registry=REGISTRY)
_ERROR_TEXT = 200
_provider_log = logging.getLogger("hooktrack.provider")


def short_error(exc: BaseException) -> str:
    """`ExceptionClass: message` with the message cut to 200 characters; never raises (a
    message whose `str()` itself fails is named by its class only)."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ is still an error worth naming
        message = ""
    if len(message) > _ERROR_TEXT:
        message = message[:_ERROR_TEXT] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def observe_provider_error(source: str, provider: str, step: str, exc: BaseException) -> None:
    """A provider's `parse` or `map` raised something other than `PayloadError` / `Ignore`:
    count it (`hooktrack_provider_errors_total`) and log it once at error level, with the
    traceback except for a `RecursionError` (a thousand identical frames, and formatting them
    can fail in turn). The delivery is still answered 400 `malformed_payload` with its body kept,
    so `hooktrack reprocess` can map it once the provider is fixed."""
    PROVIDER_ERRORS.labels(source, provider).inc()
    _provider_log.error("provider %s raised in %s: %s", provider, step, short_error(exc),
                        exc_info=None if isinstance(exc, RecursionError) else exc,
                        extra={"source": source, "provider": provider, "error_class": type(exc).__name__})


def observe_webhook(source: str, status: str, reason: str | None = None,
                    conversions: list[dict[str, Any]] | None = None) -> None:
    """Count one answered webhook (called once per delivery, after the answer is decided)."""
    WEBHOOKS.labels(source, status).inc()
    if status == "rejected":
        REJECTED.labels(source, reason or "unknown").inc()
    elif status == "ignored":
        IGNORED.labels(source, reason or "unknown").inc()
    for conv in conversions or ():
        CONVERSIONS.labels(source, str(conv.get("kind"))).inc()


def observe_attempt(kind: str, outcome: str, latency_ms: int) -> None:
    """Count one forward attempt and its latency."""
    ATTEMPTS.labels(kind, outcome).inc()
    LATENCY.labels(kind).observe(latency_ms / 1000)


def gauges(tx: Tx, destination: str = "dub") -> dict[str, Any]:
    """What the scrape-time gauges read: the outbox per source, deliveries by state, and
    whether each destination is paused (`destination` is always listed)."""
    names = {destination, *tx.destination_names()}
    return {"outbox": outbox_gauges(tx), "states": tx.delivery_states(),
            "destinations": {n: tx.destination_state(n).paused_reason for n in names}}


class _OutboxCollector(Collector):
    """Gauges from a snapshot of `gauges` taken just before the scrape."""

    def __init__(self, snapshot: dict[str, Any] | None, now_ms: int, sources: Iterable[str] = ()) -> None:
        self.snapshot = snapshot
        self.now_ms = now_ms
        self.sources = tuple(sources)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("hooktrack_store_up", "1 if the store answered this scrape's outbox query.")
        up.add_metric([], 0 if self.snapshot is None else 1)
        yield up
        if self.snapshot is None:
            return
        snapshot = self.snapshot
        yield from self._outbox(snapshot["outbox"])
        states = GaugeMetricFamily("hooktrack_deliveries", "Deliveries by state (pending, delivered, unattributed, "
                                   "dead, skipped).", labels=["state"])
        for state in ("pending", "delivered", "unattributed", "dead", "skipped"):
            states.add_metric([state], snapshot["states"].get(state, 0))
        yield states
        paused = GaugeMetricFamily("hooktrack_destination_paused", "1 while the destination is paused (a refused "
                                   "API key, or consecutive failures): nothing is sent but one probe.",
                                   labels=["destination"])
        for name, reason in sorted(snapshot["destinations"].items()):
            paused.add_metric([name], 0 if reason is None else 1)
        yield paused

    def _outbox(self, outbox: dict[str, dict[str, Any]]) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("hooktrack_outbox_depth", "Conversions waiting to be forwarded, by source.",
                                  labels=["source"])
        dead = GaugeMetricFamily("hooktrack_dead_letters", "Dead-lettered conversions waiting for a replay, "
                                 "by source.", labels=["source"])
        age = GaugeMetricFamily("hooktrack_oldest_pending_age_seconds", "Age of the oldest conversion still "
                                "waiting to be forwarded (0 when the outbox is empty).")
        oldest: int | None = None
        empty = {"pending": 0, "dead": 0, "oldest_pending_ms": None}
        # Every configured source gets a series, so "no dead letters" is a 0, not an absent series.
        everything = {**dict.fromkeys(self.sources, empty), **outbox}
        for source, gauges in sorted(everything.items()):
            depth.add_metric([source], gauges["pending"])
            dead.add_metric([source], gauges["dead"])
            if gauges["oldest_pending_ms"] is not None:
                oldest = min(oldest or gauges["oldest_pending_ms"], gauges["oldest_pending_ms"])
        age.add_metric([], 0 if oldest is None else max(0, self.now_ms - oldest) / 1000)
        yield from (depth, dead, age)


def _render(snapshot: dict[str, Any] | None, sources: Iterable[str]) -> bytes:
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_OutboxCollector(snapshot, int(time.time() * 1000), sources))
    return generate_latest(REGISTRY) + generate_latest(scrape)


async def _snapshot(read: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any] | None:
    try:
        return await asyncio.wait_for(read(), timeout=5)
    except Exception as exc:  # the store may be down: a scrape still answers, with store_up 0
        log.warning("metrics: outbox gauges unavailable: %s", exc)
        return None


def metrics_endpoint(store: Store, sources: Iterable[str] = (),
                     destination: str = "dub") -> Callable[[Request], Awaitable[Response]]:
    """The `GET /metrics` handler for the app; `sources` are the configured source names."""
    names = tuple(sources)

    async def metrics(request: Request) -> Response:
        snapshot = await _snapshot(lambda: store.read(lambda tx: gauges(tx, destination)))
        return Response(_render(snapshot, names), media_type=CONTENT_TYPE_LATEST)

    return metrics


def serve_metrics(port: int, store: Store, loop: asyncio.AbstractEventLoop, host: str = "127.0.0.1",
                  sources: Iterable[str] = (), destination: str = "dub") -> Any:
    """Serve `/metrics` for a process without the app (`hooktrack worker`), on its own thread;
    store reads are handed to `loop`, where the store was opened. Returns the HTTP server
    (`.shutdown()` stops it)."""

    class _Live(Collector):
        def collect(self) -> Iterator[Any]:
            future = asyncio.run_coroutine_threadsafe(
                _snapshot(lambda: store.read(lambda tx: gauges(tx, destination))), loop)
            yield from _OutboxCollector(future.result(timeout=10), int(time.time() * 1000), sources).collect()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Proxy(REGISTRY))
    registry.register(_Live())
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


class _Proxy(Collector):
    """Another registry's metrics, inside a second registry."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Any]:
        yield from self.inner.collect()
