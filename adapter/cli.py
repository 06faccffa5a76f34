"""The `hooktrack` command (SPEC §6). Every command takes `--config F` after its own name."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

import click
import httpx

from adapter.errors import ConfigError, HooktrackError
from adapter.settings import Settings, load_settings

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), default=None,
        help="Config file (default: $HOOKTRACK_CONFIG, else ./hooktrack.toml).",
    )(fn)


def friendly(fn: F) -> F:
    """Turn hooktrack's own errors into one clear line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HooktrackError as exc:
            click.echo(f"hooktrack: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="hooktrack")
def main() -> None:
    """hooktrack: payment webhooks in, verified Lead and Sale conversions out."""


@main.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Only receive webhooks; run `hooktrack worker` to forward.")
@click.option("--log-level", default="INFO", show_default=True)
@friendly
def serve(config_path: str | None, host: str, port: int, no_worker: bool, log_level: str) -> None:
    """HTTP server plus the in-process forwarder."""
    import uvicorn

    from adapter.app import create_app
    from adapter.config_checks import log_warnings
    from adapter.logs import configure_logging
    from adapter.server import uvicorn_config

    settings = load_settings(config_path)
    configure_logging(log_level)
    log_warnings(settings)
    if settings.store.url.startswith("sqlite:"):
        # A read-only or unopenable file is one clear line now, not a traceback from the lifespan.
        # (PostgreSQL may be down for a while: serve starts and answers 503 until it is back.)
        asyncio.run(_probe_store(settings))
    app = create_app(settings, worker=not no_worker)
    _tune_gc()
    server = uvicorn.Server(uvicorn_config(app, settings.server, host, port, log_config=None, access_log=False,
                                           timeout_graceful_shutdown=10))
    server.run()
    if not server.started:
        sys.exit(3)


@main.command()
@config_option
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--metrics-port", type=int, default=None,
              help="Serve this worker's Prometheus metrics at http://127.0.0.1:PORT/metrics.")
@friendly
def worker(config_path: str | None, log_level: str, metrics_port: int | None) -> None:
    """Forwarder only: drain the outbox (run several against one PostgreSQL)."""
    from adapter.destinations import build_destination
    from adapter.forwarder import Forwarder
    from adapter.logs import configure_logging
    from adapter.retention import Retention
    from adapter.store import open_store

    settings = load_settings(config_path)
    configure_logging(log_level)
    from adapter.config_checks import log_warnings

    log_warnings(settings)

    async def run() -> None:
        store = open_store(settings.store.url, pool_size=settings.store.pool_size)
        await store.open()
        retention = Retention(store, settings.store.retention_days).start()
        fwd = Forwarder(store, settings.tracking, settings.forwarder, build_destination(settings))
        loop = asyncio.get_running_loop()
        if metrics_port:
            from adapter.metrics import serve_metrics

            serve_metrics(metrics_port, store, loop, sources=settings.sources)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, fwd.stop)
        try:
            await fwd.run()
        finally:
            await retention.stop()
            await store.close()

    _tune_gc()
    asyncio.run(run())


@main.command()
@config_option
@friendly
def check(config_path: str | None) -> None:
    """Validate the config and the store, then exit (status 2 on a problem)."""
    from adapter.config_checks import redact_url, warnings
    from adapter.plugin import build_sources, load_providers

    settings = load_settings(config_path)
    sources = build_sources(settings, load_providers())
    version = asyncio.run(_probe_store(settings))
    click.echo(f"config ok: {len(sources)} source(s)")
    for name, src in sources.items():
        click.echo(f"  POST /webhooks/{name}  provider={src.ctx.provider}  secrets={len(src.secrets)}")
    click.echo(f"store ok: {redact_url(settings.store.url)} (schema version {version})")
    click.echo(f"tracking: {redact_url(settings.tracking.url)}")
    for text in warnings(settings):
        click.echo(f"warning: {text}")


async def _probe_store(settings: Settings) -> int:
    """Open the store, commit a heartbeat and return its schema version; raises
    `StoreUnavailable` with one line (a read-only file, a missing directory, no server)."""
    from adapter.store import open_store

    store = open_store(settings.store.url)
    await store.open()
    try:
        await store.ping()
        return store.schema_version()
    finally:
        await store.close()


@main.command()
@config_option
@friendly
def migrate(config_path: str | None) -> None:
    """Create or upgrade the store's schema."""
    from adapter.store import open_store

    settings = load_settings(config_path)

    version = open_store(settings.store.url).migrate()
    from adapter.config_checks import redact_url

    click.echo(f"schema version {version} at {redact_url(settings.store.url)}")


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--test-secrets", is_flag=True,
              help="With NAME: throwaway secrets the built-in samples are signed with (for `hooktrack send`).")
