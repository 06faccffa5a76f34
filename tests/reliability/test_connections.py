"""Slow, idle and oversized clients against a real `hooktrack serve` (a subprocess on loopback).

An attacker's cheapest weapon is a connection that never finishes: it holds a socket (and,
half-way through a body, memory) until the server lets go. These tests open many of them and
check that hooktrack lets go within its `[server]` deadlines, refuses an oversized header at
once, stays under its connection cap, and keeps accepting genuine signed webhooks meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from adapter.receiver import TrackingReceiver, free_port
from tests.conftest import STRIPE_SECRET, fixture, wait_for
from tests.store.procs import serve, stop

pytestmark = pytest.mark.slow


@dataclass
class Hooktrack:
    url: str
    port: int
    pid: int

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@contextmanager
def _start(tmp_path: Path, tracking_url: str, **server: Any) -> Iterator[Hooktrack]:
    lines = ["[server]", *(f"{k} = {json.dumps(v)}" for k, v in server.items()),
             f'[store]\nurl = "sqlite:///{tmp_path / "hooktrack.db"}"',
             f'[tracking]\nurl = "{tracking_url}"\napi_key = "test_key"\ntimeout_s = 5',
             "[forwarder]\nbase_delay_s = 0.05\nmax_delay_s = 0.5\npoll_interval_s = 0.05\nfill_window_s = 0",
             f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]']
    config = tmp_path / "hooktrack.toml"
    config.write_text("\n".join(lines) + "\n")
    port = free_port()
    proc = serve(config, port, tmp_path / "serve.log", worker=True)
    try:
        yield Hooktrack(f"http://127.0.0.1:{port}", port, proc.pid)
    finally:
        stop(proc)


@pytest.fixture(autouse=True)
def _enough_file_descriptors() -> None:
    """Room for a thousand client sockets here and in the server (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _event(n: str) -> bytes:
    event = fixture("stripe", "checkout.session.completed")
    event["id"] = f"evt_conn_{n}"
    event["data"]["object"]["payment_intent"] = f"pi_conn_{n}"
    return json.dumps(event).encode()


def _genuine(hooktrack: Hooktrack, n: str) -> httpx.Response:
    """One signed webhook on a fresh connection, as a provider sends it."""
    body = _event(n)
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_SECRET)
    return httpx.post(f"{hooktrack.url}/webhooks/stripe", content=body, timeout=10,
                      headers={"Stripe-Signature": header, "Content-Type": "application/json"})


