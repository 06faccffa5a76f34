"""Braintree: SDK-verified bt_signature/bt_payload, subscription charges as Sales, dedup by kind+time+id."""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any
from urllib.parse import quote, urlencode

import braintree  # type: ignore[import-untyped]
import pytest
from braintree.util.crypto import Crypto  # type: ignore[import-untyped]
from starlette.datastructures import Headers

from adapter.errors import ConfigError, PayloadError, SignatureError
from adapter.events import ProviderEvent, Refund, Sale
from adapter.ingest import parse_event
from adapter.plugin import Source
from adapter.testing import ProviderContract, make_source
from providers.braintree import BraintreeProvider, gateway
from providers.forms import parse_form
from tests.conftest import fixture, sent_once, wait_for
from tests.providers.flow import mapped

MERCHANT = "acme_merchant_id"
PUBLIC = "5r59rrxhn89npc9n"
PRIVATE = "d6a1f3e8c0b24a7f9e5d3c1b0a9f8e7d"
OTHER_PRIVATE = "0000aaaa1111bbbb2222cccc3333dddd"
KEYS = {"merchant_id": MERCHANT, "public_key": PUBLIC, "private_key": PRIVATE, "environment": "sandbox"}
BT_SIGNATURE = "x-test-bt-signature"  # carries bt_signature from `sign` into the form in the contract


def sdk_gateway(private_key: str = PRIVATE, public_key: str = PUBLIC) -> Any:
    return braintree.BraintreeGateway(braintree.Configuration(
        braintree.Environment.Sandbox, MERCHANT, public_key, private_key))


class TestBraintreeContract(ProviderContract):
    """The signature travels inside the form: `sign` computes it with the SDK's signer and hands
    it over in a test-only header; `verify` puts it in the body as `bt_signature`."""

    provider_class = BraintreeProvider
    secret = PRIVATE
    other_secret = OTHER_PRIVATE
    source_settings = KEYS
    has_timestamp = False

    def source(self, secrets: list[str] | None = None) -> Source:
        return make_source(self.provider_class(), [], **self.source_settings)

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return {BT_SIGNATURE: f"{PUBLIC}|{Crypto.sha1_hmac_hash(secret, parse_form(body)['bt_payload'])}"}

    def verify(self, body: bytes, headers: Headers, secrets: list[str] | None = None) -> None:
        signature = headers.get(BT_SIGNATURE)
        if signature is not None:
            body = b"bt_signature=" + quote(signature, safe="").encode() + b"&" + body
        src = self.source(secrets)
        src.provider.verify(body, headers, src.secrets, src.ctx)

    def test_every_configured_secret_is_tried(self) -> None:
        pytest.skip("one API key pair per source; see test_signature_with_several_key_pairs_verifies")


def xml(name: str = "subscription_charged_successfully") -> str:
    return "\n".join(fixture("braintree", name)["bt_payload_xml"]) + "\n"


def form(signature: str | bytes | None, payload: str | bytes) -> bytes:
    fields = {"bt_signature": signature, "bt_payload": payload}
    return urlencode([(k, v) for k, v in fields.items() if v is not None]).encode()


def delivery(document: str, private_key: str = PRIVATE, public_key: str = PUBLIC) -> bytes:
    """A form body as Braintree posts it: base64 XML, signed like the SDK's WebhookTesting."""
    payload = base64.encodebytes(document.encode())
    return form(f"{public_key}|{Crypto.sha1_hmac_hash(private_key, payload)}", payload)


def verify(body: bytes, **settings: Any) -> None:
    src = make_source(BraintreeProvider(), [], **{**KEYS, **settings})
    src.provider.verify(body, Headers({}), src.secrets, src.ctx)


def post(client: Any, body: bytes, source: str = "braintree") -> Any:
    return client.post(f"/webhooks/{source}", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"braintree": {"provider": "braintree", **KEYS}})


# -- signatures, cross-checked with the official SDK ------------------------------------------------


