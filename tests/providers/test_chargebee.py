"""Chargebee: HTTP Basic credentials, payment and customer mapping, out-of-order deliveries."""

from __future__ import annotations

import base64
import copy
import json
import time
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import ConfigError, CredentialsError
from adapter.plugin import Source, build_sources, load_providers
from adapter.settings import parse_settings
from adapter.testing import ProviderContract, make_source
from providers.chargebee import ChargebeeProvider
from tests.conftest import fixture, wait_for

PAIR = "hooktrack:Xr4-b1tter-p4ss:with-colon"
OLD_PAIR = "hooktrack:previous-password"
WRONG = "hooktrack:not-the-password"


class TestChargebeeContract(ProviderContract):
    """Credentials stand in for secrets: each "secret" is a `user:password` pair in `basic_auth`."""

    provider_class = ChargebeeProvider
    secret = PAIR
    other_secret = WRONG
    has_timestamp = False
    forged_code = missing_code = "invalid_credentials"

    def source(self, secrets: list[str] | None = None) -> Source:
        return make_source(self.provider_class(), [], basic_auth=list(secrets or [self.secret]))

    def test_tampered_body_is_rejected(self) -> None:
        pytest.skip("HTTP Basic authenticates the sender, not the body: Chargebee signs nothing")


def basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode()).decode()


def post(client: Any, event: dict[str, Any], *, pair: str | None = PAIR) -> Any:
    headers = {"Content-Type": "application/json"} | ({"Authorization": basic(pair)} if pair else {})
    return client.post("/webhooks/chargebee", content=json.dumps(event).encode(), headers=headers)


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"chargebee": {"provider": "chargebee", "basic_auth": [PAIR, OLD_PAIR]}})


def payment(name: str = "payment_succeeded", event_id: str | None = None, **invoice: Any) -> dict[str, Any]:
    event = fixture("chargebee", name)
    if event_id:
        event["id"] = event_id
    event["content"]["invoice"].update(invoice)
    return event


# -- credentials ----------------------------------------------------------------------------------


def test_missing_or_wrong_credentials_are_401_and_nothing_is_forwarded(client: Any, receiver: Any) -> None:
    for pair in (None, WRONG, "hooktrack:" + PAIR.split(":", 1)[1] + "x"):
        r = post(client, fixture("chargebee", "payment_succeeded"), pair=pair)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
        assert PAIR.split(":", 1)[1] not in r.text
    time.sleep(0.2)
    assert receiver.requests == []


def test_both_pairs_of_a_rotation_are_accepted(client: Any) -> None:
    assert post(client, fixture("chargebee", "customer_created"), pair=OLD_PAIR).status_code == 200
    assert post(client, fixture("chargebee", "payment_succeeded"), pair=PAIR).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    ["Bearer abc", "Basic", "Basic !!!not-base64!!!", basic("hooktrack"), basic(""), "Digest " + basic(PAIR)[6:]],
)
def test_malformed_authorization_is_a_credentials_error(authorization: str) -> None:
    src = make_source(ChargebeeProvider(), [], basic_auth=[PAIR])
    with pytest.raises(CredentialsError) as caught:
        src.provider.verify(b"{}", Headers({"Authorization": authorization}), (), src.ctx)
    assert caught.value.status_code == 401


def test_scheme_is_case_insensitive_and_password_may_contain_colons() -> None:
    src = make_source(ChargebeeProvider(), [], basic_auth=[PAIR])
    src.provider.verify(b"{}", Headers({"Authorization": "basic " + basic(PAIR)[6:]}), (), src.ctx)


def _sources(**conf: Any) -> Any:
    settings = parse_settings({"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
                               "sources": {"cb": {"provider": "chargebee", **conf}}})
    return build_sources(settings, load_providers())