@friendly
def providers(name: str | None, as_json: bool, test_secrets: bool) -> None:
    """Installed provider plugins; with NAME, what it maps, its settings and a `[sources.NAME]` block."""
    from adapter.plugin import ENTRY_POINT_GROUP, load_providers

    loaded = load_providers()
    if name is not None:
        if name not in loaded:
            raise ConfigError(f"no provider {name!r} installed (have: {', '.join(sorted(loaded))})")
        from adapter.provider_info import describe_provider

        click.echo(describe_provider(name, loaded[name], test_secrets=test_secrets))
        return
    if test_secrets:
        raise ConfigError("--test-secrets needs a provider NAME")
    rows = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        cls = loaded.get(ep.name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls and cls.__doc__ else ""
        dist = ep.dist.name if ep.dist else "?"
        rows.append({"name": ep.name, "target": ep.value, "package": dist,
                     "status": "ok" if cls else "broken (see log)", "description": doc})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("provider", "package", "status", "description")
    for r in rows:
        table.add_row(r["name"], r["package"], r["status"], r["description"])
    Console().print(table)


@main.command()
@click.argument("source")
@click.argument("sample", required=False)
@config_option
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="hooktrack's base URL.")
@friendly
def send(source: str, sample: str | None, config_path: str | None, url: str) -> None:
    """Sign a built-in sample event with SOURCE's secret and POST it (like `stripe trigger`)."""
    from adapter.plugin import build_sources, load_providers

    settings = load_settings(config_path)
    sources = build_sources(settings, load_providers())
    if source not in sources:
        raise ConfigError(f"no source {source!r} in the config (have: {', '.join(sources) or 'none'})")
    src = sources[source]
    from adapter.operate import signing_problem
    from adapter.samples import post_sample, samples_of

    names = sorted(samples_of(src.provider))
    problem = signing_problem(src, sample if sample in names else None)
    if sample is None or sample not in names:
        if sample is not None:
            click.echo(f"unknown sample {sample!r}", err=True)
        click.echo(f"samples for {src.ctx.provider}:\n  " + "\n  ".join(names))
        if problem:
            click.echo(f"note: {problem}, so `send` cannot post them for source {source!r}")
        sys.exit(0 if sample is None else 2)
    if problem:
        raise ConfigError(f"{problem}; send a real test event from the provider's dashboard instead")
    try:
        response = post_sample(src, sample, url.rstrip("/"))
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach hooktrack at {url} ({type(exc).__name__}); is `hooktrack serve` "
                          "running there? (--url sets the address)") from None
    click.echo(f"{response.status_code} {response.text}")


@main.group(invoke_without_command=True)
@config_option
@click.option("--source")
@click.option("--status", type=click.Choice(["accepted", "duplicate", "ignored", "rejected"]))
@click.option("--state", type=click.Choice(["pending", "delivered", "dead", "skipped"]),
              help="Only events with a conversion in this state (dead: what needs a replay).")
