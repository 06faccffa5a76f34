"""Hostile HTTP against a real uvicorn server: huge, truncated and chunked bodies, header
injection, duplicated signature headers, slow and stalled clients.

These exercise the HTTP layer, which is the same for every provider, through a Stripe source.
The answer is a 4xx (or the parser closing the connection), never a 5xx; nothing unverified is
stored or forwarded; the server keeps answering everyone else while slow clients trickle in.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import stripe

from adapter.app import create_app
from adapter.plugin import load_providers
from adapter.receiver import TrackingReceiver, run_in_thread
from tests.conftest import STRIPE_SECRET, config, fixture, wait_for

MAX_BODY = 64 * 1024
FORGED = "t=1700000000,v1=" + "0" * 64


@dataclass
class Server:
    url: str
    port: int
    db: Path

    def events(self, where: str = "1 = 1") -> int:
        with sqlite3.connect(self.db) as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM events WHERE {where}").fetchone()[0])


@pytest.fixture
def server(tmp_path: Path, receiver: TrackingReceiver) -> Iterator[Server]:
    settings = config(tmp_path, receiver.url, server={"max_body_bytes": MAX_BODY})  # type: ignore[attr-defined]
    with run_in_thread(create_app(settings, registry=load_providers())) as url:
        yield Server(url, int(url.rsplit(":", 1)[1]), tmp_path / "hooktrack.db")


def _event(n: str) -> bytes:
    event = fixture("stripe", "checkout.session.completed")
    event["id"] = f"evt_hostile_{n}"
    event["data"]["object"]["payment_intent"] = f"pi_hostile_{n}"
    return json.dumps(event, separators=(",", ":")).encode()


def _signature(body: bytes) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_SECRET))


def _head(lines: list[bytes], length: int | None) -> bytes:
    head = [b"POST /webhooks/stripe HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/json", *lines]
    if length is not None:
        head.append(b"Content-Length: %d" % length)
    return b"\r\n".join(head) + b"\r\n\r\n"


def _read_status(sock: socket.socket) -> tuple[int | None, bytes]:
    """The response's status and body, or (None, b"") if the server closed without one."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None, b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except (ConnectionResetError, TimeoutError):
        return None, b""
    return int(head.split(b" ")[1]), rest


