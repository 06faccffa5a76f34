"""Chargebee: HTTP Basic credentials, payment and customer mapping, out-of-order deliveries."""

from __future__ import annotations

import base64
import copy
import json
import time
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import ConfigError, CredentialsError, Ignore, PayloadError
from adapter.events import Refund, Sale
from adapter.ingest import parse_event
from adapter.plugin import Source, build_sources, load_providers
from adapter.settings import parse_settings
from adapter.testing import ProviderContract, make_source
from providers.chargebee import ChargebeeProvider
from tests.conftest import fixture, sent_once
from tests.providers.flow import mapped, one

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


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_payment_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    r = post(client, fixture("chargebee", "payment_succeeded"))
    assert r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    body = sale.body
    assert sale.headers["idempotency-key"] == "sale:chargebee:chargebee:inv_1024"
    assert (body["eventName"], body["invoiceId"]) == ("Subscription creation", "chargebee:inv_1024")
    assert body["customerExternalId"] == "user_42"
    assert body["clickId"] == "cl_chargebee_checkout"


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------


def source(**settings: Any) -> Source:
    return make_source(ChargebeeProvider(), [], name="chargebee", **{"basic_auth": [PAIR], **settings})


def chargebee_flow(make_flow: Any, **settings: Any) -> Any:
    return make_flow(ChargebeeProvider(), [], lambda body: {"Authorization": basic(PAIR)},
                     **{"basic_auth": [PAIR, OLD_PAIR], **settings})


def sale_of(event: dict[str, Any], **settings: Any) -> Sale:
    sale = one(source(**settings), event)
    assert isinstance(sale, Sale)
    return sale


def test_first_subscription_invoice_is_a_creation_net_of_tax(make_flow: Any) -> None:
    event = fixture("chargebee", "payment_succeeded")
    sale = sale_of(event)
    assert (sale.kind, sale.amount, sale.currency, sale.invoice_id) == ("subscription", 4900, "usd", "inv_1024")
    assert sale.external_id == "user_42"  # customer meta_data
    assert sale.click_id == "cl_chargebee_checkout"  # the subscription's meta_data before the customer's
    assert (sale.email, sale.name) == ("ada@example.com", "Ada Lovelace")
    assert parse_event(source(), json.dumps(event).encode(), Headers({})).occurred_at.isoformat() == (
        "2024-04-10T10:36:52+00:00")
    meta = sale.metadata
    assert sale.subscription_id == meta["subscriptionId"] == "AzZTr5UZk2hNu1I2j" and meta["taxAmount"] == 980
    assert meta["firstInvoice"] is True and meta["transactionId"] == "txn_AzZTr5UZk2hQj1I2p"
    assert sale.provider_customer_id == "AzZTr5UZk2gLt1Hxm"
    flow = chargebee_flow(make_flow)
    [stored] = flow.stored(flow.receive(event))
    assert stored.event_name == "Subscription creation"


def test_later_invoices_of_the_subscription_are_renewals(make_flow: Any) -> None:
    flow = chargebee_flow(make_flow)
    flow.receive(fixture("chargebee", "payment_succeeded"))
    flow.receive(fixture("chargebee", "payment_succeeded+renewal"))
    assert {s.invoice_id: s.event_name for s in flow.stored()} == {
        "chargebee:inv_1024": "Subscription creation", "chargebee:inv_1099": "Subscription renewal"}


def test_invoice_of_no_subscription_is_a_purchase() -> None:
    sale = sale_of(fixture("chargebee", "payment_succeeded+one_time"))
    assert (sale.kind, sale.amount, sale.invoice_id) == ("purchase", 10000, "inv_1130")
    assert "subscriptionId" not in sale.metadata and "firstInvoice" not in sale.metadata


def test_one_off_charge_on_a_subscription_is_a_purchase() -> None:
    sale = sale_of(payment(recurring=False))
    assert sale.kind == "purchase" and sale.subscription_id is None


def test_transaction_without_invoice_is_keyed_by_the_transaction() -> None:
    event = fixture("chargebee", "payment_succeeded+one_time")
    del event["content"]["invoice"]
    event["content"]["transaction"]["linked_invoices"] = []
    sale = sale_of(event)
    assert (sale.invoice_id, sale.amount) == ("txn_AzZTr5UZq1rLd3B8h", 12000)


