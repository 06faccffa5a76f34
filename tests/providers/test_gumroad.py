"""Gumroad Ping: URL token and seller_id, form bodies, retries, sale mapping in USD cents."""

from __future__ import annotations

import dataclasses
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.datastructures import Headers

from adapter.errors import CredentialsError, Ignore, PayloadError
from adapter.events import Refund, Sale
from adapter.ingest import map_event, parse_event
from adapter.plugin import load_providers
from adapter.testing import ProviderContract, make_source
from providers.gumroad import GumroadProvider
from tests.conftest import fixture, wait_for
from tests.providers.flow import mapped, one

TOKEN = "gr_9c1f5d0e7b3a4f28a6e1c2d3b4a5f607"
OLD_TOKEN = "gr_previous_token_0000000000000000"
SELLER = "u9Lx3nP2qW7tYb4kZr1Fcg=="
URL_TOKEN = "x-test-url-token"  # carries the token from `sign` to `verify` in the contract below


class TestGumroadContract(ProviderContract):
    """A ping's credential is the `?token=` of its URL: `sign` hands it over in a test-only header
    and `verify` puts it in the request query, where the core puts a real request's."""

    provider_class = GumroadProvider
    secret = TOKEN
    other_secret = "gr_someone_elses_token_000000000000"
    source_settings = {"seller_id": SELLER}
    has_timestamp = False
    forged_code = missing_code = "invalid_credentials"

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return {URL_TOKEN: GumroadProvider().sample_query(secret)["token"]}

    def verify(self, body: bytes, headers: Headers, secrets: list[str] | None = None) -> None:
        src = self.source(secrets)
        token = headers.get(URL_TOKEN)
        ctx = dataclasses.replace(src.ctx, query={"token": token} if token else {})
        src.provider.verify(body, headers, src.secrets, ctx)

    def test_tampered_body_is_rejected(self) -> None:
        pytest.skip("a URL token authenticates the sender, not the body: Gumroad signs nothing")


def form(fields: dict[str, str]) -> bytes:
    return urlencode(list(fields.items())).encode()


def post(client: Any, fields: dict[str, str], *, token: str | None = TOKEN, source: str = "gumroad") -> Any:
    url = f"/webhooks/{source}" + (f"?token={token}" if token is not None else "")
    return client.post(url, content=form(fields), headers={"Content-Type": "application/x-www-form-urlencoded"})


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"gumroad": {"provider": "gumroad", "secrets": [TOKEN, OLD_TOKEN], "seller_id": SELLER}})


def sale(name: str = "sale", **changes: str) -> dict[str, str]:
    fields: dict[str, str] = fixture("gumroad", name)
    fields.update(changes)
    return fields


# -- credentials ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "seller"),
    [(None, SELLER), ("", SELLER), ("gr_wrong", SELLER), (TOKEN + "x", SELLER), (TOKEN, "someone-else=="),
     (TOKEN, None)],
)
def test_missing_or_wrong_token_or_seller_is_401(client: Any, receiver: Any, token: str | None,
                                                  seller: str | None) -> None:
    fields = sale()
    if seller is None:
        del fields["seller_id"]
    else:
        fields["seller_id"] = seller
    r = post(client, fields, token=token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    assert TOKEN not in r.text
    time.sleep(0.2)
    assert receiver.requests == []


def test_any_configured_token_passes(client: Any) -> None:
    assert post(client, sale(), token=OLD_TOKEN).json()["status"] == "accepted"


def test_seller_id_setting_is_required_at_startup(make_client: Any) -> None:
    from adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="seller_id"):
        make_client(sources={"gumroad": {"provider": "gumroad", "secrets": [TOKEN]}})


def test_undecodable_body_with_a_good_token_is_refused_as_credentials() -> None:
    src = make_source(GumroadProvider(), [TOKEN], seller_id=SELLER)
    ctx = dataclasses.replace(src.ctx, query={"token": TOKEN})
    with pytest.raises(CredentialsError):
        src.provider.verify(b"\xff\xfe", Headers({}), src.secrets, ctx)


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_sale_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    r = post(client, sale())
    assert r.json()["status"] == "accepted"
    [got] = wait_for(receiver.delivered)
    assert got.headers["idempotency-key"] == "sale:gumroad:gumroad:FO8TXN-dvxYabdavG97Y-Q=="
    assert (got.body["eventName"], got.body["invoiceId"]) == ("Purchase", "gumroad:FO8TXN-dvxYabdavG97Y-Q==")
    assert got.body["clickId"] == "cl_gumroad_sale" and got.body["customerExternalId"] == "user_42"


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------


def source(**settings: Any) -> Any:
    return make_source(GumroadProvider(), [TOKEN], name="gumroad", **{"seller_id": SELLER, **settings})


def sale_of(fields: dict[str, str]) -> Sale:
    [got] = mapped(source(), form(fields))
    assert isinstance(got, Sale)
    return got


