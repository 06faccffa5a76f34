"""A local stand-in for Dub's conversion-tracking API, for `hooktrack demo` and tests.

It serves `POST /track/lead`, `POST /track/sale`, `GET /commissions` and
`PATCH /commissions/{id}` on loopback as strictly as the real API (adapter.dubsim: Dub's
schemas, dedup, attribution and commissions; docs/dub-api.md cites the sources), in front of
Dub's request handling (apps/web/lib/auth/workspace.ts): bearer key, personal keys, plan, and an
Upstash-style sliding-window rate limit with Dub's headers. It records every request it got
(`requests`) apart from what the API *counted* (`counted_leads()`, `counted_sales()`).

Fault injection stays: `script` (a queue of (status, headers) used first) and `respond` (a
function of (kind, body) that may pick an answer, None for the real one). A scripted non-2xx
answer is that error and changes nothing; a scripted 2xx answer is the real answer with the
script's headers on top. Scripts apply after authentication, rate limit and JSON parsing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.dubsim import Commission, DubError, DubModel, Lead, Sale, Workspace
from adapter.dubsim.schemas import MAX_SAFE_INT, STATUS

__all__ = ["Received", "TrackingReceiver", "free_port", "run_in_thread"]

WORKSPACE_ID_NOT_FOUND = (
    "Workspace ID not found. Did you forget to include a `workspaceId` query parameter? It looks like you might be "
    "using personal API keys, we also recommend refactoring to workspace API keys: https://d.to/keys")
_CODE_FOR_STATUS = {status: code for code, status in reversed(STATUS.items())}


@dataclass(frozen=True)
class Received:
    """One request the receiver got. `kind`: lead, sale, commissions (GET) or commission (PATCH)."""

    kind: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    status: int



@dataclass
class TrackingReceiver(DubModel):
    """The stand-in API. Keys: `api_key` and each of `workspace_keys` name a workspace of their own;
    `personal_keys` are answered 404 "Workspace ID not found" (not workspace keys);
    `forbidden_keys` are workspaces whose plan has no conversion tracking (403). Any other key
    is 401. `rate_limit` requests per `window_s` per key, or None (the default) for no limit:
    the real default is 600 a minute, which would make the suites and benchmarks that send
    thousands of conversions wait minutes; tests of pacing set it. `delay_s` delays each answer.
    The settings of the API itself (clicks, lead visibility, program, commissions) are
    `DubModel`'s."""

    api_key: str = "test_key"
    requests: list[Received] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    respond: Callable[[str, dict[str, Any]], tuple[int, dict[str, str]] | None] | None = None
    delay_s: float = 0.0
    workspace_keys: set[str] = field(default_factory=set)
    personal_keys: set[str] = field(default_factory=set)
    forbidden_keys: set[str] = field(default_factory=set)
    rate_limit: int | None = None
    window_s: float = 60.0
    _windows: dict[str, dict[int, int]] = field(default_factory=dict, repr=False)

    def app(self) -> Starlette:
        def route(path: str, kind: str, method: str, handler: Callable[[Workspace, Any, Request], Any]) -> Route:
            async def endpoint(request: Request) -> Response:
                return await self._handle(request, kind, handler)
            return Route(path, endpoint, methods=[method])

        return Starlette(routes=[
            route("/track/lead", "lead", "POST", lambda ws, body, _: self.track_lead(ws, body)),
            route("/track/sale", "sale", "POST", lambda ws, body, _: self.track_sale(ws, body)),
            route("/commissions", "commissions", "GET", lambda ws, query, _: self.list_commissions(ws, query)),
            route("/commissions/{commission_id:str}", "commission", "PATCH",
                  lambda ws, body, req: self.update_commission(ws, req.path_params["commission_id"], body)),
        ])

    async def _handle(self, request: Request, kind: str, handler: Callable[[Workspace, Any, Request], Any]) -> Response:
        raw = await request.body()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        headers: dict[str, str] = {}
        body: Any = dict(request.query_params) if request.method == "GET" else {}
        try:
            key = self._authenticate(request.headers.get("authorization"))
            allowed, headers = self._limit(key)
            if not allowed:
                raise DubError("rate_limit_exceeded", "Too many requests.")
            if key in self.forbidden_keys:
                raise DubError("forbidden", "Unauthorized: Need higher plan.")
            if request.method != "GET":
                body = _parse_json(raw)
            scripted = self._scripted(kind, body if isinstance(body, dict) else {})
            if scripted is not None:
                headers.update(scripted[1])
                if not 200 <= scripted[0] < 300:
                    raise _Scripted(scripted[0])
            content, status = handler(self.workspace(key), body, request), 200
        except _Scripted as e:
            content, status = DubError(_CODE_FOR_STATUS.get(e.status, "internal_server_error"),
                                       f"scripted {e.status}").body(), e.status
        except DubError as e:
            content, status = e.body(), e.status
        recorded = body if isinstance(body, dict) else {}
        self.requests.append(Received(kind, recorded, dict(request.headers), time.time(), status))
        return JSONResponse(content, status_code=status, headers=headers)

    def _authenticate(self, header: str | None) -> str:
        """withWorkspace: the bearer key → the workspace it names."""
        if header is None:
            raise DubError("unauthorized", "Missing Authorization header.")
        if "Bearer " not in header:
            raise DubError("bad_request", "Misconfigured authorization header. Did you forget to add 'Bearer '? "
                                          "Learn more: https://d.to/auth")
        key = header.replace("Bearer ", "", 1)
        if key in self.personal_keys:
            raise DubError("not_found", WORKSPACE_ID_NOT_FOUND)
        if key != self.api_key and key not in self.workspace_keys and key not in self.forbidden_keys:
            raise DubError("unauthorized", "Unauthorized: Invalid API key.")
        return key

    def _limit(self, key: str) -> tuple[bool, dict[str, str]]:
        """Upstash `Ratelimit.slidingWindow(limit, window)`: the previous window's count weighted by
        how much of it still overlaps, plus this window's. Dub sends `reset` (Unix ms) as both
        `X-RateLimit-Reset` and `Retry-After`, on every answer to a key it knows."""
        if self.rate_limit is None:
            return True, {}
        window = int(self.window_s * 1000)
        now = int(self.clock() * 1000)
        current = now // window
        counts = self._windows.setdefault(key, {})
        for old in [w for w in counts if w < current - 1]:
            del counts[old]
        previous = int((1 - (now % window) / window) * counts.get(current - 1, 0))
        used = previous + counts.get(current, 0)
        allowed = used < self.rate_limit
        if allowed:
            counts[current] = counts.get(current, 0) + 1
        reset = str((current + 1) * window)
        remaining = max(0, self.rate_limit - used - 1) if allowed else 0
        return allowed, {"Retry-After": reset, "X-RateLimit-Limit": str(self.rate_limit),
                         "X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": reset}

    def _scripted(self, kind: str, body: dict[str, Any]) -> tuple[int, dict[str, str]] | None:
        if self.script:
            return self.script.popleft()
        return self.respond(kind, body) if self.respond is not None else None

    def counted_leads(self, key: str | None = None) -> list[Lead]:
        """The lead events the API recorded for the workspace of `key` (default `api_key`)."""
        return list(self.workspace(key or self.api_key).leads)

    def counted_sales(self, key: str | None = None) -> list[Sale]:
        """The sale events the API recorded (not duplicates, not `sale: null` answers)."""
        return list(self.workspace(key or self.api_key).sales)

    def commissions(self, key: str | None = None) -> list[Commission]:
        """Every commission of the workspace, also those not yet listed (see `commission_delay_s`);
        a test may change one's `status` (e.g. to "paid") to play the program owner."""
        return list(self.workspace(key or self.api_key).commissions)

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def by_key(self) -> dict[str, list[Received]]:
        """2xx-answered requests grouped by `Idempotency-Key`."""
        out: dict[str, list[Received]] = {}
        for r in self.delivered():
            out.setdefault(r.headers.get("idempotency-key", ""), []).append(r)
        return out


class _Scripted(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _js_number(text: str) -> int | float:
    """JSON.parse reads every number as a double: integers beyond 2**53 lose their exactness."""
    value = int(text)
    return value if abs(value) <= MAX_SAFE_INT else float(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_json(raw: bytes) -> Any:
    """parseRequestBody (apps/web/lib/api/utils.ts): `await req.json()` or 400."""
    try:
        return json.loads(raw.decode("utf-8-sig", "replace"), parse_int=_js_number,
                          parse_constant=_reject_constant)
    except ValueError:
        raise DubError("bad_request", "Invalid JSON format in request body. Please ensure the request body is a "
                                      "valid JSON object.") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class run_in_thread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread.

    `with run_in_thread(app) as url: ...` yields the base URL and stops the server on exit.
    """

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