@pytest.mark.parametrize("kind", ["subscription_charged_successfully", "subscription_went_active", "check"])
def test_sdk_sample_notifications_verify_and_parse(kind: str) -> None:
    sample = sdk_gateway().webhook_testing.sample_notification(kind, "sub_sdk_1")
    body = form(sample["bt_signature"], sample["bt_payload"])
    verify(body)
    src = make_source(BraintreeProvider(), [], **KEYS)
    event = src.provider.parse(body, Headers({}))
    parsed = sdk_gateway().webhook_notification.parse(sample["bt_signature"], sample["bt_payload"])
    stamp = parsed.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    subject = "-" if kind == "check" else "sub_sdk_1"
    assert (event.id, event.type, event.livemode) == (f"{kind}:{stamp}:{subject}", kind, False)


def test_sdk_sample_signed_with_other_keys_is_rejected() -> None:
    sample = sdk_gateway(OTHER_PRIVATE).webhook_testing.sample_notification("subscription_went_active", "s1")
    with pytest.raises(SignatureError) as caught:
        verify(form(sample["bt_signature"], sample["bt_payload"]))
    assert caught.value.code == "invalid_signature" and PRIVATE not in caught.value.message
    other_public = sdk_gateway(PRIVATE, "someone-elses-pub").webhook_testing.sample_notification("check", "s1")
    with pytest.raises(SignatureError, match="no matching public key"):
        verify(form(other_public["bt_signature"], other_public["bt_payload"]))


def test_our_signer_reproduces_the_sdk_signature() -> None:
    sample = sdk_gateway().webhook_testing.sample_notification("subscription_charged_successfully", "s9")
    expected = sample["bt_signature"].split("|")[1]
    assert Crypto.sha1_hmac_hash(PRIVATE, sample["bt_payload"]) == expected
    provider = make_source(BraintreeProvider(), [], **KEYS).provider
    body = provider.sample("subscription_charged_successfully", unique="abcdef0123456789", now=int(time.time()))
    fields = parse_form(body)
    assert sdk_gateway().webhook_notification.parse(fields["bt_signature"], fields["bt_payload"]).kind == (
        "subscription_charged_successfully")


def test_signature_with_several_key_pairs_verifies() -> None:
    payload = base64.encodebytes(xml().encode())
    good = f"{PUBLIC}|{Crypto.sha1_hmac_hash(PRIVATE, payload)}"
    verify(form(f"other_public|{'0' * 40}&{good}", payload))


