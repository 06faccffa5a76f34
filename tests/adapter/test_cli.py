"""The `hooktrack` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import STRIPE_SECRET


def hooktrack(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapter", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, check=False)


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "hooktrack.toml"
    path.write_text(
        '[tracking]\nurl = "http://127.0.0.1:9"\napi_key = "k"\n'
        f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n{extra}'
    )
    return path


def test_check_reports_sources_and_schema(tmp_path: Path) -> None:
    out = hooktrack("check", "--config", str(config(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert "POST /webhooks/stripe  provider=stripe  secrets=1" in out.stdout
    assert "schema version" in out.stdout


def test_check_fails_clearly_on_bad_config(tmp_path: Path) -> None:
    out = hooktrack("check", "--config", str(config(tmp_path, 'tolerance_s = "soon"\n')))
    assert out.returncode == 2
    assert "sources.stripe.tolerance_s" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_to_start_without_a_config(tmp_path: Path) -> None:
    out = hooktrack("serve", cwd=tmp_path)
    assert out.returncode == 2
    assert "config file not found" in out.stderr


def test_providers_lists_builtins(tmp_path: Path) -> None:
    out = hooktrack("providers", "--json")
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["stripe"]["status"] == "ok" and rows["stripe"]["package"] == "hooktrack"


def test_demo_shows_every_journey_and_leaves_an_explorable_store(tmp_path: Path) -> None:
    out = hooktrack("demo", "--dir", "demo", cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "what the tracking API received" in out.stdout
    events: list[dict[str, Any]] = json.loads(
        hooktrack("events", "--json", "--config", str(tmp_path / "demo" / "hooktrack.toml")).stdout
    )
    statuses = sorted(e["status"] for e in events)
    assert statuses.count("accepted") == 7
    assert statuses.count("duplicate") == 2 and statuses.count("rejected") == 1
    delivered = [c for e in events for c in e["conversions"] if c["state"] == "delivered"]
    assert {c["event_name"] for c in delivered} == {"Sign up", "Purchase", "Subscription creation", "Started Trial"}
    sold_by = {e["source"] for e in events for c in e["conversions"] if c["kind"] == "sale" and c["state"] == "delivered"}
    assert sold_by == {"stripe", "paddle", "lemonsqueezy"}
    # the demo's tracking API refuses the renewal once, so there is a dead letter to replay
    dead = [c for e in events for c in e["conversions"] if c["state"] == "dead"]
    assert [(c["event_name"], c["reason"]) for c in dead] == [("Subscription renewal", "http_422")]
    shown = hooktrack("events", "show", str(events[-1]["id"]), "--config", str(tmp_path / "demo" / "hooktrack.toml"))
    assert shown.returncode == 0 and "event #" in shown.stdout
