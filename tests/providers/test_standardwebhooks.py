"""Standard Webhooks: the spec's published test vector, signatures made by the official
`standardwebhooks` package, Dodo Payments' rules from the README, flows through the core."""

from __future__ import annotations

import base64
import json
import time
import tomllib
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks
from starlette.datastructures import Headers

from adapter.errors import PayloadError, SignatureError
from adapter.signing import StandardWebhooks
from adapter.testing import ProviderContract, Vector, make_source
from providers.standardwebhooks import StandardWebhooksProvider, message_id
from tests.conftest import fixture, sent_once, wait_for

SECRET = "whsec_" + base64.b64encode(b"hooktrack standard webhooks test key!").decode()
OTHER = "whsec_" + base64.b64encode(b"somebody else's standard webhooks key").decode()

# The worked Dodo Payments config of the README's Standard Webhooks section, verbatim.
DODO_TOML = """
[sources.dodo]
provider = "standardwebhooks"
secrets = ["${DODO_WEBHOOK_SECRET}"]

[[sources.dodo.rules]]                    # one-time payment
event_type = "payment.succeeded"
kind = "sale"
condition = 'data.subscription_id == null'
amount = "data.total_amount"              # minor units, tax included ...
tax = "data.tax"                          # ... so the tax is taken out
currency = "data.currency"
invoice_id = "data.payment_id"
email = "data.customer.email"
name = "data.customer.name"
provider_customer_id = "data.customer.customer_id"
metadata_paths = ["data.metadata", "data.customer.metadata"]

[[sources.dodo.rules]]                    # a subscription's payment: first one or renewal
event_type = "payment.succeeded"
kind = "sale"
sale_kind = "subscription"
condition = 'data.subscription_id != null'
subscription_id = "data.subscription_id"
amount = "data.total_amount"
tax = "data.tax"
currency = "data.currency"
invoice_id = "data.payment_id"
email = "data.customer.email"
name = "data.customer.name"
provider_customer_id = "data.customer.customer_id"
metadata_paths = ["data.metadata", "data.customer.metadata"]
"""
DODO_RULES: list[dict[str, Any]] = tomllib.loads(DODO_TOML)["sources"]["dodo"]["rules"]


def sw_headers(body: bytes, secret: str = SECRET, timestamp: int | None = None,
               msg_id: str | None = None) -> dict[str, str]:
    """Headers signed by the official `standardwebhooks` package."""
    ts = int(time.time()) if timestamp is None else timestamp
    msg_id = msg_id or message_id(body)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


class TestStandardWebhooksContract(ProviderContract):
    provider_class = StandardWebhooksProvider
    secret = SECRET
    other_secret = OTHER
    source_settings = {"rules": DODO_RULES}

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return sw_headers(body, secret, timestamp)

    def vectors(self) -> list[Vector]:
        return [Vector(VECTOR_BODY, vector_headers(), VECTOR_SECRET,
                       where="standard-webhooks libraries' test_sign_function")]


def verify(body: bytes, headers: dict[str, str], secrets: list[str] | None = None, **settings: Any) -> None:
    src = make_source(StandardWebhooksProvider(), secrets or [SECRET], name="dodo",
                      **{"rules": DODO_RULES, **settings})
    src.provider.verify(body, Headers(headers), src.secrets, src.ctx)


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET, timestamp: int | None = None,
         msg_id: str | None = None, source: str = "dodo") -> Any:
    body = json.dumps(event).encode()
    return client.post(f"/webhooks/{source}", content=body,
                       headers={**sw_headers(body, secret, timestamp, msg_id), "Content-Type": "application/json"})


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"dodo": {"provider": "standardwebhooks", "secrets": [SECRET], "rules": DODO_RULES}})


BODY = json.dumps(fixture("standardwebhooks", "payment.succeeded")).encode()

# -- signatures ---------------------------------------------------------------------------------

# Published vector of the Standard Webhooks reference libraries: `test_sign_function` and the
# `PayloadForTesting` cases in libraries/python/tests/test_webhooks.py and
# libraries/javascript/src/webhook.test.ts (github.com/standard-webhooks/standard-webhooks).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
VECTOR_NEAR_MISS = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="  # the tests' "invalid signature"
VECTOR_DECOYS = ["v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="]


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": signature}


