"""The embedded store: one SQLite file in WAL mode, written by one thread with group commit.

Every write transaction is queued to a single writer thread. The thread takes whatever has
queued up, runs the jobs in one `BEGIN IMMEDIATE` transaction and commits once
(`synchronous=FULL`, so the commit is on disk before any job's caller hears back). Under load
many webhooks share one fsync. A job that raises makes the batch roll back and run again with
one SAVEPOINT per job, so only the failing job fails.
Reads use per-thread connections on WAL snapshots and never wait for the writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from adapter.errors import ConfigError, StoreUnavailable
from adapter.store.schema import SCHEMA_VERSION, TABLES
from adapter.store.sql import Tx
from adapter.store.upgrade import upgrade

__all__ = ["SQLiteStore"]

log = logging.getLogger("hooktrack.store")
T = TypeVar("T")
_MAX_BATCH = 512
_STOP = object()


_ID = "INTEGER PRIMARY KEY AUTOINCREMENT"


def _read_version(conn: sqlite3.Connection) -> int:
    """The schema version a store records (0 for a new file)."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hooktrack_meta'").fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM hooktrack_meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _wal(conn: sqlite3.Connection, deadline: float) -> None:
    """Switch to WAL, waiting out other connections that are switching too.

    Changing the journal mode needs an exclusive lock, and SQLite answers "database is locked"
    at once, without its busy handler, when two connections that both read the file race for
    it (replicas starting together on a store written in rollback mode). Retry until the
    store's lock timeout instead of failing a start that only had to wait.
    """
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SQLiteStore:
    """`Store` on one SQLite file (`sqlite:///path`)."""

    def __init__(self, url: str, *, lock_timeout_s: float = 3.0) -> None:
        self.url = url
        self.path = Path(url.removeprefix("sqlite:///"))
        self.lock_timeout_s = lock_timeout_s
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        """The one writing connection, used by one thread at a time (`_conn_lock`)."""
        self._conn_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inline: list[tuple[Callable[[Tx], Any], asyncio.Future[Any]]] = []
        self._flush_due = False
        self._committing = False
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="sqlite-read")
        self._checkpoints = threading.Event()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.lock_timeout_s, isolation_level=None, check_same_thread=False
        )
        _wal(conn, time.monotonic() + self.lock_timeout_s)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        try:
            conn.execute("BEGIN IMMEDIATE")
            found = _read_version(conn)
            if found > SCHEMA_VERSION:
                raise ConfigError(f"{self.path}: the store's schema is version {found}, newer than this "
                                  f"hooktrack ({SCHEMA_VERSION}): upgrade hooktrack")
            if found:
                upgrade(Tx(conn, "sqlite"), found, _ID)
            for statement in TABLES.format(id=_ID).split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO hooktrack_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StoreUnavailable(f"cannot create the schema in {self.path}: {exc}") from exc
        finally:
            conn.close()
        return SCHEMA_VERSION

    def schema_version(self) -> int:
        row = self._reader().execute("SELECT value FROM hooktrack_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    async def open(self) -> None:
        await asyncio.to_thread(self.migrate)
        self._loop = asyncio.get_running_loop()
        if self._committer is None:
            self._committer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commit")
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="sqlite-writer", daemon=True)
            self._writer.start()
            self._checkpoints = threading.Event()
            threading.Thread(target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True).start()

    async def close(self) -> None:
        self._checkpoints.set()
        deadline = time.monotonic() + self.lock_timeout_s + 5
        while (self._committing or self._inline) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)  # what is queued or on its way to disk commits first
        self._loop = None
        if self._writer is not None:
            self._jobs.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._pool.shutdown(wait=False)

    def submit(self, fn: Callable[[Tx], T]) -> concurrent.futures.Future[T]:
        """Queue `fn` for the writer thread; the future resolves after the durable commit."""
        if self._writer is None:
            raise StoreUnavailable("store is not open")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        return fut

    async def transact(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in a write transaction; returns once it is durably committed.

        On the store's own event loop the statements run right here, between awaits, and only
        the COMMIT (the fsync) goes to a thread: a job handed to the writer thread instead
        competes with the loop for the GIL at every statement, which doubled its cost under load.
        Jobs that arrive while a commit is on disk wait for it and then share the next one
        (group commit). If the write lock is held elsewhere (another process on the same file),
        the batch goes to the writer thread, which waits for the lock so the loop never does.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._writer is None or self._committer is None:
            return await asyncio.wrap_future(self.submit(fn))
        fut: asyncio.Future[T] = loop.create_future()
        self._inline.append((fn, fut))
        if not self._flush_due and not self._committing:
            self._flush_due = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        """Run the queued jobs in one transaction on the loop and hand its COMMIT to a thread."""
        self._flush_due = False
        if self._committing or not self._inline:
            return
        batch, self._inline = self._inline, []
        live = [(fn, fut) for fn, fut in batch if not fut.done()]
        if not live:
            return
        if not self._conn_lock.acquire(blocking=False):  # the writer thread is using the connection
            self._to_writer(live)
            return
        try:
            conn = self._writing_connection()
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout_s * 1000)}")
        except sqlite3.Error:  # locked by another process (or the file is in trouble): the writer waits
            self._conn_lock.release()
            self._to_writer(live)
            return
        tx = Tx(conn, "sqlite")
        results: list[Any] = []
        try:
            for fn, _fut in live:
                results.append(fn(tx))
        except Exception:  # a job failed: the writer thread re-runs the batch one savepoint per job
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._conn_lock.release()
            self._to_writer(live)
            return
        self._committing = True
        loop, committer = self._loop, self._committer
        assert loop is not None and committer is not None
        done = committer.submit(self._commit, conn)
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._committed, f, live, results))

    def _commit(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._drop_connection()
            raise
        finally:
            self._conn_lock.release()

    def _committed(self, done: concurrent.futures.Future[None], live: list[Any], results: list[Any]) -> None:
        self._committing = False
        exc = done.exception()
        for (_fn, fut), result in zip(live, results, strict=True):
            if fut.done():
                continue
            if exc is None:
                fut.set_result(result)
            else:
                log.error("store commit failed: %s", exc)
                fut.set_exception(StoreUnavailable(f"store cannot commit: {exc}"))
        if self._inline and not self._flush_due:
            self._flush_due = True
            self._flush()

    def _to_writer(self, live: list[Any]) -> None:
        """Hand jobs to the writer thread, their results back to their loop futures."""
        for fn, fut in live:
            _chain(self.submit(fn), fut)

    def _writing_connection(self) -> sqlite3.Connection:
        """The writing connection (made on first use or after a failure); hold `_conn_lock`."""
        if self._conn is None:
            self._conn = self._connect()
            self._conn.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint_loop
        return self._conn

    def _drop_connection(self) -> None:
        """Forget a connection that failed (hold `_conn_lock`): the file may have come back."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._conn.close()
            self._conn = None

    async def read(self, fn: Callable[[Tx], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._read_sync, fn)

    def _read_sync(self, fn: Callable[[Tx], T]) -> T:
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                return fn(Tx(conn, "sqlite"))
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def ping(self) -> None:
        """Succeeds only if a real write commits now: an immutable file or a full disk lets an
        empty transaction through but fails every webhook, so the ping writes a heartbeat row."""
        now = int(time.time() * 1000)
        await self.transact(lambda tx: tx.heartbeat(now))

    # -- the writer thread ---------------------------------------------------------------

    wal_truncate_above_bytes = 4 << 20
    wal_truncate_every_s = 60.0

    def _checkpoint_loop(self, interval_s: float = 1.0) -> None:
        """Copy the WAL back into the database off the writer thread, and keep the WAL small.

        SQLite's automatic checkpoint would run inside a webhook's commit and stall every
        request queued behind it; a PASSIVE checkpoint here never blocks the writer. A PASSIVE
        checkpoint never shrinks the file, though, so a burst leaves a WAL that size for good:
        at most every `wal_truncate_every_s`, once a PASSIVE pass has copied every frame and the
        file is over `wal_truncate_above_bytes`, a TRUNCATE checkpoint empties it. It has nothing
        left to copy by then and waits at most 100 ms for the writer (else it is tried later),
        so a webhook's commit is never held up for long.
        """
        conn: sqlite3.Connection | None = None
        wal = self.path.with_name(self.path.name + "-wal")
        last_truncate = time.monotonic()
        while not self._checkpoints.wait(interval_s):
            try:
                if conn is None:
                    conn = self._connect()
                    conn.execute("PRAGMA busy_timeout=100")
                _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                now = time.monotonic()
                if now - last_truncate >= self.wal_truncate_every_s and frames == copied and \
                        _size(wal) > self.wal_truncate_above_bytes:
                    last_truncate = now
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                log.warning("checkpoint failed: %s", exc)
                conn = None
        if conn is not None:
            conn.close()

    def _write_loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is _STOP:
                break
            batch = [first]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                batch.append(job)
            with self._conn_lock:
                try:
                    self._run_batch(self._writing_connection(), batch)
                except sqlite3.Error as exc:
                    log.error("store commit failed: %s", exc)
                    self._drop_connection()
                    for _fn, fut in batch:
                        if not fut.done():
                            fut.set_exception(StoreUnavailable(f"store cannot commit: {exc}"))
            if stop:
                break

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        """Run every job in one transaction. Jobs almost never fail, so no per-job savepoint on
        the fast path; if one does, the batch is rolled back and re-run job by job."""
        tx = Tx(conn, "sqlite")
        live = [(fn, fut) for fn, fut in batch if fut.set_running_or_notify_cancel()]
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for fn, _fut in live:
                results.append(fn(tx))
        except sqlite3.OperationalError:
            raise  # disk, lock or I/O trouble: the whole batch fails as unavailable
        except Exception:
            conn.execute("ROLLBACK")
            self._run_isolated(conn, live)
            return
        conn.execute("COMMIT")
        for (_fn, fut), result in zip(live, results, strict=True):
            fut.set_result(result)

    def _run_isolated(self, conn: sqlite3.Connection, live: list[Any]) -> None:
        tx = Tx(conn, "sqlite")
        outcomes: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        for fn, fut in live:
            conn.execute("SAVEPOINT job")
            try:
                result = fn(tx)
            except sqlite3.OperationalError:
                raise
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((fut, False, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((fut, True, result))
        conn.execute("COMMIT")
        for fut, ok, value in outcomes:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)


def _chain(source: concurrent.futures.Future[Any], target: asyncio.Future[Any]) -> None:
    """Settle the loop future `target` with what the writer thread's `source` became."""
    loop = target.get_loop()

    def settle(done: concurrent.futures.Future[Any]) -> None:
        if target.done():
            return
        exc = done.exception()
        if exc is not None:
            target.set_exception(exc)
        else:
            target.set_result(done.result())

    source.add_done_callback(lambda done: loop.call_soon_threadsafe(settle, done))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