class GumroadFlow:
    def __init__(self, make_flow: Any, **settings: Any) -> None:
        self.flow = make_flow(GumroadProvider(), [TOKEN, OLD_TOKEN], lambda body: {},
                              **{"seller_id": SELLER, **settings})

    def receive(self, fields: dict[str, str]) -> Any:
        return self.flow.receive(form(fields), {"Content-Type": "application/x-www-form-urlencoded"},
                                 {"token": TOKEN})

    def stored(self, answer: Any = None) -> Any:
        return self.flow.stored(answer)


def test_one_time_sale_is_a_purchase_in_usd_cents() -> None:
    got = sale_of(sale())
    assert (got.kind, got.amount, got.currency, got.invoice_id) == ("purchase", 2900, "usd", "FO8TXN-dvxYabdavG97Y-Q==")
    assert (got.click_id, got.external_id) == ("cl_gumroad_sale", "user_42")
    assert (got.email, got.name, got.provider_customer_id) == ("ada@example.com", "Ada Lovelace", "5530311507811")
    event = parse_event(source(), form(sale()), Headers({}))
    assert (event.id, event.livemode) == ("sale:FO8TXN-dvxYabdavG97Y-Q==", True)
    assert event.occurred_at.isoformat() == "2024-04-10T10:36:52+00:00"
    assert got.metadata["productCurrency"] == "usd" and got.metadata["orderNumber"] == "524459935"


def test_price_is_usd_cents_even_for_a_product_priced_in_another_currency() -> None:
    got = sale_of(sale(currency="eur", price="3175"))
    assert (got.amount, got.currency, got.metadata["productCurrency"]) == (3175, "usd", "eur")


def test_membership_purchase_then_recurring_charge_are_creation_then_renewal(make_flow: Any) -> None:
    renewal = sale_of(sale("sale+renewal"))
    assert renewal.kind == "subscription" and renewal.amount == 1500
    assert renewal.subscription_id == renewal.metadata["subscriptionId"] == "Hq8wE3rT6yU9iO2pA5sD7f=="
    assert renewal.metadata["recurringCharge"] is True
    flow = GumroadFlow(make_flow)
    assert flow.receive(sale("sale+subscription"))["status"] == "accepted"
    assert flow.receive(sale("sale+renewal"))["status"] == "accepted"
    first, second = flow.stored()
    assert (first.event_name, second.event_name) == ("Subscription creation", "Subscription renewal")
    # The renewal has no url_params: identity memory carries the membership's user and click.
    assert (second.external_id, second.click_id) == ("user_42", "cl_gumroad_membership")


def test_custom_fields_give_ids_when_the_link_had_none() -> None:
    fields = {k: v for k, v in sale().items() if not k.startswith("url_params[")}
    fields.update({"custom_fields[user_id]": "user_77", "custom_fields[Company]": "Analytical Engines"})
    got = sale_of(fields)
    assert (got.external_id, got.click_id) == ("user_77", None)


def test_gift_is_paid_by_the_gifter() -> None:
    got = sale_of(sale(is_gift_receiver_purchase="true", price="0", gift_price="2900",
                       gifter_email="gifter@example.com", email="friend@example.com"))
    assert (got.amount, got.email, got.provider_customer_id) == (2900, "gifter@example.com", None)
    assert got.metadata["gift"] is True


