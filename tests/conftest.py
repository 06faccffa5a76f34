"""Shared fixtures: a real tracking receiver on loopback, configs, a running hooktrack."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from starlette.testclient import TestClient

from adapter.app import create_app
from adapter.plugin import load_providers
from adapter.receiver import TrackingReceiver, run_in_thread
from adapter.settings import Settings, parse_settings

FIXTURES = Path(__file__).parent / "fixtures"
"""The tests' own edge-case payloads; the providers' samples are the rest (never copied here)."""
SAMPLES = Path(__file__).parent.parent / "providers" / "samples"
STRIPE_SECRET = "whsec_test_secret_0123456789abcdef"


@pytest.fixture
def receiver() -> Iterator[TrackingReceiver]:
    """A real HTTP tracking API on 127.0.0.1; `receiver.url` is its base URL."""
    rec = TrackingReceiver(api_key="test_key")
    with run_in_thread(rec.app()) as url:
        rec.url = url  # type: ignore[attr-defined]
        yield rec


def config(tmp_path: Path, tracking_url: str, **sections: dict[str, Any]) -> Settings:
    """Settings for a test: SQLite in `tmp_path`, fast retries, a Stripe source."""
    raw: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp_path / 'hooktrack.db'}"},
        "tracking": {"url": tracking_url, "api_key": "test_key", "timeout_s": 2},
        "forwarder": {"base_delay_s": 0.05, "max_delay_s": 0.2, "poll_interval_s": 0.05,
                      "fill_window_s": 0},
        "sources": {"stripe": {"provider": "stripe", "secrets": [STRIPE_SECRET]}},
    }
    for key, value in sections.items():
        if key == "sources":
            raw["sources"] = value
        else:
            raw.setdefault(key, {}).update(value)
    return parse_settings(raw)


@pytest.fixture
def make_client(tmp_path: Path, receiver: TrackingReceiver) -> Iterator[Callable[..., TestClient]]:
    """Start hooktrack (with its forwarder) for `config(...)` overrides; returns a client."""
    clients: list[TestClient] = []

    def start(**sections: dict[str, Any]) -> TestClient:
        settings = config(tmp_path, receiver.url, **sections)  # type: ignore[attr-defined]
        client = TestClient(create_app(settings, registry=load_providers()))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def fixture_path(provider: str, name: str) -> Path:
    """A payload by name: the tests' own edge case under tests/fixtures, else the provider's
    built-in sample under providers/samples."""
    own = FIXTURES / provider / f"{name}.json"
    return own if own.is_file() else SAMPLES / provider / f"{name}.json"


def fixture_names(provider: str) -> list[str]:
    """Every payload name of `provider`: its samples and the tests' own edge cases."""
    found = {p.relative_to(root / provider).with_suffix("").as_posix()
             for root in (FIXTURES, SAMPLES) for p in (root / provider).rglob("*.json")}
    return sorted(found)


def fixture(provider: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_path(provider, name).read_text())
    return data


def post_stripe(client: TestClient, event: dict[str, Any], *, secret: str = STRIPE_SECRET,
                timestamp: int | None = None, source: str = "stripe") -> Any:
    """POST `event` signed by Stripe's own SDK."""
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
    return client.post(f"/webhooks/{source}", content=body.encode(),
                       headers={"Stripe-Signature": header, "Content-Type": "application/json"})


def wait_for(predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
