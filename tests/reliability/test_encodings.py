"""A signed body in another encoding JSON allows is stored as the text that was parsed.

RFC 8259 asks for UTF-8, but `json.loads` reads UTF-16/32 and a UTF-8 BOM, and the signature
covers the raw bytes: such a delivery verifies and maps, so it is accepted, and its journal
copy must be the same text, not UTF-8-decoded garbage (the issue found a UTF-16 body garbled).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from adapter.text import body_text
from tests.conftest import STRIPE_SECRET, fixture


def _signed(body: bytes) -> dict[str, str]:
    ts = int(time.time())
    mac = hmac.new(STRIPE_SECRET.encode(), str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={mac}", "Content-Type": "application/json"}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
def test_a_signed_body_in_a_json_encoding_is_accepted_and_stored_readably(
        make_client: Callable[..., TestClient], tmp_path: Path, encoding: str) -> None:
    client = make_client()
    event = fixture("stripe", "checkout.session.completed")
    event["id"] = f"evt_{encoding.replace('-', '_')}"
    event["data"]["object"]["customer_details"]["name"] = "Zoë Ångström 💸"
    text = json.dumps(event, ensure_ascii=False)
    body = text.encode(encoding)
    r = client.post("/webhooks/stripe", content=body, headers=_signed(body))
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    with sqlite3.connect(tmp_path / "hooktrack.db") as conn:
        stored = conn.execute("SELECT body FROM events WHERE provider_event_id = ?", (event["id"],)).fetchone()[0]
    assert stored == text


def test_body_text_keeps_utf8_and_replaces_only_what_is_invalid() -> None:
    assert body_text('{"a": "é"}'.encode()) == '{"a": "é"}'
    assert body_text(b'{"a": "\xff"}') == '{"a": "\ufffd"}'
    assert body_text(b"") == ""
