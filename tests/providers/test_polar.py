"""Polar: signatures made by the official `standardwebhooks` package keyed the way Polar's SDK
keys it, mapping, and flows through the core."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks
from starlette.datastructures import Headers

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Lead, Refund, Sale
from adapter.ingest import parse_event
from adapter.samples import post_sample
from adapter.testing import ProviderContract, make_source
from providers.polar import PolarProvider
from tests.conftest import fixture, sent_once, wait_for
from tests.providers.flow import mapped, one

SECRET = "polar_whs_Jm5Qk3r8TzW2yXv9cL4aN7bF1dH6sG0eUaPo"
OTHER = "polar_whs_someone_elses_secret_000000000000000"
ORDER_ID = "0b4f5a8e-3d2c-4a71-9e6f-7c1b2d3e4f50"


def polar_webhook(secret: str = SECRET) -> standardwebhooks.Webhook:
    """Exactly what polar-python's `validate_event` builds (polar_sdk/_webhooks/__init__.py):
    `Webhook(base64.b64encode(secret.encode()).decode())`, so the key is the secret's bytes."""
    return standardwebhooks.Webhook(base64.b64encode(secret.encode()).decode())


def signed(body: bytes, secret: str = SECRET, timestamp: int | None = None, msg_id: str | None = None) -> dict[str, str]:
    """Headers of a Polar delivery, signed by the official standardwebhooks package."""
    ts = int(time.time()) if timestamp is None else timestamp
    msg = msg_id or "msg_" + hashlib.sha256(body).hexdigest()[:24]
    signature = polar_webhook(secret).sign(msg, datetime.fromtimestamp(ts, UTC), body.decode())
    return {"webhook-id": msg, "webhook-timestamp": str(ts), "webhook-signature": signature}


class TestPolarContract(ProviderContract):
    provider_class = PolarProvider
    secret = SECRET
    other_secret = OTHER

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return signed(body, secret, timestamp)


def verify(body: bytes, headers: dict[str, str], secrets: list[str] | None = None, **settings: Any) -> None:
    src = make_source(PolarProvider(), secrets or [SECRET], name="polar", **settings)
    src.provider.verify(body, Headers(headers), src.secrets, src.ctx)


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET, msg_id: str | None = None) -> Any:
    body = json.dumps(event).encode()
    headers = {**signed(body, secret, msg_id=msg_id), "Content-Type": "application/json"}
    return client.post("/webhooks/polar", content=body, headers=headers)


def order(name: str = "order.paid", **changes: Any) -> dict[str, Any]:
    event = fixture("polar", name)
    event["data"].update(changes)
    return event


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"polar": {"provider": "polar", "secrets": [SECRET]}})


BODY = json.dumps(fixture("polar", "order.paid")).encode()

# -- signatures ---------------------------------------------------------------------------------


def test_signature_by_standardwebhooks_with_polars_keying_verifies() -> None:
    verify(BODY, signed(BODY))


def test_our_signer_and_the_official_verifier_agree() -> None:
    src = make_source(PolarProvider(), [SECRET], name="polar")
    headers = PolarProvider().sign(BODY, SECRET, int(time.time()), src.ctx)
    assert polar_webhook().verify(BODY, headers) == json.loads(BODY)


def test_polar_secret_is_keyed_by_its_text_not_base64_decoded() -> None:
    # What a plain Standard Webhooks verifier would do with the secret (decode it) is not Polar's scheme.
    plain_standard = standardwebhooks.Webhook(SECRET).sign("msg_1", datetime.now(UTC), BODY.decode())
    headers = {**signed(BODY, msg_id="msg_1"), "webhook-signature": plain_standard}
    with pytest.raises(SignatureError) as caught:
        verify(BODY, headers)
    assert caught.value.code == "invalid_signature"


