"""PostgreSQL goes away under a running hooktrack and comes back: 503s meanwhile, nothing lost.

Runs on a private cluster this test starts itself (`initdb` + `pg_ctl` on a free port, see
tests/store/pg.py), never on the shared server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapter.receiver import TrackingReceiver, free_port, run_in_thread
from adapter.store import open_store
from tests.conftest import fixture, wait_for
from tests.store import procs
from tests.store.pg import PrivateCluster, missing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    reason = PrivateCluster.unavailable_reason()
    if reason:
        missing(reason)
    pg = PrivateCluster(free_port()).init()
    try:
        pg.start()
        pg.wait_ready()
        yield pg
    finally:
        pg.destroy()


class Load:
    """Sends a fresh signed Sale event after another; remembers every answer and what was acked."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/webhooks/stripe"
        self.answers: list[tuple[float, int]] = []
        self.acked: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        i = 0
        with httpx.Client(timeout=15) as http:
            while not self._stop.is_set():
                event = fixture("stripe", "checkout.session.completed")
                event["id"] = f"evt_restart_{i}"
                event["data"]["object"]["payment_intent"] = f"pi_restart_{i}"
                body, headers = procs.signed(event)
                try:
                    r = http.post(self.url, content=body, headers=headers)
                except httpx.HTTPError:
                    self.answers.append((time.time(), 0))
                    continue
                self.answers.append((time.time(), r.status_code))
                if r.status_code == 200 and r.json()["status"] == "accepted":
                    self.acked.add(f"sale:stripe:pi_restart_{i}")
                i += 1
                time.sleep(0.01)

    def between(self, start: float, end: float) -> list[int]:
        return [code for at, code in list(self.answers) if start <= at <= end]


def readyz(port: int) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code
    except httpx.HTTPError:
        return 0


def test_postgres_restart_answers_503_meanwhile_then_recovers_losing_nothing(
        cluster: PrivateCluster, tmp_path: Path) -> None:
    open_store(cluster.url).migrate()
    receiver = TrackingReceiver(api_key="test_key")
    with run_in_thread(receiver.app()) as tracking:
        config = procs.write_config(tmp_path / "hooktrack.toml", cluster.url, tracking, lease_s=3)
        port = free_port()
        with procs.running(procs.serve(config, port, tmp_path / "serve.log", worker=True)), Load(port) as load:
            wait_for(lambda: len(load.acked) >= 50, timeout=30)
            cluster.stop("immediate")  # a crash: no shutdown checkpoint, recovery replays the WAL
            down = time.time()
            wait_for(lambda: readyz(port) == 503, timeout=15)
            down_seen = time.time()
            # Longer than the pool's reconnect give-up (10 s): recovery must not depend on it.
            wait_for(lambda: time.time() > down + 12 and len(load.between(down + 1, time.time())) >= 5, timeout=30)
            up = time.time()
            cluster.start()
            wait_for(lambda: readyz(port) == 200, timeout=60)
            recovered = time.time()
            acked_before = len(load.acked)
            wait_for(lambda: len(load.acked) >= acked_before + 50 and time.time() > recovered + 2, timeout=30)
        during = load.between(down + 1, up)
        assert during and set(during) == {503}, sorted(set(during))
        assert 0 not in {code for _, code in load.answers}  # hooktrack itself never stopped answering
        assert set(load.between(recovered + 0.5, time.time())) == {200}
        print(f"outage: 503 after {down_seen - down:.2f}s, ready {recovered - up:.2f}s after the server restarted")
        # Everything acknowledged reaches the tracking API, before and after the outage.
        assert wait_for(lambda: load.acked <= set(receiver.by_key()), timeout=60)
    repeated = {k: len(v) for k, v in receiver.by_key().items() if len(v) > 1}
    # A send in flight when the server died cannot record its result; after the lease it goes
    # again with the same Idempotency-Key (at least once over HTTP; the API dedupes on the key).
    assert sum(repeated.values()) <= 2 * 32 * 4, repeated
