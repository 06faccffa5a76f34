"""Faults around hooktrack: a tracking API that fails in every way, then recovers; a store
that cannot commit (immutable file, lock held by another process, full disk), then recovers.

Single faults on a single conversion are in tests/adapter/test_forwarder.py and the one-request
locked store in tests/adapter/test_app.py; here many conversions live through faults in turn,
and the journey (every attempt's time, status, error) shows the backoff.

Tests run as root, for whom `chmod a-w` does not stop writes: the store is made read-only with
`chattr +i` (skipped where the file system or the capabilities do not allow it).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import mean
from typing import Any

import pytest
from starlette.testclient import TestClient

from adapter.journal import journey
from adapter.receiver import TrackingReceiver, free_port, run_in_thread
from tests.conftest import fixture, post_stripe, wait_for

TIMEOUT_S = 0.3


def _sale(n: int | str) -> dict[str, Any]:
    event = fixture("stripe", "checkout.session.completed")
    event["id"] = f"evt_fault_{n}"
    event["data"]["object"]["payment_intent"] = f"pi_fault_{n}"
    return event


def _journeys(client: TestClient, event_ids: list[int]) -> list[dict[str, Any]]:
    store, destination = client.app.state.store, client.app.state.destination  # type: ignore[attr-defined]
    return [client.portal.call(store.read, lambda tx, i=i: journey(tx, i, destination))["conversions"][0]  # type: ignore[union-attr]
            for i in event_ids]


def _all_delivered(client: TestClient, event_ids: list[int]) -> list[dict[str, Any]] | None:
    convs = _journeys(client, event_ids)
    return convs if all(c["state"] == "delivered" for c in convs) else None


def _assert_each_once(receiver: TrackingReceiver, expected: set[str]) -> dict[str, int]:
    """Every expected key delivered; repeats (a response lost to a timeout or a crash) carry
    the same body. Returns the number of copies per key."""
    by_key = receiver.by_key()
    assert set(by_key) == expected
    for copies in by_key.values():
        assert all(c.body == copies[0].body for c in copies)
    return {key: len(copies) for key, copies in by_key.items()}


@contextlib.contextmanager
def _serving(receiver: TrackingReceiver, port: int) -> Iterator[None]:
    with run_in_thread(receiver.app(), port=port):
        yield


@pytest.mark.slow
def test_every_api_fault_in_turn_then_recovery_delivers_each_conversion_once(make_client: Any) -> None:
    """500s, then 429 with Retry-After, then an API hanging past the timeout, then nothing
    listening at all; then the API is back: every conversion is delivered, once per key."""
    api = TrackingReceiver(api_key="test_key")
    port = free_port()
    client = make_client(tracking={"url": f"http://127.0.0.1:{port}", "timeout_s": TIMEOUT_S},
                         forwarder={"base_delay_s": 0.05, "max_delay_s": 1.0, "max_attempts": 1000,
                                    "pause_probe_s": 0.2})  # 20 failures in a row pause the destination
    phase: dict[str, tuple[int, dict[str, str]]] = {"answer": (500, {})}
    api.respond = lambda kind, body: phase["answer"]
    with _serving(api, port):
        ids = [post_stripe(client, _sale(i)).json()["eventId"] for i in range(12)]
        time.sleep(1.0)
        phase["answer"] = (429, {"Retry-After": "1"})
        time.sleep(1.5)
        api.delay_s = TIMEOUT_S * 3  # answers 200, but long after hooktrack gave up waiting
        phase["answer"] = (200, {})
        time.sleep(1.2)
    time.sleep(1.0)  # nothing listening on the port: connections are refused
    api.delay_s = 0
    with _serving(api, port):
        convs = wait_for(lambda: _all_delivered(client, ids), timeout=30)
    copies = _assert_each_once(api, {f"sale:stripe:pi_fault_{i}" for i in range(12)})
    seen: set[str] = set()
    for conv in convs:
        log = conv["attempts_log"]
        assert [a["outcome"] for a in log].count("delivered") == 1 and log[-1]["outcome"] == "delivered"
        for a, b in itertools.pairwise(log):
            assert b["attempted_at"] >= a["attempted_at"]
            if a["status_code"] == 429:  # Retry-After is a floor under the backoff (up to max_delay_s)
                assert b["attempted_at"] - a["attempted_at"] >= 1000, log
        for a in log:
            seen.add(_kind(a))
            if _kind(a) == "timeout":
                assert a["latency_ms"] >= TIMEOUT_S * 1000 * 0.9
        timed_out = any(_kind(a) == "timeout" for a in log)
        assert copies[conv["idempotency_key"]] == 1 or timed_out  # only a lost answer is repeated
    assert {"500", "429", "timeout", "refused", "200"} <= seen, seen


def _kind(attempt: dict[str, Any]) -> str:
    """An attempt as a status code, `timeout` or `refused` (whatever the HTTP client calls them)."""
    if attempt["status_code"]:
        return str(attempt["status_code"])
    error = (attempt["error"] or "").lower()
    if "timeout" in error:
        return "timeout"
    return "refused" if "connect" in error or "refused" in error else error


def test_backoff_grows_exponentially_while_the_api_fails(make_client: Any, receiver: TrackingReceiver) -> None:
    """Ten conversions against an API that fails for 2.5 s: the gaps between attempts grow
    (full jitter, so compared on average) and stay under `max_delay_s`; nothing is hammered."""
    outage_until = time.time() + 2.5
    receiver.respond = lambda kind, body: (500, {}) if time.time() < outage_until else None
    client = make_client(forwarder={"base_delay_s": 0.05, "max_delay_s": 1.0, "max_attempts": 1000,
                                    "pause_after_failures": 1000})  # this measures backoff, not the pause
    ids = [post_stripe(client, _sale(f"b{i}")).json()["eventId"] for i in range(10)]
    convs = wait_for(lambda: _all_delivered(client, ids), timeout=20)
    _assert_each_once(receiver, {f"sale:stripe:pi_fault_b{i}" for i in range(10)})
    first_gaps, later_gaps = [], []
    for conv in convs:
        times = [a["attempted_at"] for a in conv["attempts_log"] if a["status_code"] == 500]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert 4 <= len(times) <= 16, f"{len(times)} attempts in a 2.5 s outage"
        assert max(gaps) <= 1000 + 300  # max_delay_s, plus one poll and a round trip
        first_gaps.append(gaps[0])
        later_gaps += gaps[3:]
    assert mean(later_gaps) > 2 * mean(first_gaps), (first_gaps, later_gaps)


# -- the store --------------------------------------------------------------------------------


def _immutable(paths: list[Path], on: bool) -> None:
    for path in paths:
        if path.exists():
            subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True, capture_output=True)


def _can_chattr(tmp_path: Path) -> str | None:
    if shutil.which("chattr") is None:
        return "chattr is not installed"
    probe = tmp_path / "probe"
    probe.touch()
    try:
        _immutable([probe], True)
        _immutable([probe], False)
    except subprocess.CalledProcessError as exc:
        return f"chattr +i is not permitted here: {exc.stderr.decode().strip()}"
    return None


def _store_outage(client: TestClient, receiver: TrackingReceiver, break_store: Callable[[], None],
                  fix_store: Callable[[], None], tag: str, *, attempts: int = 3) -> None:
    """While the store is broken every webhook is answered 503 or (if its commit still got
    through) 200, and at least one 503; the process lives on. After the fix the provider's
    retries of the refused ones are taken, and everything acknowledged is delivered once."""
    before = post_stripe(client, _sale(f"{tag}_before"))
    assert before.json()["status"] == "accepted"
    wait_for(lambda: len(receiver.delivered()) == 1)
    break_store()
    answers: dict[str, int] = {}
    try:
        for i in range(attempts):
            r = post_stripe(client, _sale(f"{tag}_{i}"))
            answers[f"{tag}_{i}"] = r.status_code
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "store_unavailable"
        assert client.get("/healthz").status_code == 200
    finally:
        fix_store()
    assert 503 in answers.values()
    wait_for(lambda: client.get("/readyz").status_code == 200)
    for name, status in answers.items():  # the provider retries what was refused
        expected = "accepted" if status == 503 else "duplicate"
        again = post_stripe(client, _sale(name))
        assert again.json().get("status") == expected, (name, status, again.status_code, again.text)
    assert post_stripe(client, _sale(f"{tag}_before")).json()["status"] == "duplicate"
    wait_for(lambda: len(receiver.delivered()) == 1 + len(answers))
    time.sleep(0.3)
    keys = {f"sale:stripe:pi_fault_{name}" for name in [f"{tag}_before", *answers]}
    assert _assert_each_once(receiver, keys) == dict.fromkeys(keys, 1)


@contextlib.contextmanager
def _immutable_store(tmp_path: Path) -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    reason = _can_chattr(tmp_path)
    if reason:
        pytest.skip(reason)
    db = tmp_path / "hooktrack.db"
    files = [db, db.with_name(db.name + "-wal")]  # not -shm: it is mmapped, and writes to it would SIGBUS
    try:
        yield (lambda: _immutable(files, True)), (lambda: _immutable(files, False))
    finally:
        _immutable(files, False)  # or pytest cannot remove tmp_path


def test_immutable_store_file_answers_503_then_recovers(make_client: Any, receiver: TrackingReceiver,
                                                       tmp_path: Path) -> None:
    with _immutable_store(tmp_path) as (freeze, thaw):
        client = make_client()
        client.app.state.store.lock_timeout_s = 0.3
        _store_outage(client, receiver, freeze, thaw, "immutable")


def test_readyz_reports_a_store_that_cannot_commit_writes(make_client: Any, tmp_path: Path) -> None:
    with _immutable_store(tmp_path) as (freeze, thaw):
        client = make_client()
        client.app.state.store.lock_timeout_s = 0.3
        assert post_stripe(client, _sale("ready_before")).status_code == 200
        freeze()
        try:
            assert post_stripe(client, _sale("ready_during")).status_code == 503
            assert client.get("/readyz").status_code == 503
        finally:
            thaw()


def test_store_locked_while_conversions_are_in_flight(make_client: Any, receiver: TrackingReceiver,
                                                      tmp_path: Path) -> None:
    """Another process holds the write lock while the forwarder has conversions out: their
    results cannot be recorded, so after the lease they are sent again (same key and body);
    webhooks meanwhile answer 503; after the lock is released everything is delivered."""
    receiver.delay_s = 0.3
    client = make_client(forwarder={"lease_s": 1})
    client.app.state.store.lock_timeout_s = 0.3
    ids = [post_stripe(client, _sale(f"lock_{i}")).json()["eventId"] for i in range(5)]
    time.sleep(0.1)  # the forwarder has claimed them and is waiting on the slow API
    blocker = sqlite3.connect(tmp_path / "hooktrack.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        refused = [post_stripe(client, _sale(f"lock_late_{i}")).status_code for i in range(3)]
        assert refused == [503, 503, 503]
        time.sleep(1.5)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    receiver.delay_s = 0
    ids += [post_stripe(client, _sale(f"lock_late_{i}")).json()["eventId"] for i in range(3)]
    wait_for(lambda: _all_delivered(client, ids), timeout=20)
    expected = {f"sale:stripe:pi_fault_lock_{i}" for i in range(5)} | {
        f"sale:stripe:pi_fault_lock_late_{i}" for i in range(3)}
    _assert_each_once(receiver, expected)
    assert client.get("/readyz").status_code == 200


def test_full_disk_answers_503_then_recovers(make_client: Any, receiver: TrackingReceiver, tmp_path: Path) -> None:
    """The store on a 4 MiB tmpfs filled up by something else: 503 until space is freed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    filler = disk / "filler"
    try:
        client = make_client(store={"url": f"sqlite:///{disk / 'hooktrack.db'}"})
        client.app.state.store.lock_timeout_s = 0.3

        def fill() -> None:
            with filler.open("wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()

        # Commits that fit in WAL pages already on disk still succeed (and are durable): only
        # some of the webhooks are refused, so more are sent.
        _store_outage(client, receiver, fill, filler.unlink, "full", attempts=20)
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)  # detached once the store closes