def test_a_partial_payment_counts_what_it_applied_to_the_invoice() -> None:
    event = payment(total=11760, amount_paid=5880, amount_due=5880, tax=1960)
    event["content"]["transaction"]["amount"] = 8000  # the rest of it paid another invoice
    event["content"]["transaction"]["linked_invoices"][0]["applied_amount"] = 5880
    assert sale_of(event).amount == 5880 - 1960


def test_zero_decimal_currency_amounts_are_taken_as_is() -> None:
    event = payment(currency_code="JPY", tax=500)
    event["content"]["transaction"].update(currency_code="JPY", amount=5500)
    event["content"]["transaction"]["linked_invoices"][0]["applied_amount"] = 5500
    sale = sale_of(event)
    assert (sale.amount, sale.currency) == (5000, "jpy")


def test_customer_created_is_a_sign_up_lead_and_shares_identity_with_the_sale(make_flow: Any) -> None:
    flow = chargebee_flow(make_flow)
    assert flow.receive(fixture("chargebee", "customer_created"))["status"] == "accepted"
    sale = fixture("chargebee", "payment_succeeded")
    for obj in (sale["content"]["customer"], sale["content"]["subscription"]):
        obj.pop("meta_data", None)
        obj.pop("cf_click_id", None)
    flow.receive(sale)
    lead, paid = flow.stored()
    assert (lead.kind, lead.event_name) == ("lead", "Sign up")
    assert lead.click_id == "cl_chargebee_lead"  # custom field cf_click_id
    assert lead.external_id == paid.external_id == "user_42"
    assert paid.click_id == "cl_chargebee_lead"  # from identity memory
    assert paid.email == "ada@example.com"


def test_custom_fields_count_under_their_key_without_cf_and_exactly() -> None:
    event = fixture("chargebee", "customer_created")
    customer = event["content"]["customer"]
    customer.pop("meta_data")
    customer.update(cf_user_id="user_77", cf_ref="cl_from_cf_ref")
    lead = one(source(click_id_keys=["cf_ref", "click_id"]), event)
    assert (lead.external_id, lead.click_id) == ("user_77", "cl_from_cf_ref")


def test_customer_without_ids_is_known_by_its_chargebee_id(make_flow: Any) -> None:
    event = fixture("chargebee", "customer_created")
    event["content"]["customer"].pop("meta_data")
    event["content"]["customer"].pop("cf_click_id")
    flow = chargebee_flow(make_flow, forward_leads_without_click_id=True)
    [lead] = flow.stored(flow.receive(event))
    assert (lead.external_id, lead.click_id, lead.state) == ("AzZTr5UZk2gLt1Hxm", "", "pending")  # Dub: the known click


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda e: e["content"]["transaction"].update(status="failure"), "unpaid"),
        (lambda e: e["content"]["transaction"].update(amount=980), "zero_amount"),  # all of it tax
        (lambda e: e.update(api_version="v1"), "api_version_v1"),
        (lambda e: e.update(event_type="subscription_created"), "event_type_not_tracked"),
        (lambda e: e.update(event_type="payment_failed"), "event_type_not_tracked"),
    ],
)
def test_uncountable_events_are_ignored_with_reasons(make_flow: Any, change: Any, reason: str) -> None:
    event = fixture("chargebee", "payment_succeeded")
    change(event)
    flow = chargebee_flow(make_flow)
    answer = flow.receive(event)
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


def test_missing_fields_are_400_malformed(client: Any) -> None:
    event = fixture("chargebee", "payment_succeeded")
    del event["content"]["transaction"]["amount"]
    with pytest.raises(PayloadError):
        mapped(source(), event)
    r = post(client, event)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


# -- dedup and ordering ---------------------------------------------------------------------------


def test_redelivery_is_a_duplicate_even_with_another_webhook_status(make_flow: Any) -> None:
    flow = chargebee_flow(make_flow)
    event = fixture("chargebee", "payment_succeeded")
    first = flow.receive(event)
    again = copy.deepcopy(event)
    again["webhook_status"] = "re_scheduled"  # Chargebee's retry of the same event
    assert flow.receive(again) == {"status": "duplicate", "eventId": first["eventId"]}
    assert [s.state for s in flow.stored()] == ["pending"]