@pytest.mark.parametrize(
    ("body", "code"),
    [(form(None, "PG5vdGlmaWNhdGlvbi8+"), "missing_signature"), (form(f"{PUBLIC}|abc", b""), "missing_signature"),
     (b"\xff\xfe", "missing_signature"), (form(f"{PUBLIC}|abc", "not base64 ~~~"), "invalid_signature"),
     (form(f"{PUBLIC}|{'0' * 40}", base64.encodebytes(b"<notification/>")), "invalid_signature")],
)
def test_missing_and_malformed_signatures_have_clear_codes(body: bytes, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(body)
    assert caught.value.code == code


@pytest.mark.parametrize("signature", ["a|b|c", f"{PUBLIC}|x|y", f"{PUBLIC}|é", "||"])
def test_signatures_that_upset_the_sdk_are_rejected_not_waved_through(signature: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(form(signature, base64.encodebytes(xml().encode())))
    assert caught.value.code == "invalid_signature"


def test_signed_payload_that_is_not_xml_is_400_malformed(client: Any) -> None:
    payload = base64.encodebytes(b"this is not xml")
    r = post(client, form(f"{PUBLIC}|{Crypto.sha1_hmac_hash(PRIVATE, payload)}", payload))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_forged_delivery_over_http_is_400_and_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, delivery(xml(), private_key=OTHER_PRIVATE))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    time.sleep(0.2)
    assert receiver.requests == []


@pytest.mark.parametrize("missing", ["merchant_id", "public_key", "private_key", "environment"])
def test_every_key_setting_is_required_at_startup(make_client: Any, missing: str) -> None:
    conf = {k: v for k, v in KEYS.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        make_client(sources={"braintree": {"provider": "braintree", **conf}})


def test_environment_must_be_sandbox_or_production(make_client: Any) -> None:
    with pytest.raises(ConfigError, match="environment"):
        make_client(sources={"braintree": {"provider": "braintree", **KEYS, "environment": "live"}})


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_charge_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    assert post(client, delivery(xml())).json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.headers["idempotency-key"] == "sale:braintree:braintree:7mbb5s1j"
    assert (sale.body["eventName"], sale.body["invoiceId"]) == ("Subscription creation", "braintree:7mbb5s1j")
    assert (sale.body["clickId"], sale.body["customerExternalId"]) == ("cl_braintree", "user_42")


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def source(**settings: Any) -> Any:
    return make_source(BraintreeProvider(), [], name="braintree", **{**KEYS, **settings})


def braintree_flow(make_flow: Any, **settings: Any) -> Any:
    return make_flow(BraintreeProvider(), [], lambda body: FORM, **{**KEYS, **settings})


def sale_of(document: str) -> Sale:
    [sale] = mapped(source(), delivery(document), FORM)
    assert isinstance(sale, Sale)
    return sale


def test_first_charge_is_a_subscription_creation_of_the_newest_transaction(make_flow: Any) -> None:
    sale = sale_of(xml())
    assert (sale.kind, sale.amount, sale.currency, sale.invoice_id) == ("subscription", 4900, "usd", "7mbb5s1j")
    assert (sale.click_id, sale.external_id) == ("cl_braintree", "user_42")  # custom fields
    assert (sale.email, sale.name, sale.provider_customer_id) == ("ada@example.com", "Ada Lovelace", "71503829")
    assert sale.timestamp is not None and sale.timestamp.isoformat() == "2024-04-10T10:36:51+00:00"
    meta = sale.metadata
    assert sale.subscription_id == meta["subscriptionId"] == "f6rnpm"
    assert meta["planId"] == "pro-monthly" and meta["billingCycle"] == 1
    event = parse_event(source(), delivery(xml()), Headers(FORM))
    assert (event.id, event.livemode) == ("subscription_charged_successfully:2024-04-10T10:36:52Z:f6rnpm", False)
    flow = braintree_flow(make_flow)
    [stored] = flow.stored(flow.receive(delivery(xml()), FORM))
    assert stored.event_name == "Subscription creation"


def test_next_cycle_is_a_renewal_of_its_own_transaction(make_flow: Any) -> None:
    flow = braintree_flow(make_flow)
    flow.receive(delivery(xml()), FORM)
    flow.receive(delivery(xml("subscription_charged_successfully+renewal")), FORM)
    first, second = flow.stored()
    assert (first.invoice_id, first.event_name) == ("braintree:7mbb5s1j", "Subscription creation")
    assert (second.invoice_id, second.event_name) == ("braintree:k4hzyc3t", "Subscription renewal")


def test_tax_amount_is_taken_off_and_zero_decimal_currencies_are_exact() -> None:
    document = xml().replace('<tax-amount nil="true"/>', "<tax-amount>8.17</tax-amount>", 1)
    yen = xml("subscription_charged_successfully+renewal").replace("<currency-iso-code>USD", "<currency-iso-code>JPY", 1)
    sales = [sale_of(document), sale_of(yen.replace("<amount>49.00</amount>", "<amount>5000</amount>", 1))]
    assert [(s.amount, s.currency) for s in sales] == [(4083, "usd"), (5000, "jpy")]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.replace("<amount>49.00</amount>", "<amount>0.00</amount>", 1), "zero_amount"),
        (lambda d: d.split('<transactions type="array">')[0] + '<transactions type="array"/>'
         + d.split("</transactions>")[1], "zero_amount"),  # a cycle that charged nothing
        (lambda d: d.replace("<status>submitted_for_settlement</status>", "<status>voided</status>", 1), "unpaid"),
        (lambda d: d.replace("subscription_charged_successfully", "subscription_charged_unsuccessfully", 1),
         "event_type_not_tracked"),
        (lambda d: d.replace("subscription_charged_successfully", "subscription_went_past_due", 1),
         "event_type_not_tracked"),
    ],
)
def test_uncountable_notifications_are_ignored_with_reasons(make_flow: Any, change: Any, reason: str) -> None:
    flow = braintree_flow(make_flow)
    answer = flow.receive(delivery(change(xml())), FORM)
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


