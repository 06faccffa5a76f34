"""The admin page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

It runs against `hooktrack demo --serve`, as a new user would: log in with the printed token,
filter the events, open the dead-lettered renewal's journey, press Replay, see it delivered.
Set HOOKTRACK_SCREENSHOTS=DIR to keep the screenshots (docs/admin.png comes from here).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter.receiver import free_port

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} missing: `apt-get install chromium` (.ci/run does)")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`hooktrack demo --serve` on a free port; yields its base URL and admin token."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapter", "demo", "--serve", "--port", str(port), "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.time() + 90
        for line in proc.stdout:
            seen.append(line)
            found = re.search(r"or open:\s+(http://\S+)/admin/#token=(\S+)", line)
            if found:
                yield {"url": found.group(1), "token": found.group(2)}
                break
            assert time.time() < deadline, "".join(seen)
        else:
            raise AssertionError("demo ended early:\n" + "".join(seen))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "chromium-profile"  # a fresh --user-data-dir every run
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        try:
            tab = context.new_page()
            tab.set_default_timeout(20_000)
            yield tab
        finally:
            context.close()


def _keep(page: Any, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    target = os.environ.get("HOOKTRACK_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / name)


def test_log_in_filter_open_a_journey_replay_and_see_it_delivered(
        demo: dict[str, str], page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    page.goto(f"{demo['url']}/admin/")
    page.fill("#token", "not-the-token-0123456789")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_contain_text("refused")
    errors.clear()  # the 401 above is logged by the browser as a failed fetch
    page.fill("#token", demo["token"])
    page.click("#login-form button")

    # live counts and the chart, from the stats endpoints
    expect(page.locator('[data-count="accepted"] b')).to_have_text("8")
    expect(page.locator('[data-count="rejected"] b')).to_have_text("1")
    expect(page.locator('[data-count="dead"] b')).to_have_text("1")
    expect(page.locator("#chart rect.bar.accepted")).to_have_count(1)
    expect(page.locator("#chart rect.bar.failed")).to_have_count(1)
    expect(page.locator("#events tr")).to_have_count(11)
    _keep(page, tmp_path, "admin.png")

    # filter: the forged delivery is listed with its reason, its body was never stored
    page.select_option("#filters select[name=status]", "rejected")
    expect(page.locator("#events tr")).to_have_count(1)
    expect(page.locator("#events tr").first).to_contain_text("invalid_signature")
    page.locator("#events tr").first.click()
    expect(page.locator("#journey")).to_contain_text("Not stored")
    page.go_back()

    # filter to what needs a replay, open its journey
    page.select_option("#filters select[name=status]", "")
    page.select_option("#filters select[name=state]", "dead")
    expect(page.locator("#events tr")).to_have_count(1)
    page.locator("#events tr").first.click()
    journey = page.locator("#journey")
    expect(journey).to_contain_text("invoice.paid")
    expect(journey).to_contain_text("Subscription renewal")
    expect(journey).to_contain_text("the tracking API answered 422")
    expect(journey.locator("pre").first).to_contain_text("in_demo_grace_2")  # what arrived
    dead = journey.locator('article.conversion[data-state="dead"]')
    expect(dead.locator('tr[data-outcome="dead"]')).to_contain_text("422")
    _keep(page, tmp_path, "admin-journey.png")

    dead.locator("button.replay").click()
    delivered = journey.locator('article.conversion[data-state="delivered"]')
    expect(delivered).to_be_visible()
    expect(delivered.locator("tbody tr")).to_have_count(2)
    expect(delivered.locator('tr[data-outcome="delivered"]')).to_contain_text("200")
    expect(page.locator('[data-count="dead"] b')).to_have_text("0", timeout=15_000)
    assert errors == []


def test_a_token_link_logs_in_and_leaves_the_address_bar(demo: dict[str, str], page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{demo['url']}/admin/#token={demo['token']}")
    expect(page.locator('[data-count="accepted"] b')).to_have_text("8")
    assert demo["token"] not in page.url
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


HOSTILE_TYPE = "\u202eorder.paid\x1b]0;owned\x07 <img src=x onerror=alert(1)> [/]"


def test_hostile_strings_are_shown_as_text_with_their_control_characters_visible(
        demo: dict[str, str], page: Any, tmp_path: Path) -> None:
    import sqlite3

    from playwright.sync_api import expect

    with sqlite3.connect(tmp_path / "demo" / "hooktrack-demo.db") as conn:
        event_id = conn.execute(
            "INSERT INTO events (source, provider, provider_event_id, event_type, received_at, status, reason, body) "
            "VALUES ('stripe', 'stripe', ?, ?, ?, 'rejected', 'invalid_signature', NULL)",
            ("evt_\u200bhidden", HOSTILE_TYPE, int(time.time() * 1000))).lastrowid
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{demo['url']}/admin/#token={demo['token']}")
    row = page.locator(f'#events tr[data-event="{event_id}"]')
    expect(row).to_contain_text("\\u202eorder.paid\\u001b]0;owned\\u0007 <img src=x onerror=alert(1)> [/]")
    expect(row).to_contain_text("evt_\\u200bhidden")
    row.click()
    heading = page.locator("#journey h2")
    expect(heading).to_contain_text("\\u202eorder.paid")
    text = page.locator("body").inner_text()
    assert not any(c in text for c in "\u202e\u200b\x1b\x07")
    assert page.locator("#journey img, #events img").count() == 0 and dialogs == []