@pytest.mark.parametrize(
    "conf",
    [{}, {"basic_auth": []}, {"basic_auth": ["no-colon-here"]}, {"basic_auth": [":only-password"]},
     {"basic_auth": ["user:"]}],
)
def test_unusable_settings_stop_startup_without_echoing_passwords(conf: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        _sources(**conf)
    assert "sources.cb" in str(caught.value)
    assert "only-password" not in str(caught.value) and "no-colon-here" not in str(caught.value)


def test_sign_for_send_uses_the_first_pair_and_a_forged_secret_is_refused() -> None:
    [src] = _sources(basic_auth=[PAIR, OLD_PAIR], secrets=["unused-secret"]).values()
    for secret in ("", "unused-secret"):  # what `hooktrack send` passes: nothing, or the source's secret
        headers = src.provider.sign(b"{}", secret, 0, src.ctx)
        assert headers == {"Authorization": basic(PAIR)}
        src.provider.verify(b"{}", Headers(headers), src.secrets, src.ctx)
    with pytest.raises(CredentialsError):  # the demo forges with a random secret
        src.provider.verify(b"{}", Headers(src.provider.sign(b"{}", "f0rged", 0, src.ctx)), src.secrets, src.ctx)


# -- mapping through the real receiver ------------------------------------------------------------


def test_first_subscription_invoice_is_a_creation_net_of_tax(client: Any, receiver: Any) -> None:
    r = post(client, fixture("chargebee", "payment_succeeded"))
    assert r.json()["status"] == "accepted"
    [sale] = wait_for(receiver.delivered)
    body = sale.body
    assert sale.headers["idempotency-key"] == "sale:chargebee:inv_1024"
    assert (body["amount"], body["currency"], body["eventName"]) == (4900, "usd", "Subscription creation")
    assert body["invoiceId"] == "inv_1024" and body["paymentProcessor"] == "chargebee"
    assert body["customerExternalId"] == "user_42"  # customer meta_data
    assert body["clickId"] == "cl_chargebee_checkout"  # the subscription's meta_data before the customer's
    assert (body["customerEmail"], body["customerName"]) == ("ada@example.com", "Ada Lovelace")
    assert body["timestamp"] == "2024-04-10T10:36:52.000Z"  # occurred_at
    meta = body["metadata"]
    assert meta["subscriptionId"] == "AzZTr5UZk2hNu1I2j" and meta["taxAmount"] == 980
    assert meta["firstInvoice"] is True and meta["transactionId"] == "txn_AzZTr5UZk2hQj1I2p"
    assert meta["providerCustomerId"] == "AzZTr5UZk2gLt1Hxm" and "livemode" not in meta


def test_later_invoices_of_the_subscription_are_renewals(client: Any, receiver: Any) -> None:
    post(client, fixture("chargebee", "payment_succeeded"))
    post(client, fixture("chargebee", "payment_succeeded+renewal"))
    sales = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    assert {s.body["invoiceId"]: s.body["eventName"] for s in sales} == {
        "inv_1024": "Subscription creation", "inv_1099": "Subscription renewal"}


def test_invoice_of_no_subscription_is_a_purchase(client: Any, receiver: Any) -> None:
    post(client, fixture("chargebee", "payment_succeeded+one_time"))
    [sale] = wait_for(receiver.delivered)
    assert (sale.body["eventName"], sale.body["amount"], sale.body["invoiceId"]) == ("Purchase", 10000, "inv_1130")
    assert "subscriptionId" not in sale.body["metadata"] and "firstInvoice" not in sale.body["metadata"]


def test_one_off_charge_on_a_subscription_is_a_purchase(client: Any, receiver: Any) -> None:
    post(client, payment(recurring=False))
    [sale] = wait_for(receiver.delivered)
    assert sale.body["eventName"] == "Purchase"


def test_transaction_without_invoice_is_keyed_by_the_transaction(client: Any, receiver: Any) -> None:
    event = fixture("chargebee", "payment_succeeded+one_time")
    del event["content"]["invoice"]
    event["content"]["transaction"]["linked_invoices"] = []
    post(client, event)
    [sale] = wait_for(receiver.delivered)
    assert (sale.body["invoiceId"], sale.body["amount"]) == ("txn_AzZTr5UZq1rLd3B8h", 12000)


def test_a_partial_payment_counts_what_it_applied_to_the_invoice(client: Any, receiver: Any) -> None:
    event = payment(total=11760, amount_paid=5880, amount_due=5880, tax=1960)
    event["content"]["transaction"]["amount"] = 8000  # the rest of it paid another invoice
    event["content"]["transaction"]["linked_invoices"][0]["applied_amount"] = 5880
    post(client, event)
    [sale] = wait_for(receiver.delivered)
    assert sale.body["amount"] == 5880 - 1960


def test_zero_decimal_currency_amounts_are_taken_as_is(client: Any, receiver: Any) -> None:
    event = payment(currency_code="JPY", tax=500)
    event["content"]["transaction"].update(currency_code="JPY", amount=5500)
    event["content"]["transaction"]["linked_invoices"][0]["applied_amount"] = 5500
    post(client, event)
    [sale] = wait_for(receiver.delivered)
    assert (sale.body["amount"], sale.body["currency"]) == (5000, "jpy")


def test_customer_created_is_a_sign_up_lead_and_shares_identity_with_the_sale(client: Any, receiver: Any) -> None:
    assert post(client, fixture("chargebee", "customer_created")).json()["status"] == "accepted"
    sale = fixture("chargebee", "payment_succeeded")
    for obj in (sale["content"]["customer"], sale["content"]["subscription"]):
        obj.pop("meta_data", None)
        obj.pop("cf_click_id", None)
    post(client, sale)
    lead, paid = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    assert (lead.kind, lead.body["eventName"]) == ("lead", "Sign up")
    assert lead.body["clickId"] == "cl_chargebee_lead"  # custom field cf_click_id
    assert lead.body["customerExternalId"] == paid.body["customerExternalId"] == "user_42"
    assert lead.headers["idempotency-key"] == "lead:chargebee:user_42:Sign up"
    assert paid.body["clickId"] == "cl_chargebee_lead"  # from identity memory
    assert paid.body["customerEmail"] == "ada@example.com"


def test_custom_fields_count_under_their_key_without_cf_and_exactly(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"chargebee": {"provider": "chargebee", "basic_auth": [PAIR],
                                                "click_id_keys": ["cf_ref", "click_id"]}})
    event = fixture("chargebee", "customer_created")
    customer = event["content"]["customer"]
    customer.pop("meta_data")
    customer.update(cf_user_id="user_77", cf_ref="cl_from_cf_ref")
    post(client, event)
    [lead] = wait_for(receiver.delivered)
    assert (lead.body["customerExternalId"], lead.body["clickId"]) == ("user_77", "cl_from_cf_ref")


