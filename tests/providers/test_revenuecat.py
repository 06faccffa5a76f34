"""RevenueCat: the Authorization header as credential, mapping of purchases, trials, product
changes and refund cancellations, and one flow through the app."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import CredentialsError, Ignore
from adapter.events import Lead, Refund, Sale
from adapter.plugin import Source
from adapter.samples import post_sample
from adapter.testing import ProviderContract, make_source
from providers.revenuecat import RevenueCatProvider
from tests.conftest import fixture, sent_once
from tests.providers.flow import mapped, one

SECRET = "Bearer rc_hook_3b1f9e0c5a7d42e8b6f1c9a0d4e7b2f5"
OTHER = "Bearer someone_elses_value_0000000000000000"


class TestRevenueCatContract(ProviderContract):
    provider_class = RevenueCatProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False
    forged_code = missing_code = "invalid_credentials"

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        # RevenueCat's docs: the value set in the dashboard is sent as the Authorization header.
        return {"Authorization": secret}

    def test_tampered_body_is_rejected(self) -> None:
        pytest.skip("an Authorization header authenticates the sender, not the body: RevenueCat signs nothing")


def source() -> Source:
    return make_source(RevenueCatProvider(), [SECRET], name="revenuecat")


def event(name: str, **changes: Any) -> dict[str, Any]:
    data = fixture("revenuecat", name)
    data["event"].update(changes)
    return data


def test_authorization_must_equal_a_configured_value() -> None:
    src = make_source(RevenueCatProvider(), [OTHER, SECRET], name="revenuecat")
    body = json.dumps(event("INITIAL_PURCHASE")).encode()
    src.provider.verify(body, Headers({"Authorization": SECRET}), src.secrets, src.ctx)
    for wrong in ({"Authorization": SECRET[:-1]}, {"Authorization": SECRET.removeprefix("Bearer ")}, {}):
        with pytest.raises(CredentialsError):
            src.provider.verify(body, Headers(wrong), src.secrets, src.ctx)


def test_wrong_authorization_is_401(make_client: Any) -> None:
    client = make_client(sources={"revenuecat": {"provider": "revenuecat", "secrets": [SECRET]}})
    r = client.post("/webhooks/revenuecat", content=json.dumps(event("INITIAL_PURCHASE")).encode(),
                    headers={"Authorization": OTHER, "Content-Type": "application/json"})
    assert r.status_code == 401


def test_initial_purchase_is_the_subscription_creation_net_of_estimated_tax() -> None:
    sale = one(source(), event("INITIAL_PURCHASE"))
    assert isinstance(sale, Sale)
    # 9.99 EUR gross; tax_percentage 0.1597 → 9.99 × 0.8403 = 8.394597 → 839 cents (commission not taken off)
    assert (sale.kind, sale.amount, sale.gross_amount, sale.currency) == ("subscription", 839, 999, "eur")
    assert sale.starts_subscription is True and sale.invoice_id == "2000000912345678"
    assert sale.subscription_id == "2000000912345678"
    assert sale.external_id == "user_rc_42" and sale.click_id == "cl_rc_click"
    assert (sale.email, sale.name) == ("ada@example.com", "Ada Lovelace")


def test_price_is_read_exactly_from_the_json_number() -> None:
    sale = one(source(), event("INITIAL_PURCHASE", price_in_purchased_currency=0.29, tax_percentage=0))
    assert isinstance(sale, Sale) and sale.amount == 29  # float 0.29 × 100 would be 28.999999999999996
    yen = one(source(), event("INITIAL_PURCHASE", price_in_purchased_currency=1200, currency="JPY", tax_percentage=0.1))
    assert isinstance(yen, Sale) and (yen.amount, yen.gross_amount, yen.currency) == (1080, 1200, "jpy")


def test_anonymous_ids_are_never_the_customer_id() -> None:
    anon = "$RCAnonymousID:0123456789abcdef0123456789abcdef"
    sale = one(source(), event("INITIAL_PURCHASE", app_user_id=anon, original_app_user_id=anon, aliases=[anon],
                               subscriber_attributes={}))
    assert isinstance(sale, Sale)
    assert sale.external_id is None and sale.provider_customer_id is None
    aliased = one(source(), event("INITIAL_PURCHASE", app_user_id=anon, aliases=[anon, "user_7"]))
    assert aliased.external_id == "user_7"


@pytest.mark.parametrize(("conversion", "starts"), [(True, True), (False, False)])
def test_renewal_after_a_trial_is_the_creation(conversion: bool, starts: bool) -> None:
    sale = one(source(), event("RENEWAL", is_trial_conversion=conversion))
    assert isinstance(sale, Sale) and sale.starts_subscription is starts and sale.kind == "subscription"


def test_a_trial_is_a_started_trial_lead_of_its_subscription() -> None:
    lead = one(source(), event("INITIAL_PURCHASE+trial"))
    assert isinstance(lead, Lead) and lead.kind == "started_trial"
    assert lead.metadata["subscriptionId"] == "2000000912340000" and lead.external_id == "user_rc_42"


def test_non_renewing_purchase_is_a_purchase() -> None:
    sale = one(source(), event("NON_RENEWING_PURCHASE"))
    assert isinstance(sale, Sale) and (sale.kind, sale.subscription_id, sale.gross_amount) == ("purchase", None, 4999)


@pytest.mark.parametrize(("name", "changes", "reason"), [
    ("PRODUCT_CHANGE", {}, "product_change_not_a_charge"),
    ("CANCELLATION+refund", {"cancel_reason": "UNSUBSCRIBE"}, "cancellation_recorded"),
    ("INITIAL_PURCHASE", {"price_in_purchased_currency": 0}, "zero_amount"),
])
def test_uncounted_events_are_recorded_with_a_reason(make_flow: Any, name: str, changes: dict[str, Any],
                                                    reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        mapped(source(), event(name, **changes))
    assert caught.value.reason == reason
    flow = make_flow(RevenueCatProvider(), [SECRET], lambda body: {"Authorization": SECRET})
    answer = flow.receive(event(name, **changes))
    assert (answer["status"], answer["reason"]) == ("ignored", reason)


def test_customer_support_cancellation_is_a_refund_of_the_transaction() -> None:
    [refund] = mapped(source(), event("CANCELLATION+refund"))
    assert isinstance(refund, Refund)
    assert refund.reverses == ("2000000912345678",)
    assert (refund.amount, refund.currency, refund.includes_tax) == (999, "eur", True)
    [whole] = mapped(source(), event("CANCELLATION+refund", price_in_purchased_currency=None))
    assert isinstance(whole, Refund) and whole.amount is None


def test_untracked_types_and_sandbox() -> None:
    assert mapped(source(), event("INITIAL_PURCHASE", type="BILLING_ISSUE")) == []
    src = source()
    parsed = src.provider.parse(json.dumps(event("INITIAL_PURCHASE", environment="SANDBOX")).encode(), Headers({}))
    assert parsed.livemode is False and parsed.id == "9b7e2c44-1f0a-4c3e-8d2b-6a5f4e3d2c1b"


def test_a_purchase_reaches_the_tracking_api_as_revenuecat(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"revenuecat": {"provider": "revenuecat", "secrets": [SECRET]}})
    r = client.post("/webhooks/revenuecat", content=json.dumps(event("INITIAL_PURCHASE")).encode(),
                    headers={"Authorization": SECRET, "Content-Type": "application/json"})
    assert r.json()["status"] == "accepted", r.text
    sale = sent_once(receiver)
    assert sale.body["paymentProcessor"] == "revenuecat" and sale.body["amount"] == 839
    assert sale.body["eventName"] == "Subscription creation" and sale.body["customerExternalId"] == "user_rc_42"
    assert sale.body["metadata"]["tax"] == "estimated"


def test_every_sample_is_accepted_the_way_hooktrack_send_posts_it(make_client: Any) -> None:
    client = make_client(sources={"revenuecat": {"provider": "revenuecat", "secrets": [SECRET]}})
    src = client.app.state.sources["revenuecat"]
    for name in src.provider.samples():
        r = post_sample(src, name, "", client=client)
        assert r.status_code == 200 and r.json()["status"] == "accepted", (name, r.text)
