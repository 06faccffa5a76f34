"""The SQLite store runs a write transaction on the event loop and only its COMMIT in a thread;
what a user relies on is that nothing about it is weaker than a writer thread: the answer comes
after the commit is on disk, a lock held by another process never stalls the loop, and one
failing job fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from adapter.store import open_store
from adapter.store.sql import Tx


def _heartbeat(value: int):  # a job that writes one row and returns what it wrote
    def job(tx: Tx) -> int:
        tx.heartbeat(value)
        return value
    return job


def _stored(path: Path) -> str | None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT value FROM hooktrack_meta WHERE key = 'heartbeat'").fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def test_an_answer_means_another_connection_reads_the_write(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = open_store(f"sqlite:///{path}")

    async def main() -> list[str | None]:
        await store.open()
        seen = []
        try:
            for value in (1, 2, 3):
                assert await store.transact(_heartbeat(value)) == value
                seen.append(_stored(path))  # committed before transact returned
        finally:
            await store.close()
        return seen

    assert asyncio.run(main()) == ["1", "2", "3"]


def test_a_lock_held_by_another_process_waits_in_a_thread_not_on_the_loop(tmp_path: Path) -> None:
    """Another connection (a `hooktrack worker` process) holds the write lock for 0.5 s: the
    transaction waits for it and then commits, and meanwhile the loop keeps serving (a ticker
    runs on)."""
    path = tmp_path / "h.db"
    store = open_store(f"sqlite:///{path}", lock_timeout_s=5)

    async def main() -> tuple[int, int, float]:
        await store.open()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, lambda: other.execute("COMMIT"))
        started = time.monotonic()
        try:
            result = await store.transact(_heartbeat(7))
            waited = time.monotonic() - started
        finally:
            tick.cancel()
            other.close()
            await store.close()
        return result, ticks, waited

    result, ticks, waited = asyncio.run(main())
    assert result == 7 and _stored(path) == "7"
    assert waited >= 0.45  # it did wait for the other connection's lock
    assert ticks >= 20  # and the loop ran on meanwhile (a blocked loop would tick about once)


def test_one_failing_job_of_a_batch_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = open_store(f"sqlite:///{path}")

    def failing(tx: Tx) -> None:
        tx.heartbeat(99)
        raise ValueError("this job is broken")

    async def main() -> list[object]:
        await store.open()
        try:  # submitted together, so they share one transaction until the failure splits it
            return await asyncio.gather(store.transact(_heartbeat(1)), store.transact(failing),
                                        store.transact(_heartbeat(3)), return_exceptions=True)
        finally:
            await store.close()

    first, broken, third = asyncio.run(main())
    assert (first, third) == (1, 3)
    assert isinstance(broken, ValueError)
    assert _stored(path) == "3"  # the failing job's write was rolled back, the others kept


@pytest.mark.parametrize("jobs", [64])
def test_concurrent_jobs_share_commits_and_all_land(tmp_path: Path, jobs: int) -> None:
    path = tmp_path / "h.db"
    store = open_store(f"sqlite:///{path}")

    def insert(n: int):
        def job(tx: Tx) -> int:
            tx.execute("INSERT INTO hooktrack_meta (key, value) VALUES (?, ?)", (f"job{n}", str(n)))
            return n
        return job

    async def main() -> list[int]:
        await store.open()
        try:
            return list(await asyncio.gather(*(store.transact(insert(n)) for n in range(jobs))))
        finally:
            await store.close()

    assert asyncio.run(main()) == list(range(jobs))
    conn = sqlite3.connect(path)
    try:
        count = conn.execute("SELECT COUNT(*) FROM hooktrack_meta WHERE key LIKE 'job%'").fetchone()[0]
    finally:
        conn.close()
    assert count == jobs