HEAD = b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def _connect(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    if first:
        sock.send(first)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Read what is there; True once the server has closed (EOF or reset)."""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


@pytest.fixture
def hooktrack(tmp_path: Path, receiver: TrackingReceiver) -> Iterator[Hooktrack]:
    # The defaults for every deadline; the cap above the thousand connections, so that the
    # deadlines (not evictions) are what closes them.
    with _start(tmp_path, receiver.url, max_connections=2000) as running:  # type: ignore[attr-defined]
        yield running


def test_a_thousand_idle_or_half_sent_connections_close_within_35_s_while_webhooks_pass(
        hooktrack: Hooktrack, receiver: TrackingReceiver) -> None:
    body = b'{"id": "evt_half", "object": "event", "pad": "' + b"x" * 4000
    kinds = {
        "idle": b"",  # connects and says nothing
        "half_head": HEAD,  # headers started, never finished
        "trickled_head": b"P",  # headers a byte at a time (below)
        "half_body": HEAD + b"Stripe-Signature: t=1,v1=00\r\nContent-Length: 900000\r\n\r\n" + body,
    }
    opened = time.monotonic()
    socks: dict[socket.socket, str] = {}
    for i in range(1000):
        kind = list(kinds)[i % 4]
        socks[_connect(hooktrack.port, kinds[kind])] = kind
    trickle = [s for s, k in socks.items() if k == "trickled_head"]
    rest = HEAD[1:]
    open_socks = set(socks)
    answers: list[tuple[int, str]] = []
    n, sent = 0, 0
    while open_socks and time.monotonic() - opened < 40:
        elapsed = time.monotonic() - opened
        if sent < min(int(elapsed), len(rest)):  # one more header byte a second from each trickler
            for sock in trickle:
                if sock in open_socks:
                    with contextlib.suppress(OSError):
                        sock.send(rest[sent:sent + 1])
            sent += 1
        if n < 30 and elapsed > n * 0.5:  # a genuine webhook every half second, 15 s long
            r = _genuine(hooktrack, f"beside_{n}")
            answers.append((r.status_code, r.json().get("status", "")))
            n += 1
        with selectors.DefaultSelector() as sel:
            for sock in open_socks:
                sel.register(sock, selectors.EVENT_READ)
            for key, _ in sel.select(timeout=0.2):
                if _closed_by_server(key.fileobj):  # type: ignore[arg-type]
                    open_socks.discard(key.fileobj)  # type: ignore[arg-type]
    took = time.monotonic() - opened
    left = sorted({socks[s] for s in open_socks})
    for sock in socks:
        sock.close()
    assert not open_socks, f"{len(open_socks)} connections still open after {took:.0f} s: {left}"
    assert took < 35, f"the last slow connection was closed after {took:.1f} s"
    assert answers == [(200, "accepted")] * 30, answers
    wait_for(lambda: len(receiver.delivered()) == 30, timeout=15)
    with httpx.Client() as http:
        assert http.get(f"{hooktrack.url}/healthz").status_code == 200
        metrics = http.get(f"{hooktrack.url}/metrics").text
    assert 'hooktrack_connections_closed_total{reason="header_timeout"}' in metrics
    assert 'hooktrack_connections_closed_total{reason="body_timeout"} 250.0' in metrics


def test_a_256_kb_header_is_refused_at_once(hooktrack: Hooktrack) -> None:
    sock = socket.create_connection(("127.0.0.1", hooktrack.port), timeout=5)
    started = time.monotonic()
    with sock:
        # Refused before we finished sending, perhaps: what matters is what it answered.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(HEAD + b"Stripe-Signature: t=1,v1=" + b"0" * 256 * 1024 + b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert time.monotonic() - started < 1
    assert _genuine(hooktrack, "after_big_header").json()["status"] == "accepted"


def test_over_the_connection_cap_idle_ones_make_way_for_webhooks(tmp_path: Path,
                                                                 receiver: TrackingReceiver) -> None:
    """With `max_connections = 50`, 300 idle connections never hold more than the cap, and
    every genuine webhook is answered at once."""
    with _start(tmp_path, receiver.url, max_connections=50) as hooktrack:  # type: ignore[attr-defined]
        baseline = hooktrack.open_fds()
        socks = [_connect(hooktrack.port, HEAD if i % 2 else b"") for i in range(300)]
        try:
            time.sleep(0.5)
            assert hooktrack.open_fds() - baseline <= 50 + 5
            for i in range(10):
                started = time.monotonic()
                r = _genuine(hooktrack, f"capped_{i}")
                assert r.status_code == 200 and r.json()["status"] == "accepted"
                assert time.monotonic() - started < 2
            still_open = sum(1 for s in socks if not _closed_by_server(s))
            assert still_open <= 50
        finally:
            for sock in socks:
                sock.close()
        wait_for(lambda: len(receiver.delivered()) == 10, timeout=15)


def test_idle_keep_alive_connections_are_closed(tmp_path: Path, receiver: TrackingReceiver) -> None:
    with (_start(tmp_path, receiver.url, keep_alive_s=1) as hooktrack,  # type: ignore[attr-defined]
          socket.create_connection(("127.0.0.1", hooktrack.port), timeout=5) as sock):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        started = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and 0.8 < time.monotonic() - started < 3


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_unfinished_bodies_hold_at_most_max_body_bytes_times_the_cap(tmp_path: Path,
                                                                      receiver: TrackingReceiver) -> None:
    """300 clients each send 900 KB of a 1 MB body and stop (the issue: +306 MB of RSS). With
    `max_connections = 30` the server holds at most 30 such bodies."""
    with _start(tmp_path, receiver.url, max_connections=30) as hooktrack:  # type: ignore[attr-defined]
        assert _genuine(hooktrack, "warm").json()["status"] == "accepted"
        before = _rss_mb(hooktrack.pid)
        head = HEAD + b"Stripe-Signature: t=1,v1=00\r\nContent-Length: 1000000\r\n\r\n"
        socks: list[socket.socket] = []
        try:
            for _ in range(300):
                sock = socket.create_connection(("127.0.0.1", hooktrack.port))
                with contextlib.suppress(OSError):
                    sock.sendall(head + b"x" * 900_000)
                socks.append(sock)
            time.sleep(1)
            grown = _rss_mb(hooktrack.pid) - before
            assert _genuine(hooktrack, "beside_bodies").json()["status"] == "accepted"
        finally:
            for sock in socks:
                sock.close()
    assert grown < 30 * 1.0 * 2 + 20, f"RSS grew by {grown:.0f} MB"