@pytest.mark.parametrize("secret", [VECTOR_SECRET, VECTOR_SECRET.removeprefix("whsec_")])
def test_spec_test_vector_verifies_with_and_without_the_whsec_prefix(secret: str) -> None:
    verify(VECTOR_BODY, vector_headers(), [secret], tolerance_s=10**10)  # the vector is from 2021
    multi = " ".join([*VECTOR_DECOYS, VECTOR_SIGNATURE, VECTOR_DECOYS[0]])
    verify(VECTOR_BODY, vector_headers(multi), [secret], tolerance_s=10**10)


def test_spec_near_miss_signature_is_rejected() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(VECTOR_BODY, vector_headers(VECTOR_NEAR_MISS), [VECTOR_SECRET], tolerance_s=10**10)
    assert caught.value.code == "invalid_signature"


def test_spec_test_vector_is_stale_today() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(VECTOR_BODY, vector_headers(), [VECTOR_SECRET])
    assert caught.value.code == "stale_timestamp"


def test_our_signer_reproduces_the_spec_vector() -> None:
    signed = StandardWebhooks().sign(VECTOR_BODY, VECTOR_SECRET, VECTOR_TS, msg_id=VECTOR_ID)
    assert signed == vector_headers()
    src = make_source(StandardWebhooksProvider(), [VECTOR_SECRET], rules=DODO_RULES)
    headers = src.provider.sign(VECTOR_BODY, VECTOR_SECRET, VECTOR_TS, src.ctx)
    assert headers["webhook-signature"] == standardwebhooks.Webhook(VECTOR_SECRET).sign(
        headers["webhook-id"], datetime.fromtimestamp(VECTOR_TS, UTC), VECTOR_BODY.decode())


def test_we_accept_and_refuse_exactly_what_the_official_library_does() -> None:
    genuine = sw_headers(BODY)
    cases = [(BODY, genuine), (BODY + b" ", genuine), (BODY, sw_headers(BODY, OTHER)),
             (BODY, {**genuine, "webhook-id": "msg_other"}),
             (BODY, {**genuine, "webhook-timestamp": str(int(genuine["webhook-timestamp"]) + 1)})]
    for body, headers in cases:
        try:
            standardwebhooks.Webhook(SECRET).verify(body, headers)
            library_accepts = True
        except standardwebhooks.WebhookVerificationError:
            library_accepts = False
        try:
            verify(body, headers)
            we_accept = True
        except SignatureError:
            we_accept = False
        assert we_accept == library_accepts, (body[-5:], headers)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"webhook-id": None}, "missing_signature"),
        ({"webhook-timestamp": None}, "missing_signature"),
        ({"webhook-signature": None}, "missing_signature"),
        ({"webhook-timestamp": "hello"}, "invalid_signature"),
        ({"webhook-timestamp": "9" * 5000}, "invalid_signature"),
        ({"webhook-timestamp": "1775824496.5"}, "invalid_signature"),
        ({"webhook-signature": "v1,"}, "missing_signature"),
        ({"webhook-signature": "v1a,c2lnbmF0dXJl"}, "missing_signature"),
        ({"webhook-signature": "v1,dawfeoifkpqwoekfpqoekf"}, "invalid_signature"),
        ({"webhook-signature": "v1,not base64!"}, "invalid_signature"),
    ],
)
def test_malformed_headers_have_clear_codes(change: dict[str, str | None], code: str) -> None:
    headers = {k: v for k, v in {**sw_headers(BODY), **change}.items() if v is not None}
    with pytest.raises(SignatureError) as caught:
        verify(BODY, headers)
    assert caught.value.code == code
    assert SECRET.removeprefix("whsec_") not in caught.value.message


@pytest.mark.parametrize(("age", "message"), [(301, "too old"), (-301, "too new")])
def test_default_tolerance_is_300_seconds_both_ways(age: int, message: str) -> None:
    verify(BODY, sw_headers(BODY, timestamp=int(time.time()) - 60))
    verify(BODY, sw_headers(BODY, timestamp=int(time.time()) + 60))
    with pytest.raises(SignatureError) as caught:
        verify(BODY, sw_headers(BODY, timestamp=int(time.time()) - age))
    assert caught.value.code == "stale_timestamp" and message in caught.value.message


