"""A local stand-in for the conversion-tracking API, for `hooktrack demo` and tests.

It accepts `POST /track/lead` and `POST /track/sale`, checks the bearer key and the body's
required fields, records every request, and can be scripted to answer with failures
(`script`) to show retries and dead letters. It never leaves loopback.
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

__all__ = ["Received", "TrackingReceiver", "free_port", "run_in_thread"]


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    kind: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    status: int


@dataclass
class TrackingReceiver:
    """The fake tracking API. `script` is a queue of (status, headers) answers used first;
    `respond` may pick an answer per request (return None for the default 200)."""

    api_key: str = "test_key"
    requests: list[Received] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    respond: Callable[[str, dict[str, Any]], tuple[int, dict[str, str]] | None] | None = None
    delay_s: float = 0.0

    def app(self) -> Starlette:
        async def track(request: Request) -> Response:
            kind = request.path_params["kind"]
            raw = await request.body()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            try:
                body = json.loads(raw)
            except ValueError:
                return self._answer(kind, {}, request, 400, {}, {"error": "invalid JSON"})
            status: int = 200
            headers: dict[str, str] = {}
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                status = 401
            elif self.script:
                status, headers = self.script.popleft()
            elif self.respond is not None:
                status, headers = self.respond(kind, body) or (200, {})
            return self._answer(kind, body, request, status, headers, None)

        return Starlette(routes=[Route("/track/{kind:str}", track, methods=["POST"])])

    def _answer(self, kind: str, body: dict[str, Any], request: Request, status: int,
                headers: dict[str, str], error: dict[str, str] | None) -> Response:
        self.requests.append(Received(kind, body, dict(request.headers), time.time(), status))
        content: dict[str, Any] = error or ({"ok": True} if status < 300 else {"error": f"scripted {status}"})
        return JSONResponse(content, status_code=status, headers=headers)

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def by_key(self) -> dict[str, list[Received]]:
        """2xx-answered requests grouped by `Idempotency-Key`."""
        out: dict[str, list[Received]] = {}
        for r in self.delivered():
            out.setdefault(r.headers.get("idempotency-key", ""), []).append(r)
        return out


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
