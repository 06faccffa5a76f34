"""The operator API under `/admin/api/...` and the web page at `/admin/` (SPEC §4).

Disabled unless `admin.token` is set: without it no `/admin` route exists, so every `/admin`
path answers 404. With it, every `/admin/api/...` request needs `Authorization: Bearer TOKEN`
(compared in constant time; 401 otherwise). The page and its static files hold no data and are
served without the token: the page asks for it, keeps it in `sessionStorage` and sends it as a
bearer header with each API call. No cookie is involved, so the API cannot be driven by another
site's forms (no CSRF), and the token is forgotten when the tab closes.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapter.destinations import Destination
from adapter.ingest import now_ms
from adapter.journal import (
    EVENT_STATUSES,
    MAX_LIMIT,
    STATES,
    dead_conversion_ids,
    journey,
    list_events,
    parse_since,
    requeue,
)
from adapter.openapi import OPENAPI
from adapter.stats import hourly, stats
from adapter.store import Store

__all__ = ["admin_routes"]

log = logging.getLogger("hooktrack.admin")
HERE = Path(__file__).parent
MAX_REPLAY_IDS = 10_000
PAGE_HEADERS = {
    # The page's script reads the token: allow scripts from this origin only, nothing inline.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_ID = (1 << 63) - 1  # BIGINT: a larger id cannot exist (and would overflow the driver)


class BadParameter(ValueError):
    """A query parameter or body field the API cannot use (→ 400 invalid_parameter)."""


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class BearerGuard:
    """ASGI wrapper: passes a request on only if it carries `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            log.warning("admin: request without a valid token refused",
                        extra={"path": scope.get("path"), "client": (scope.get("client") or ("?",))[0]})
            response = _error(401, "unauthorized", "send Authorization: Bearer <admin.token>",
                              {"WWW-Authenticate": 'Bearer realm="hooktrack admin"', "Cache-Control": "no-store"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        scheme, _, given = header.partition(b" ")
        # compare_digest on equal-type bytes: the time does not depend on where they differ.
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)


def _query(request: Request) -> dict[str, Any]:
    q = request.query_params
    now = now_ms()
    out: dict[str, Any] = {"source": q.get("source") or None}
    status, state = q.get("status") or None, q.get("state") or None
    if status is not None and status not in EVENT_STATUSES:
        raise BadParameter(f"status must be one of {', '.join(EVENT_STATUSES)}")
    if state is not None and state not in STATES:
        raise BadParameter(f"state must be one of {', '.join(STATES)}")
    out.update(status=status, state=state)
    out["since_ms"] = _since(q.get("since"), now)
    out["limit"] = _int(q.get("limit"), "limit", 50, 1, MAX_LIMIT)
    out["before_id"] = _int(q.get("before"), "before", None, 1, None)
    return out


def _since(raw: Any, now: int) -> int | None:
    if raw in (None, ""):
        return None
    try:
        since = parse_since(str(raw), now)
    except (ValueError, OverflowError) as exc:
        raise BadParameter(str(exc)) from None
    if not -MAX_ID <= since <= MAX_ID:
        raise BadParameter("since is out of range")
    return since


def _int(raw: str | None, name: str, default: int | None, low: int, high: int | None) -> Any:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(f"{name} must be an integer") from None
    if value < low or value > (MAX_ID if high is None else high):
        raise BadParameter(f"{name} must be between {low} and {high or MAX_ID}")
    return value


def _replay_targets(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadParameter('send {"ids": [conversion ids]} or {"dead": true, "source"?: ..., "since"?: ...}')
    ids = body.get("ids")
    if ids is not None:
        if (not isinstance(ids, list) or not ids or len(ids) > MAX_REPLAY_IDS
                or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ID for i in ids)):
            raise BadParameter(f"ids must be a list of 1 to {MAX_REPLAY_IDS} conversion ids (integers)")
        return {"ids": ids}
    if body.get("dead") is not True:
        raise BadParameter('send {"ids": [...]} or {"dead": true}')
    source, since = body.get("source"), body.get("since")
    if source is not None and not isinstance(source, str):
        raise BadParameter("source must be a string")
    if since is not None and not isinstance(since, str | int):
        raise BadParameter("since must be a duration (24h), an ISO time or epoch ms")
    return {"source": source or None, "since_ms": _since(since, now_ms())}


def _api(store: Store, sources: dict[str, str], wake: Callable[[], None] | None,
         destination: Destination | None) -> list[BaseRoute]:
    async def events(request: Request) -> Response:
        q = _query(request)
        rows = await store.read(lambda tx: list_events(tx, **q))
        return JSONResponse({"events": rows})

    async def event(request: Request) -> Response:
        event_id = request.path_params["event_id"]
        if event_id > MAX_ID:
            return _error(404, "not_found", "no event with this id")
        found = await store.read(lambda tx: journey(tx, event_id, destination))
        if found is None:
            return _error(404, "not_found", "no event with this id")
        return JSONResponse(found)

    async def replay(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise BadParameter("the body must be JSON") from None
        target = _replay_targets(body)

        def run(tx: Any) -> tuple[list[int], list[int]]:
            ids = target.get("ids") or dead_conversion_ids(tx, source=target.get("source"),
                                                           since_ms=target.get("since_ms"))
            moved = requeue(tx, ids, now_ms())
            done = set(moved)
            return moved, [i for i in ids if i not in done]

        moved, left = await store.transact(run)
        log.info("admin replay", extra={"conversion_ids": moved, "not_dead": left or None})
        if moved and wake is not None:
            wake()
        return JSONResponse({"requeued": moved, "not_dead": left})

    async def stats_view(request: Request) -> Response:
        now = now_ms()
        since_ms = _since(request.query_params.get("since"), now)
        found = await store.read(lambda tx: stats(tx, now, since_ms))
        found["configured_sources"] = sources
        return JSONResponse(found)

    async def hourly_view(request: Request) -> Response:
        hours = _int(request.query_params.get("hours"), "hours", 24, 1, 24 * 14)
        source = request.query_params.get("source") or None
        rows = await store.read(lambda tx: hourly(tx, now_ms(), hours, source))
        return JSONResponse({"hours": rows})

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    return [
        Route("/events", events, methods=["GET"]),
        Route("/events/{event_id:int}", event, methods=["GET"]),
        Route("/replay", replay, methods=["POST"]),
        Route("/stats", stats_view, methods=["GET"]),
        Route("/stats/hourly", hourly_view, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


class _Api:
    """The API router, turning a `BadParameter` into a 400 answer. Every answer says
    `Cache-Control: no-store`, so neither a browser nor a proxy keeps the event log, payloads
    or customer emails on disk."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.router = Router(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        try:
            await self.router(scope, receive, send_no_store)
        except BadParameter as exc:  # raised by a handler before it started a response
            await _error(400, "invalid_parameter", str(exc))(scope, receive, send_no_store)


def admin_routes(token: str | None, store: Store, sources: dict[str, str],
                 wake: Callable[[], None] | None = None, destination: Destination | None = None) -> list[BaseRoute]:
    """The `/admin` routes, or none when `token` is unset (every /admin path is then a 404).

    `sources` maps configured source names to providers (for the page's filters); `wake` is the
    in-process forwarder's, called after a replay so it sends at once.
    """
    if not token:
        return []
    templates = Jinja2Templates(directory=HERE / "templates")

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "admin.html", {"version": _version()}, headers=PAGE_HEADERS)

    async def to_page(request: Request) -> Response:
        return RedirectResponse("/admin/", status_code=308)

    return [
        Route("/admin", to_page, methods=["GET"]),
        Mount("/admin", routes=[
            Route("/", page, methods=["GET"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
            Mount("/api", app=BearerGuard(_Api(_api(store, sources, wake, destination)), token)),
        ]),
    ]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hooktrack")
    except PackageNotFoundError:
        return "dev"
