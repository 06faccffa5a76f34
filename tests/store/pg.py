"""PostgreSQL for the tests: the shared server, scratch databases and schemas, private clusters.

The shared server is `$HOOKTRACK_TEST_PG` (default: the machine's PostgreSQL 15 on
127.0.0.1:5432, trust auth, user postgres, database test). Each test session works in a fresh
database it drops afterwards; each test in a fresh schema of it (a `search_path` in the URL).
Without a server the PostgreSQL tests skip, unless `HOOKTRACK_REQUIRE_PG=1` (CI): then they fail.

A private cluster (`PrivateCluster`) is for tests that stop and start the server: `initdb` +
`pg_ctl` on a free port under a temp dir. initdb refuses to run as root, so when the tests run
as root the cluster's directory is given to the `postgres` system user and every server command
runs as that user through `runuser -u postgres --`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import psycopg
import pytest

ADMIN_URL = os.environ.get("HOOKTRACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_BIN = Path(os.environ.get("HOOKTRACK_PG_BIN", "/usr/lib/postgresql/15/bin"))
REQUIRED = os.environ.get("HOOKTRACK_REQUIRE_PG") == "1"


def missing(reason: str) -> NoReturn:
    """Skip a PostgreSQL test that cannot run here, or fail it when PostgreSQL is required."""
    if REQUIRED:
        pytest.fail(f"HOOKTRACK_REQUIRE_PG=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def unreachable_reason(url: str = ADMIN_URL) -> str | None:
    """None if the server answers, else why not (for the skip message)."""
    try:
        with psycopg.connect(url, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {url} ({str(exc).strip().splitlines()[0]}); set HOOKTRACK_TEST_PG"


def with_db(url: str, db: str) -> str:
    head, _, tail = url.rpartition("/")
    query = tail.partition("?")[2]
    return f"{head}/{db}" + (f"?{query}" if query else "")


def with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


def create_database(admin_url: str = ADMIN_URL) -> str:
    name = f"hooktrack_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_db(admin_url, name)


def drop_database(db_url: str, admin_url: str = ADMIN_URL) -> None:
    name = db_url.rpartition("/")[2].partition("?")[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_schema(db_url: str) -> str:
    """A fresh schema in `db_url`; returns a URL whose connections use it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return with_schema(db_url, name)


class PrivateCluster:
    """A throwaway PostgreSQL server of our own, which a test may stop and start at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="hooktrack-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._as_postgres = os.geteuid() == 0

    @staticmethod
    def unavailable_reason() -> str | None:
        if not (PG_BIN / "initdb").exists():
            return f"no PostgreSQL server binaries in {PG_BIN} (set HOOKTRACK_PG_BIN)"
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                return "running as root without runuser: cannot start a private PostgreSQL"
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user to run initdb as"
        return None

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)

    def init(self) -> PrivateCluster:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
            self.dir.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        return self

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while unreachable_reason(self.url) is not None:
            if time.time() > deadline:
                raise RuntimeError(f"private PostgreSQL did not come up: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
