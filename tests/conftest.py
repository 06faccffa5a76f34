"""Shared fixtures: a real tracking receiver on loopback, configs, a running hooktrack."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from hypothesis import settings as hypothesis_settings
from starlette.testclient import TestClient

from adapter.app import create_app
from adapter.plugin import load_providers
from adapter.receiver import TrackingReceiver, run_in_thread
from adapter.settings import Settings, parse_settings

FIXTURES = Path(__file__).parent / "fixtures"
"""The tests' own edge-case payloads; the providers' samples are the rest (never copied here)."""
SAMPLES = Path(__file__).parent.parent / "providers" / "samples"
STRIPE_SECRET = "whsec_test_secret_0123456789abcdef"

# Hypothesis profiles. `ci` (the default) keeps the README's test command under 5 minutes and
# draws the same examples on every run (`derandomize`): CI gates what lands on main, and three
# harness bugs that random draws found one CI run in many each cost a landing. Exploring is
# `HYPOTHESIS_PROFILE=thorough`: ten times the examples, new ones on every run. Loaded here,
# before any test module builds its `settings`, because a `settings(...)` takes its defaults
# when it is made.
hypothesis_settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True)
hypothesis_settings.register_profile("thorough", max_examples=500, deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SERIAL = "serial"
"""The xdist group of the `slow` tests (SIGKILLs, server restarts, several processes, a thousand
sockets): `--dist loadgroup` runs them one after another on one worker, so two of them never
compete for the cores, while the other worker takes the rest of the suite."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group(SERIAL))


def _reliability_tallies() -> tuple[Any, list[str]] | None:
    """The reliability suites' CASES and NOTES, if this process ran any of them."""
    sources = sys.modules.get("tests.reliability.sources")
    return None if sources is None else (sources.CASES, sources.NOTES)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its reliability tallies to the controller (see `pytest_testnodedown`)."""
    output = getattr(session.config, "workeroutput", None)
    tallies = _reliability_tallies()
    if output is not None and tallies is not None:
        cases, notes = tallies
        output["hooktrack_cases"] = [[suite, provider, n] for (suite, provider), n in cases.items()]
        output["hooktrack_notes"] = list(notes)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """The controller adds up what each worker's reliability suites counted."""
    output = getattr(node, "workeroutput", {})
    if "hooktrack_cases" not in output:
        return
    from tests.reliability.sources import CASES, NOTES

    for suite, provider, n in output["hooktrack_cases"]:
        CASES[suite, provider] += n
    NOTES.extend(output["hooktrack_notes"])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the Hypothesis cases that ran, per suite and provider, and the suites' notes."""
    tallies = _reliability_tallies()
    if tallies is None:
        return
    cases, notes = tallies
    if notes:
        terminalreporter.section("reliability")
        for note in notes:
            terminalreporter.write_line(note)
    if not cases:
        return
    terminalreporter.section("hypothesis cases")
    for suite in sorted({suite for suite, _ in cases}):
        per = {p: n for (s, p), n in sorted(cases.items()) if s == suite}
        detail = ", ".join(f"{p}={n}" for p, n in per.items())
        terminalreporter.write_line(f"{suite}: {sum(per.values())} ({detail})")
    terminalreporter.write_line(f"total: {sum(cases.values())} generated cases")


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


def sent_once(receiver: TrackingReceiver) -> Any:
    """The one conversion the receiver was sent, once it has been: its first request.

    A Sale of a customer the stand-in has no lead for is answered `sale: null`
    (`customer_not_found`), and hooktrack rightly sends it again within the attribution window,
    so how many requests have arrived by now depends on the machine's speed. What must hold is
    that they all carry one conversion: one idempotency key and one body."""
    first, *again = wait_for(receiver.delivered)
    for r in again:
        assert (r.kind, r.headers.get("idempotency-key"), r.body) == (
            first.kind, first.headers.get("idempotency-key"), first.body), "a second conversion was sent"
    return first
