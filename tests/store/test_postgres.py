"""What only the PostgreSQL store does: migrations, conflict retries, unreachable servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapter.errors import ConfigError, StoreUnavailable
from adapter.receiver import free_port
from adapter.store import Tx, open_store
from adapter.store.schema import SCHEMA_VERSION
from tests.conftest import STRIPE_SECRET
from tests.store.conftest import Harness


def hooktrack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapter", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def write_config(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "hooktrack.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\npool_size = 4\n'
                    '[tracking]\nurl = "http://127.0.0.1:9"\napi_key = "k"\n'
                    f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n')
    return path


def test_migrate_then_check_report_the_schema_version(pg_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, pg_url)
    before = hooktrack("check", "--config", str(config))
    assert before.returncode == 2
    assert "run `hooktrack migrate`" in before.stderr and "Traceback" not in before.stderr
    for _ in range(2):  # idempotent
        out = hooktrack("migrate", "--config", str(config))
        assert out.returncode == 0, out.stderr
        assert f"schema version {SCHEMA_VERSION}" in out.stdout
    out = hooktrack("check", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert f"(schema version {SCHEMA_VERSION})" in out.stdout


def test_replicas_migrating_at_once_all_succeed(pg_url: str) -> None:
    results: list[Any] = []

    def migrate() -> None:
        try:
            results.append(open_store(pg_url).migrate())
        except Exception as exc:  # collected, asserted below
            results.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [SCHEMA_VERSION] * 6


def test_a_newer_schema_is_refused(migrated_pg_url: str) -> None:
    with psycopg.connect(migrated_pg_url, autocommit=True) as conn:
        conn.execute("UPDATE hooktrack_meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    store = open_store(migrated_pg_url)
    with pytest.raises(ConfigError, match="newer than this hooktrack"):
        store.migrate()
    with pytest.raises(ConfigError, match=f"needs {SCHEMA_VERSION}"):
        asyncio.run(store.open())


def test_unreachable_server_is_store_unavailable() -> None:
    store = open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/test", lock_timeout_s=1)
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.open())
    with pytest.raises(StoreUnavailable):
        store.migrate()


@pytest.fixture
def pg_store(migrated_pg_url: str) -> Any:
    harness = Harness(open_store(migrated_pg_url, pool_size=4), "postgresql")
    harness.run(harness.store.open())
    yield harness
    harness.close()


def test_deadlocked_transaction_is_run_again(pg_store: Harness) -> None:
    pg_store.tx(lambda tx: tx.execute("CREATE TABLE pair (id INT PRIMARY KEY, n INT NOT NULL)"))
    pg_store.tx(lambda tx: tx.execute("INSERT INTO pair VALUES (1, 0), (2, 0)"))
    both_hold_one = threading.Barrier(2, timeout=10)
    runs = {"a": 0, "b": 0}

    def crosswise(name: str, first: int, second: int) -> Any:
        def fn(tx: Tx) -> int:
            runs[name] += 1
            tx.execute("UPDATE pair SET n = n + 1 WHERE id = ?", (first,))
            if runs[name] == 1:
                both_hold_one.wait()  # each now waits for the row the other holds: a deadlock
            tx.execute("UPDATE pair SET n = n + 1 WHERE id = ?", (second,))
            return runs[name]

        return fn

    pg_store.concurrently([crosswise("a", 1, 2), crosswise("b", 2, 1)])
    # PostgreSQL aborted one and the store ran it again (on a loaded machine the other may be
    # aborted too, once the first has been retried): every transaction committed exactly once.
    assert 2 in runs.values() and max(runs.values()) <= 3
    assert pg_store.read(lambda tx: tx.all("SELECT n FROM pair ORDER BY id")) == [(2,), (2,)]


def test_text_with_nul_characters_is_stored(pg_store: Harness) -> None:
    row = {"source": "s", "provider": "p", "dedup_key": "evt\x00nul", "received_at": 1, "status": "accepted",
           "body": "{\"name\": \"a\x00b\"}"}
    assert pg_store.tx(lambda tx: tx.insert_event(row)) is not None
    assert pg_store.read(lambda tx: tx.one("SELECT body FROM events"))[0] == "{\"name\": \"a\ufffdb\"}"


def test_closed_store_refuses_work(migrated_pg_url: str) -> None:
    store = open_store(migrated_pg_url)
    with pytest.raises(StoreUnavailable, match="not open"):
        asyncio.run(store.transact(lambda tx: tx.one("SELECT 1")))
