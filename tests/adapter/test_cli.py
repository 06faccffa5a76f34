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
    assert statuses.count("accepted") == 8
    assert statuses.count("duplicate") == 2 and statuses.count("rejected") == 1
    delivered = [c for e in events for c in e["conversions"] if c["state"] == "delivered"]
    assert {c["event_name"] for c in delivered} == {"Sign up", "Purchase", "Subscription creation", "Started Trial",
                                                "Refund"}
    sold_by = {e["source"] for e in events for c in e["conversions"] if c["kind"] == "sale" and c["state"] == "delivered"}
    assert sold_by == {"stripe", "paddle", "lemonsqueezy"}
    # the demo's tracking API refuses the renewal once, so there is a dead letter to replay
    dead = [c for e in events for c in e["conversions"] if c["state"] == "dead"]
    assert [(c["event_name"], c["reason"]) for c in dead] == [("Subscription renewal", "http_422")]
    shown = hooktrack("events", "show", str(events[-1]["id"]), "--config", str(tmp_path / "demo" / "hooktrack.toml"))
    assert shown.returncode == 0 and "event #" in shown.stdout
    # the refund's journey: the Sale it reverses and both requests (find the commission, change it)
    [refund] = [e for e in events if e["event_type"] == "charge.refunded"]
    sale = next(c["id"] for e in events for c in e["conversions"] if c["event_name"] == "Purchase"
                and e["source"] == "stripe")
    shown = hooktrack("events", "show", str(refund["id"]), "--config", str(tmp_path / "demo" / "hooktrack.toml"))
    assert f"reverses: sale #{sale}" in shown.stdout
    assert "find_commission:follow" in shown.stdout and "update_commission:delivered" in shown.stdout


def test_check_redacts_the_credentials_of_every_url_it_prints(tmp_path: Path) -> None:
    import pytest

    from tests.store.pg import create_database, drop_database, unreachable_reason

    if reason := unreachable_reason():
        pytest.skip(reason)
    db_url = create_database()
    # trust auth ignores the password: it is only there to be hidden
    with_password = db_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    path = tmp_path / "hooktrack.toml"
    path.write_text(
        f'[store]\nurl = "{with_password}"\n'
        '[tracking]\nurl = "http://dubuser:s3cret@127.0.0.1:9"\napi_key = "dub_k"\n'
        f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n')
    try:
        assert hooktrack("migrate", "--config", str(path)).returncode == 0
        out = hooktrack("check", "--config", str(path))
        migrated = hooktrack("migrate", "--config", str(path))
    finally:
        drop_database(db_url)
    assert out.returncode == 0, out.stderr
    host_db = with_password.rpartition("@")[2]
    assert f"store ok: postgresql://***@{host_db}" in out.stdout
    assert f"at postgresql://***@{host_db}" in migrated.stdout
    assert "hunter2" not in migrated.stdout + migrated.stderr
    assert "tracking: http://***@127.0.0.1:9" in out.stdout
    assert "hunter2" not in out.stdout + out.stderr and "s3cret" not in out.stdout + out.stderr
    assert "dubuser" not in out.stdout + out.stderr


def test_check_warns_about_two_sources_sharing_a_secret(tmp_path: Path) -> None:
    extra = f'[sources.stripe-copy]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n'
    out = hooktrack("check", "--config", str(config(tmp_path, extra)))
    assert out.returncode == 0, out.stderr
    assert "warning: sources stripe, stripe-copy share a secret" in out.stdout
    assert "warning: tracking.api_key: a Dub API key starts with dub_" in out.stdout


def test_check_refuses_an_unexpanded_variable_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "hooktrack.toml"
    path.write_text('[tracking]\nurl = "http://127.0.0.1:9"\napi_key = "dub_k"\n'
                    '[sources.stripe]\nprovider = "stripe"\nsecrets = ["$STRIPE_WEBHOOK_SECRET"]\n')
    out = hooktrack("check", "--config", str(path))
    assert out.returncode == 2
    assert "sources.stripe.secrets[0]: looks like an unexpanded environment variable" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_with_an_unopenable_database_is_one_line_and_fails(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    path = config(tmp_path, "")
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/not-a-dir/hooktrack.db"\n' + path.read_text())
    out = hooktrack("serve", "--config", str(path), "--port", "1")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("hooktrack: cannot open ")


def test_serve_with_a_read_only_database_is_one_line_and_fails(tmp_path: Path) -> None:
    import pytest

    path = config(tmp_path, f'[store]\nurl = "sqlite:///{tmp_path}/hooktrack.db"\n')
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/ro.db"\n' + config(tmp_path).read_text())
    assert hooktrack("migrate", "--config", str(path)).returncode == 0
    db = tmp_path / "ro.db"
    db.chmod(0o444)
    tmp_path.chmod(0o555)
    # root ignores file modes: make the file immutable instead where that is allowed
    immutable = subprocess.run(["chattr", "+i", str(db)], capture_output=True, check=False).returncode == 0
    try:
        probe = subprocess.run([sys.executable, "-c", f"open({str(db)!r}, 'ab')"], capture_output=True, check=False)
        if probe.returncode == 0:
            pytest.skip("cannot make a file read-only here (root without chattr)")
        out = hooktrack("serve", "--config", str(path), "--port", "1")
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(db)], check=False)
        tmp_path.chmod(0o755)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "readonly database" in out.stderr.strip().splitlines()[-1]


def test_ids_and_times_over_2_63_are_usage_errors_not_tracebacks(tmp_path: Path) -> None:
    path = config(tmp_path)
    for args in (["events", "show", "99999999999999999999"], ["replay", "99999999999999999999"],
                 ["events", "--since", "99999999999999999999"]):
        out = hooktrack(*args, "--config", str(path))
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and "Error: Invalid value" in out.stderr, out.stderr


def test_serve_logs_the_config_warnings_at_startup(tmp_path: Path) -> None:
    from adapter.receiver import free_port
    from tests.store.procs import serve, stop

    extra = f'[sources.stripe-copy]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n'
    log = tmp_path / "serve.log"
    stop(serve(config(tmp_path, extra), free_port(), log))
    warned = [json.loads(line) for line in log.read_text().splitlines()
              if line.startswith("{") and "share a secret" in line]
    assert len(warned) == 1 and warned[0]["level"] == "warning", log.read_text()[-2000:]
    assert warned[0]["msg"].startswith("config: sources stripe, stripe-copy share a secret")