def test_test_purchase_is_not_live(make_flow: Any) -> None:
    flow = GumroadFlow(make_flow, livemode="live")
    answer = flow.receive(sale(test="true"))
    assert (answer["status"], answer["reason"]) == ("ignored", "livemode_mismatch")
    assert flow.receive(sale(sale_id="live-sale=="))["status"] == "accepted"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"refunded": "true"}, "refunded"), ({"disputed": "true"}, "disputed"),
     ({"is_preorder_authorization": "true"}, "preorder_authorization"), ({"price": "0"}, "zero_amount")],
)
def test_uncountable_sales_are_ignored_with_reasons(make_flow: Any, changes: dict[str, str], reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        sale_of(sale(**changes))
    assert caught.value.reason == reason
    flow = GumroadFlow(make_flow)
    answer = flow.receive(sale(**changes))
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


def test_price_that_is_not_cents_is_a_400(client: Any) -> None:
    for price in ("29.00", "-5", "\u0662\u0669"):
        with pytest.raises(PayloadError):
            sale_of(sale(price=price))
    r = post(client, sale(price="29.00"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


# -- dedup ----------------------------------------------------------------------------------------


def test_retry_with_retry_count_is_a_duplicate(make_flow: Any) -> None:
    flow = GumroadFlow(make_flow)
    first = flow.receive(sale())
    retry = flow.receive(sale(retry_count="1"))  # Gumroad adds retry_count to the body of a retry
    assert retry == {"status": "duplicate", "eventId": first["eventId"]}
    assert flow.receive(sale(retry_count="2"))["status"] == "duplicate"
    assert [s.state for s in flow.stored()] == ["pending"]


def test_refund_ping_of_the_same_sale_is_its_own_delivery_and_no_second_sale(make_flow: Any) -> None:
    flow = GumroadFlow(make_flow)
    first = flow.receive(sale())
    assert first["status"] == "accepted"
    answer = flow.receive(sale(resource_name="refund", refunded="true"))
    assert answer.get("eventId") != first["eventId"]  # not a duplicate of the sale's delivery
    # one Sale, and the refund of it (not `unknown_sale`: Gumroad's ping names the same sale_id)
    stored = flow.stored()
    assert [s.kind for s in stored] == ["sale", "refund"]
    assert stored[1].reason != "unknown_sale", stored[1]


def test_subscription_pings_without_sale_id_are_keyed_by_subscription_and_time() -> None:
    src = make_source(GumroadProvider(), [TOKEN], seller_id=SELLER)
    body = form({"subscription_id": "Hq8wE3rT6yU9iO2pA5sD7f==", "resource_name": "cancellation",
                 "cancelled": "true", "cancelled_at": "2024-06-01T08:00:00.000Z", "created_at": "2024-04-10T11:02:17Z"})
    event = src.provider.parse(body, Headers({}))
    assert (event.id, event.type) == ("cancellation:Hq8wE3rT6yU9iO2pA5sD7f==:2024-06-01T08:00:00.000Z", "cancellation")
    with pytest.raises(Ignore) as caught:  # a subscription's end: recorded on the journey
        map_event(src, event)
    assert caught.value.reason == "cancellation_recorded"


# -- samples and `hooktrack send` -------------------------------------------------------------------


def test_fresh_samples_with_the_sample_query_are_accepted_once_each(client: Any, receiver: Any) -> None:
    provider = load_providers()["gumroad"]()
    assert isinstance(provider, GumroadProvider)  # registered under its entry point
    query = provider.sample_query(TOKEN)
    for unique in ("a1b2c3d4e5f60718", "0f1e2d3c4b5a6978"):
        body = provider.sample("sale", unique=unique, now=int(time.time()))
        r = client.post("/webhooks/gumroad", params=query, content=body, headers=provider.sample_headers("sale", body))
        assert r.json()["status"] == "accepted"
    assert len(wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())) == 2
    assert provider.sign(body, TOKEN, 0, make_source(provider, [TOKEN], seller_id=SELLER).ctx) == {}


def test_hooktrack_send_puts_the_token_in_the_url(client: Any, receiver: Any) -> None:
    from adapter.samples import post_sample

    src = client.app.state.sources["gumroad"]
    sample = sorted(src.provider.samples())[0]
    assert post_sample(src, sample, "", client=client).json()["status"] in ("accepted", "ignored")
    assert post_sample(src, sample, "", secret="not-the-token", client=client).status_code == 401


def test_sale_ids_are_qualified_by_source_and_price_is_net_of_tax(make_flow: Any) -> None:
    flow = GumroadFlow(make_flow)
    [stored] = flow.stored(flow.receive(sale()))
    assert stored.invoice_id == "gumroad:FO8TXN-dvxYabdavG97Y-Q==" and stored.metadata["tax"] == "excluded"


# -- refunds and disputes (SPEC §9) ---------------------------------------------------------------


def reversal_of(fields: dict[str, str]) -> Refund:
    refund = one(source(), form(fields))
    assert isinstance(refund, Refund)
    return refund


def test_a_refund_ping_of_a_refunded_sale_refunds_the_whole_sale() -> None:
    fields = sale(resource_name="refund", refunded="true")
    refund = reversal_of(fields)
    assert refund.reverses == (fields["sale_id"],)
    assert (refund.amount, refund.currency) == (None, "usd")  # the ping names no amount: the whole Sale
    assert (refund.chargeback, refund.cumulative, refund.includes_tax) == (False, False, False)
    assert sale_of(sale()).invoice_id in refund.reverses


def test_a_partial_refund_ping_gives_no_amount_and_is_ignored() -> None:
    with pytest.raises(Ignore, match="partial_refund_amount_unknown"):
        mapped(source(), form(sale(resource_name="refund", refunded="false")))


def test_the_full_refund_after_a_partial_one_is_a_new_delivery() -> None:
    src = source()
    partial = src.provider.parse(form(sale(resource_name="refund", refunded="false")), Headers({}))
    full = src.provider.parse(form(sale(resource_name="refund", refunded="true")), Headers({}))
    retry = src.provider.parse(form(sale(resource_name="refund", refunded="true", retry_count="1")), Headers({}))
    assert partial.id != full.id == retry.id


def test_a_dispute_ping_is_a_chargeback_of_the_whole_sale() -> None:
    refund = reversal_of(sale(resource_name="dispute", disputed="true"))
    assert (refund.chargeback, refund.amount) == (True, None)
    with pytest.raises(Ignore, match="not_disputed"):
        mapped(source(), form(sale(resource_name="dispute", disputed="false")))
    assert mapped(source(), form(sale(resource_name="dispute_won", disputed="true", dispute_won="true"))) == []


def test_the_refund_fixture_reverses_the_sample_sale() -> None:
    refund = reversal_of(fixture("gumroad", "refund"))
    assert refund.reverses == (sale_of(fixture("gumroad", "sale")).invoice_id,)