def test_whsec_secret_verifies_keyed_either_way() -> None:
    # Polar's newer SDK (polarsource/polar sdk/python/polar/webhooks.py, `_signing_keys`) accepts
    # a `whsec_<base64>` secret both as text and decoded; so does hooktrack.
    whsec = "whsec_" + base64.b64encode(b"sixteen byte key").decode()
    verify(BODY, signed(BODY, whsec), secrets=[whsec])
    now = datetime.now(UTC)
    decoded_key = standardwebhooks.Webhook(whsec).sign("msg_1", now, BODY.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": decoded_key}
    verify(BODY, headers, secrets=[whsec])


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_a_missing_signature(missing: str) -> None:
    headers = signed(BODY)
    del headers[missing]
    with pytest.raises(SignatureError) as caught:
        verify(BODY, headers)
    assert caught.value.code == "missing_signature"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"webhook-timestamp": "yesterday"}, "invalid_signature"),
        ({"webhook-signature": "v2,abc"}, "missing_signature"),
        ({"webhook-signature": "v1,not base64!"}, "invalid_signature"),  # sent, so not "missing"
        ({"webhook-id": "msg_other"}, "invalid_signature"),
    ],
)
def test_malformed_headers_have_clear_codes(change: dict[str, str], code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, {**signed(BODY), **change})
    assert caught.value.code == code


def test_forged_signature_is_rejected_without_revealing_the_secret() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, signed(BODY, OTHER))
    assert caught.value.code == "invalid_signature"
    assert SECRET not in caught.value.message


def test_tampered_body_is_rejected() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY.replace(b"4900", b"49"), signed(BODY))
    assert caught.value.code == "invalid_signature"


def test_several_signatures_one_valid_passes() -> None:
    headers = signed(BODY)
    headers["webhook-signature"] = f"v1,{base64.b64encode(b'0' * 32).decode()} v1a,xyz {headers['webhook-signature']}"
    verify(BODY, headers)


def test_rotated_secrets_any_configured_secret_passes() -> None:
    verify(BODY, signed(BODY, OTHER), secrets=[SECRET, OTHER])


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 3600])
def test_timestamps_too_old_and_too_new_are_stale(offset: int) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, signed(BODY, timestamp=int(time.time()) + offset))
    assert caught.value.code == "stale_timestamp"


def test_stale_delivery_is_refused_before_its_signature_is_computed() -> None:
    # Standard Webhooks order (shared with the standardwebhooks and clerk providers).
    with pytest.raises(SignatureError) as caught:
        verify(BODY, signed(BODY, OTHER, timestamp=int(time.time()) - 3600))
    assert caught.value.code == "stale_timestamp"


def test_tolerance_is_the_sources_setting() -> None:
    verify(BODY, signed(BODY, timestamp=int(time.time()) - 500), tolerance_s=600)


