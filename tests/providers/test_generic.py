"""The generic provider: signature schemes built from config (checked against published vectors),
every bad setting refused at startup by name, Checkout.com's documented config end to end."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import ConfigError, PayloadError, SignatureError
from adapter.events import Lead, Sale
from adapter.ingest import map_event
from adapter.plugin import Source, build_sources, load_providers
from adapter.samples import post_sample
from adapter.settings import load_settings, parse_settings
from adapter.testing import ProviderContract, make_source
from providers.generic import GenericProvider
from tests.conftest import FIXTURES, fixture, sent_once, wait_for

CKO_SECRET = "cko_signature_key_5f1c0a9e7b3d4e2f"
OTHER = "somebody_elses_signature_key_0000"
README = Path(__file__).parents[2] / "README.md"


def docs_toml() -> str:
    """The README's worked Checkout.com config (the generic provider section's first ```toml block)."""
    text = README.read_text().split("### Any other processor: the generic provider", 1)[1]
    return text.split("```toml\n", 1)[1].split("```", 1)[0]


CKO: dict[str, Any] = tomllib.loads(docs_toml())["sources"]["checkout"]
CKO_SETTINGS = {k: v for k, v in CKO.items() if k not in ("provider", "secrets")}

# A made-up sender that uses every option at once: a signed `{timestamp}.{body}`, SHA-512,
# base64 with a `v1=` prefix, space-separated signatures, the id in a header, the time in
# milliseconds, a live/test flag, decimal amounts with tax, a condition, and a Lead.
ACME_SETTINGS: dict[str, Any] = {
    "signature_header": "X-Acme-Signature", "algorithm": "sha512", "encoding": "base64", "prefix": "v1=",
    "signature_separator": " ", "signed_payload": "{timestamp}.{body}", "timestamp_header": "X-Acme-Timestamp",
    "event_id": {"header": "X-Acme-Event-Id"}, "event_type": "event", "occurred_at": {"path": "created_at"},
    "live_when": 'mode == "live"',
    "rules": [
        {"event_type": "order.paid", "kind": "sale", "condition": 'order.status == "paid"',
         "amount": "order.total", "tax": "order.tax", "amount_format": "decimal", "currency": "order.currency",
         "invoice_id": "order.id", "email": "order.customer.email", "name": "order.customer.name",
         "provider_customer_id": "order.customer.id", "metadata_paths": ["order.custom"]},
        {"event_type": "user.created", "kind": "lead", "email": "user.email", "name": "user.name",
         "provider_customer_id": "user.id", "click_id": "user.ref", "external_id": "user.external_id"},
    ],
}
ACME_SECRET = "acme_secret_7d0b9c1e"


def cko_headers(body: bytes, secret: str = CKO_SECRET) -> dict[str, str]:
    """Checkout.com's scheme, written out independently of the provider: hex HMAC-SHA256 of the body."""
    return {"Cko-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def acme_headers(body: bytes, secret: str = ACME_SECRET, timestamp: int | None = None,
                 event_id: str = "evt_acme_1") -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha512).digest()
    return {"X-Acme-Signature": "v1=" + base64.b64encode(mac).decode(), "X-Acme-Timestamp": ts,
            "X-Acme-Event-Id": event_id}


def acme_bodies() -> dict[str, bytes]:
    return {name: (FIXTURES / "generic" / f"{name}.json").read_bytes()
            for name in ("order.paid+acme", "user.created+acme")}


class TestCheckoutComContract(ProviderContract):
    provider_class = GenericProvider
    secret = CKO_SECRET
    other_secret = OTHER
    source_settings = CKO_SETTINGS
    has_timestamp = False

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return cko_headers(body, secret)


class TestTimestampedBase64Contract(ProviderContract):
    provider_class = GenericProvider
    secret = ACME_SECRET
    other_secret = OTHER
    source_settings = ACME_SETTINGS
    sample_bodies = acme_bodies()

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return acme_headers(body, secret, timestamp)

    def extra_headers(self, name: str, body: bytes) -> dict[str, str]:
        # The base class asks an unconfigured provider; the id header's name is in this config.
        return self.source().provider.sample_headers(name, body)


def source(secrets: list[str] | None = None, name: str = "checkout", **settings: Any) -> Source:
    return make_source(GenericProvider(), secrets or [CKO_SECRET], name=name, **{**CKO_SETTINGS, **settings})


def verify(body: bytes, headers: dict[str, str], secrets: list[str] | None = None, **settings: Any) -> None:
    src = source(secrets, **settings)
    src.provider.verify(body, Headers(headers), src.secrets, src.ctx)


def code_of(body: bytes, headers: dict[str, str], **settings: Any) -> str:
    with pytest.raises(SignatureError) as caught:
        verify(body, headers, **settings)
    return caught.value.code


BODY = json.dumps(fixture("generic", "payment_captured")).encode()

# -- published vectors, each reproduced by configuration alone ----------------------------------

# GitHub's "Validating webhook deliveries" (docs.github.com/webhooks/using-webhooks/
# validating-webhook-deliveries, "Testing the webhook payload validation"): secret
# "It's a Secret to Everybody", payload "Hello, World!".
GITHUB = {"signature_header": "X-Hub-Signature-256", "prefix": "sha256="}
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
# Slack's worked example (api.slack.com/authentication/verifying-requests-from-slack): the
# string signed is `v0:{timestamp}:{body}`, the header `v0=` + hex HMAC-SHA256.
SLACK = {"signature_header": "X-Slack-Signature", "prefix": "v0=", "signed_payload": "v0:{timestamp}:{body}",
         "timestamp_header": "X-Slack-Request-Timestamp"}
SLACK_SECRET, SLACK_TS = "8f742231b10e8888abcd99yyyzzz85a5", 1531420618
SLACK_BODY = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
              b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
              b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibI"
              b"GlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
# Shopify's PHP library (Shopify/shopify-api-php tests/Webhooks/RegistryTest.php): base64.
SHOPIFY = {"signature_header": "X-Shopify-Hmac-Sha256", "encoding": "base64"}
# RFC 4231 test case 2 (HMAC-SHA-512) and RFC 2202 test case 2 (HMAC-SHA-1): key "Jefe".
RFC_DATA = b"what do ya want for nothing?"
RFC4231_SHA512 = ("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                  "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")
RFC2202_SHA1 = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"

VECTORS = [
    (GITHUB, "It's a Secret to Everybody", b"Hello, World!", 0, GITHUB_SIGNATURE),
    (SLACK, SLACK_SECRET, SLACK_BODY, SLACK_TS, SLACK_SIGNATURE),
    (SHOPIFY, "steffi", b'{"foo":"bar"}', 0, "/Redz4YXHLnSmmSN8grr5/Jl/Ua3d7yX3iWbjb8R8wo="),
    ({"signature_header": "X-Sig", "algorithm": "sha512"}, "Jefe", RFC_DATA, 0, RFC4231_SHA512),
    ({"signature_header": "X-Sig", "algorithm": "sha1"}, "Jefe", RFC_DATA, 0, RFC2202_SHA1),
]


@pytest.mark.parametrize(("scheme", "secret", "body", "ts", "signature"), VECTORS,
                         ids=["github", "slack", "shopify", "rfc4231-sha512", "rfc2202-sha1"])
def test_published_vectors_verify_and_our_signer_reproduces_them(scheme: dict[str, Any], secret: str, body: bytes,
                                                                  ts: int, signature: str) -> None:
    src = source([secret], **scheme, tolerance_s=10**10)  # the vectors are years old
    header = scheme["signature_header"]
    headers = {header: signature, **({scheme["timestamp_header"]: str(ts)} if ts else {})}
    src.provider.verify(body, Headers(headers), src.secrets, src.ctx)
    assert src.provider.sign(body, secret, ts, src.ctx)[header] == signature
    with pytest.raises(SignatureError):
        src.provider.verify(body + b" ", Headers(headers), src.secrets, src.ctx)


def test_slacks_vector_is_stale_today_with_the_default_tolerance() -> None:
    headers = {"X-Slack-Signature": SLACK_SIGNATURE, "X-Slack-Request-Timestamp": str(SLACK_TS)}
    assert code_of(SLACK_BODY, headers, secrets=[SLACK_SECRET], **SLACK) == "stale_timestamp"


def test_checkout_com_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    verify(BODY, cko_headers(BODY))
    assert source().provider.sign(BODY, CKO_SECRET, 0, source().ctx) == cko_headers(BODY)
    verify(BODY, {"Cko-Signature": cko_headers(BODY)["Cko-Signature"].upper()})  # hex in any case
    reserialised = json.dumps(json.loads(BODY), indent=2).encode()  # same JSON, other bytes
    assert code_of(reserialised, cko_headers(BODY)) == "invalid_signature"


# -- signature failure modes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_signature"),
        ({"Cko-Signature": ""}, "missing_signature"),
        ({"Cko-Signature": "   "}, "missing_signature"),
        ({"Cko-Signature": "not hex"}, "invalid_signature"),
        ({"Cko-Signature": "abc"}, "invalid_signature"),
        ({"Cko-Signature": "00" * 32}, "invalid_signature"),
    ],
)
def test_missing_and_malformed_signatures_have_clear_codes(headers: dict[str, str], code: str) -> None:
    assert code_of(BODY, headers) == code


def test_every_secret_and_every_listed_signature_is_tried_for_rotation() -> None:
    old, new = cko_headers(BODY, OTHER)["Cko-Signature"], cko_headers(BODY)["Cko-Signature"]
    listed = {"Cko-Signature": f"{old}, {new}"}
    verify(BODY, listed, [CKO_SECRET], signature_separator=",")
    verify(BODY, listed, [OTHER], signature_separator=",")
    verify(BODY, cko_headers(BODY), [OTHER, CKO_SECRET])
    assert code_of(BODY, listed) == "invalid_signature"  # no separator configured: one signature


def test_a_signature_without_the_configured_prefix_does_not_match() -> None:
    bare = cko_headers(BODY)["Cko-Signature"]
    verify(BODY, {"Cko-Signature": "sha256=" + bare}, prefix="sha256=")
    assert code_of(BODY, {"Cko-Signature": bare}, prefix="sha256=") == "invalid_signature"
    assert code_of(BODY, {"Cko-Signature": "sha1=" + bare}, prefix="sha256=") == "invalid_signature"


def test_secrets_can_be_given_as_base64_or_hex_keys() -> None:
    key = bytes(range(32))
    headers = {"Cko-Signature": hmac.new(key, BODY, hashlib.sha256).hexdigest()}
    verify(BODY, headers, [base64.b64encode(key).decode()], secret_encoding="base64")
    verify(BODY, headers, [key.hex()], secret_encoding="hex")
    assert code_of(BODY, headers, secrets=[key.hex()]) == "invalid_signature"  # the hex text is not the key


ACME_BODY = acme_bodies()["order.paid+acme"]


def acme_verify(headers: dict[str, str], body: bytes = ACME_BODY, **settings: Any) -> None:
    src = make_source(GenericProvider(), [ACME_SECRET], name="acme", **{**ACME_SETTINGS, **settings})
    src.provider.verify(body, Headers(headers), src.secrets, src.ctx)


def acme_code(headers: dict[str, str], **settings: Any) -> str:
    with pytest.raises(SignatureError) as caught:
        acme_verify(headers, **settings)
    return caught.value.code


@pytest.mark.parametrize(("age", "word"), [(301, "old"), (-301, "new")])
def test_signed_timestamps_outside_the_tolerance_are_stale_both_ways(age: int, word: str) -> None:
    acme_verify(acme_headers(ACME_BODY, timestamp=int(time.time()) - 290))
    acme_verify(acme_headers(ACME_BODY, timestamp=int(time.time()) + 290))
    with pytest.raises(SignatureError) as caught:
        acme_verify(acme_headers(ACME_BODY, timestamp=int(time.time()) - age))
    assert caught.value.code == "stale_timestamp" and word in caught.value.message
    assert acme_code(acme_headers(ACME_BODY, timestamp=int(time.time()) - 30), tolerance_s=10) == "stale_timestamp"


def test_timestamps_in_milliseconds_are_understood() -> None:
    ms = int(time.time() * 1000)
    acme_verify(acme_headers(ACME_BODY, timestamp=ms))
    assert acme_code(acme_headers(ACME_BODY, timestamp=ms - 3_600_000)) == "stale_timestamp"


def test_the_timestamp_is_part_of_what_is_signed() -> None:
    genuine = acme_headers(ACME_BODY)
    moved = {**genuine, "X-Acme-Timestamp": str(int(genuine["X-Acme-Timestamp"]) + 1)}
    assert acme_code(moved) == "invalid_signature"
    assert acme_code({k: v for k, v in genuine.items() if k != "X-Acme-Timestamp"}) == "missing_signature"
    assert acme_code({**genuine, "X-Acme-Timestamp": "yesterday"}) == "invalid_signature"


def test_space_separated_signatures_verify_when_any_one_matches() -> None:
    genuine = acme_headers(ACME_BODY)
    forged = acme_headers(ACME_BODY, OTHER, int(genuine["X-Acme-Timestamp"]))["X-Acme-Signature"]
    acme_verify({**genuine, "X-Acme-Signature": f"{forged}  {genuine['X-Acme-Signature']}"})
    assert acme_code({**genuine, "X-Acme-Signature": f"{forged} v1=!!!"}) == "invalid_signature"


# -- configuration is checked at startup, naming the key ---------------------------------------


def build(**changes: Any) -> dict[str, Source]:
    conf = {**CKO, "secrets": [CKO_SECRET], **changes}
    conf = {k: v for k, v in conf.items() if v is not None}
    raw = {"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"}, "sources": {"checkout": conf}}
    return build_sources(parse_settings(raw), load_providers())


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"signature_header": None}, "signature_header"),
        ({"signature_header": "Cko Signature"}, "signature_header"),
        ({"algorithm": "md5"}, "algorithm"),
        ({"algorithm": "SHA-256"}, "algorithm"),
        ({"encoding": "base32"}, "encoding"),
        ({"secret_encoding": "latin1"}, "secret_encoding"),
        ({"signed_payload": "{timestamp}.{body}"}, "timestamp_header"),  # whose timestamp?
        ({"timestamp_header": "Cko-Timestamp"}, "timestamp_header"),  # not signed: proves nothing
        ({"signed_payload": "{timestamp}.{body}", "timestamp_header": "cko-signature"}, "timestamp_header"),
        ({"signed_payload": "{ts}.{body}"}, "signed_payload"),
        ({"signed_payload": "{timestamp}"}, "signed_payload"),
        ({"signed_payload": "{body}.{body}"}, "signed_payload"),
        ({"signed_payload": "{body!r}"}, "signed_payload"),
        ({"signed_payload": "{body"}, "signed_payload"),
        ({"signature_separator": ""}, "signature_separator"),
        ({"signature_separator": "a"}, "signature_separator"),  # a hex digit
        ({"prefix": "sha256=", "signature_separator": "="}, "signature_separator"),
        ({"event_id": None}, "event_id"),
        ({"event_id": {"header": "X-Id", "path": "id"}}, "event_id"),
        ({"event_id": {}}, "event_id"),
        ({"event_id": {"header": "X Id"}}, "event_id.header"),
        ({"event_id": {"column": "id"}}, "event_id.column"),
        ({"event_type": 7}, "event_type"),
        ({"event_type": "data..type"}, "event_type.path"),
        ({"occurred_at": {"path": ""}}, "occurred_at.path"),
        ({"live_when": "livemode"}, "live_when"),
        ({"live_when": True}, "live_when"),
        ({"livemode_path": "livemode"}, "livemode_path"),
        ({"rules": []}, "rules"),
        ({"rules": [{**CKO["rules"][0], "amount": None}]}, "rules.0"),
        ({"rules": [{**CKO["rules"][0], "condition": "data.status = paid"}]}, "rules.0.condition"),
    ],
)
def test_each_invalid_setting_fails_at_startup_naming_its_key(changes: dict[str, Any], key: str) -> None:
    if "rules" in changes:
        changes["rules"] = [{k: v for k, v in r.items() if v is not None} for r in changes["rules"]]
    with pytest.raises(ConfigError, match=rf"^sources\.checkout: (.*; )?{re.escape(key)}: "):
        build(**changes)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"secrets": ["not base64!"], "secret_encoding": "base64"}, "secret 0 is not base64"),
        ({"secrets": ["abc"], "secret_encoding": "hex"}, "secret 0 is not hex"),
    ],
)
def test_unusable_secrets_fail_at_startup(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=rf"^sources\.checkout\.secrets: {words}"):
        build(**changes)


def test_a_secret_with_a_stray_newline_fails_at_startup() -> None:
    # Refused for every provider by adapter.config_checks, before the provider sees it.
    with pytest.raises(ConfigError, match=r"sources\.checkout\.secrets\[1\]: has leading or trailing whitespace"):
        build(secrets=[CKO_SECRET, CKO_SECRET + "\n"])


def test_the_documented_config_loads_from_toml_with_its_environment_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CKO_SIGNATURE_KEY", CKO_SECRET)
    path = tmp_path / "hooktrack.toml"
    path.write_text('[tracking]\nurl = "http://127.0.0.1:9"\napi_key = "k"\n' + docs_toml())
    [src] = build_sources(load_settings(path), load_providers()).values()
    options = src.ctx.options
    assert (src.name, src.secrets, options.signature_header) == ("checkout", (CKO_SECRET,), "Cko-Signature")
    assert (options.event_id.path, options.event_type.path, options.occurred_at.path) == ("id", "type", "timestamp")
    assert [r.event_type for r in options.rules] == ["payment_captured"]


# -- parse --------------------------------------------------------------------------------------


def test_checkout_com_event_is_read_from_the_configured_paths() -> None:
    event = source().provider.parse(BODY, Headers({}))
    assert (event.id, event.type, event.livemode) == ("evt_fkfqht6yonme7bk7jawrgzbbxq", "payment_captured", None)
    assert event.occurred_at == datetime(2026, 4, 10, 12, 34, 56, 357000, tzinfo=UTC)


def test_ids_and_times_from_headers_and_milliseconds_and_the_live_flag() -> None:
    src = make_source(GenericProvider(), [ACME_SECRET], **ACME_SETTINGS)
    event = src.provider.parse(ACME_BODY, Headers(acme_headers(ACME_BODY, event_id="evt_h1")))
    assert (event.id, event.type, event.livemode) == ("evt_h1", "order.paid", True)
    assert event.occurred_at == datetime(2026, 4, 10, 12, 34, 56, 187000, tzinfo=UTC)
    test_mode = json.loads(ACME_BODY) | {"mode": "test"}
    assert src.provider.parse(json.dumps(test_mode).encode(), Headers({"X-Acme-Event-Id": "e"})).livemode is False
    unknown = {k: v for k, v in json.loads(ACME_BODY).items() if k != "mode"}
    assert src.provider.parse(json.dumps(unknown).encode(), Headers({"X-Acme-Event-Id": "e"})).livemode is None
    with pytest.raises(PayloadError, match="X-Acme-Event-Id"):
        src.provider.parse(ACME_BODY, Headers({}))


def test_the_event_time_falls_back_to_the_signed_timestamp_then_to_receipt() -> None:
    src = make_source(GenericProvider(), [ACME_SECRET], **ACME_SETTINGS)
    body = json.dumps({k: v for k, v in json.loads(ACME_BODY).items() if k != "created_at"}).encode()
    signed = src.provider.parse(body, Headers(acme_headers(body, timestamp=1775824496)))
    assert signed.occurred_at == datetime(2026, 4, 10, 12, 34, 56, tzinfo=UTC)
    before = datetime.now(UTC)
    received = source(occurred_at=None).provider.parse(BODY, Headers({}))
    assert before <= received.occurred_at <= datetime.now(UTC)


@pytest.mark.parametrize(("field", "value"), [("id", None), ("id", ""), ("id", {"x": 1}), ("type", None),
                                              ("type", ["a"]), ("timestamp", "last tuesday"), ("timestamp", True)])
def test_an_unreadable_id_type_or_time_is_a_payload_error(field: str, value: Any) -> None:
    event = fixture("generic", "payment_captured") | {field: value}
    with pytest.raises(PayloadError):
        source().provider.parse(json.dumps(event).encode(), Headers({}))


def test_numeric_ids_are_text_and_the_type_can_come_from_a_header() -> None:
    src = source(event_id={"header": "X-Shopify-Event-Id"}, event_type={"header": "X-Shopify-Topic"})
    event = src.provider.parse(b'{"id": 820982911946154508}', Headers({"X-Shopify-Event-Id": "9f2b",
                                                                        "X-Shopify-Topic": "orders/paid"}))
    assert (event.id, event.type) == ("9f2b", "orders/paid")
    assert source().provider.parse(b'{"id": 42, "type": "t"}', Headers({})).id == "42"


# -- samples (hooktrack send) -------------------------------------------------------------------


def test_a_refreshed_sample_is_a_new_event_and_a_new_payment() -> None:
    provider = source().provider
    body = json.loads(provider.sample("payment_captured", unique="u1", now=1775824496))
    assert (body["id"], body["data"]["id"], body["timestamp"]) == ("evt_u1", "pay_u1", "2026-04-10T12:34:56Z")
    assert body["data"]["amount"] == 4900 and body["data"]["metadata"]["userId"] == "user_42"


def test_samples_carry_the_id_and_type_headers_a_header_config_reads() -> None:
    src = source(event_id={"header": "X-Event-Id"}, event_type={"header": "X-Event-Type"})
    extra = src.provider.sample_headers("payment_captured", BODY)
    assert extra["X-Event-Type"] == "payment_captured" and extra["X-Event-Id"].startswith("msg_")
    assert src.provider.sign(BODY, CKO_SECRET, 0, src.ctx)["X-Event-Id"] == extra["X-Event-Id"]
    assert source().provider.sample_headers("payment_captured", BODY) == {}


# -- mapping ------------------------------------------------------------------------------------


def conversions(src: Source, body: bytes, headers: dict[str, str] | None = None) -> list[Lead | Sale]:
    return map_event(src, src.provider.parse(body, Headers(headers or {})))


def test_a_captured_payment_is_a_sale_with_its_identity_hints() -> None:
    [sale] = conversions(source(), BODY)
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.currency, sale.invoice_id) == ("purchase", 4900, "eur",
                                                                        "pay_vti5layihapu5bhbn5tjtk6eem")
    assert (sale.email, sale.name, sale.provider_customer_id) == ("ada@example.com", "Ada Lovelace",
                                                                  "cus_udst2tfldj6upmye2reztkmm4i")
    assert (sale.external_id, sale.click_id) == ("user_42", "cl_cko_42")


def test_an_approved_authorization_is_not_tracked() -> None:
    body = json.dumps(fixture("generic", "payment_approved")).encode()
    assert conversions(source(), body) == []


def test_decimal_amounts_less_tax_a_condition_and_a_lead_from_one_config() -> None:
    src = make_source(GenericProvider(), [ACME_SECRET], **ACME_SETTINGS)
    [sale] = conversions(src, ACME_BODY, {"X-Acme-Event-Id": "e1"})
    assert isinstance(sale, Sale)
    assert (sale.amount, sale.currency, sale.metadata["taxAmount"]) == (4900, "usd", 980)
    assert (sale.external_id, sale.click_id, sale.email) == ("user_77", "cl_acme_7", "grace@example.com")
    [lead] = conversions(src, acme_bodies()["user.created+acme"], {"X-Acme-Event-Id": "e2"})
    assert isinstance(lead, Lead)
    assert (lead.kind, lead.click_id, lead.external_id, lead.provider_customer_id) == ("sign_up", "cl_acme_7",
                                                                                      "user_77", "c_1029")


# -- through the core and the real tracking receiver --------------------------------------------


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"checkout": {**CKO, "secrets": [CKO_SECRET]}})


def post(client: Any, event: dict[str, Any], secret: str = CKO_SECRET, source_name: str = "checkout") -> Any:
    body = json.dumps(event).encode()
    return client.post(f"/webhooks/{source_name}", content=body,
                       headers={**cko_headers(body, secret), "Content-Type": "application/json"})


def test_checkout_com_payment_captured_end_to_end(client: Any, receiver: Any) -> None:
    r = post(client, fixture("generic", "payment_captured"))
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.kind == "sale"
    assert sale.headers["idempotency-key"] == "sale:checkout:pay_vti5layihapu5bhbn5tjtk6eem"
    body = sale.body
    assert (body["amount"], body["currency"], body["eventName"]) == (4900, "eur", "Purchase")
    assert (body["customerExternalId"], body["clickId"]) == ("user_42", "cl_cko_42")
    assert (body["customerEmail"], body["customerName"]) == ("ada@example.com", "Ada Lovelace")
    assert (body["paymentProcessor"], body["timestamp"]) == ("custom", "2026-04-10T12:34:56.357Z")
    assert body["metadata"]["provider"] == "generic"
    meta = body["metadata"]
    assert meta["providerEventId"] == "evt_fkfqht6yonme7bk7jawrgzbbxq"
    assert meta["providerEventType"] == "payment_captured"
    assert meta["providerCustomerId"] == "cus_udst2tfldj6upmye2reztkmm4i"


def test_a_redelivered_event_is_a_duplicate_and_forwarded_once(client: Any, receiver: Any) -> None:
    event = fixture("generic", "payment_captured")
    first = post(client, event)
    again = post(client, event)
    assert again.json() == {"status": "duplicate", "eventId": first.json()["eventId"]}
    other_event_same_payment = event | {"id": "evt_second_notice"}
    r = post(client, other_event_same_payment)
    assert r.json()["status"] == "duplicate" and r.json()["reason"] == "business_key"
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_forged_and_unsigned_webhooks_are_refused_and_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("generic", "payment_captured"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    assert CKO_SECRET not in r.text
    r = client.post("/webhooks/checkout", content=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"
    time.sleep(0.2)
    assert receiver.requests == []


@pytest.mark.parametrize("event_type", ["payment_approved", "payment_refunded", "payment_declined"])
def test_types_without_a_rule_are_ignored_as_not_tracked(client: Any, event_type: str) -> None:
    r = post(client, fixture("generic", "payment_approved") | {"type": event_type})
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "event_type_not_tracked"


def test_a_rule_whose_condition_fails_is_ignored_with_its_reason(make_client: Any, receiver: Any) -> None:
    approved_only = [{**CKO["rules"][0], "condition": 'data.response_summary == "Approved"'}]
    client = make_client(sources={"checkout": {**CKO, "secrets": [CKO_SECRET], "rules": approved_only}})
    event = fixture("generic", "payment_captured")
    event["data"]["response_summary"] = "Partially approved"
    r = post(client, event)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "condition_not_met"
    time.sleep(0.2)
    assert receiver.requests == []


@pytest.mark.parametrize(("field", "value"), [("amount", "49.00"), ("currency", None), ("id", None)])
def test_payloads_the_rules_cannot_read_are_a_400(client: Any, field: str, value: Any) -> None:
    event = fixture("generic", "payment_captured")
    event["data"][field] = value
    r = post(client, event)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_timestamped_sender_end_to_end_with_livemode_filtering(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"acme": {"provider": "generic", "secrets": [ACME_SECRET], "livemode": "live",
                                           "forward_leads_without_click_id": True, **ACME_SETTINGS}})

    def send(body: bytes, event_id: str) -> Any:
        return client.post("/webhooks/acme", content=body, headers=acme_headers(body, event_id=event_id))

    assert send(acme_bodies()["user.created+acme"], "evt_a1").json()["status"] == "accepted"
    assert send(ACME_BODY, "evt_a2").json()["status"] == "accepted"
    lead, sale = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    assert (lead.kind, lead.body["clickId"], lead.body["customerExternalId"]) == ("lead", "cl_acme_7", "user_77")
    assert (sale.body["amount"], sale.body["currency"], sale.body["customerExternalId"]) == (4900, "usd", "user_77")
    assert sale.body["timestamp"] == "2026-04-10T12:34:56.187Z" and sale.body["metadata"]["livemode"] is True
    unpaid = json.dumps(json.loads(ACME_BODY) | {"order": {**json.loads(ACME_BODY)["order"], "status": "open"}})
    assert send(unpaid.encode(), "evt_a3").json()["reason"] == "condition_not_met"
    test_mode = json.dumps(json.loads(ACME_BODY) | {"mode": "test"}).encode()
    assert send(test_mode, "evt_a4").json()["reason"] == "livemode_mismatch"


def test_hooktrack_send_posts_the_sample_under_the_documented_config(client: Any, receiver: Any) -> None:
    src = build()["checkout"]
    first = post_sample(src, "payment_captured", "", client=client)
    second = post_sample(src, "payment_captured", "", client=client)
    assert first.json()["status"] == second.json()["status"] == "accepted"  # a new payment each time
    assert post_sample(src, "payment_approved", "", client=client).json()["reason"] == "event_type_not_tracked"
    sales = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    assert {s.body["amount"] for s in sales} == {4900}
    assert all(s.body["customerExternalId"] == "user_42" for s in sales)