def test_sdk_sample_charge_without_currency_is_400(client: Any) -> None:
    # The SDK's canned sample has no currency-iso-code; Braintree's real payloads always do.
    sample = sdk_gateway().webhook_testing.sample_notification("subscription_charged_successfully", "s1")
    with pytest.raises(PayloadError):
        mapped(source(), form(sample["bt_signature"], sample["bt_payload"]), FORM)
    r = post(client, form(sample["bt_signature"], sample["bt_payload"]))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_production_environment_is_live(make_flow: Any) -> None:
    answer = braintree_flow(make_flow, livemode="live").receive(delivery(xml()), FORM)
    assert (answer["status"], answer["reason"]) == ("ignored", "livemode_mismatch")
    live = braintree_flow(make_flow, environment="production", livemode="live")
    assert live.receive(delivery(xml()), FORM)["status"] == "accepted"


# -- dedup and `hooktrack send` ---------------------------------------------------------------------


def test_retried_notification_is_a_duplicate(make_flow: Any) -> None:
    flow = braintree_flow(make_flow)
    body = delivery(xml())
    first = flow.receive(body, FORM)
    assert flow.receive(body, FORM) == {"status": "duplicate", "eventId": first["eventId"]}
    sdk = sdk_gateway().webhook_testing.sample_notification("subscription_went_active", "s2")
    once = flow.receive(form(sdk["bt_signature"], sdk["bt_payload"]), FORM)
    assert once["reason"] == "event_type_not_tracked"
    assert flow.receive(form(sdk["bt_signature"], sdk["bt_payload"]), FORM)["status"] == "duplicate"
    assert [s.state for s in flow.stored()] == ["pending"]


def test_samples_are_signed_with_the_source_keys_and_sign_needs_them(client: Any, receiver: Any) -> None:
    src = make_source(BraintreeProvider(), [], **KEYS)
    # The key is kind + timestamp (whole seconds) + subscription id: two sends need two seconds.
    for unique, now in (("a1b2c3d4e5f60718", int(time.time()) - 1), ("0f1e2d3c4b5a6978", int(time.time()))):
        body = src.provider.sample("subscription_charged_successfully", unique=unique, now=now)
        assert src.provider.sign(body, "", 0, src.ctx) == {}
        assert post(client, body).json()["status"] == "accepted"
    assert len(wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())) == 2
    unconfigured = BraintreeProvider()
    unsigned = unconfigured.sample("subscription_charged_successfully", unique="x", now=0)
    assert b"bt_signature" not in unsigned
    with pytest.raises(NotImplementedError, match="sandbox keys"):
        unconfigured.sign(unsigned, "", 0, dataclasses.replace(src.ctx, options=None))


def test_gateway_is_built_from_the_settings() -> None:
    src = make_source(BraintreeProvider(), [], **{**KEYS, "environment": "production"})
    config = gateway(src.ctx.options).config
    assert (config.merchant_id, config.public_key, config.environment) == (
        MERCHANT, PUBLIC, braintree.Environment.Production)


def test_transaction_ids_are_qualified_by_source_and_tax_is_excluded(make_flow: Any) -> None:
    flow = braintree_flow(make_flow)
    [stored] = flow.stored(flow.receive(delivery(xml()), FORM))
    assert stored.invoice_id == "braintree:7mbb5s1j" and stored.metadata["tax"] == "excluded"


def test_a_charge_does_not_claim_to_start_or_continue_a_subscription() -> None:
    # the notification has no first-payment flag; the core decides creation vs renewal
    assert sale_of(xml()).starts_subscription is None
    assert sale_of(xml("subscription_charged_successfully+renewal")).starts_subscription is None


# --- lost disputes (SPEC §9; Braintree sends no refund notification) -------------------------------


def test_a_lost_dispute_is_a_chargeback_of_the_disputed_transaction() -> None:
    src = source()
    subject = {"dispute": {"id": "dp_9hk2m4", "amount_disputed": "49.00", "currency_iso_code": "USD", "status": "lost",
                           "reason": "fraud", "transaction": {"id": "f6rnpm", "amount": "49.00"}}}
    event = ProviderEvent(id="dispute_lost:1:dp_9hk2m4", type="dispute_lost", data={"kind": "dispute_lost", "subject": subject})
    [refund] = src.provider.map(event, src.ctx)
    assert isinstance(refund, Refund)
    assert (refund.reverses, refund.amount, refund.currency) == (("f6rnpm",), 4900, "usd")
    assert (refund.chargeback, refund.includes_tax, refund.refund_id) == (True, True, "dp_9hk2m4")
