"""Twenty `kill -9`s of `hooktrack serve` under load: nothing acknowledged is lost or doubled.

Four senders post signed Stripe events with unique ids the way a provider does: a delivery
that gets no 2xx (connection refused while hooktrack is down, a connection cut by the kill) is
sent again, same id and body, until it is acknowledged. Meanwhile hooktrack is killed at a
random moment and restarted, twenty times. At the end the tracking API has every conversion of
every acknowledged event under its `Idempotency-Key`; a key may arrive more than once only
with the same body (at-least-once over HTTP: an answer lost in the kill), at most one
forwarder batch per kill; and the SQLite file holds every acknowledged event exactly once.
The kill moments come from a seeded generator; a failure prints the seed to replay it with
(`HOOKTRACK_CRASH_SEED`).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from adapter.destinations.dub import DubDestination
from adapter.receiver import TrackingReceiver, free_port, run_in_thread
from adapter.records import Conversion
from adapter.settings import load_settings
from tests.conftest import STRIPE_SECRET, fixture, wait_for
from tests.reliability.sources import NOTES

CYCLES = 20
SENDERS = 4
CONCURRENCY = 8
PACE_S = 0.05  # between one sender's deliveries: ~70 events/s in all, a backlog the forwarder drains


def _write_config(tmp_path: Path, tracking_url: str) -> Path:
    path = tmp_path / "hooktrack.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "crash.db"}"\n'
        f'[tracking]\nurl = "{tracking_url}"\napi_key = "test_key"\ntimeout_s = 2\n'
        "[forwarder]\nbase_delay_s = 0.05\nmax_delay_s = 0.2\npoll_interval_s = 0.05\nfill_window_s = 0\n"
        f"lease_s = 1\nconcurrency = {CONCURRENCY}\n"
        f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n'
    )
    return path


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapter", "serve", "--config", str(config), "--port", str(port),
         "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: _up(port), timeout=20)
    return proc


def _event(i: int) -> tuple[dict[str, Any], str]:
    """Event `i` and the Idempotency-Key of the one conversion it makes: a Lead (with a click
    id), a checkout Sale, or an invoice Sale (with the same click id) of the customer of the
    Lead two events earlier."""
    kind = i % 3
    if kind == 0:
        event = fixture("stripe", "customer.created")
        obj = event["data"]["object"]
        obj.update(id=f"cus_crash_{i}", email=f"c{i}@example.com")
        obj["metadata"] = {"userId": f"user_crash_{i}", "dubClickId": f"cl_crash_{i}"}
        key = f"lead:stripe:user_crash_{i}:Sign up"
    elif kind == 1:
        event = fixture("stripe", "checkout.session.completed")
        obj = event["data"]["object"]
        obj.update(id=f"cs_crash_{i}", payment_intent=f"pi_crash_{i}", customer=f"cus_pay_{i}")
        obj["metadata"] = {"userId": f"user_pay_{i}"}
        obj["customer_details"]["email"] = f"p{i}@example.com"
        key = f"sale:stripe:pi_crash_{i}"
    else:
        event = fixture("stripe", "invoice.paid")
        obj = event["data"]["object"]
        obj.update(id=f"in_crash_{i}", customer=f"cus_crash_{i - 2}", customer_email=f"c{i - 2}@example.com")
        # The click rides on the invoice too, so Dub counts the Sale at its first send even when a
        # sender posts it before the Lead two events earlier (another sender's, maybe retrying):
        # Dub answers `"sale": null` for a customer it does not know yet, which is retried, not
        # a copy at the API, and would blur the at-least-once count this test makes.
        obj["metadata"] = {"dubClickId": f"cl_crash_{i - 2}"}
        obj["parent"]["subscription_details"]["subscription"] = f"sub_crash_{i}"
        key = f"sale:stripe:in_crash_{i}"
    event["id"] = f"evt_crash_{i}"
    return event, key


@dataclass
class Load:
    """Senders that retry each delivery until it is acknowledged, like a provider."""

    port: int
    acked: dict[str, str] = field(default_factory=dict)  # provider event id -> Idempotency-Key
    answers: dict[str, int] = field(default_factory=dict)  # accepted / duplicate counts
    wrong: list[str] = field(default_factory=list)  # answers a genuine delivery must never get
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    def take(self) -> int:
        with self.lock:
            self._next += 1
            return self._next - 1

    def run(self) -> None:
        with httpx.Client(timeout=3) as http:
            while not self.stopping.is_set():
                event, key = _event(self.take())
                self._deliver(http, event, key)
                time.sleep(PACE_S)

    def _deliver(self, http: httpx.Client, event: dict[str, Any], key: str) -> None:
        body = json.dumps(event)
        while True:
            header = stripe.WebhookSignature.generate_signature_header(body, STRIPE_SECRET)
            try:
                r = http.post(f"http://127.0.0.1:{self.port}/webhooks/stripe", content=body,
                              headers={"Stripe-Signature": header, "Content-Type": "application/json"})
            except httpx.HTTPError:
                time.sleep(0.02)
                continue
            if r.status_code == 200:
                status = r.json()["status"]
                with self.lock:
                    self.acked[event["id"]] = key
                    self.answers[status] = self.answers.get(status, 0) + 1
                    if status not in ("accepted", "duplicate"):
                        self.wrong.append(r.text)
                return
            if r.status_code != 503:  # never a 4xx or 500 for a genuine delivery
                self.wrong.append(f"{r.status_code} {r.text}")
            time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_twenty_sigkills_under_load_lose_nothing_and_double_nothing(tmp_path: Path) -> None:
    api = TrackingReceiver(api_key="test_key")
    api.delay_s = 0.05  # conversions are in flight when the kill comes
    # The kill schedule is seeded so a failing run can be replayed: pytest shows this line with
    # the failure, and HOOKTRACK_CRASH_SEED=<seed> runs the same schedule again.
    seed = int(os.environ.get("HOOKTRACK_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"crash schedule seed {seed} (replay: HOOKTRACK_CRASH_SEED={seed})")
    rng = random.Random(seed)
    with run_in_thread(api.app()) as tracking_url:
        config = _write_config(tmp_path, tracking_url)
        port = free_port()
        load = Load(port)
        proc = _serve(config, port)
        senders = [threading.Thread(target=load.run, daemon=True) for _ in range(SENDERS)]
        for t in senders:
            t.start()
        undelivered_at_kill: list[int] = []
        kills: list[float] = []
        restarts: list[float] = []
        try:
            for _ in range(CYCLES):
                time.sleep(rng.uniform(0.1, 1.0))
                kills.append(time.time())
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                with load.lock:
                    undelivered_at_kill.append(len(set(load.acked.values()) - set(api.by_key())))
                started = time.perf_counter()
                proc = _serve(config, port)
                restarts.append(time.perf_counter() - started)
            load.stopping.set()
            for t in senders:
                t.join(timeout=30)
            expected = set(load.acked.values())
            drain = time.perf_counter()
            wait_for(lambda: expected <= set(api.by_key()), timeout=60)
            NOTES.append(f"crash: restart to healthy {sum(restarts) / len(restarts):.2f}s on average "
                         f"(max {max(restarts):.2f}s); final drain {time.perf_counter() - drain:.2f}s")
            time.sleep(0.5)  # anything sent twice would have arrived by now
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    _check(api, load, config, undelivered_at_kill, kills)


def _check(api: TrackingReceiver, load: Load, config: Path, undelivered_at_kill: list[int],
           kills: list[float]) -> None:
    NOTES.append(f"crash: {CYCLES} SIGKILLs, {len(load.acked)} events acknowledged ({load.answers}); "
                 f"acknowledged but undelivered at each kill: {undelivered_at_kill}")
    assert load.wrong == []
    assert len(load.acked) >= 20 * CYCLES
    assert sum(1 for n in undelivered_at_kill if n) >= CYCLES // 2, "kills should catch conversions pending"
    by_key = api.by_key()
    assert set(by_key) == set(load.acked.values())  # each acknowledged conversion, and nothing else
    # ... and Dub counted each one exactly once: every Sale by its invoice, every Lead by its customer.
    sales = [str(s.invoice_id) for s in api.counted_sales()]
    leads = [f"{lead.external_id}:{lead.event_name}" for lead in api.counted_leads()]
    acked = set(load.acked.values())
    assert sorted(sales) == sorted(k.removeprefix("sale:stripe:") for k in acked if k.startswith("sale:"))
    # (A Sale attributed by its clickId before its customer's Lead arrived records a lead of its own.)
    assert {k.removeprefix("lead:stripe:") for k in acked if k.startswith("lead:")} <= set(leads)
    assert len(leads) == len(set(leads))
    repeated = {k: v for k, v in by_key.items() if len(v) > 1}
    extra = sum(len(v) - 1 for v in repeated.values())
    NOTES.append(f"crash: {len(repeated)} of {len(by_key)} keys delivered more than once, {extra} extra copies "
                 "(same key and body; at-least-once over HTTP)")
    # At most one claimed round per kill is sent but not recorded (the forwarder claims up to
    # 4 x concurrency per round, see Forwarder.run_once).
    assert extra <= CYCLES * CONCURRENCY * 4
    for key, copies in repeated.items():
        assert all(c.body == copies[0].body for c in copies), key
        for first, again in itertools.pairwise(copies):
            # A copy is sent again only when a kill cut off the recording of the first: the
            # lease of the dead process runs out and the restarted one sends it again.
            assert any(first.at - 1 <= k <= again.at for k in kills), (key, first.at, again.at)
    settings = load_settings(config)
    destination = DubDestination(settings.tracking)
    with sqlite3.connect(settings.store.url.removeprefix("sqlite:///")) as conn:
        stored = {row[0] for row in conn.execute("SELECT dedup_key FROM events WHERE dedup_key IS NOT NULL")}
        states = dict(conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall())
        records = [row[0] for row in conn.execute("SELECT record FROM conversions")]
    keys = [destination.idempotency_key(Conversion.from_json(r)) for r in records]
    assert set(load.acked) <= stored  # no acknowledged event missing from the store
    assert len(keys) == len(set(keys)) == len(load.acked)  # one conversion per event, none twice
    assert states == {"delivered": len(load.acked)}
