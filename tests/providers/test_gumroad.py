"""Gumroad Ping: URL token and seller_id, form bodies, retries, sale mapping in USD cents."""

from __future__ import annotations

import dataclasses
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.datastructures import Headers

from adapter.errors import CredentialsError
from adapter.plugin import load_providers
from adapter.testing import ProviderContract, make_source
from providers.gumroad import GumroadProvider
from tests.conftest import fixture, wait_for

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


# -- mapping through the real receiver ------------------------------------------------------------


def test_one_time_sale_is_a_purchase_in_usd_cents(client: Any, receiver: Any) -> None:
    r = post(client, sale())
    assert r.json()["status"] == "accepted"
    [got] = wait_for(receiver.delivered)
    body = got.body
    assert got.headers["idempotency-key"] == "sale:gumroad:FO8TXN-dvxYabdavG97Y-Q=="
    assert (body["amount"], body["currency"], body["eventName"]) == (2900, "usd", "Purchase")
    assert body["clickId"] == "cl_gumroad_sale" and body["customerExternalId"] == "user_42"
    assert (body["customerEmail"], body["customerName"]) == ("ada@example.com", "Ada Lovelace")
    assert body["timestamp"] == "2024-04-10T10:36:52.000Z" and body["paymentProcessor"] == "gumroad"
    meta = body["metadata"]
    assert meta["providerCustomerId"] == "5530311507811" and meta["livemode"] is True
    assert meta["productCurrency"] == "usd" and meta["orderNumber"] == "524459935"
    assert meta["providerEventId"] == "sale:FO8TXN-dvxYabdavG97Y-Q=="


def test_price_is_usd_cents_even_for_a_product_priced_in_another_currency(client: Any, receiver: Any) -> None:
    post(client, sale(currency="eur", price="3175"))
    [got] = wait_for(receiver.delivered)
    assert (got.body["amount"], got.body["currency"]) == (3175, "usd")
    assert got.body["metadata"]["productCurrency"] == "eur"


def test_membership_purchase_then_recurring_charge_are_creation_then_renewal(client: Any, receiver: Any) -> None:
    assert post(client, sale("sale+subscription")).json()["status"] == "accepted"
    assert post(client, sale("sale+renewal")).json()["status"] == "accepted"
    first, second = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    assert (first.body["eventName"], second.body["eventName"]) == ("Subscription creation", "Subscription renewal")
    assert first.body["amount"] == second.body["amount"] == 1500
    assert second.body["metadata"]["subscriptionId"] == "Hq8wE3rT6yU9iO2pA5sD7f=="
    assert second.body["metadata"]["recurringCharge"] is True
    # The renewal has no url_params: identity memory carries the membership's user and click.
    assert second.body["customerExternalId"] == "user_42" and second.body["clickId"] == "cl_gumroad_membership"


def test_custom_fields_give_ids_when_the_link_had_none(client: Any, receiver: Any) -> None:
    fields = {k: v for k, v in sale().items() if not k.startswith("url_params[")}
    fields.update({"custom_fields[user_id]": "user_77", "custom_fields[Company]": "Analytical Engines"})
    post(client, fields)
    [got] = wait_for(receiver.delivered)
    assert got.body["customerExternalId"] == "user_77" and "clickId" not in got.body


def test_gift_is_paid_by_the_gifter(client: Any, receiver: Any) -> None:
    post(client, sale(is_gift_receiver_purchase="true", price="0", gift_price="2900",
                      gifter_email="gifter@example.com", email="friend@example.com"))
    [got] = wait_for(receiver.delivered)
    assert (got.body["amount"], got.body["customerEmail"]) == (2900, "gifter@example.com")
    assert got.body["metadata"]["gift"] is True and "providerCustomerId" not in got.body["metadata"]


def test_test_purchase_is_not_live(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"gumroad": {"provider": "gumroad", "secrets": [TOKEN], "seller_id": SELLER,
                                              "livemode": "live"}})
    r = post(client, sale(test="true"))
    assert (r.json()["status"], r.json()["reason"]) == ("ignored", "livemode_mismatch")
    assert post(client, sale(sale_id="live-sale==")).json()["status"] == "accepted"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"refunded": "true"}, "refunded"), ({"disputed": "true"}, "disputed"),
     ({"is_preorder_authorization": "true"}, "preorder_authorization"), ({"price": "0"}, "zero_amount")],
)
def test_uncountable_sales_are_ignored_with_reasons(client: Any, receiver: Any, changes: dict[str, str],
                                                    reason: str) -> None:
    r = post(client, sale(**changes))
    assert (r.status_code, r.json()["status"], r.json()["reason"]) == (200, "ignored", reason)
    time.sleep(0.2)
    assert receiver.requests == []


def test_price_that_is_not_cents_is_a_400(client: Any) -> None:
    r = post(client, sale(price="29.00"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


# -- dedup ----------------------------------------------------------------------------------------


def test_retry_with_retry_count_is_a_duplicate(client: Any, receiver: Any) -> None:
    first = post(client, sale())
    retry = post(client, sale(retry_count="1"))  # Gumroad adds retry_count to the body of a retry
    assert retry.json() == {"status": "duplicate", "eventId": first.json()["eventId"]}
    assert post(client, sale(retry_count="2")).json()["status"] == "duplicate"
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_refund_ping_of_the_same_sale_is_its_own_untracked_delivery(client: Any, receiver: Any) -> None:
    assert post(client, sale()).json()["status"] == "accepted"
    r = post(client, sale(resource_name="refund", refunded="true"))
    assert (r.json()["status"], r.json()["reason"]) == ("ignored", "event_type_not_tracked")
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_subscription_pings_without_sale_id_are_keyed_by_subscription_and_time() -> None:
    src = make_source(GumroadProvider(), [TOKEN], seller_id=SELLER)
    body = form({"subscription_id": "Hq8wE3rT6yU9iO2pA5sD7f==", "resource_name": "cancellation",
                 "cancelled": "true", "cancelled_at": "2024-06-01T08:00:00.000Z", "created_at": "2024-04-10T11:02:17Z"})
    event = src.provider.parse(body, Headers({}))
    assert (event.id, event.type) == ("cancellation:Hq8wE3rT6yU9iO2pA5sD7f==:2024-06-01T08:00:00.000Z", "cancellation")
    assert src.provider.map(event, src.ctx) == []


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
    from adapter.cli import post_sample

    src = client.app.state.sources["gumroad"]
    sample = sorted(src.provider.samples())[0]
    assert post_sample(src, sample, "", client=client).json()["status"] in ("accepted", "ignored")
    assert post_sample(src, sample, "", secret="not-the-token", client=client).status_code == 401
