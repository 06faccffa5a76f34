"""A third-party provider installs as a package and works without touching adapter/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from adapter.receiver import TrackingReceiver, free_port, run_in_thread
from tests.conftest import sent_once, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hooktrack-provider-example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example plugin installed (a real build and install) into its own site directory."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build and install the example plugin (pip install uv)")
    target = tmp_path_factory.mktemp("site")
    subprocess.run([uv, "pip", "install", "--quiet", "--no-deps", "--python", sys.executable, "--target",
                    str(target), str(EXAMPLE)], check=True, capture_output=True, timeout=300)
    return {**os.environ, "PYTHONPATH": str(target)}


def hooktrack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapter", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_installed_plugin_is_listed(installed: dict[str, str]) -> None:
    rows = {r["name"]: r for r in json.loads(hooktrack(installed, "providers", "--json").stdout)}
    assert rows["acmepay"]["status"] == "ok"
    assert rows["acmepay"]["package"] == "hooktrack-provider-example"


def test_a_webhook_flows_through_the_plugin(installed: dict[str, str], tmp_path: Path) -> None:
    receiver = TrackingReceiver(api_key="k")
    with run_in_thread(receiver.app()) as tracking_url:
        config = tmp_path / "hooktrack.toml"
        config.write_text(
            f'[store]\nurl = "sqlite:///{tmp_path / "h.db"}"\n[tracking]\nurl = "{tracking_url}"\napi_key = "k"\n'
            "[forwarder]\nfill_window_s = 0\npoll_interval_s = 0.05\n"
            '[sources.acme]\nprovider = "acmepay"\nsecrets = ["acme_secret"]\n'
        )
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "adapter", "serve", "--config", str(config),
                                   "--port", str(port)], env=installed, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: _up(port), timeout=20)
            sent = hooktrack(installed, "send", "acme", "payment.paid", "--config", str(config),
                             "--url", f"http://127.0.0.1:{port}")
            assert '"status":"accepted"' in sent.stdout.replace(" ", ""), sent.stdout + sent.stderr
            sale = sent_once(receiver)
        finally:
            server.terminate()
            server.wait(timeout=20)
    assert sale.body["amount"] == 4410 and sale.body["currency"] == "eur"
    assert sale.body["paymentProcessor"] == "custom"  # not one Dub knows: metadata.provider names it
    assert sale.body["metadata"]["provider"] == "acmepay"
    assert sale.body["customerExternalId"] == "user_42" and sale.body["clickId"] == "cl_acme"


def test_the_plugins_own_contract_suite_passes(installed: dict[str, str]) -> None:
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                         env=installed, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "passed" in run.stdout


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False
