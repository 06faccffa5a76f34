"""Ingest throughput: `hooktrack serve` (SQLite, durable commit before the 2xx) against a bare
Starlette endpoint that only reads the body, same bodies, same load generator, same run.

    uv run python bench/bench_ingest.py [--runs 3] [--duration 8] [--connections 32] [--history N]
                                        [--api-limit PER_MINUTE] [--log-level LEVEL] [--split]
                                        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Prints requests/s of both, the ratio, and p50/p99 latency; medians over `--runs` alternating
runs. `--history N` first stores N events so ingest is measured with a big store behind it.
`--postgres URL` stores in PostgreSQL instead: a database of its own per run, created through
URL's server and dropped afterwards (`hooktrack migrate` first, as in production).
Needs `wrk` (Debian package `wrk`). Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import stripe

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_bench_secret_0123456789abcdef"
FIXTURE = ROOT / "tests" / "fixtures" / "stripe" / "checkout.session.completed.json"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def write_requests(folder: Path, count: int, tag: str) -> tuple[Path, Path]:
    """`count` unique Stripe-signed checkout events: bodies and headers, one per line."""
    base = json.loads(FIXTURE.read_text())
    bodies, sigs = folder / f"bodies-{tag}.txt", folder / f"sigs-{tag}.txt"
    now = int(time.time())
    with bodies.open("w") as fb, sigs.open("w") as fs:
        for i in range(count):
            base["id"] = f"evt_bench_{tag}_{i}"
            base["data"]["object"]["id"] = f"cs_bench_{tag}_{i}"  # each checkout its own session, as in life
            base["data"]["object"]["payment_intent"] = f"pi_bench_{tag}_{i}"
            base["data"]["object"]["metadata"]["userId"] = f"user_{tag}_{i % 5000}"
            # Each customer pays a few times, as in real traffic: identity memory is read and
            # written per customer, and one shared customer would serialise every webhook on it.
            base["data"]["object"]["customer"] = f"cus_{tag}_{i % 5000}"
            base["data"]["object"]["customer_details"]["email"] = f"buyer{i % 5000}@example.com"
            body = json.dumps(base, separators=(",", ":"))
            fb.write(body + "\n")
            fs.write(stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=now) + "\n")
    return bodies, sigs


def wrk(url: str, bodies: Path, sigs: Path, duration: int, connections: int, stop: bool = True) -> dict[str, Any]:
    """Run wrk; with `stop`, each thread ends once its slice is sent, so no webhook repeats."""
    threads = 2
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
         "-s", str(ROOT / "bench" / "wrk_signed.lua"), url, "--", str(bodies), str(sigs), str(threads),
         "/webhooks/stripe", "stop" if stop else "cycle"],
        capture_output=True, text=True, check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if stop and result["requests"] >= sum(1 for _ in bodies.open()):
        print("  warning: every prepared request was sent before the time was up; raise --per-run", flush=True)
    return result


class Hooktrack:
    """`hooktrack serve`, or with `split` a `serve --no-worker` plus a separate `hooktrack worker`."""

    def __init__(self, folder: Path, tracking_url: str, port: int, split: bool) -> None:
        self.procs = [start_hooktrack(folder, tracking_url, port, worker=not split)]
        if split:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "adapter", "worker", "--config", str(folder / "hooktrack.toml"),
                 "--log-level", "WARNING"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait()


API_LIMIT = 3000
"""Requests per minute the forwarder may send (`tracking.max_requests_per_minute`): Dub's
highest plan (Advanced) allows 3,000, so a burst is absorbed by ingest and drained at that
pace, as against the real API. `--api-limit 0` lets the forwarder send as fast as the local
receiver answers (every webhook then also costs a forward in the same process)."""
LOG_LEVEL = "INFO"


STORE_URL: str | None = None
"""A PostgreSQL database for this run (`--postgres`), or None for SQLite in the run's folder."""