def test_tolerance_follows_the_source_setting() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, sw_headers(BODY, timestamp=int(time.time()) - 30), tolerance_s=5)
    assert caught.value.code == "stale_timestamp"


def test_rotation_tries_every_secret_and_every_v1_entry() -> None:
    headers = sw_headers(BODY)
    old = sw_headers(BODY, OTHER, int(headers["webhook-timestamp"]), headers["webhook-id"])["webhook-signature"]
    both = {**headers, "webhook-signature": f"{old} {headers['webhook-signature']}"}
    verify(BODY, both, [OTHER])
    verify(BODY, both, [SECRET])
    verify(BODY, headers, [OTHER, SECRET])


def test_utf8_secrets_verify_senders_that_sign_with_the_secret_as_shown() -> None:
    # Whop's SDK is handed base64(secret) and decodes it back: the HMAC key is the secret's bytes.
    whop_secret = "ws_5e3a1c9b7d2f4a6e8c0b1d3f5a7c9e1b3d5f7a9c"
    headers = sw_headers(BODY, base64.b64encode(whop_secret.encode()).decode())
    verify(BODY, headers, [whop_secret], secret_encoding="utf8")
    with pytest.raises(SignatureError):
        verify(BODY, headers, [whop_secret])  # not whsec_ base64: nothing to match with


def test_verification_refuses_when_no_key_is_usable() -> None:
    with pytest.raises(SignatureError) as caught:
        StandardWebhooks().verify(BODY, Headers(sw_headers(BODY)), ["not base64!"], 300)
    assert caught.value.code == "invalid_signature"


