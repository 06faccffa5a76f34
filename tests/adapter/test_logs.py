"""Logs: one JSON object a line, with source / event id / conversion id, and never a secret,
a signature, an API key, the admin token or a whole email address."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe
from starlette.testclient import TestClient

from adapter.logs import JsonFormatter, configure_logging
from adapter.receiver import TrackingReceiver
from tests.adapter.test_admin import AUTH, TOKEN, refuse_once
from tests.conftest import STRIPE_SECRET, fixture, wait_for

API_KEY = "trk_live_9f8e7d6c5b4a3210fedcba"
WRONG_TOKEN = "guess-0123456789abcdef-guess"


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[str]]]:
    """Everything logged, formatted exactly as `hooktrack serve` formats it (at DEBUG)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("DEBUG")
    buffer = io.StringIO()
    capture = logging.StreamHandler(buffer)
    capture.setFormatter(JsonFormatter())
    root.addHandler(capture)
    yield lambda: [line for line in buffer.getvalue().splitlines() if line]
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def post_signed(client: TestClient, event: dict[str, Any], secret: str = STRIPE_SECRET) -> tuple[str, Any]:
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, secret)
    r = client.post("/webhooks/stripe", content=body.encode(),
                    headers={"Stripe-Signature": header, "Content-Type": "application/json"})
    return header, r.json()


def test_no_secret_signature_key_token_or_email_in_any_log_line(
        make_client: Callable[..., TestClient], receiver: TrackingReceiver,
        log_lines: Callable[[], list[str]]) -> None:
    receiver.api_key = API_KEY
    client = make_client(admin={"token": TOKEN}, tracking={"api_key": API_KEY})
    refuse_once(receiver, "Purchase")
    signatures = []
    header, accepted = post_signed(client, fixture("stripe", "checkout.session.completed"))
    signatures.append(header)
    signatures.append(post_signed(client, fixture("stripe", "customer.created"))[0])
    forged, _ = post_signed(client, fixture("stripe", "invoice.paid"), secret="whsec_forged_secret_value")
    signatures.append(forged)
    conv_id = accepted["conversions"][0]["id"]
    wait_for(lambda: client.get(f"/admin/api/events/{accepted['eventId']}", headers=AUTH)
             .json()["conversions"][0]["state"] == "dead")
    client.get("/admin/api/events", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
    client.post("/admin/api/replay", json={"ids": [conv_id]}, headers=AUTH)
    wait_for(lambda: len(receiver.delivered()) >= 2)
    client.get("/metrics")

    lines = log_lines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) >= 6
    forbidden = [STRIPE_SECRET, "whsec_forged_secret_value", API_KEY, TOKEN, WRONG_TOKEN,
                 "ada@example.com", "grace@example.com"]
    for sig in signatures:
        forbidden += [sig] + [part.split("=", 1)[1] for part in sig.split(",") if part.startswith("v1=")]
    for line in lines:
        for secret in forbidden:
            assert secret not in line, f"{secret[:12]}... leaked in {line}"

    webhook = [r for r in records if r["msg"].startswith("webhook ")]
    assert {r["msg"] for r in webhook} >= {"webhook accepted", "webhook rejected"}
    assert all(r["source"] == "stripe" and r.get("event_id") for r in webhook)
    assert next(r for r in webhook if r["msg"] == "webhook accepted" and r.get("conversion_ids"))["conversion_ids"] \
        == [conv_id]
    forwards = [r for r in records if r["msg"].startswith("forward ")]
    assert {r["msg"] for r in forwards} >= {"forward dead", "forward delivered"}
    assert all(r["conversion_id"] and r["source"] == "stripe" for r in forwards)
    replay = next(r for r in records if r["msg"] == "admin replay")
    assert replay["conversion_ids"] == [conv_id]
    assert any(r["msg"].startswith("admin: request without a valid token") for r in records)


def _record(msg: str, args: tuple[Any, ...] = (), exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("hooktrack.test", logging.ERROR, __file__, 1, msg, args, exc_info)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_record_that_cannot_be_formatted_is_still_one_json_line() -> None:
    """Formatting a log line never raises: a circular `extra`, one nested too deep for JSON, or
    arguments that do not fit the message give a line naming why (a crash in the formatter
    once turned a provider's error into a failure of the request)."""
    loop: dict[str, Any] = {}
    loop["self"] = loop
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    formatter = JsonFormatter()
    for record, error in [(_record("circular", loop=loop), "ValueError"),
                          (_record("deep", deep=deep), "RecursionError"),
                          (_record("%d events", ("many",)), "TypeError")]:
        line = json.loads(formatter.format(record))
        assert line["level"] == "error" and line["log_error"] == error
        assert line["msg"] in ("circular", "deep", "%d events")


def test_a_recursion_error_with_its_traceback_formats() -> None:
    def deep(n: int) -> int:
        return deep(n + 1) + 1
    try:
        deep(0)
    except RecursionError:
        import sys
        info = sys.exc_info()
    line = json.loads(JsonFormatter().format(_record("provider raised", exc_info=info, email="ada@example.com")))
    assert "RecursionError" in line.get("exc", "") + line.get("exc_class", "")
    assert line["email"] == "a***@example.com"
