"""Issue 15's "Done when" for the wave-3 providers that hooktrack can sign: the `[sources.NAME]`
block `hooktrack providers NAME --test-secrets` prints, pasted into a config, makes every
built-in sample `hooktrack send` posts verify, and each Sale it maps to is *counted* by the
strict Dub stand-in (not only answered 200) with the provider's `paymentProcessor`.

App Store samples are signed with a throwaway chain shaped like Apple's (`--test-secrets`
gives its root and `sample_signing_key`); PayPal's block pins a throwaway certificate and
carries its key as `sample_signing_key`. Recurly's JSON webhooks carry no amount (without an
`api_key`, which `--test-secrets` cannot make up), so its samples map to no Sale at all (its
`charge_invoice.paid` is ignored by design); the test still sends them and expects nothing
counted.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from adapter.app import create_app
from adapter.cli import main
from adapter.errors import Ignore
from adapter.events import Sale
from adapter.plugin import load_providers
from adapter.receiver import TrackingReceiver
from adapter.samples import post_sample
from adapter.settings import parse_settings
from tests.conftest import wait_for
from tests.providers.flow import mapped

PROCESSOR = {"revenuecat": "revenuecat", "adyen": "custom", "mollie": "custom", "recurly": "custom",
             "fastspring": "custom", "maxio": "custom", "whop": "custom", "dodo": "custom",
             "appstore": "apple", "paypal": "custom"}
# The samples that are not Sales: a trial Lead, refunds, a Lead without a click id (ignored), and
# Recurly's invoice event, which carries no amount. Every other sample must map to a Sale.
NOT_SALES = {"revenuecat": {"INITIAL_PURCHASE+trial"}, "adyen": {"REFUND"}, "mollie": {"refund.refunded"},
             "fastspring": {"return.created"},
             "recurly": {"account.created", "charge_invoice.paid", "credit_invoice.created"}, "maxio": {"signup_success"},
             "appstore": {"SUBSCRIBED+trial"}, "paypal": {"PAYMENT.CAPTURE.REFUNDED"}}
# Sales that name nobody: the core skips them (`no_identifier`) and Dub never sees them. None
# now: Mollie's payment-link sample carries the billing address a merchant pre-fills.
UNATTRIBUTABLE: dict[str, set[str]] = {}

# Maxio's webhooks carry no click id or metadata: the app tracks the sign-up with Dub itself
# (a Lead for the customer's `reference`), and Maxio's Sales attach to that customer. Apple's
# carry no click id either: the app tracked the lead for the `appAccountToken` it set.
KNOWN_CUSTOMERS = {"maxio": [("user_maxio_42", "cl_maxio_signup")],
                   "appstore": [("7f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f", "cl_appstore_signup")],
                   "paypal": [("user_paypal_42", "cl_paypal_signup")]}  # PayPal's `custom_id`


def block(name: str) -> dict[str, Any]:
    """The `[sources.NAME]` table `hooktrack providers NAME --test-secrets` prints."""
    result = CliRunner().invoke(main, ["providers", name, "--test-secrets"])
    assert result.exit_code == 0, result.output
    assert "# note:" not in result.output, result.output
    source: dict[str, Any] = tomllib.loads(result.output)["sources"][name]
    return source


@pytest.fixture
def served(tmp_path: Path, receiver: TrackingReceiver, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    name: str = request.param
    settings = parse_settings({
        "store": {"url": f"sqlite:///{tmp_path / 'hooktrack.db'}"},
        "tracking": {"url": receiver.url, "api_key": receiver.api_key, "timeout_s": 2},  # type: ignore[attr-defined]
        "forwarder": {"base_delay_s": 0.05, "max_delay_s": 0.2, "poll_interval_s": 0.05, "fill_window_s": 0},
        "sources": {name: block(name)},
    })
    with TestClient(create_app(settings, registry=load_providers()), raise_server_exceptions=False) as client:
        yield client


def sales_in(src: Any, name: str, sample: str) -> int:
    """How many Sales the sample maps to (the mapping alone, no HTTP)."""
    provider = src.provider
    body = provider.sample(sample, unique="probe", now=int(time.time()))
    try:
        return sum(isinstance(c, Sale) for c in mapped(src, body, provider.sample_headers(sample, body)))
    except Ignore:
        return 0


@pytest.mark.parametrize("served", sorted(PROCESSOR), indirect=True)
def test_test_secrets_make_every_sale_sample_count_at_dub(served: TestClient, receiver: TrackingReceiver) -> None:
    [(name, src)] = served.app.state.sources.items()  # type: ignore[attr-defined]
    ws = receiver.workspace(receiver.api_key)
    for external_id, click_id in KNOWN_CUSTOMERS.get(name, []):
        receiver.track_lead(ws, {"clickId": click_id, "eventName": "Sign up", "customerExternalId": external_id,
                                 "mode": "wait"})
    samples = sorted(src.provider.samples())
    assert samples
    sale_samples = 0
    for sample in samples:
        expected = sales_in(src, name, sample)
        assert (expected > 0) == (sample not in NOT_SALES.get(name, set())), (sample, expected)
        if sample in UNATTRIBUTABLE.get(name, set()):
            answer = post_sample(src, sample, "http://testserver", client=served)
            assert answer.json().get("reason") == "no_identifier", answer.text
            continue
        sale_samples += expected > 0
        before = len(receiver.counted_sales())
        answer = post_sample(src, sample, "http://testserver", client=served)
        assert answer.status_code == 200, (sample, answer.text)
        assert "rejected" not in answer.text, (sample, answer.text)
        if expected:
            target = before + expected
            wait_for(lambda t=target: len(receiver.counted_sales()) >= t, timeout=10)
            new = receiver.counted_sales()[before:]
            assert len(new) == expected, (sample, new)
            assert {s.payment_processor for s in new} == {PROCESSOR[name]}, (sample, new)
    assert [(r.kind, r.status, r.body) for r in receiver.requests if r.status in (400, 422)] == []
    if name != "recurly":
        assert sale_samples > 0, f"{name}: no sample maps to a Sale"
        assert len(receiver.counted_sales()) >= sale_samples
