"""The Starlette application: webhooks in, health, readiness (SPEC §4)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.admin import admin_routes
from adapter.destinations import build_destination
from adapter.errors import StoreUnavailable
from adapter.forwarder import Forwarder
from adapter.ingest import Ingestor
from adapter.metrics import metrics_endpoint, observe_webhook
from adapter.plugin import Provider, Source, build_sources, load_providers
from adapter.retention import Retention
from adapter.settings import Settings
from adapter.store import Store, open_store

__all__ = ["create_app"]

log = logging.getLogger("hooktrack.app")


class _TooLarge(Exception):
    pass


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    settings: Settings,
    *,
    registry: Mapping[str, type[Provider]] | None = None,
    store: Store | None = None,
    worker: bool = True,
) -> Starlette:
    """Build the app. Raises `ConfigError` at once for unknown providers or missing secrets.

    With `worker=True` the lifespan also runs the forwarder in-process.
    """
    sources: dict[str, Source] = build_sources(settings, registry if registry is not None else load_providers())
    destination = build_destination(settings)
    the_store = store or open_store(settings.store.url, pool_size=settings.store.pool_size)
    forwarder = Forwarder(the_store, settings.tracking, settings.forwarder, destination) if worker else None
    ingestor = Ingestor(the_store, destination, on_commit=forwarder.wake if forwarder else None,
                        fill_window_s=settings.forwarder.fill_window_s,
                        attribution_window_s=settings.forwarder.attribution_window_s)
    limit = settings.server.max_body_bytes

    async def webhook(request: Request) -> Response:
        source = sources.get(request.path_params["source"])
        if source is None:
            return _error(404, "unknown_source", "no source is configured under this name")
        try:
            body = await _read_body(request, limit)
        except _TooLarge:
            return _error(413, "body_too_large", f"body exceeds server.max_body_bytes ({limit})")
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            outcome = await ingestor.receive(source, body, request.headers, request.query_params)
        except StoreUnavailable as exc:
            log.error("store unavailable: %s", exc, extra={"source": source.name})
            observe_webhook(source.name, "unavailable")
            return _error(503, "store_unavailable", "the store cannot commit right now; retry later")
        for each in outcome.events if outcome.events is not None else [outcome]:  # one per event
            observe_webhook(source.name, each.status, each.reason, each.conversions)
        answer = outcome.body()
        own = source.provider.answer(answer) if outcome.http_status == 200 else None
        return own if own is not None else JSONResponse(answer, status_code=outcome.http_status)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.wait_for(the_store.ping(), timeout=5)
        except (StoreUnavailable, TimeoutError) as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc) or "timeout"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await the_store.open()
        retention = Retention(the_store, settings.store.retention_days).start()
        task = asyncio.create_task(forwarder.run(), name="forwarder") if forwarder else None
        try:
            yield {}
        finally:
            if forwarder and task:
                forwarder.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=10)
            await retention.stop()
            await the_store.close()
            for src in sources.values():  # a provider's HTTP client (Recurly's API lookups)
                try:
                    src.provider.close()
                except Exception:  # shutting down: one provider's failure must not stop the rest
                    log.exception("closing provider %s failed", src.ctx.provider)

    app = Starlette(
        routes=[
            Route("/webhooks/{source}", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint(the_store, sources, destination.name), methods=["GET"]),
            *admin_routes(settings.admin.token, the_store, {n: s.ctx.provider for n, s in sources.items()},
                          forwarder.wake if forwarder else None, destination),
        ],
        lifespan=lifespan,
    )
    app.state.store = the_store
    app.state.sources = sources
    app.state.forwarder = forwarder
    app.state.settings = settings
    app.state.destination = destination
    return app
