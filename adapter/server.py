"""uvicorn, configured so that slow or idle clients cannot hold hooktrack's sockets or memory.

uvicorn closes an idle keep-alive connection, but nothing else: a client that opens a
connection and sends nothing, sends its headers a byte at a time, or stops half-way through
its body keeps the socket (and the body read so far) for as long as it likes, and a header of
any size is buffered whole. `GuardedProtocol` adds what a webhook endpoint needs on top of
uvicorn's httptools protocol, from `[server]`:

- `header_timeout_s`: a connection must deliver its request line and headers within this many
  seconds of opening (or of its first byte after a keep-alive pause); else 408 and close.
- `body_timeout_s`: the whole body must follow within this many seconds; else 408 and close
  (the application sees a disconnect, so nothing half-read is stored).
- `max_header_bytes`: a request line plus headers above this is refused with 431 at once,
  without buffering the rest.
- `max_connections`: at most this many connections are open. A new one over the cap evicts the
  oldest connection that is idle or still sending its headers (then one still sending its body);
  if every connection is being answered, the newcomer gets a 503. Memory held by request bodies
  is therefore at most `max_body_bytes` times `max_connections`.
- `keep_alive_s`: an idle keep-alive connection is closed after this long (uvicorn's own timer).

Every connection this closes is counted in `hooktrack_connections_closed{reason}`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import uvicorn
from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from adapter.metrics import REGISTRY
from adapter.settings import ServerSettings

__all__ = ["GuardedProtocol", "guarded_protocol", "uvicorn_config"]

log = logging.getLogger("hooktrack.server")

CLOSED = Counter("hooktrack_connections_closed", "Client connections hooktrack closed to protect itself, by "
                 "reason (header_timeout, body_timeout, header_too_large, evicted, over_capacity).", ["reason"],
                 registry=REGISTRY)

# What a connection is doing: waiting for (or reading) a request's headers, reading its body,
# waiting for the application's answer, or idle between keep-alive requests.
_HEAD, _BODY, _APP, _IDLE = "head", "body", "app", "idle"


def _answer(status: int, reason: str) -> bytes:
    text = f"{status} {reason}\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(text)}\r\nconnection: close\r\n\r\n").encode() + text


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body deadlines, a header size limit and a
    connection cap (see the module docstring). `limits` is set by `guarded_protocol`."""

    limits: ClassVar[ServerSettings] = ServerSettings()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._phase = _HEAD
        self._since = self.loop.time()
        self._head_bytes = 0
        self._seen_bytes = False
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            CLOSED.labels("over_capacity").inc()
            self._refuse(503, "Service Unavailable")
            return
        self._arm(self.limits.header_timeout_s, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == _IDLE:  # the next request on a kept-alive connection starts now
            self._enter(_HEAD)
            self._head_bytes = 0
            self._arm(self.limits.header_timeout_s, "header_timeout")
        self._seen_bytes = True
        reading_head = self._phase == _HEAD
        super().data_received(data)
        if reading_head and self._phase == _HEAD and not self.transport.is_closing():
            # Still inside the headers after this chunk: all of it was header bytes.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                CLOSED.labels("header_too_large").inc()
                self._refuse(431, "Request Header Fields Too Large")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._phase == _HEAD:
            self._enter(_BODY)
            self._arm(self.limits.body_timeout_s, "body_timeout")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            # Answered before its body ended (a 413): the connection is idle from here on.
            self._enter(_IDLE)
            self._arm(float(self.timeout_keep_alive), "keep_alive")
        else:
            self._enter(_APP)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase == _APP:
            self._enter(_IDLE)  # uvicorn's keep-alive timer runs from here

    def evictable(self) -> int:
        """0 if idle or in its headers, 1 if in its body, 2 if being answered (never evicted)."""
        return {_IDLE: 0, _HEAD: 0, _BODY: 1}.get(self._phase, 2)

    def evict(self) -> None:
        """Close this connection to make room for a new one (503 if it had started a request)."""
        CLOSED.labels("evicted").inc()
        if self._phase == _IDLE or not self._seen_bytes:
            self.transport.close()
        else:
            self._refuse(503, "Service Unavailable")

    # -- internals -------------------------------------------------------------------------

    def _enter(self, phase: str) -> None:
        self._phase = phase
        self._since = self.loop.time()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, reason: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if reason != "keep_alive":
            CLOSED.labels(reason).inc()
        if reason == "keep_alive" or not self._seen_bytes:
            self.transport.close()  # nothing was asked: nothing to answer
        else:
            self._refuse(408, "Request Timeout")

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` (unless a response already started) and close the connection.
        The application, if it is reading this request's body, sees a disconnect."""
        self._disarm()
        cycle = self.cycle
        started = cycle is not None and not cycle.response_complete and cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # its later send() is dropped; receive() says disconnect
            cycle.message_event.set()
        if not started and not self.transport.is_closing():
            self.transport.write(_answer(status, reason))
        self.transport.close()

    def _make_room(self) -> bool:
        """Evict the oldest idle-or-heading connection (else the oldest in its body) to stay at
        the cap; False if every other connection is being answered."""
        candidates = [c for c in self.connections if isinstance(c, GuardedProtocol) and c is not self
                      and c.evictable() < 2 and not c.transport.is_closing()]
        if not candidates:
            return False
        min(candidates, key=lambda c: (c.evictable(), c._since)).evict()
        return True


def guarded_protocol(limits: ServerSettings) -> type[GuardedProtocol]:
    """A `GuardedProtocol` class bound to `limits` (uvicorn instantiates it per connection)."""
    return type("HooktrackProtocol", (GuardedProtocol,), {"limits": limits})


def uvicorn_config(app: Any, limits: ServerSettings, host: str, port: int, **options: Any) -> uvicorn.Config:
    """The uvicorn `Config` `hooktrack serve` runs with: `GuardedProtocol` under `limits`."""
    return uvicorn.Config(
        app, host=host, port=port, http=guarded_protocol(limits), timeout_keep_alive=limits.keep_alive_s,
        backlog=max(2048, limits.max_connections), **options,
    )