@click.option("--since", help="Only events received since: 30m, 24h, 7d, an ISO date/time (UTC) or epoch ms.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
@friendly
def events(ctx: click.Context, config_path: str | None, source: str | None, status: str | None,
           state: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """Recent events and what became of them (`events show ID` for one journey)."""
    if ctx.invoked_subcommand is not None:
        return
    from adapter.journal import list_events

    since_ms = _since(since)
    settings = load_settings(config_path)
    rows = _read(settings, lambda tx: list_events(tx, source=source, status=status, limit=limit, state=state,
                                                  since_ms=since_ms))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from adapter.render import events_table

    events_table(rows)


_ID = click.IntRange(1, (1 << 63) - 1)  # a BIGINT id: larger ones cannot exist


@events.command("show")
@click.argument("event_id", type=_ID)
@config_option
@click.option("--json", "as_json", is_flag=True)
@friendly
def events_show(event_id: int, config_path: str | None, as_json: bool) -> None:
    """One event's whole journey: receipt, conversions, every delivery attempt."""
    from adapter.destinations import build_destination
    from adapter.journal import journey

    settings = load_settings(config_path)
    destination = build_destination(settings)
    found = _read(settings, lambda tx: journey(tx, event_id, destination))
    if found is None:
        click.echo(f"no event {event_id}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    from adapter.render import journey_view

    journey_view(found)


@main.command()
@click.argument("ids", nargs=-1, type=_ID)
@click.option("--dead", is_flag=True, help="Replay every dead-lettered conversion (narrow with --source, --since).")
@click.option("--source", help="With --dead: only this source's.")
@click.option("--since", help="With --dead: only those dead-lettered since (30m, 24h, 7d, ISO date/time).")
@click.option("--wait", "wait_s", type=float, default=0, metavar="SECONDS",
              help="Follow the replayed conversions until delivered or dead again (a worker must be running).")
@config_option
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@friendly
def replay(ids: tuple[int, ...], dead: bool, source: str | None, since: str | None, wait_s: float,
           config_path: str | None, as_json: bool) -> None:
    """Send dead-lettered conversions again: `replay ID...` or `replay --dead [--source S] [--since T]`."""
    if bool(ids) == dead:
        raise click.UsageError("give conversion ids, or --dead (not both)")
    if (source or since) and not dead:
        raise click.UsageError("--source and --since go with --dead")
    from adapter.operate import replay as run_replay

    since_ms = _since(since)
    report = run_replay(load_settings(config_path), ids, source=source, since_ms=since_ms, wait_s=wait_s)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    moved = report.requeued
    click.echo(f"requeued {len(moved)} conversion(s)" + (f": {_ids(moved)}" if moved else ""))
    if report.not_dead:
        click.echo(f"left alone (not dead): {_ids(report.not_dead)}")
    if not wait_s:
        click.echo("a running `hooktrack serve` or `hooktrack worker` sends them now" if moved else "nothing to do")
        return
    click.echo(f"delivered: {len(report.delivered)}; dead again: {len(report.dead_again)}; "
               f"still pending: {len(report.still_pending)}")
    for conv_id, reason in report.dead_again.items():
        click.echo(f"  #{conv_id} dead again ({reason}): see `hooktrack events --state dead`")
    if report.dead_again or report.still_pending:
        sys.exit(1)


@main.command()
@click.argument("ids", nargs=-1, type=_ID)
@click.option("--malformed", is_flag=True, help="Every event kept as malformed_payload (narrow with --since).")
@click.option("--since", help="With --malformed: only those received since (30m, 24h, 7d, ISO date/time).")
@config_option
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@friendly
def reprocess(ids: tuple[int, ...], malformed: bool, since: str | None, config_path: str | None,
              as_json: bool) -> None:
    """Map stored events again with the installed providers (after an upgrade that fixed a
    mapping): `reprocess ID...` or `reprocess --malformed [--since T]`. What they produce is
    deduped like any delivery: a Sale already counted comes back `duplicate`."""
    if bool(ids) == malformed:
        raise click.UsageError("give event ids, or --malformed (not both)")
    if since and not malformed:
        raise click.UsageError("--since goes with --malformed")
    from adapter.operate import reprocess as run_reprocess

    report = run_reprocess(load_settings(config_path), ids, malformed=malformed, since_ms=_since(since))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    if not report.results:
        click.echo("nothing to do: no event kept as malformed_payload" + (" since then" if since else ""))
        return
    for event_id, result in report.results.items():
        made = ", ".join(f"{c['kind']} #{c['id']}" for c in result.get("conversions") or [])
        detail = result.get("reason") or result.get("message") or made
        new = f" as event #{result['eventId']}" if result.get("eventId") else ""
        click.echo(f"#{event_id}: {result['status']}{new}" + (f" ({_printable(detail)})" if detail else ""))
    counts = {s: report.count(s) for s in ("accepted", "duplicate", "ignored", "rejected", "skipped")}
    click.echo("; ".join(f"{s} {n}" for s, n in counts.items() if n))
    if counts["accepted"]:
        click.echo("a running `hooktrack serve` or `hooktrack worker` sends the new conversions")


@main.command()
@config_option
@click.option("--since", help="Count events received since: 30m, 24h, 7d, an ISO date/time (default: all).")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@friendly
def stats(config_path: str | None, since: str | None, as_json: bool) -> None:
    """Events per source and status, rejections, the outbox's depth, dead letters, oldest pending age."""
    from adapter.operate import read_stats

    found = read_stats(load_settings(config_path), _since(since))
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    from adapter.render import stats_view

    stats_view(found)


@main.command()
@click.option("--dir", "directory", default="hooktrack-demo", show_default=True,
              help="Where the demo writes its config and SQLite file (kept for `hooktrack events`).")
@click.option("--serve", is_flag=True, help="Keep hooktrack running afterwards for the admin page (Ctrl-C stops).")
@click.option("--port", default=8000, show_default=True, type=int, help="hooktrack's port with --serve.")
@friendly
def demo(directory: str, serve: bool, port: int) -> None:
    """Start hooktrack on SQLite with a local tracking receiver, send signed samples, show journeys."""
    from adapter.demo import run_demo

    run_demo(directory, serve=serve, port=port)


def _read(settings: Settings, fn: Callable[[Any], Any]) -> Any:
    from adapter.store import open_store

    async def run() -> Any:
        store = open_store(settings.store.url)
        await store.open()
        try:
            return await store.read(fn)
        finally:
            await store.close()

    return asyncio.run(run())


def _since(text: str | None) -> int | None:
    if not text:
        return None
    from adapter.ingest import now_ms
    from adapter.journal import parse_since

    try:
        since = parse_since(text, now_ms())
    except (ValueError, OverflowError) as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if abs(since) >= 1 << 63:
        raise click.BadParameter("out of range", param_hint="--since")
    return since


def _printable(text: str) -> str:
    """`text` with control characters shown as escapes (a message may quote a provider's field)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _ids(ids: list[int]) -> str:
    shown = ", ".join(f"#{i}" for i in ids[:20])
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections while serving: the objects made at startup are frozen
    out of every later collection, and a webhook's short-lived objects rarely form cycles, so a
    higher first-generation threshold only trims pauses (ack latency under load)."""
    import gc
    import os

    if os.environ.get("HOOKTRACK_GC_DEFAULTS"):
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