def test_unsigned_request_is_a_400_with_code(client: Any) -> None:
    r = client.post("/webhooks/polar", content=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_paid_order_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    r = post(client, fixture("polar", "order.paid"), msg_id="msg_order_1")
    assert r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.headers["idempotency-key"] == f"sale:polar:{ORDER_ID}"
    assert sale.body["eventName"] == "Purchase" and sale.body["invoiceId"] == ORDER_ID
    assert sale.body["customerExternalId"] == "user_polar_42" and sale.body["clickId"] == "cl_polar_click"


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------


def source(**settings: Any) -> Any:
    return make_source(PolarProvider(), [SECRET], name="polar", **settings)


def polar_flow(make_flow: Any) -> Any:
    return make_flow(PolarProvider(), [SECRET], signed)


def conv_of(event: dict[str, Any], msg_id: str = "msg_1") -> Lead | Sale:
    body = json.dumps(event).encode()
    return one(source(), body, {"webhook-id": msg_id})


def test_paid_order_is_a_purchase_after_discount_before_tax() -> None:
    sale = conv_of(fixture("polar", "order.paid"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 4900, "usd")  # 5900 − 1000 discount; 490 tax
    assert sale.invoice_id == ORDER_ID
    assert sale.external_id == "user_polar_42"  # customer.external_id
    assert sale.click_id == "cl_polar_click"
    assert (sale.email, sale.name) == ("ada@example.com", "Ada Lovelace")
    assert sale.metadata["taxAmount"] == 490 and sale.metadata["billingReason"] == "purchase"
    event = parse_event(source(), BODY, Headers({"webhook-id": "msg_order_1"}))
    assert (event.id, event.type, event.livemode) == ("msg_order_1", "order.paid", None)  # no live/test flag
    assert event.occurred_at.isoformat(timespec="milliseconds") == "2026-04-10T12:34:56.201+00:00"


def test_subscription_orders_are_creation_then_renewal(make_flow: Any) -> None:
    first = order("order.paid+subscription")
    renewal = order("order.paid+subscription", id="8f0b2d4f-6a8c-4e0a-9c4e-0c2e4a6c8e9f",
                    billing_reason="subscription_cycle", metadata={})
    sales = [conv_of(first), conv_of(renewal)]
    assert all(isinstance(s, Sale) and s.amount == 2900 for s in sales)
    assert sales[0].metadata["subscriptionId"] == "a9c1e3f5-7b2d-4f6a-8c0e-5d7f9b1a3c4e"
    assert sales[0].click_id == "cl_polar_sub"  # the order's metadata wins over the customer's
    assert sales[1].click_id == "cl_polar_click"  # no order metadata: the customer's
    flow = polar_flow(make_flow)
    assert flow.receive(first)["status"] == "accepted"
    assert flow.receive(renewal)["status"] == "accepted"
    assert [s.event_name for s in flow.stored()] == ["Subscription creation", "Subscription renewal"]


def test_first_cycle_after_a_trial_is_the_subscription_creation(make_flow: Any) -> None:
    """Polar's trial starts with an order of nothing (`subscription_create`, net 0): hooktrack
    remembers it, so the first paid `subscription_cycle` is the creation (SPEC §8)."""
    flow = polar_flow(make_flow)
    trial = order("order.paid+subscription", billing_reason="subscription_create", net_amount=0, tax_amount=0)
    trial["data"]["id"] = "order_trial_start"
    assert flow.receive(trial)["reason"] == "zero_amount"
    [sale] = flow.stored(flow.receive(order("order.paid+subscription", billing_reason="subscription_cycle")))
    assert sale.event_name == "Subscription creation"


def test_a_cycle_of_a_subscription_never_seen_is_a_renewal(make_flow: Any) -> None:
    flow = polar_flow(make_flow)
    [sale] = flow.stored(flow.receive(order("order.paid+subscription", billing_reason="subscription_cycle")))
    assert sale.event_name == "Subscription renewal"


def test_plan_change_charge_is_a_subscription_update(make_flow: Any) -> None:
    event = order("order.paid+subscription", billing_reason="subscription_update", net_amount=1250)
    sale = conv_of(event)
    assert isinstance(sale, Sale) and (sale.kind, sale.amount) == ("subscription_update", 1250)
    flow = polar_flow(make_flow)
    [stored] = flow.stored(flow.receive(event))
    assert stored.event_name == "Subscription update"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"net_amount": 0}, "zero_amount"), ({"net_amount": -100}, "zero_amount"), ({"paid": False}, "unpaid")],
)
def test_uncountable_orders_are_ignored_with_reasons(make_flow: Any, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        conv_of(order(**changes))
    assert caught.value.reason == reason
    flow = polar_flow(make_flow)
    answer = flow.receive(order(**changes))
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


@pytest.mark.parametrize("amount", ["49.5", 49.5, "\u0664\u0669\u0660\u0660", None, True])
def test_non_integer_amount_is_400(client: Any, amount: Any) -> None:
    with pytest.raises(PayloadError):
        conv_of(order(net_amount=amount))
    r = post(client, order(net_amount=amount))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


@pytest.mark.parametrize("amount", ["4900", 4900.0])
def test_an_integral_amount_sent_as_text_or_float_is_that_integer(amount: Any) -> None:
    sale = conv_of(order(net_amount=amount))
    assert isinstance(sale, Sale) and sale.amount == 4900


def test_untracked_event_type_is_ignored() -> None:
    event = fixture("polar", "order.paid")
    event["type"] = "order.created"
    assert mapped(source(), json.dumps(event).encode(), {"webhook-id": "msg_1"}) == []


def test_redelivery_with_the_same_webhook_id_is_a_duplicate(make_flow: Any) -> None:
    flow = polar_flow(make_flow)
    body = json.dumps(fixture("polar", "order.paid")).encode()
    first = flow.receive(body, signed(body, msg_id="msg_same"))
    second = flow.receive(body, signed(body, msg_id="msg_same"))
    assert first["status"] == "accepted"
    assert second == {"status": "duplicate", "eventId": first["eventId"]}
    assert [s.state for s in flow.stored()] == ["pending"]


def test_customer_created_is_a_sign_up_lead(make_flow: Any) -> None:
    lead = conv_of(fixture("polar", "customer.created"))
    assert isinstance(lead, Lead) and lead.kind == "sign_up"
    assert (lead.click_id, lead.email) == ("cl_polar_click", "ada@example.com")
    assert lead.provider_customer_id == "8f1d3c2a-5b7e-4f09-9a61-2d4c8e0b7f13"
    flow = polar_flow(make_flow)
    [stored] = flow.stored(flow.receive(fixture("polar", "customer.created")))
    assert (stored.kind, stored.event_name, stored.external_id) == ("lead", "Sign up", "user_polar_42")


@pytest.mark.parametrize(
    ("external_id", "metadata", "expected"),
    [
        ("user_polar_42", {"userId": "user_from_metadata", "dub_id": "cl"}, "user_polar_42"),
        (None, {"userId": "user_from_metadata", "dub_id": "cl"}, "user_from_metadata"),
        (None, {"dub_id": "cl"}, "8f1d3c2a-5b7e-4f09-9a61-2d4c8e0b7f13"),
    ],
)
def test_customer_external_id_then_metadata_then_polar_customer_id(make_flow: Any, external_id: Any,
                                                                   metadata: dict[str, str], expected: str) -> None:
    event = fixture("polar", "customer.created")
    event["data"].update(external_id=external_id, metadata=metadata)
    flow = polar_flow(make_flow)
    [lead] = flow.stored(flow.receive(event))
    assert lead.external_id == expected


def test_lead_and_later_order_share_the_customer_external_id(make_flow: Any) -> None:
    flow = polar_flow(make_flow)
    flow.receive(fixture("polar", "customer.created"))
    bare = order(metadata={})
    bare["data"]["customer"].update(external_id=None, metadata={})  # only the Polar customer id
    flow.receive(bare)
    lead, sale = flow.stored()
    assert lead.external_id == sale.external_id == "user_polar_42"
    assert sale.click_id == "cl_polar_click"  # from identity memory


# -- `hooktrack send` -----------------------------------------------------------------------------


def test_every_sample_is_accepted_the_way_hooktrack_send_posts_it(client: Any, receiver: Any) -> None:
    src = client.app.state.sources["polar"]
    for name in ["customer.created", "order.paid", "order.paid+subscription", "order.paid+renewal"]:
        r = post_sample(src, name, "", client=client)
        assert r.status_code == 200 and r.json()["status"] == "accepted", (name, r.text)
    assert sorted(src.provider.samples()) == sorted(
        ["customer.created", "order.paid", "order.paid+renewal", "order.paid+subscription"])
    got = wait_for(lambda: len(receiver.delivered()) == 4 and receiver.delivered())
    assert [g.body["eventName"] for g in got] == [
        "Sign up", "Purchase", "Subscription creation", "Subscription renewal"]


def test_refreshed_samples_are_new_messages() -> None:
    provider = PolarProvider()
    first = provider.sample("order.paid", unique="a", now=1_775_000_000)
    later = provider.sample("order.paid", unique="b", now=1_775_000_001)
    assert provider.sample_headers("order.paid", first) != provider.sample_headers("order.paid", later)
    src = make_source(provider, [SECRET], name="polar")
    assert provider.sign(first, SECRET, 1, src.ctx)["webhook-id"] == provider.sample_headers("order.paid", first)["webhook-id"]


# --- refunds (SPEC §9) ---------------------------------------------------------------------------


def test_refunded_order_is_a_cumulative_refund_of_the_order_before_tax() -> None:
    refund = conv_of(fixture("polar", "order.refunded"), "msg_refund_1")
    assert isinstance(refund, Refund)
    assert refund.reverses == (ORDER_ID,)  # the order.paid Sale's invoice_id
    assert (refund.amount, refund.currency) == (1000, "usd")
    assert refund.cumulative is True  # `refunded_amount` is the order's running total
    assert refund.includes_tax is False  # Polar keeps the refunded tax apart
    assert refund.chargeback is False
    assert refund.metadata == {"status": "partially_refunded", "refundedTaxAmount": 100}


def test_a_full_refund_carries_the_whole_running_total() -> None:
    full = order("order.refunded", status="refunded", refunded_amount=4900, refunded_tax_amount=490)
    refund = conv_of(full, "msg_refund_2")
    assert isinstance(refund, Refund)
    assert (refund.amount, refund.cumulative) == (4900, True)


def test_the_sale_knows_its_gross_for_a_later_refund() -> None:
    sale = conv_of(fixture("polar", "order.paid"))
    assert isinstance(sale, Sale)
    assert (sale.amount, sale.gross_amount) == (4900, 5390)  # net_amount, total_amount
    assert sale.invoice_id in conv_of(fixture("polar", "order.refunded"), "msg_refund_3").reverses


def test_a_refund_without_an_integer_total_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="refunded_amount"):
        conv_of(order("order.refunded", refunded_amount="10.00"), "msg_refund_4")