def start_hooktrack(folder: Path, tracking_url: str, port: int, worker: bool = True) -> subprocess.Popen[bytes]:
    config = folder / "hooktrack.toml"
    limit = f"max_requests_per_minute = {API_LIMIT}\n" if API_LIMIT else ""
    url = STORE_URL or f"sqlite:///{folder / 'bench.db'}"
    config.write_text(
        f'[store]\nurl = "{url}"\n'
        f'[tracking]\nurl = "{tracking_url}"\napi_key = "bench"\n{limit}'
        '[forwarder]\nfill_window_s = 0\n'
        f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{SECRET}"]\ntolerance_s = 86400\n'
    )
    if STORE_URL:
        subprocess.run([sys.executable, "-m", "adapter", "migrate", "--config", str(config)], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapter", "serve", "--config", str(config), "--port", str(port),
         "--log-level", LOG_LEVEL, *([] if worker else ["--no-worker"])],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_up(f"http://127.0.0.1:{port}/healthz")
    return proc


def start_uvicorn(app: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_up(f"http://127.0.0.1:{port}/")
    return proc


def _history_record(i: int, now: int) -> str:
    """The neutral record of past Sale `i`, as ingest stores it."""
    from adapter.records import Conversion

    return Conversion(kind="sale", source="stripe", provider="stripe", event_name="Purchase", occurred_at=now,
                      customer_external_id=f"user_hist_{i}", amount=4900, currency="usd",
                      invoice_id=f"pi_hist_{i}").to_json()


def seed_history(db: Path, count: int) -> None:
    """Store `count` past events, conversions and identities straight into the file (fast)."""
    conn = sqlite3.connect(db)
    now = int(time.time() * 1000)
    body = FIXTURE.read_text()
    conn.execute("BEGIN")
    batch = 50_000
    for start in range(0, count, batch):
        rows = range(start, min(count, start + batch))
        conn.executemany(
            "INSERT INTO events (source, provider, dedup_key, provider_event_id, event_type, received_at,"
            " occurred_at, livemode, status, body) VALUES ('stripe', 'stripe', ?, ?, 'checkout.session.completed',"
            " ?, ?, 0, 'accepted', ?)",
            ((f"evt_hist_{i}", f"evt_hist_{i}", now, now, body) for i in rows),
        )
        conn.executemany(
            "INSERT INTO conversions (event_id, source, kind, event_name, business_key, customer_external_id,"
            " record, created_at, updated_at) VALUES (?, 'stripe', 'sale', 'Purchase', ?, ?, ?, ?, ?)",
            ((i + 1, f"sale:pi_hist_{i}", f"user_hist_{i}", _history_record(i, now), now, now) for i in rows),
        )
        conn.executemany(
            "INSERT INTO deliveries (conversion_id, destination, state, next_attempt_at, window_until, created_at,"
            " updated_at, delivered_at, last_status) VALUES (?, 'dub', 'delivered', ?, ?, ?, ?, ?, 200)",
            ((i + 1, now, now + 86_400_000, now, now, now) for i in rows),
        )
        conn.executemany(
            "INSERT INTO business_keys (source, key, conversion_id, created_at) VALUES ('stripe', ?, ?, ?)",
            ((f"sale:pi_hist_{i}", i + 1, now) for i in rows),
        )
        conn.executemany(
            "INSERT INTO identities (source, key_kind, key, external_id, explicit, updated_at)"
            " VALUES ('stripe', 'customer', ?, ?, 1, ?)",
            ((f"cus_hist_{i}", f"user_hist_{i}", now) for i in rows),
        )
    conn.commit()
    conn.close()


class PostgresRuns:
    """One fresh database per run on the server of `base` (a URL to any database there)."""

    def __init__(self, base: str) -> None:
        import psycopg

        self.base, self.psycopg = base, psycopg
        self.names: list[str] = []

    def _admin(self, sql: str) -> None:
        with self.psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(sql)

    def fresh(self, run: int) -> str:
        from urllib.parse import urlsplit, urlunsplit

        name = f"hooktrack_bench_{os.getpid()}_{run}"
        self._admin(f'DROP DATABASE IF EXISTS "{name}"')
        self._admin(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return urlunsplit(urlsplit(self.base)._replace(path=f"/{name}"))

    def drop_all(self) -> None:
        for name in self.names:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    global API_LIMIT, LOG_LEVEL, STORE_URL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--history", type=int, default=0, help="events stored before measuring")
    parser.add_argument("--per-run", type=int, default=40_000, help="unique signed requests per run")
    parser.add_argument("--split", action="store_true",
                        help="serve --no-worker plus a separate worker process (the forwarder off the ingest process)")
    parser.add_argument("--api-limit", type=int, default=3000,
                        help="forwarder's requests per minute (Dub's plans allow 120-3,000); 0 = unpaced")
    parser.add_argument("--log-level", default="INFO", help="hooktrack's log level (INFO, the default, "
                        "writes one line per webhook)")
    parser.add_argument("--postgres", metavar="URL",
                        help="store in PostgreSQL: a fresh database per run on this URL's server")
    args = parser.parse_args()
    API_LIMIT, LOG_LEVEL = args.api_limit, args.log_level
    if args.postgres and args.history:
        sys.exit("--history seeds a SQLite file; it does not go with --postgres")
    postgres = PostgresRuns(args.postgres) if args.postgres else None
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="hooktrack-bench-"))
    receiver_port = free_port()
    receiver = start_uvicorn("bench.bare:app", receiver_port)  # a fast tracking API stand-in
    bare_port = free_port()
    bare = start_uvicorn("bench.bare:app", bare_port)
    results: dict[str, list[dict[str, Any]]] = {"bare": [], "hooktrack": []}
    template: Path | None = None
    if args.history:
        # One store with the history, made once and copied for each run.
        template = work / "template"
        template.mkdir()
        proc = start_hooktrack(template, f"http://127.0.0.1:{receiver_port}", free_port())
        proc.terminate()
        proc.wait()
        started = time.perf_counter()
        seed_history(template / "bench.db", args.history)
        print(f"seeded {args.history:,} events in {time.perf_counter() - started:.0f}s", flush=True)
    try:
        for run in range(args.runs):
            bodies, sigs = write_requests(work, args.per_run, f"r{run}")
            results["bare"].append(wrk(f"http://127.0.0.1:{bare_port}", bodies, sigs, args.duration, args.connections,
                                       stop=False))
            folder = work / f"run{run}"
            folder.mkdir()
            port = free_port()
            if template is not None:
                shutil.copy(template / "bench.db", folder / "bench.db")
            if postgres is not None:
                STORE_URL = postgres.fresh(run)
            hooktrack = Hooktrack(folder, f"http://127.0.0.1:{receiver_port}", port, args.split)
            try:
                results["hooktrack"].append(wrk(f"http://127.0.0.1:{port}", bodies, sigs, args.duration,
                                                args.connections))
            finally:
                hooktrack.stop()
            print(f"run {run + 1}: bare {results['bare'][-1]['rps']:.0f} req/s, "
                  f"hooktrack {results['hooktrack'][-1]['rps']:.0f} req/s", flush=True)
    finally:
        bare.terminate()
        receiver.terminate()
        shutil.rmtree(work, ignore_errors=True)
        if postgres is not None:
            postgres.drop_all()
    report(results, args)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    bare, hook = med("bare", "rps"), med("hooktrack", "rps")
    topology = "serve --no-worker + worker" if args.split else "serve with its in-process forwarder"
    topology += f", forwarder at {args.api_limit:,}/min" if args.api_limit else ", forwarder unpaced"
    topology += f", log level {args.log_level}, store {'PostgreSQL' if args.postgres else 'SQLite'}"
    print(f"\ningest ({topology}), {args.connections} connections, {args.duration}s x {args.runs} runs, "
          f"history {args.history:,} events, {os.cpu_count()} CPUs (medians)")
    for name in ("bare", "hooktrack"):
        non2xx = sum(r["non2xx"] + r["socket_errors"] for r in results[name])
        print(f"  {name:9s} {med(name, 'rps'):8.0f} req/s   p50 {med(name, 'p50_us') / 1000:6.2f} ms   "
              f"p99 {med(name, 'p99_us') / 1000:6.2f} ms   errors {non2xx}")
    print(f"  ratio hooktrack / bare: {hook / bare:.2f}")


if __name__ == "__main__":
    main()