def test_customer_without_ids_is_known_by_its_chargebee_id(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"chargebee": {"provider": "chargebee", "basic_auth": [PAIR],
                                                "forward_leads_without_click_id": True}})
    event = fixture("chargebee", "customer_created")
    event["content"]["customer"].pop("meta_data")
    event["content"]["customer"].pop("cf_click_id")
    post(client, event)
    [lead] = wait_for(receiver.delivered)
    assert lead.body["customerExternalId"] == "AzZTr5UZk2gLt1Hxm" and "clickId" not in lead.body


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda e: e["content"]["transaction"].update(status="failure"), "unpaid"),
        (lambda e: e["content"]["transaction"].update(amount=980), "zero_amount"),  # all of it tax
        (lambda e: e.update(api_version="v1"), "api_version_v1"),
        (lambda e: e.update(event_type="subscription_created"), "event_type_not_tracked"),
        (lambda e: e.update(event_type="payment_refunded"), "event_type_not_tracked"),
    ],
)
def test_uncountable_events_are_ignored_with_reasons(client: Any, receiver: Any, change: Any, reason: str) -> None:
    event = fixture("chargebee", "payment_succeeded")
    change(event)
    r = post(client, event)
    assert (r.status_code, r.json()["status"], r.json()["reason"]) == (200, "ignored", reason)
    time.sleep(0.2)
    assert receiver.requests == []


def test_missing_fields_are_400_malformed(client: Any) -> None:
    event = fixture("chargebee", "payment_succeeded")
    del event["content"]["transaction"]["amount"]
    r = post(client, event)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


# -- dedup and ordering ---------------------------------------------------------------------------


def test_redelivery_is_a_duplicate_even_with_another_webhook_status(client: Any, receiver: Any) -> None:
    event = fixture("chargebee", "payment_succeeded")
    first = post(client, event)
    again = copy.deepcopy(event)
    again["webhook_status"] = "re_scheduled"  # Chargebee's retry of the same event
    assert post(client, again).json() == {"status": "duplicate", "eventId": first.json()["eventId"]}
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_older_event_for_the_same_invoice_arriving_late_is_out_of_order(client: Any, receiver: Any) -> None:
    # Two payments towards one invoice; Chargebee delivers the later one first.
    newer = payment(event_id="ev_newer")
    older = payment(event_id="ev_older")
    older["occurred_at"] = newer["occurred_at"] - 600
    older["content"]["transaction"]["id"] = "txn_earlier_partial"
    assert post(client, newer).json()["status"] == "accepted"
    r = post(client, older)
    assert (r.json()["status"], r.json()["reason"]) == ("ignored", "out_of_order")
    [sale] = wait_for(receiver.delivered)
    assert sale.body["metadata"]["transactionId"] == "txn_AzZTr5UZk2hQj1I2p"


def test_late_renewal_and_late_customer_event_still_count(client: Any, receiver: Any) -> None:
    # Payments are ordered per invoice, not per subscription or customer: an earlier cycle (and the
    # customer_created) delivered after a later cycle are other objects and still count.
    assert post(client, fixture("chargebee", "payment_succeeded+renewal")).json()["status"] == "accepted"
    assert post(client, fixture("chargebee", "payment_succeeded")).json()["status"] == "accepted"
    assert post(client, fixture("chargebee", "customer_created")).json()["status"] == "accepted"
    got = wait_for(lambda: len(receiver.delivered()) == 3 and receiver.delivered())
    assert sorted(r.body.get("invoiceId", r.body["eventName"]) for r in got) == ["Sign up", "inv_1024", "inv_1099"]