def test_older_event_for_the_same_invoice_arriving_late_is_out_of_order(make_flow: Any) -> None:
    # Two payments towards one invoice; Chargebee delivers the later one first.
    newer = payment(event_id="ev_newer")
    older = payment(event_id="ev_older")
    older["occurred_at"] = newer["occurred_at"] - 600
    older["content"]["transaction"]["id"] = "txn_earlier_partial"
    flow = chargebee_flow(make_flow)
    assert flow.receive(newer)["status"] == "accepted"
    answer = flow.receive(older)
    assert (answer["status"], answer["reason"]) == ("ignored", "out_of_order")
    [sale] = flow.stored()
    assert sale.metadata["transactionId"] == "txn_AzZTr5UZk2hQj1I2p"


def test_late_renewal_and_late_customer_event_still_count(make_flow: Any) -> None:
    # Payments are ordered per invoice, not per subscription or customer: an earlier cycle (and the
    # customer_created) delivered after a later cycle are other objects and still count.
    flow = chargebee_flow(make_flow)
    assert flow.receive(fixture("chargebee", "payment_succeeded+renewal"))["status"] == "accepted"
    assert flow.receive(fixture("chargebee", "payment_succeeded"))["status"] == "accepted"
    assert flow.receive(fixture("chargebee", "customer_created"))["status"] == "accepted"
    got = flow.stored()
    assert sorted(s.invoice_id or s.event_name for s in got) == ["Sign up", "chargebee:inv_1024", "chargebee:inv_1099"]
    assert all(s.state == "pending" for s in got)


def test_invoice_ids_are_qualified_by_source_and_tax_is_excluded(make_flow: Any) -> None:
    flow = chargebee_flow(make_flow)
    [stored] = flow.stored(flow.receive(fixture("chargebee", "payment_succeeded")))
    assert stored.invoice_id == "chargebee:inv_1024" and stored.metadata["tax"] == "excluded"


@pytest.mark.parametrize(("first", "expected"), [(True, True), (False, False), (None, None)])
def test_first_invoice_says_whether_the_payment_starts_the_subscription(first: bool | None,
                                                                        expected: bool | None) -> None:
    event = fixture("chargebee", "payment_succeeded")
    if first is None:
        del event["content"]["invoice"]["first_invoice"]
    else:
        event["content"]["invoice"]["first_invoice"] = first
    assert sale_of(event).starts_subscription is expected


def test_a_one_time_invoice_says_nothing_about_a_subscription() -> None:
    assert sale_of(fixture("chargebee", "payment_succeeded+one_time")).starts_subscription is None


# --- refunds (SPEC §9) ---------------------------------------------------------------------------


def refund_of(event: dict[str, Any]) -> Refund:
    refund = one(source(), event)
    assert isinstance(refund, Refund)
    return refund


def test_a_refund_transaction_reverses_its_invoice_and_payment_tax_included() -> None:
    refund = refund_of(fixture("chargebee", "payment_refunded"))
    assert refund.reverses == ("inv_1024", "txn_AzZTr5UZk2hQj1I2p")
    assert (refund.amount, refund.currency) == (1176, "usd")  # 980 + 196 tax, of 5880
    assert refund.includes_tax is True and refund.cumulative is False and refund.chargeback is False
    assert refund.refund_id == "txn_AzZTr5UZk3kRw2J7v"
    assert refund.metadata["creditNoteId"] == "CN-77"


def test_a_full_refund_carries_the_whole_payment() -> None:
    event = fixture("chargebee", "payment_refunded")
    event["content"]["transaction"]["amount"] = 5880
    assert refund_of(event).amount == 5880


def test_the_sale_remembers_the_payment_a_refund_names_and_its_gross() -> None:
    sale = sale_of(fixture("chargebee", "payment_succeeded"))
    assert (sale.invoice_id, sale.payment_refs) == ("inv_1024", ("txn_AzZTr5UZk2hQj1I2p",))
    assert (sale.amount, sale.gross_amount) == (4900, 5880)
    assert set(refund_of(fixture("chargebee", "payment_refunded")).reverses) == {sale.invoice_id, *sale.payment_refs}


def test_a_refund_transaction_that_did_not_succeed_does_not_count() -> None:
    event = fixture("chargebee", "payment_refunded")
    event["content"]["transaction"]["status"] = "failure"
    with pytest.raises(Ignore, match="refund_not_succeeded"):
        mapped(source(), event)
