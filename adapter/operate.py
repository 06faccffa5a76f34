"""What the operator commands do (`hooktrack replay`, `reprocess`, `stats`, `send`), kept out of cli.py.

The CLI parses options and prints; these functions open the store, do the work and report.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from starlette.datastructures import Headers

from adapter.destinations import build_destination
from adapter.errors import PayloadError, SignatureError
from adapter.ingest import Ingestor, _Apply, mapped_or_ignored, now_ms, parse_event
from adapter.journal import dead_conversion_ids, requeue
from adapter.plugin import Provider, Source, build_sources, load_providers
from adapter.samples import SamplesMixin, samples_of
from adapter.settings import Settings
from adapter.stats import stats
from adapter.store import Store, Tx, open_store

__all__ = ["ReplayReport", "ReprocessReport", "read_stats", "replay", "reprocess", "signing_problem"]

CHUNK = 200  # conversions requeued per transaction: a bulk replay never holds the writer for long


@dataclass
class ReplayReport:
    """What a replay did: ids requeued, ids left alone, and (with `wait`) how they ended."""

    requeued: list[int] = field(default_factory=list)
    not_dead: list[int] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)
    dead_again: dict[int, str | None] = field(default_factory=dict)
    still_pending: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def replay(settings: Settings, ids: Sequence[int], *, source: str | None = None, since_ms: int | None = None,
           wait_s: float = 0, console: Console | None = None) -> ReplayReport:
    """Requeue dead conversions (`ids`, or every dead one matching `source` / `since_ms` when
    `ids` is empty), in chunks, with a progress bar on `console` (stderr by default). With
    `wait_s` > 0, follow them until each is delivered or dead again, or the time runs out."""
    out = console or Console(stderr=True)

    async def run() -> ReplayReport:
        store = open_store(settings.store.url)
        await store.open()
        try:
            report = ReplayReport()
            targets = list(ids) or await store.read(lambda tx: dead_conversion_ids(tx, source=source,
                                                                                     since_ms=since_ms))
            if not targets:
                return report
            with _progress(out) as bar:
                task = bar.add_task("requeueing", total=len(targets))
                for start in range(0, len(targets), CHUNK):
                    chunk = targets[start:start + CHUNK]
                    moved = await store.transact(functools.partial(_requeue_now, chunk))
                    report.requeued += moved
                    report.not_dead += [i for i in chunk if i not in set(moved)]
                    bar.advance(task, len(chunk))
                if wait_s > 0 and report.requeued:
                    await _follow(store, report, wait_s, bar)
            return report
        finally:
            await store.close()

    return asyncio.run(run())


def _requeue_now(ids: list[int], tx: Tx) -> list[int]:
    return requeue(tx, ids, now_ms())


async def _follow(store: Store, report: ReplayReport, wait_s: float, bar: Progress) -> None:
    task = bar.add_task("delivering", total=len(report.requeued))
    deadline = time.monotonic() + wait_s
    while True:
        rows = await store.read(lambda tx: tx.conversion_states(report.requeued))
        settled = {i: (s, r) for i, s, r in rows if s != "pending"}
        bar.update(task, completed=len(settled))
        if len(settled) == len(report.requeued) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    report.delivered = sorted(i for i, (s, _r) in settled.items() if s == "delivered")
    report.dead_again = {i: r for i, (s, r) in sorted(settled.items()) if s == "dead"}
    report.still_pending = [i for i in report.requeued if i not in settled]


def read_stats(settings: Settings, since_ms: int | None) -> dict[str, Any]:
    """`stats.stats` for the configured store, now."""

    async def run() -> dict[str, Any]:
        store = open_store(settings.store.url)
        await store.open()
        try:
            return await store.read(lambda tx: stats(tx, now_ms(), since_ms))
        finally:
            await store.close()

    return asyncio.run(run())


def signing_problem(src: Source, sample: str | None = None) -> str | None:
    """Why hooktrack cannot sign this source's webhooks (None if it can), tried on `sample` (or
    the first one): some providers sign with a key only the provider holds (Paddle Classic's
    private key) or need settings this source lacks (Braintree's sandbox keys)."""
    provider = src.provider
    names = sorted(samples_of(provider))
    if not names or not isinstance(provider, SamplesMixin):
        return f"{src.ctx.provider} has no built-in samples"
    now = int(time.time())
    try:
        body = provider.sample(sample or names[0], unique=secrets.token_hex(8), now=now)  # as `send` does
        src.provider.sign(body, src.secrets[0] if src.secrets else "", now, src.ctx)
    except NotImplementedError as exc:
        return str(exc) or f"hooktrack cannot sign {src.ctx.provider} webhooks"
    except Exception as exc:  # a provider that needs settings this source lacks
        return f"hooktrack cannot sign {src.ctx.provider} webhooks with this source's settings ({exc})"
    return None


@dataclass
class ReprocessReport:
    """What `reprocess` made of each stored event: `results` maps the stored event id to what
    mapping it again gave (`status`: accepted, duplicate, ignored, rejected, or skipped when it
    could not be tried; `eventId` of the new event row, `reason`, `conversions`, `message`)."""

    results: dict[int, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {str(k): v for k, v in self.results.items()}

    def count(self, status: str) -> int:
        return sum(1 for r in self.results.values() if r["status"] == status)


_STORED = ("SELECT id, source, status, reason, dedup_key, body, provider_event_id, event_type, received_at "
           "FROM events")
_MALFORMED = " WHERE status = 'rejected' AND reason = 'malformed_payload' AND body IS NOT NULL"


def reprocess(settings: Settings, ids: Sequence[int], *, malformed: bool = False, since_ms: int | None = None,
              registry: Mapping[str, type[Provider]] | None = None) -> ReprocessReport:
    """Map stored, verified events again with the installed providers (SPEC §6): `ids`, or with
    `malformed` every event kept as `malformed_payload` (received since `since_ms`).

    The body is read back from the store and parsed, mapped and stored by the same ingest
    transaction a delivery goes through, as a new event row, so what it produces is deduped like
    any delivery: a Sale already counted is a `duplicate` (`business_key`), never a second sale.
    The signature is not checked again (only verified deliveries keep a body), and the delivery's
    headers are not stored: a provider that reads the event type or id from a header (Shopify's
    `X-Shopify-Topic`) cannot be reprocessed and stays malformed. A malformed event that maps now
    is marked `reprocessed`, so `--malformed` does not take it again. A provider that `fetches`
    (Recurly with an `api_key`) looks up what the stored body lacks, and only that: an event
    received before the source had its `api_key` can be counted after all."""
    sources = build_sources(settings, registry if registry is not None else load_providers())
    destination = build_destination(settings)

    async def run() -> ReprocessReport:
        store = open_store(settings.store.url)
        await store.open()
        try:
            ingestor = Ingestor(store, destination, fill_window_s=settings.forwarder.fill_window_s,
                                attribution_window_s=settings.forwarder.attribution_window_s)
            rows = await store.read(functools.partial(_stored_events, list(ids), malformed, since_ms))
            found = {int(r[0]): r for r in rows}
            report = ReprocessReport()
            for event_id in ids or sorted(found):
                row = found.get(event_id)
                report.results[event_id] = (await _again(ingestor, sources, row) if row is not None
                                            else _skipped("no event with this id"))
            return report
        finally:
            await store.close()
            for source in sources.values():
                source.provider.close()

    return asyncio.run(run())


def _stored_events(ids: list[int], malformed: bool, since_ms: int | None, tx: Tx) -> list[Any]:
    if not malformed:
        return [row for i in ids for row in tx.all(_STORED + " WHERE id = ?", (i,))]
    if since_ms is None:
        return tx.all(_STORED + _MALFORMED + " ORDER BY id")
    return tx.all(_STORED + _MALFORMED + " AND received_at >= ? ORDER BY id", (since_ms,))


def _known_headers(event_id: str | None, event_type: str | None, received_at: int | None) -> dict[str, str]:
    """What a stored event says of its delivery's headers, which are not stored: the event id and
    type its provider read from them when it was first parsed (a `malformed_payload` of `map`
    keeps both), under the names the built-in providers read them from (Standard Webhooks and
    Svix `webhook-id`, Shopify's `X-Shopify-Event-Id` and `X-Shopify-Topic`), and its arrival as
    the delivery's timestamp. An event whose parse failed has neither; a provider that needs a
    header the row cannot give stays malformed."""
    known: dict[str, str] = {}
    if event_id:
        known |= dict.fromkeys(("webhook-id", "svix-id", "x-shopify-event-id", "x-shopify-webhook-id"), event_id)
    if event_type:
        known |= dict.fromkeys(("x-shopify-topic", "x-event-name"), event_type)
    if received_at:
        known |= dict.fromkeys(("webhook-timestamp", "svix-timestamp"), str(int(received_at) // 1000))
    return known


def _skipped(message: str) -> dict[str, Any]:
    return {"status": "skipped", "message": message}


async def _again(ingestor: Ingestor, sources: Mapping[str, Source], row: Any) -> dict[str, Any]:
    """Parse, map and store one stored event again (what `Ingestor.receive` does after verify)."""
    event_id, name, status, reason, dedup_key, text, provider_event_id, event_type, received_at = row
    if text is None:
        return _skipped("no body kept: only verified deliveries keep theirs (and duplicates point to the original)")
    source = sources.get(name)
    if source is None:
        return _skipped(f"source {name!r} is no longer configured")
    body = str(text).encode("utf-8")
    received = now_ms()
    if source.provider.fetches:
        # What the delivery could not be given when it came (Recurly's invoice, before the source
        # had an `api_key`, or under another site's key) is looked up now; the provider's `fetch`
        # leaves a body that already holds its lookup as it is.
        try:
            body = await asyncio.to_thread(source.provider.fetch, body, source.ctx)
        except SignatureError as exc:
            return _skipped(f"the lookup the event needs cannot be done now ({exc}); nothing was stored: "
                            "run reprocess again later")
    try:
        event = parse_event(source, body, Headers(_known_headers(provider_event_id, event_type, received_at)))
        conversions, ignored, trial_of = mapped_or_ignored(source, event)
    except PayloadError as exc:
        return {"status": "rejected", "reason": "malformed_payload", "message": str(exc)[:300]}
    apply = _Apply(source, event, body, received, conversions, ignored, ingestor, trial_of)
    if dedup_key is not None:
        # The stored event holds its delivery's dedup key: map it again as a new row, and let the
        # business keys (a Sale's invoice, a Lead's customer) say whether it is a duplicate.
        apply.dedup_key = None
    outcome = await ingestor.store.transact(apply)
    if status == "rejected" and reason == "malformed_payload" and outcome.status != "rejected":
        await ingestor.store.transact(lambda tx: tx.set_event_status(event_id, "rejected", "reprocessed"))
    return {"status": outcome.status, "eventId": outcome.event_id, "reason": outcome.reason,
            "conversions": outcome.conversions}
