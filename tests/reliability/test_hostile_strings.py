"""`hooktrack events` and `events show` survive any stored string and never write an escape.

An outsider can plant text in the event log: a replayed Shopify body with a new, unsigned topic
header lands as a rejected event of that type, and a provider's signed type or id, a body or a
tracking API answer can hold anything. The operator's terminal must get neither rich markup
errors (`[/]` made `hooktrack events` crash with MarkupError) nor ANSI/OSC sequences.
"""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from adapter.cli import main
from adapter.records import Conversion
from adapter.render import events_table, journey_view, safe
from tests.reliability.sources import FUZZ

HOSTILE = [
    "[/]", "[bold red]", "[link=https://evil.example]click[/link]", "\\", "x\\", "[", "]", "[/bold",
    "\x1b[2J\x1b[H", "\x1b]0;owned\x07", "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "\x9b31m",
    "a\rb", "\x00\x08\x7f", "\u202egnp.exe", "\u200bzero", "line\u2028sep", "\ufeffbom", "é 💸 漢字",
    "[red]" * 50, "%s %d {0}", "\x1b[31m[/]\x1b[0m",
]


def _db(tmp_path: Path, strings: list[str]) -> Path:
    """A migrated store holding one event, conversion and attempt per hostile string."""
    config = tmp_path / "hooktrack.toml"
    config.write_text('[tracking]\nurl = "http://127.0.0.1:9"\napi_key = "dub_k"\n'
                      '[sources.shopify]\nprovider = "shopify"\nsecrets = ["s3cret-shopify"]\n')
    assert _hooktrack("migrate", "--config", str(config)).returncode == 0
    db = tmp_path / "hooktrack.db"
    with sqlite3.connect(db) as conn:
        for i, text in enumerate(strings):
            event_id = conn.execute(
                "INSERT INTO events (source, provider, provider_event_id, event_type, received_at, status, "
                "reason, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("shopify", "shopify", text, text, 1_760_000_000_000 + i, "accepted", text, text),
            ).lastrowid
            record = Conversion(kind="sale", source="shopify", provider="shopify", event_name=text, occurred_at=0,
                                customer_external_id=text, name=text, amount=100, currency="usd", invoice_id=text,
                                metadata={"note": text})
            conv_id = conn.execute(
                "INSERT INTO conversions (event_id, source, kind, event_name, business_key, customer_external_id, "
                "record, created_at, updated_at) VALUES (?, 'shopify', 'sale', ?, ?, ?, ?, 0, 0)",
                (event_id, text, f"k{i}", text, record.to_json()),
            ).lastrowid
            delivery_id = conn.execute(
                "INSERT INTO deliveries (conversion_id, destination, state, reason, detail, next_attempt_at, "
                "window_until, created_at, updated_at) VALUES (?, 'dub', 'dead', ?, ?, 0, 0, 0, 0)",
                (conv_id, text, text),
            ).lastrowid
            conn.execute("INSERT INTO attempts (conversion_id, delivery_id, attempted_at, status_code, latency_ms, "
                         "outcome, error, response_excerpt) VALUES (?, ?, 0, NULL, 1, ?, ?, ?)",
                         (conv_id, delivery_id, text, text, text))
    return config


def _hooktrack(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "adapter", *args], capture_output=True, timeout=60, check=False)


def test_events_and_show_print_every_hostile_string_without_an_escape(tmp_path: Path) -> None:
    config = _db(tmp_path, HOSTILE)
    listed = _hooktrack("events", "--config", str(config), "--limit", "1000")
    assert listed.returncode == 0, listed.stderr.decode()
    assert b"\x1b" not in listed.stdout + listed.stderr and b"\x9b" not in listed.stdout
    assert b"[/]" in listed.stdout  # printed as text, not parsed
    # One process for the list (the real entry point); `events show` in-process through
    # click, one per string: the same command and output, without a Python start each.
    runner = CliRunner()
    for event_id in range(1, len(HOSTILE) + 1):
        shown = runner.invoke(main, ["events", "show", str(event_id), "--config", str(config)])
        assert shown.exit_code == 0, (event_id, shown.output, shown.exception)
        out = shown.stdout
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, (event_id, out)
        assert "Traceback" not in shown.stderr
    assert "\\x1b[2J" in _hooktrack("events", "show", "9", "--config", str(config)).stdout.decode()


def _row(text: str) -> dict[str, Any]:
    conv = {"id": 1, "event_id": 1, "kind": "sale", "event_name": text, "customer_external_id": text,
            "idempotency_key": text, "state": "dead", "reason": text, "attempts": 1, "reason_text": text,
            "payload": {"eventName": text}, "attempts_log": [
                {"attempted_at": 0, "status_code": None, "latency_ms": 1, "outcome": text, "error": text,
                 "response_excerpt": text}]}
    return {"id": 1, "source": text, "provider": "shopify", "provider_event_id": text, "event_type": text,
            "received_at": 1_760_000_000_000, "status": "rejected", "reason": text, "reason_text": text,
            "duplicate_of": None, "body": text, "conversions": [conv]}


@FUZZ
@given(st.text(alphabet=st.characters(codec=None), max_size=60))
def test_any_string_renders_without_error_or_control_characters(text: str) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=False, color_system=None)
    events_table([_row(text)], console=console)
    journey_view(_row(text), console=console)
    out = buffer.getvalue()
    assert not any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in out), repr(out)


def test_safe_shows_what_it_hides() -> None:
    assert safe("\x1b]0;x\x07[/]") == "\\x1b]0;x\\x07\\[/]"
    assert safe("\u202e") == "\\u202e"
    assert safe(None) == ""
