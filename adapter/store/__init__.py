"""The durable store: events, conversions (the outbox), identity memory, attempts.

`Store` is the contract both engines keep. `transact(fn)` runs `fn(tx)` inside one write
transaction and returns only after the commit is durable; `read(fn)` runs it on a read-only
snapshot. Either raises `StoreUnavailable` when the engine cannot do its part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from adapter.store.sql import Claimed, Identity, Tx

__all__ = ["Claimed", "Identity", "Store", "Tx", "open_store"]

T = TypeVar("T")


class Store(Protocol):
    """What ingest, the forwarder, the CLI and the admin API need of a store."""

    url: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def transact(self, fn: Callable[[Tx], T]) -> T: ...
    async def read(self, fn: Callable[[Tx], T]) -> T: ...
    async def ping(self) -> None: ...
    def schema_version(self) -> int: ...
    def migrate(self) -> int: ...


def open_store(url: str, *, lock_timeout_s: float = 3.0, pool_size: int = 10) -> Store:
    """A store for `url` (`sqlite:///path` or `postgresql://...`), not yet opened.

    `lock_timeout_s` bounds how long a transaction waits for the SQLite file lock or for a
    PostgreSQL connection; `pool_size` is PostgreSQL's connections per process (`store.pool_size`).
    """
    if url.startswith("sqlite:///"):
        from adapter.store.sqlite import SQLiteStore

        return SQLiteStore(url, lock_timeout_s=lock_timeout_s)
    if url.startswith(("postgresql://", "postgres://")):
        from adapter.store.postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, timeout_s=lock_timeout_s)
    from adapter.errors import ConfigError

    raise ConfigError(f"store.url: no store for {url.split(':', 1)[0]!r} in this version")