def _exchange(port: int, head: bytes, body: bytes = b"", *, byte_pause: float | None = None,
              half_close: bool = False) -> tuple[int | None, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(head)
            if byte_pause is None:
                sock.sendall(body)
            else:
                for i in range(len(body)):
                    sock.sendall(body[i:i + 1])
                    time.sleep(byte_pause)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (413) and closed: read what it said
        return _read_status(sock)


def _healthy(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_body_over_max_body_bytes_is_413_declared_or_chunked(server: Server, receiver: TrackingReceiver) -> None:
    big = b'{"id": "evt_big", "pad": "' + b"x" * MAX_BODY + b'"}'
    r = httpx.post(f"{server.url}/webhooks/stripe", content=big, headers={"Stripe-Signature": _signature(big)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    chunked = b"".join(b"%x\r\n%s\r\n" % (4096, big[i:i + 4096].ljust(4096, b" "))
                       for i in range(0, len(big), 4096)) + b"0\r\n\r\n"
    head = _head([b"Stripe-Signature: " + _signature(big).encode(), b"Transfer-Encoding: chunked"], None)
    status, _ = _exchange(server.port, head, chunked)
    assert status == 413
    _healthy(server)
    assert server.events() == 0 and receiver.requests == []


def test_truncated_body_and_disconnect_leave_nothing(server: Server, receiver: TrackingReceiver) -> None:
    body = _event("truncated")
    head = _head([b"Stripe-Signature: " + _signature(body).encode()], len(body))
    status, _ = _exchange(server.port, head, body[: len(body) // 2], half_close=True)
    assert status is None or 400 <= status < 500
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # vanishes mid-body
        sock.sendall(head + body[:100])
    _healthy(server)
    time.sleep(0.3)
    assert server.events() == 0 and receiver.requests == []


@pytest.mark.parametrize("lines", [
    [b"Stripe-Signature: " + FORGED.encode() + b"\rX-Injected: 1"],
    [b"Stripe-Signature: " + FORGED.encode() + b"\nX-Injected: 1"],
    [b"Stripe-Signature: t=1700000000,\x00v1=" + b"0" * 64],
    [b"Stripe-Signature: t=1700000000,", b" v1=" + b"0" * 64],  # obsolete line folding
    [b"Stripe-Signature : " + FORGED.encode()],
    [b"Stripe-Signature: " + FORGED.encode(), b"Content-Length: 3"],  # conflicting lengths
    [b"Stripe-Signature: " + FORGED.encode(), b"X-\xff\xfe: \xff"],
    [b"Stripe-Signature: t=1700000000,v1=\xff\xfe" + b"0" * 62],  # obs-text: reaches verify
], ids=["bare-cr", "bare-lf", "nul", "obs-fold", "space-before-colon", "two-lengths", "non-ascii-name",
        "non-ascii-value"])
def test_header_injection_is_refused(server: Server, receiver: TrackingReceiver, lines: list[bytes]) -> None:
    body = _event("injected")
    status, answer = _exchange(server.port, _head(lines, len(body)), body)
    assert status is None or 400 <= status < 500, (status, answer)
    _healthy(server)
    time.sleep(0.2)
    assert server.events("body IS NOT NULL") == 0 and receiver.requests == []


def test_duplicated_signature_headers(server: Server, receiver: TrackingReceiver) -> None:
    """Two forged signature headers are refused; a genuine one next to a forged one may be
    taken or refused, but never answered with a 5xx, and never counted twice."""
    answers: dict[str, int | None] = {}
    for order in ("forged-forged", "genuine-forged", "forged-genuine"):
        body = _event(order)
        values = {"forged": FORGED, "genuine": _signature(body)}
        lines = [b"Stripe-Signature: " + values[v].encode() for v in order.split("-")]
        answers[order], text = _exchange(server.port, _head(lines, len(body)), body)
        assert answers[order] in (200, 400), (order, answers[order], text)
    assert answers["forged-forged"] == 400
    _healthy(server)
    accepted = sum(1 for status in answers.values() if status == 200)
    wait_for(lambda: len(receiver.delivered()) == accepted, timeout=5)
    time.sleep(0.3)
    assert server.events("body IS NOT NULL") == accepted
    assert len(receiver.requests) == accepted


@pytest.mark.slow
def test_slow_clients_are_served_and_do_not_hold_up_others(server: Server, receiver: TrackingReceiver) -> None:
    """Five clients trickle their requests in one byte at a time (one of them its headers
    too); meanwhile /healthz and an ordinary webhook are answered at once."""
    results: dict[str, tuple[int | None, bytes]] = {}

    def trickle(name: str, signature: str, slow_head: bool = False) -> None:
        body = _event(name)
        head = _head([b"Stripe-Signature: " + signature.encode()], len(body))
        if slow_head:
            results[name] = _exchange(server.port, b"", head + body, byte_pause=0.0005)
        else:
            results[name] = _exchange(server.port, head, body, byte_pause=0.0005)

    threads = [threading.Thread(target=trickle, args=("slow_genuine", _signature(_event("slow_genuine"))))]
    threads.append(threading.Thread(target=trickle, args=("slow_head", _signature(_event("slow_head")), True)))
    threads += [threading.Thread(target=trickle, args=(f"slow_forged_{i}", FORGED)) for i in range(3)]
    for t in threads:
        t.start()
    slowest = 0.0
    while any(t.is_alive() for t in threads):
        started = time.perf_counter()
        _healthy(server)
        slowest = max(slowest, time.perf_counter() - started)
        time.sleep(0.05)
    body = _event("fast")
    started = time.perf_counter()
    r = httpx.post(f"{server.url}/webhooks/stripe", content=body, headers={"Stripe-Signature": _signature(body)})
    assert r.json()["status"] == "accepted" and time.perf_counter() - started < 1
    for t in threads:
        t.join()
    assert slowest < 0.5, f"/healthz took {slowest:.2f}s while slow clients were sending"
    assert results["slow_genuine"][0] == 200 and results["slow_head"][0] == 200
    assert all(results[f"slow_forged_{i}"][0] == 400 for i in range(3))
    wait_for(lambda: len(receiver.delivered()) == 3)
    time.sleep(0.3)
    assert sorted(receiver.by_key()) == ["sale:stripe:pi_hostile_fast", "sale:stripe:pi_hostile_slow_genuine",
                                         "sale:stripe:pi_hostile_slow_head"]
    assert server.events("body IS NOT NULL") == 3


def test_stalled_client_does_not_block_others_and_leaves_nothing(server: Server,
                                                                 receiver: TrackingReceiver) -> None:
    stalled: list[socket.socket] = []
    try:
        for i in range(20):
            body = _event(f"stalled_{i}")
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(_head([b"Stripe-Signature: " + _signature(body).encode()], len(body)) + body[:200])
            stalled.append(sock)
        body = _event("beside_stalled")
        r = httpx.post(f"{server.url}/webhooks/stripe", content=body,
                       headers={"Stripe-Signature": _signature(body)}, timeout=2)
        assert r.json()["status"] == "accepted"
    finally:
        for sock in stalled:
            sock.close()
    _healthy(server)
    wait_for(lambda: len(receiver.delivered()) == 1)
    time.sleep(0.3)
    assert server.events() == 1 and len(receiver.requests) == 1