def test_missing_headers_over_http_are_a_400_with_code(client: Any) -> None:
    r = client.post("/webhooks/dodo", content=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"


def test_forged_webhook_is_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("standardwebhooks", "payment.succeeded"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    time.sleep(0.2)
    assert receiver.requests == []


# -- parse --------------------------------------------------------------------------------------


def test_delivery_id_is_the_webhook_id_and_time_the_body_timestamp() -> None:
    event = StandardWebhooksProvider().parse(BODY, Headers({"webhook-id": "msg_abc", "webhook-timestamp": "1"}))
    assert (event.id, event.type, event.livemode) == ("msg_abc", "payment.succeeded", None)
    assert event.occurred_at == datetime(2026, 4, 10, 12, 34, 56, 187645, tzinfo=UTC)


def test_time_falls_back_to_the_header_and_a_missing_id_is_a_payload_error() -> None:
    body = json.dumps({"type": "payment.succeeded", "data": {}}).encode()
    event = StandardWebhooksProvider().parse(body, Headers({"webhook-id": "msg_1", "webhook-timestamp": "1775824496"}))
    assert event.occurred_at == datetime(2026, 4, 10, 12, 34, 56, tzinfo=UTC)
    with pytest.raises(PayloadError):
        StandardWebhooksProvider().parse(body, Headers({"webhook-timestamp": "1775824496"}))
    with pytest.raises(PayloadError):
        StandardWebhooksProvider().parse(body, Headers({"webhook-id": "msg_1"}))


# -- Dodo Payments through the core -------------------------------------------------------------


def test_dodo_payment_is_a_purchase_net_of_tax(client: Any, receiver: Any) -> None:
    r = post(client, fixture("standardwebhooks", "payment.succeeded"))
    assert r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.kind == "sale"
    assert sale.headers["idempotency-key"] == "sale:dodo:pay_2IjeQm4hqU6RA4Z4kwDee"
    body = sale.body
    assert (body["amount"], body["currency"]) == (4900, "usd")  # 5880 charged, 980 of it tax
    assert (body["eventName"], body["invoiceId"]) == ("Purchase", "pay_2IjeQm4hqU6RA4Z4kwDee")
    assert (body["customerExternalId"], body["clickId"]) == ("user_42", "cl_dodo_42")
    assert (body["customerEmail"], body["customerName"]) == ("ada@example.com", "Ada Lovelace")
    assert body["paymentProcessor"] == "custom" and body["metadata"]["provider"] == "standardwebhooks"
    assert body["timestamp"] == "2026-04-10T12:34:56.187Z"
    meta = body["metadata"]
    assert meta["taxAmount"] == 980 and meta["providerCustomerId"] == "cus_8VbC6JDZzPEqfBPUdpj0K"
    assert meta["providerEventType"] == "payment.succeeded" and "livemode" not in meta


def test_dodo_subscription_payments_are_creation_then_renewal(client: Any, receiver: Any) -> None:
    assert post(client, fixture("standardwebhooks", "payment.succeeded+subscription")).json()["status"] == "accepted"
    renewal = fixture("standardwebhooks", "payment.succeeded+renewal")  # no checkout metadata on a renewal
    assert post(client, renewal).json()["status"] == "accepted"
    first, second = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    assert (first.body["eventName"], first.body["amount"]) == ("Subscription creation", 2900)
    assert (second.body["eventName"], second.body["amount"]) == ("Subscription renewal", 2900)
    assert second.body["customerExternalId"] == first.body["customerExternalId"] == "user_43"  # identity memory
    assert second.body["metadata"]["subscriptionId"] == "sub_4mXk9TqPz2LbR7vNw1HcE"


def test_a_retried_delivery_is_a_duplicate(client: Any, receiver: Any) -> None:
    event = fixture("standardwebhooks", "payment.succeeded")
    first = post(client, event, msg_id="msg_2xJ9kQ")
    # A retry carries the same webhook-id with a new timestamp and signature.
    again = post(client, event, msg_id="msg_2xJ9kQ", timestamp=int(time.time()) + 5)
    assert again.json() == {"status": "duplicate", "eventId": first.json()["eventId"]}
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_the_same_payment_under_another_message_id_is_one_sale(client: Any, receiver: Any) -> None:
    event = fixture("standardwebhooks", "payment.succeeded")
    post(client, event, msg_id="msg_a")
    r = post(client, event, msg_id="msg_b")
    assert r.json()["status"] == "duplicate" and r.json()["reason"] == "business_key"


@pytest.mark.parametrize("event_type", ["payment.failed", "refund.succeeded", "subscription.active"])
def test_types_without_rules_are_not_tracked(client: Any, event_type: str) -> None:
    event = fixture("standardwebhooks", "payment.succeeded")
    event["type"] = event_type
    r = post(client, event)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "event_type_not_tracked"


def test_a_fully_discounted_payment_is_ignored_as_zero_amount(client: Any, receiver: Any) -> None:
    event = fixture("standardwebhooks", "payment.succeeded")
    event["data"].update(total_amount=0, tax=0)
    r = post(client, event)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "zero_amount"


def test_a_rule_condition_that_fails_is_ignored_with_its_reason(make_client: Any, receiver: Any) -> None:
    paid_only = [{**DODO_RULES[0], "condition": ['data.status == "succeeded"', "data.subscription_id == null"]}]
    client = make_client(sources={"dodo": {"provider": "standardwebhooks", "secrets": [SECRET], "rules": paid_only}})
    event = fixture("standardwebhooks", "payment.succeeded")
    event["data"]["status"] = "processing"
    r = post(client, event)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "condition_not_met"
    time.sleep(0.2)
    assert receiver.requests == []


@pytest.mark.parametrize(("field", "value"), [("total_amount", "58.80"), ("payment_id", None), ("currency", "dollars")])
def test_payloads_the_rules_cannot_read_are_a_400(client: Any, field: str, value: Any) -> None:
    event = fixture("standardwebhooks", "payment.succeeded")
    event["data"][field] = value
    r = post(client, event)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_type_path_reads_the_event_type_elsewhere(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"acme": {"provider": "standardwebhooks", "secrets": [SECRET],
                                           "type_path": "event.name", "forward_leads_without_click_id": True,
                                           "rules": [{"event_type": "signup", "kind": "lead",
                                                      "email": "data.email", "external_id": "data.user"}]}})
    event = {"event": {"name": "signup"}, "timestamp": 1775824496, "data": {"email": "jo@example.com", "user": "u_7"}}
    assert post(client, event, source="acme").json()["status"] == "accepted"
    [lead] = wait_for(lambda: receiver.requests)  # sent with clickId "" (Dub answers 400: no known click)
    assert (lead.kind, lead.body["eventName"], lead.body["customerExternalId"]) == ("lead", "Sign up", "u_7")
    missing = {"timestamp": 1775824496, "type": "signup", "data": {}}
    assert post(client, missing, source="acme").json()["error"]["code"] == "malformed_payload"
