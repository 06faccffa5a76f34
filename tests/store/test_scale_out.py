"""Several hooktrack processes on one PostgreSQL: ingest replicas, competing workers, a killed worker.

Every process here is the real command (`hooktrack serve --no-worker`, `hooktrack worker`) and
the tracking API is a real HTTP receiver on loopback that counts by `Idempotency-Key`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from adapter.receiver import TrackingReceiver, free_port, run_in_thread
from adapter.records import Conversion
from tests.conftest import wait_for
from tests.store import procs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def count(url: str, sql: str, params: tuple[Any, ...] = ()) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
        return int(row[0]) if row else 0


def test_two_ingest_processes_given_the_same_events_accept_and_forward_each_once(
        migrated_pg_url: str, tmp_path: Path) -> None:
    receiver = TrackingReceiver(api_key="test_key")
    with run_in_thread(receiver.app()) as tracking:
        config = procs.write_config(tmp_path / "hooktrack.toml", migrated_pg_url, tracking)
        ports = [free_port(), free_port()]
        ingest = [procs.serve(config, port, tmp_path / f"serve{n}.log") for n, port in enumerate(ports)]
        with procs.running(*ingest):
            events = [e for i in range(250) for e in procs.journey(i, "two")]  # 500 events, 500 conversions
            local = threading.local()

            def post(job: tuple[int, int]) -> tuple[str, int, str]:
                n, port = job
                if not hasattr(local, "http"):
                    local.http = httpx.Client(timeout=30)
                body, headers = procs.signed(events[n])
                r = local.http.post(f"http://127.0.0.1:{port}/webhooks/stripe", content=body, headers=headers)
                return events[n]["id"], r.status_code, r.json().get("status", "")

            # Each event goes to both replicas back to back, so the two requests race.
            jobs = [(n, ports[(n + k) % 2]) for n in range(len(events)) for k in (0, 1)]
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(post, jobs))
            assert {code for _, code, _ in answers} == {200}
            per_event: dict[str, list[str]] = {}
            for event_id, _, status in answers:
                per_event.setdefault(event_id, []).append(status)
            assert len(per_event) == 500
            assert all(sorted(s) == ["accepted", "duplicate"] for s in per_event.values())
            time.sleep(0.5)
            assert receiver.requests == []  # `--no-worker`: nothing is forwarded by the ingest replicas

            forwarder = procs.worker(config, tmp_path / "worker.log")
            with procs.running(forwarder):
                procs.settle(lambda: len(receiver.by_key()) >= 500, timeout=90)
    by_key = receiver.by_key()
    assert len(by_key) == 500
    assert all(len(copies) == 1 for copies in by_key.values())
    assert count(migrated_pg_url, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 500


def _seed(url: str, records: list[tuple[str, Conversion]]) -> None:
    """Store (business key, conversion) pairs as ingest does: a conversion row with its neutral
    record and one due `dub` delivery each."""
    rows = [(1, c.source, c.kind, c.event_name, key, c.customer_external_id, c.to_json(), 0, 0) for key, c in records]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "WITH c AS (INSERT INTO conversions (event_id, source, kind, event_name, business_key, customer_external_id,"
            " record, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id) "
            "INSERT INTO deliveries (conversion_id, destination, state, next_attempt_at, window_until, created_at,"
            " updated_at) SELECT id, 'dub', 'pending', 0, 86400000, 0, 0 FROM c", rows)


def _lead(i: int) -> Conversion:
    return Conversion(kind="lead", source="stripe", provider="stripe", event_name="Sign up", occurred_at=0,
                      customer_external_id=f"user_{i}", click_id=f"cl_{i}", metadata={"n": i})


def _sale(customer: str, invoice: str) -> Conversion:
    """A Sale with its clickId, so that Dub counts it even when no lead of the customer came first."""
    return Conversion(kind="sale", source="stripe", provider="stripe", event_name="Purchase", occurred_at=0,
                      customer_external_id=customer, click_id=f"cl_{customer}", amount=4900, currency="usd",
                      invoice_id=invoice)


def _seed_journeys(url: str, customers: int) -> None:
    """A pending Lead then a pending Sale for each customer: twice `customers` conversions,
    whose Idempotency-Keys are `lead:stripe:user_I:Sign up` and `sale:stripe:in_I`."""
    _seed(url, [pair for i in range(customers) for pair in (
        (f"lead:user_{i}:Sign up", _lead(i)), (f"sale:in_{i}", _sale(f"user_{i}", f"in_{i}")))])


def test_three_workers_drain_five_thousand_conversions_each_exactly_once_in_customer_order(
        migrated_pg_url: str, tmp_path: Path) -> None:
    receiver = TrackingReceiver(api_key="test_key")
    with run_in_thread(receiver.app()) as tracking:
        config = procs.write_config(tmp_path / "hooktrack.toml", migrated_pg_url, tracking)
        logs = [tmp_path / f"worker{n}.log" for n in range(3)]
        workers = [procs.worker(config, log) for log in logs]
        with procs.running(*workers):
            # All three connected before the outbox fills, so that each gets a share.
            wait_for(lambda: count(migrated_pg_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                   "current_database() AND application_name = 'hooktrack'") >= 3, timeout=30)
            _seed_journeys(migrated_pg_url, 2500)
            procs.settle(lambda: count(migrated_pg_url, "SELECT count(*) FROM deliveries WHERE state = 'pending'") == 0,
                         timeout=180)
    by_key = receiver.by_key()
    assert len(by_key) == 5000
    duplicates = {k: len(v) for k, v in by_key.items() if len(v) > 1}
    assert duplicates == {}
    first_seen = {k: v[0].at for k, v in by_key.items()}
    assert all(first_seen[f"lead:stripe:user_{i}:Sign up"] < first_seen[f"sale:stripe:in_{i}"] for i in range(2500))
    shares = [procs.delivered_by(log) for log in logs]
    assert sum(len(s) for s in shares) == 5000 and len(set().union(*shares)) == 5000  # disjoint
    assert all(len(s) > 0 for s in shares), [len(s) for s in shares]  # the work was shared


def test_worker_killed_holding_claims_has_them_delivered_by_another_after_the_lease(
        migrated_pg_url: str, tmp_path: Path) -> None:
    _seed(migrated_pg_url, [(f"sale:k{i}", _sale(f"u{i}", f"k{i}")) for i in range(100)])  # keys sale:stripe:kI
    # A tracking API that accepts connections and never answers: the first worker hangs holding its claims.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    stuck_config = procs.write_config(tmp_path / "stuck.toml", migrated_pg_url,
                                      f"http://127.0.0.1:{blackhole.getsockname()[1]}", lease_s=8, concurrency=5)
    stuck = procs.worker(stuck_config, tmp_path / "stuck.log")
    leased_sql = "SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL"
    try:
        wait_for(lambda: count(migrated_pg_url, leased_sql) > 0, timeout=30)  # one claim, now stuck
        time.sleep(0.3)
        with psycopg.connect(migrated_pg_url) as conn:
            leased = conn.execute("SELECT c.record, d.lease_until FROM deliveries d JOIN conversions c "
                                  "ON c.id = d.conversion_id WHERE d.lease_owner IS NOT NULL").fetchall()
        held: dict[str, int] = {f"sale:stripe:{Conversion.from_json(r).invoice_id}": int(until) for r, until in leased}
        procs.kill(stuck)
        assert 0 < len(held) < 100
    finally:
        procs.stop(stuck)
        blackhole.close()

    receiver = TrackingReceiver(api_key="test_key")
    with run_in_thread(receiver.app()) as tracking:
        config = procs.write_config(tmp_path / "hooktrack.toml", migrated_pg_url, tracking, lease_s=3)
        with procs.running(procs.worker(config, tmp_path / "worker.log")):
            procs.settle(lambda: len(receiver.by_key()) == 100, timeout=60)
    by_key = receiver.by_key()
    assert len(by_key) == 100 and all(len(v) == 1 for v in by_key.values())
    assert count(migrated_pg_url, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 100
    # The killed worker's claims waited for their lease; everything else went at once.
    assert all(by_key[key][0].at >= lease_until / 1000 - 0.05 for key, lease_until in held.items())
    free = [v[0].at for k, v in by_key.items() if k not in held]
    assert max(free) < min(held.values()) / 1000
    assert Counter(len(v) for v in by_key.values()) == Counter({1: 100})
