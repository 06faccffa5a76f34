"""hooktrack processes for the scale-out tests: configs, `serve --no-worker`, `worker`, signed events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import stripe

from tests.conftest import STRIPE_SECRET, fixture, wait_for


def write_config(path: Path, store_url: str, tracking_url: str, **forwarder: Any) -> Path:
    settings = {"base_delay_s": 0.05, "max_delay_s": 0.5, "poll_interval_s": 0.05, "fill_window_s": 0,
                "lease_s": 30, **forwarder}
    lines = [f'[store]\nurl = "{store_url}"\npool_size = 8\n',
             f'[tracking]\nurl = "{tracking_url}"\napi_key = "test_key"\ntimeout_s = 30\n', "[forwarder]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines.append(f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n')
    path.write_text("\n".join(lines))
    return path


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "adapter", *args], stdout=out, stderr=out)


def serve(config: Path, port: int, log: Path, *, worker: bool = False) -> subprocess.Popen[bytes]:
    """`hooktrack serve [--no-worker]`, returned once /healthz answers."""
    args = ["serve", "--config", str(config), "--port", str(port)] + ([] if worker else ["--no-worker"])
    proc = _spawn(args, log)
    wait_for(lambda: proc.poll() is not None or up(port), timeout=30)
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc


def worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`hooktrack worker` at DEBUG, where it logs each delivery (`delivered_by` reads them)."""
    return _spawn(["worker", "--config", str(config), "--log-level", "DEBUG"], log)


def up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            stop(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, STRIPE_SECRET)
    return body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


def journey(i: int, tag: str) -> list[dict[str, Any]]:
    """Customer `i`'s sign-up (a Lead with a clickId) and checkout (a Sale), as Stripe sends them."""
    lead = fixture("stripe", "customer.created")
    lead["id"] = f"evt_{tag}_lead_{i}"
    lead["data"]["object"].update(id=f"cus_{tag}_{i}", email=f"c{i}@example.com",
                                  metadata={"userId": f"user_{tag}_{i}", "dubClickId": f"cl_{tag}_{i}"})
    sale = fixture("stripe", "checkout.session.completed")
    sale["id"] = f"evt_{tag}_sale_{i}"
    sale["data"]["object"].update(id=f"cs_{tag}_{i}", payment_intent=f"pi_{tag}_{i}", customer=f"cus_{tag}_{i}",
                                  client_reference_id=f"dub_id_cl_{tag}_{i}", metadata={"userId": f"user_{tag}_{i}"})
    return [lead, sale]


def delivered_by(log: Path) -> set[int]:
    """Conversion ids a worker's JSON log says it delivered (its `forward delivered` lines)."""
    out: set[int] = set()
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("msg") == "forward delivered":
                out.add(int(rec["conversion_id"]))
    return out


def settle(predicate: Any, timeout: float) -> None:
    """Wait for `predicate`, then a little longer so that late duplicates would show."""
    wait_for(predicate, timeout=timeout, interval=0.1)
    time.sleep(1.0)
