"""Scale-out on PostgreSQL: ingest and forward throughput with 1 vs 2 ingest processes.

    uv run python bench/bench_postgres_scale.py [--runs 3] [--duration 8] [--connections 32]

Each measurement starts the production topology on a fresh schema: K `hooktrack serve
--no-worker` (K = 1, then 2; the order alternates between runs) and one `hooktrack worker`,
forwarding to a local tracking-API stand-in. Two `wrk` processes post unique Stripe-signed
checkout events for `--duration` seconds: with K = 2 each wrk has its own replica, with K = 1
both share the one (same load generator either way). Reported, as medians of `--runs`:

- ingest: webhooks acknowledged per second while the worker forwards alongside;
- forward: conversions delivered per second, from the first webhook until the outbox is empty;

and the ratio of K = 2 to K = 1 for both, from the same run. Needs `wrk` (Debian package) and
PostgreSQL at `$HOOKTRACK_BENCH_PG` (default postgresql://postgres@127.0.0.1:5432/test), where
it creates a scratch database and drops it afterwards. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import FIXTURE, ROOT, SECRET, free_port, start_uvicorn, wait_up

ADMIN_URL = os.environ.get("HOOKTRACK_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def _track(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"ok": True})


tracking_app = Starlette(routes=[Route("/track/{kind}", _track, methods=["POST"])])
"""The tracking API stand-in: answers every `POST /track/{lead,sale}` with 200 at once."""


def scratch_database() -> str:
    name = f"hooktrack_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return ADMIN_URL.rpartition("/")[0] + f"/{name}"


def drop_database(url: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')


def fresh_schema(db_url: str) -> str:
    name = f"run_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return f"{db_url}?options={quote(f'-csearch_path={name}')}"


def outbox(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {state: n for state, n in conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state")}


def write_requests(folder: Path, count: int, tag: str) -> tuple[Path, Path]:
    """`count` Stripe-signed checkout events of `count` different customers (bodies, headers)."""
    import stripe

    base = json.loads(FIXTURE.read_text())
    obj = base["data"]["object"]
    bodies, sigs = folder / f"bodies-{tag}.txt", folder / f"sigs-{tag}.txt"
    now = int(time.time())
    with bodies.open("w") as fb, sigs.open("w") as fs:
        for i in range(count):
            base["id"] = f"evt_{tag}_{i}"
            obj.update(id=f"cs_{tag}_{i}", payment_intent=f"pi_{tag}_{i}", customer=f"cus_{tag}_{i}",
                       metadata={"userId": f"user_{tag}_{i}"})
            obj["customer_details"]["email"] = f"c{i}.{tag}@example.com"
            body = json.dumps(base, separators=(",", ":"))
            fb.write(body + "\n")
            fs.write(stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=now) + "\n")
    return bodies, sigs


def wrk(url: str, bodies: Path, sigs: Path, duration: int, connections: int) -> dict[str, Any]:
    """One single-threaded wrk posting each pre-signed body once (bench/wrk_signed.lua)."""
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency",
         "-s", str(ROOT / "bench" / "wrk_signed.lua"), url, "--", str(bodies), str(sigs), "1", "/webhooks/stripe"],
        capture_output=True, text=True, check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def wait_drained(store_url: str, started: float) -> float:
    """Seconds from `started` until the outbox was empty (and stayed so: requests wrk left in
    flight when it stopped may still be committing)."""
    while True:
        while outbox(store_url).get("pending", 0):
            if time.time() - started > 600:
                raise RuntimeError("the outbox did not drain within 10 minutes")
            time.sleep(0.05)
        empty_at = time.time()
        time.sleep(0.5)
        if not outbox(store_url).get("pending", 0):
            return empty_at - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hooktrack(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "adapter", *args, "--log-level", "WARNING"],
                                cwd=ROOT, stdout=out, stderr=out)


def write_config(folder: Path, store_url: str, tracking_url: str) -> Path:
    config = folder / "hooktrack.toml"
    config.write_text(
        f'[store]\nurl = "{store_url}"\npool_size = 10\n'
        f'[tracking]\nurl = "{tracking_url}"\napi_key = "bench"\n'
        "[forwarder]\nfill_window_s = 0\n"
        f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{SECRET}"]\ntolerance_s = 86400\n'
    )
    return config


def measure(db_url: str, tracking_url: str, replicas: int, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """One run of the topology with `replicas` ingest processes; returns its rates."""
    store_url = fresh_schema(db_url)
    folder = Path(tempfile.mkdtemp(dir=work))
    config = write_config(folder, store_url, tracking_url)
    subprocess.run([sys.executable, "-m", "adapter", "migrate", "--config", str(config)], cwd=ROOT, check=True,
                   capture_output=True)
    ports = [free_port() for _ in range(replicas)]
    procs = [hooktrack(["serve", "--no-worker", "--config", str(config), "--port", str(p)], folder / f"serve{p}.log")
             for p in ports]
    procs.append(hooktrack(["worker", "--config", str(config)], folder / "worker.log"))
    try:
        for p in ports:
            wait_up(f"http://127.0.0.1:{p}/healthz")
        slices = [write_requests(folder, args.per_wrk, f"{replicas}-{n}") for n in range(2)]
        results: list[dict[str, Any]] = [{}, {}]

        def load(n: int) -> None:
            bodies, sigs = slices[n]
            results[n] = wrk(f"http://127.0.0.1:{ports[n % replicas]}", bodies, sigs, args.duration,
                             args.connections // 2)

        cpu_before = [cpu_seconds(proc.pid) for proc in procs]
        started = time.time()
        loaders = [threading.Thread(target=load, args=(n,)) for n in range(2)]
        for t in loaders:
            t.start()
        for t in loaders:
            t.join()
        drained = wait_drained(store_url, started)
        cpu = [cpu_seconds(proc.pid) - before for proc, before in zip(procs, cpu_before, strict=True)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
    states = outbox(store_url)
    acked = sum(r["requests"] - r["non2xx"] for r in results)
    errors = sum(r["non2xx"] + r["socket_errors"] for r in results)
    # wrk does not count the requests still in flight when it stops; the server took them.
    if set(states) != {"delivered"} or not acked <= states["delivered"] <= acked + args.connections:
        raise RuntimeError(f"expected {acked} delivered conversions, found {states}")
    ingest = sum(r["requests"] / (r["duration_us"] / 1e6) for r in results)
    return {"ingest": ingest, "forward": states["delivered"] / drained, "errors": errors,
            "p99_ms": max(r["p99_us"] for r in results) / 1000,
            "ingest_cpu_ms": sum(cpu[:-1]) / states["delivered"] * 1000,
            "worker_cpu_ms": cpu[-1] / states["delivered"] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32, help="in total, split between the two wrk")
    parser.add_argument("--per-wrk", type=int, default=25_000, help="unique signed requests per wrk per run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="hooktrack-pgbench-"))
    receiver_port = free_port()
    receiver = start_uvicorn("bench.bench_postgres_scale:tracking_app", receiver_port)
    db_url = scratch_database()
    rates: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    try:
        for run in range(args.runs):
            for replicas in (1, 2) if run % 2 == 0 else (2, 1):
                rates[replicas].append(measure(db_url, f"http://127.0.0.1:{receiver_port}", replicas, work, args))
            one, two = rates[1][-1], rates[2][-1]
            print(f"run {run + 1}: ingest {one['ingest']:.0f} vs {two['ingest']:.0f} req/s, "
                  f"forward {one['forward']:.0f} vs {two['forward']:.0f} conv/s (1 vs 2 ingest processes)", flush=True)
    finally:
        receiver.terminate()
        drop_database(db_url)
        shutil.rmtree(work, ignore_errors=True)
    report(rates, args)


def report(rates: dict[int, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def med(replicas: int, key: str) -> float:
        return statistics.median(r[key] for r in rates[replicas])

    load = os.getloadavg()[0]
    print(f"\nPostgreSQL scale-out, {args.connections} connections from 2 wrk, {args.duration}s x {args.runs} runs, "
          f"1 worker, {os.cpu_count()} CPUs, load average {load:.1f} at the end (medians)")
    for replicas in (1, 2):
        label = f"{replicas} ingest process{'es' if replicas > 1 else '  '}"
        print(f"  {label}  ingest {med(replicas, 'ingest'):7.0f} req/s "
              f"(p99 {med(replicas, 'p99_ms'):6.1f} ms)   forward {med(replicas, 'forward'):7.0f} conversions/s   "
              f"errors {sum(r['errors'] for r in rates[replicas]):.0f}")
        print(f"{'':22s}CPU per webhook: ingest processes {med(replicas, 'ingest_cpu_ms'):.2f} ms, "
              f"worker {med(replicas, 'worker_cpu_ms'):.2f} ms")
    ratios = [(two["ingest"] / one["ingest"], two["forward"] / one["forward"])
              for one, two in zip(rates[1], rates[2], strict=True)]
    print(f"  ratio 2 / 1: ingest {statistics.median(r[0] for r in ratios):.2f}, "
          f"forward {statistics.median(r[1] for r in ratios):.2f} (median of per-run ratios)")


if __name__ == "__main__":
    main()
