"""The `store` fixture: every contract test runs on SQLite and on PostgreSQL.

`store` yields a `Harness` (an opened store plus an event loop to drive it from a plain test).
PostgreSQL tests skip with the reason when no server is reachable, and fail instead when
`HOOKTRACK_REQUIRE_PG=1` (see tests/store/pg.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from adapter.store import Store, Tx, open_store
from tests.store import pg

T = TypeVar("T")


class Harness:
    """A store opened on its own event loop, driven synchronously by a test."""

    def __init__(self, store: Store, engine: str) -> None:
        self.store = store
        self.engine = engine
        self.loop = asyncio.new_event_loop()

    def run(self, aw: Awaitable[T]) -> T:
        return self.loop.run_until_complete(aw)

    def tx(self, fn: Callable[[Tx], T]) -> T:
        return self.run(self.store.transact(fn))

    def read(self, fn: Callable[[Tx], T]) -> T:
        return self.run(self.store.read(fn))

    def concurrently(self, fns: list[Callable[[Tx], Any]]) -> list[Any]:
        """Run each `fn` in its own transaction, all at once."""
        async def all_of() -> list[Any]:
            return list(await asyncio.gather(*(self.store.transact(fn) for fn in fns)))

        return self.run(all_of())

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A fresh database on the shared server for this session (dropped after), or None."""
    if pg.unreachable_reason() is not None:
        yield None
        return
    url = pg.create_database()
    try:
        yield url
    finally:
        pg.drop_database(url)


@pytest.fixture
def pg_url(pg_database: str | None) -> str:
    """A URL on a fresh, empty schema of the session database."""
    if pg_database is None:
        pg.missing(pg.unreachable_reason() or "PostgreSQL not reachable")
    return pg.create_schema(pg_database)


@pytest.fixture
def migrated_pg_url(pg_url: str) -> str:
    open_store(pg_url).migrate()
    return pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    url: str = request.getfixturevalue("migrated_pg_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Harness]:
    harness = Harness(open_store(store_url, pool_size=8), "sqlite" if store_url.startswith("sqlite") else "postgresql")
    harness.run(harness.store.open())
    try:
        yield harness
    finally:
        harness.close()
