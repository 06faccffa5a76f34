"""What the operator commands do (`hooktrack replay`, `stats`, `send`), kept out of cli.py.

The CLI parses options and prints; these functions open the store, do the work and report.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapter.ingest import now_ms
from adapter.journal import dead_conversion_ids, requeue
from adapter.plugin import Source
from adapter.samples import SamplesMixin, samples_of
from adapter.settings import Settings
from adapter.stats import stats
from adapter.store import Store, Tx, open_store

__all__ = ["ReplayReport", "read_stats", "replay", "signing_problem"]

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
