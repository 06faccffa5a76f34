"""Paddle Classic: RSA p_signature (a published vector and keys made here), order Sales net of tax."""

from __future__ import annotations

import base64
import time
import tomllib
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, urlencode

import phpserialize  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.datastructures import Headers

from adapter.cli import main
from adapter.errors import ConfigError, Ignore, PayloadError, SignatureError
from adapter.events import Refund, Sale
from adapter.ingest import parse_event
from adapter.plugin import Source, build_sources, load_providers
from adapter.samples import post_sample
from adapter.settings import parse_settings
from adapter.testing import ProviderContract, make_source
from providers.forms import parse_form
from providers.paddle_classic import PaddleClassicProvider, php_serialize, sign_fields, signed_data
from tests.conftest import fixture, sent_once, wait_for
from tests.providers.flow import mapped, one


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # stands in for Paddle's key
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC = _public_pem(KEY)
P_SIGNATURE = "x-test-p-signature"  # carries p_signature from `sign` into the form in the contract


def p_signature(fields: dict[str, str], private_pem: str = "") -> str:
    """Sign like Paddle, the way Paddle's Python example verifies: phpserialize.dumps of the
    sorted string fields, RSA PKCS#1 v1.5 over SHA-1, base64 (independent of the provider)."""
    key = serialization.load_pem_private_key(private_pem.encode(), None) if private_pem else KEY
    assert isinstance(key, rsa.RSAPrivateKey)
    data = phpserialize.dumps(OrderedDict(sorted((k, str(v)) for k, v in fields.items() if k != "p_signature")))
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA1())).decode()


class TestPaddleClassicContract(ProviderContract):
    """The signature travels inside the form: `sign` returns it in a test-only header and
    `verify` appends it to the body as the `p_signature` field, as Paddle posts it."""

    provider_class = PaddleClassicProvider
    secret = _private_pem(KEY)
    other_secret = _private_pem(OTHER_KEY)
    source_settings = {"public_key": PUBLIC}
    has_timestamp = False

    def source(self, secrets: list[str] | None = None) -> Source:
        return make_source(self.provider_class(), [], **self.source_settings)

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return {P_SIGNATURE: p_signature(parse_form(body), secret)}

    def verify(self, body: bytes, headers: Headers, secrets: list[str] | None = None) -> None:
        signature = headers.get(P_SIGNATURE)
        if signature is not None:
            body += b"&p_signature=" + quote(signature, safe="").encode()
        src = self.source(secrets)
        src.provider.verify(body, headers, src.secrets, src.ctx)

    def test_every_configured_secret_is_tried(self) -> None:
        pytest.skip("one vendor public key per source: Paddle Classic has no key rotation")


def form(fields: dict[str, str], *, sign: bool = True) -> bytes:
    signed = {**fields, "p_signature": p_signature(fields)} if sign else fields
    return urlencode(list(signed.items())).encode()


def post(client: Any, fields: dict[str, str], *, sign: bool = True, source: str = "paddle_classic") -> Any:
    return client.post(f"/webhooks/{source}", content=form(fields, sign=sign),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})


def verify(body: bytes, public_key: str = PUBLIC) -> None:
    src = make_source(PaddleClassicProvider(), [], public_key=public_key)
    src.provider.verify(body, Headers({}), src.secrets, src.ctx)


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"paddle_classic": {"provider": "paddle_classic", "public_key": PUBLIC}})


def alert(name: str, **changes: str) -> dict[str, str]:
    fields: dict[str, str] = fixture("paddle_classic", name)
    fields.update(changes)
    return fields


# -- signatures -------------------------------------------------------------------------------------

# Published vector: a Paddle Classic `subscription_created` alert and the public key it verifies
# with, from the pay gem's tests (pay-rails/pay: test/support/fixtures/paddle/subscription_created.json
# and test/support/fixtures/paddle_classic/verification/paddle_public_key.pem).
PAY_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA3CGT82ixrOTpCjAyY9pI
GthIx4HzZtnO519VECl7wouV4nSD/09YDkyeujygarlYuKjILra4/yuwHoQGD/En
EdADYfNgBNYMuiUhsiXArPQRuqRKSi3xboZEkeDLaeABtxr/5VWyHFtxbSe8FMa6
st0Lm6zrOauYkYRbWF+8+6pp4CVNsFSBjP8PLum0zN9Uh44DyFI6qlJ3xA5Uxcr/
Ew/Fp3eDPloqqa2MNCZnkJwft5rLVz/B5YWf5jY515OKl+OU/t+FCtxKpjj74ug7
9Vk5cZsA3044VClsusI3qj/iRXPWtBNKUpj0tknT5Q9J94twv3kfa+XMu61uOw3k
Vjhf62W6CYt5jtQdk/HgxzMP64ouvf0zVDKHoJtprU524IXOYxK7tiDXuktpVAw3
SnNh/bpN0qD2D7TGVzHeajgcppxjBYJc6OzXHToiyIiLGqZdP0ewzfOIKGkW9tOi
Y/1kSzlkJrQ6sfM5aKg6SSsos0+TBY9t7/UZFVKKe7J4ijSRmsFd+DVmc2KHHReK
rd1tEBa2GQeJU9F0iM5EVcYnXeXzHRNha54snsp5ZYXSAmsYZCAutdh+gWI2Alni
P97ZBsCbv7RHLQOY60CXkKnILEPhu4u5Kp7P1Ez1deGf/mcnZz21RCdC7PhqPXtm
WtpkNrCK6BeRMj0XZG7oB3MCAwEAAQ==
-----END PUBLIC KEY-----
"""


def test_published_vector_from_the_pay_gem_verifies() -> None:
    verify(form(fixture("paddle_classic", "subscription_created+pay_vector"), sign=False), PAY_PUBLIC_KEY)


def test_published_vector_with_one_field_changed_is_rejected() -> None:
    fields = alert("subscription_created+pay_vector", quantity="66")
    with pytest.raises(SignatureError) as caught:
        verify(form(fields, sign=False), PAY_PUBLIC_KEY)
    assert caught.value.code == "invalid_signature"


def test_published_vector_over_http_is_an_untracked_alert(make_client: Any) -> None:
    client = make_client(sources={"pc": {"provider": "paddle_classic", "public_key": PAY_PUBLIC_KEY}})
    r = post(client, fixture("paddle_classic", "subscription_created+pay_vector"), sign=False, source="pc")
    assert (r.status_code, r.json()["status"], r.json()["reason"]) == (200, "ignored", "event_type_not_tracked")


def test_our_php_serialisation_matches_phpserialize_for_utf8_and_quotes() -> None:
    fields = {"customer_name": "Zoë Ærøskøbing", "passthrough": '{"clickId":"cl_1","note":"a \\"b\\""}',
              "alert_id": "1", "coupon": "", "earnings": '{"118204":"36.25"}'}
    expected = phpserialize.dumps(OrderedDict(sorted(fields.items())))
    assert signed_data(fields) == expected == php_serialize(sorted(fields.items()))
    assert signed_data({**fields, "p_signature": "x"}) == expected


def test_missing_and_malformed_signatures_have_clear_codes() -> None:
    fields = alert("payment_succeeded")
    for body, code in [(form(fields, sign=False), "missing_signature"), (b"\xff\xfe", "missing_signature"),
                       (form({**fields, "p_signature": "!!not base64!!"}, sign=False), "invalid_signature"),
                       (form({**fields, "p_signature": ""}, sign=False), "missing_signature")]:
        with pytest.raises(SignatureError) as caught:
            verify(body)
        assert caught.value.code == code


def test_signature_over_unsorted_fields_is_rejected() -> None:
    fields = alert("payment_succeeded")
    data = php_serialize(sorted(fields.items(), reverse=True))  # Paddle sorts ascending
    bad = base64.b64encode(KEY.sign(data, padding.PKCS1v15(), hashes.SHA1())).decode()
    with pytest.raises(SignatureError) as caught:
        verify(form({**fields, "p_signature": bad}, sign=False))
    assert caught.value.code == "invalid_signature"


def test_a_plus_decoded_as_space_is_forgiven() -> None:
    fields = alert("payment_succeeded")
    signature = p_signature(fields)
    for _ in range(50):  # find a signature with a "+" in it
        if "+" in signature:
            break
        fields["alert_id"] = str(int(fields["alert_id"]) + 1)
        signature = p_signature(fields)
    assert "+" in signature, "no '+' in 50 signatures"
    raw = urlencode(list(fields.items())) + "&p_signature=" + signature  # "+" left unencoded
    verify(raw.encode())


def test_forged_alert_over_http_is_400_and_not_forwarded(client: Any, receiver: Any) -> None:
    fields = alert("payment_succeeded")
    forged = {**fields, "p_signature": p_signature(fields, _private_pem(OTHER_KEY))}
    r = post(client, forged, sign=False)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    time.sleep(0.2)
    assert receiver.requests == []


@pytest.mark.parametrize("public_key", ["not a key", PUBLIC.replace("MII", "XXX"), "-----BEGIN PUBLIC KEY-----"])
def test_unusable_public_key_stops_startup(make_client: Any, public_key: str) -> None:
    with pytest.raises(ConfigError, match="public_key"):
        make_client(sources={"pc": {"provider": "paddle_classic", "public_key": public_key}})


def test_public_key_squeezed_into_one_line_with_backslash_n_works() -> None:
    verify(form(alert("payment_succeeded")), PUBLIC.strip().replace("\n", "\\n"))


def test_without_a_sample_signing_key_signing_says_what_to_do_instead() -> None:
    src = make_source(PaddleClassicProvider(), [], public_key=PUBLIC)
    body = src.provider.sample("payment_succeeded", unique="a1b2c3d4e5f60718", now=int(time.time()))
    assert src.provider.sign_sample(body, "") == body  # nothing to sign with: left unsigned
    with pytest.raises(NotImplementedError, match="its own private key") as caught:
        src.provider.sign(body, "", 0, src.ctx)
    assert "Webhook Alert Simulator" in str(caught.value) and "--test-secrets" in str(caught.value)
    with pytest.raises(ConfigError, match="--test-secrets"):
        post_sample(src, "payment_succeeded", "http://127.0.0.1:9")


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_payment_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    assert post(client, alert("payment_succeeded")).json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.headers["idempotency-key"] == "sale:paddle_classic:paddle_classic:8295473-4210584"
    assert (sale.body["eventName"], sale.body["invoiceId"]) == ("Purchase", "paddle_classic:8295473-4210584")
    assert (sale.body["clickId"], sale.body["customerExternalId"]) == ("cl_paddle_classic", "user_42")


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def source(**settings: Any) -> Any:
    return make_source(PaddleClassicProvider(), [], name="paddle_classic", **{"public_key": PUBLIC, **settings})


def classic_flow(make_flow: Any, **settings: Any) -> Any:
    return make_flow(PaddleClassicProvider(), [], lambda body: FORM, **{"public_key": PUBLIC, **settings})


def sale_of(fields: dict[str, str], **settings: Any) -> Sale:
    [sale] = mapped(source(**settings), form(fields), FORM)
    assert isinstance(sale, Sale)
    return sale


def test_one_time_payment_is_a_purchase_net_of_tax() -> None:
    sale = sale_of(alert("payment_succeeded"))
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 4900, "usd")  # 58.80 − 9.80
    assert sale.invoice_id == "8295473-4210584" and sale.subscription_id is None
    assert (sale.click_id, sale.external_id) == ("cl_paddle_classic", "user_42")
    assert (sale.email, sale.name) == ("ada@example.com", "Ada Lovelace")
    assert sale.metadata["taxAmount"] == 980 and "subscriptionId" not in sale.metadata
    event = parse_event(source(), form(alert("payment_succeeded")), Headers(FORM))
    assert (event.id, event.livemode) == ("1985231706", None)
    assert event.occurred_at.isoformat() == "2024-04-10T10:36:52+00:00"


def test_subscription_payments_are_creation_then_renewal(make_flow: Any) -> None:
    first, second = (sale_of(alert(n)) for n in ("subscription_payment_succeeded",
                                                 "subscription_payment_succeeded+renewal"))
    assert (first.amount, first.currency) == (3000, "eur")  # 36.00 − 6.00
    assert first.metadata["initialPayment"] is True and second.metadata["initialPayment"] is False
    assert second.subscription_id == second.metadata["subscriptionId"] == "4418263"
    assert second.provider_customer_id == "29103377"
    flow = classic_flow(make_flow)
    flow.receive(form(alert("subscription_payment_succeeded")), FORM)
    flow.receive(form(alert("subscription_payment_succeeded+renewal")), FORM)
    assert [s.event_name for s in flow.stored()] == ["Subscription creation", "Subscription renewal"]


@pytest.mark.parametrize(
    ("currency", "gross", "tax", "expected"),
    [("JPY", "5500", "500", 5000), ("KWD", "13.575", "1.234", 12341), ("USD", "10", "0", 1000)],
)
def test_decimal_strings_are_exact_minor_units(currency: str, gross: str, tax: str, expected: int) -> None:
    sale = sale_of(alert("payment_succeeded", currency=currency, sale_gross=gross, payment_tax=tax))
    assert (sale.amount, sale.currency) == (expected, currency.lower())


@pytest.mark.parametrize(
    ("passthrough", "click", "external"),
    [
        ('{"dub_click_id":"cl_json","customer_external_id":"user_9"}', "cl_json", "user_9"),
        ("user_99", None, "user_99"),  # a plain string is the merchant's user id ...
        ("dub_id_cl_plain", "cl_plain", None),  # ... unless it carries the click-id prefix
        ('"user_quoted"', None, "user_quoted"),
        ("12345", None, "12345"),
        ('{"owner_type":"User","owner_id":1}', None, None),
    ],
)
def test_passthrough_as_json_or_plain_string(make_flow: Any, passthrough: str, click: str | None,
                                             external: str | None) -> None:
    sale = sale_of(alert("payment_succeeded", passthrough=passthrough))
    assert (sale.click_id, sale.external_id) == (click, external)
    flow = classic_flow(make_flow)
    [stored] = flow.stored(flow.receive(form(alert("payment_succeeded", passthrough=passthrough)), FORM))
    assert stored.external_id == (external or "ada@example.com")  # no user id: the email


def test_the_passthrough_prefix_is_a_source_setting() -> None:
    sale = sale_of(alert("payment_succeeded", passthrough="ref_cl_9"), client_reference_prefix="ref_")
    assert (sale.click_id, sale.external_id) == ("cl_9", None)


@pytest.mark.parametrize(
    ("name", "changes", "reason"),
    [
        ("payment_succeeded", {"sale_gross": "9.80"}, "zero_amount"),
        ("payment_succeeded", {"alert_name": "payment_dispute_created"}, "event_type_not_tracked"),
        ("subscription_payment_succeeded", {"alert_name": "subscription_created"}, "event_type_not_tracked"),
        ("subscription_payment_succeeded", {"alert_name": "subscription_payment_failed"}, "event_type_not_tracked"),
    ],
)
def test_uncountable_alerts_are_ignored_with_reasons(make_flow: Any, name: str, changes: dict[str, str],
                                                     reason: str) -> None:
    flow = classic_flow(make_flow)
    answer = flow.receive(form(alert(name, **changes)), FORM)
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


@pytest.mark.parametrize("changes", [{"sale_gross": "58.8O"}, {"sale_gross": "58.801"}, {"event_time": "yesterday"},
                                     {"subscription_id": ""}])
def test_malformed_alerts_are_400(client: Any, changes: dict[str, str]) -> None:
    with pytest.raises(PayloadError):
        mapped(source(), form(alert("subscription_payment_succeeded", **changes)), FORM)
    r = post(client, alert("subscription_payment_succeeded", **changes))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_redelivered_alert_is_a_duplicate(make_flow: Any) -> None:
    flow = classic_flow(make_flow)
    body = form(alert("payment_succeeded"))
    first = flow.receive(body, FORM)
    assert flow.receive(body, FORM) == {"status": "duplicate", "eventId": first["eventId"]}
    assert [s.state for s in flow.stored()] == ["pending"]


def test_fresh_samples_signed_here_are_new_deliveries(client: Any, receiver: Any) -> None:
    provider = PaddleClassicProvider()
    for unique in ("a1b2c3d4e5f60718", "0f1e2d3c4b5a6978"):
        fields = parse_form(provider.sample("payment_succeeded", unique=unique, now=int(time.time())))
        assert post(client, fields).json()["status"] == "accepted"
    assert len(wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())) == 2


def test_order_ids_are_qualified_by_source_and_tax_is_excluded(make_flow: Any) -> None:
    flow = classic_flow(make_flow)
    [stored] = flow.stored(flow.receive(form(alert("payment_succeeded")), FORM))
    assert stored.invoice_id == "paddle_classic:8295473-4210584" and stored.metadata["tax"] == "excluded"


# --- refunds (SPEC §9) ---------------------------------------------------------------------------


def refund_alert(**changes: str) -> dict[str, str]:
    return {**fixture("paddle_classic", "payment_refunded"), **changes}


def test_a_partial_refund_is_net_of_its_tax_refund_and_reverses_the_order() -> None:
    refund = one(source(), form(refund_alert()), FORM)
    assert isinstance(refund, Refund)
    assert refund.reverses == ("8295473-4210584", "98765432-chre8a3e2f1b9c7-4d5e6f7a8b")
    assert (refund.amount, refund.currency) == (1000, "usd")  # gross_refund 12.00 − tax_refund 2.00
    assert (refund.includes_tax, refund.chargeback) == (False, False)
    sale = sale_of(fixture("paddle_classic", "payment_succeeded"))
    assert (sale.amount, sale.gross_amount) == (4900, 5880)
    assert set(refund.reverses) == {sale.invoice_id, *sale.payment_refs}


def test_a_full_refund_refunds_the_whole_sale_and_a_vat_refund_none_of_it() -> None:
    full = one(source(), form(refund_alert(refund_type="full", gross_refund="58.80", tax_refund="9.80")), FORM)
    assert isinstance(full, Refund) and full.amount is None
    with pytest.raises(Ignore, match="zero_amount"):
        mapped(source(), form(refund_alert(refund_type="vat", gross_refund="9.80", tax_refund="9.80")), FORM)


# --- signed samples: `--test-secrets`, `sample_signing_key` ------------------------------------------


def secrets_block() -> dict[str, Any]:
    """The `[sources.paddle_classic]` table `hooktrack providers paddle_classic --test-secrets` prints."""
    result = CliRunner().invoke(main, ["providers", "paddle_classic", "--test-secrets"])
    assert result.exit_code == 0, result.output
    assert "# note:" not in result.output, result.output
    block: dict[str, Any] = tomllib.loads(result.output)["sources"]["paddle_classic"]
    return block


def build(source: dict[str, Any]) -> Source:
    settings = parse_settings({"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
                               "sources": {"pc": source}})
    [src] = build_sources(settings, load_providers()).values()
    return src


def test_the_test_secrets_block_is_toml_that_builds_a_source_with_a_fresh_key_pair() -> None:
    block = secrets_block()
    assert block["provider"] == "paddle_classic"
    assert set(block) == {"provider", "public_key", "sample_signing_key"}
    assert "BEGIN PUBLIC KEY" in block["public_key"] and "BEGIN PRIVATE KEY" in block["sample_signing_key"]
    src = build(block)
    assert src.ctx.options.sample_signing_key == block["sample_signing_key"]
    assert secrets_block()["public_key"] != block["public_key"]  # never one shared, well-known key


def test_sample_signature_is_paddles_own_algorithm() -> None:
    """`sign_fields` gives the signature an independent implementation (phpserialize, as in
    Paddle's Python example) computes; PKCS#1 v1.5 is deterministic, so they are equal."""
    pem = _private_pem(KEY)
    fields = {**alert("subscription_payment_succeeded"), "customer_name": "Zoë Ærøskøbing"}
    assert sign_fields(fields, pem) == p_signature(fields, pem)
    src = make_source(PaddleClassicProvider(), [], public_key=PUBLIC, sample_signing_key=pem)
    body = src.provider.sign_sample(src.provider.sample("payment_succeeded", unique="u1", now=int(time.time())), "")
    signed = parse_form(body)
    assert signed["p_signature"] == p_signature(signed, pem)
    verify(body)


@pytest.fixture
def served(make_client: Any) -> Any:
    return make_client(sources={"paddle_classic": secrets_block()})


def source_of(client: Any) -> Source:
    src: Source = client.app.state.sources["paddle_classic"]
    return src


def test_every_sample_signed_with_the_test_secrets_is_accepted_and_its_sales_count_at_dub(
        served: Any, receiver: Any) -> None:
    src = source_of(served)
    samples = sorted(src.provider.samples())
    assert samples == ["payment_refunded", "payment_succeeded", "subscription_payment_succeeded",
                       "subscription_payment_succeeded+renewal"]
    answers = {}
    for sample in samples:
        r = post_sample(src, sample, "http://testserver", client=served)
        assert r.status_code == 200, (sample, r.text)
        answers[sample] = r.json()
    assert {s: a["status"] for s, a in answers.items()} == {
        "payment_refunded": "ignored", "payment_succeeded": "accepted",
        "subscription_payment_succeeded": "accepted", "subscription_payment_succeeded+renewal": "accepted"}
    assert answers["payment_refunded"]["reason"] == "unknown_sale"  # a fresh order hooktrack never saw
    sales = wait_for(lambda: len(receiver.counted_sales()) == 3 and receiver.counted_sales())
    assert sorted((s.amount, s.currency, s.payment_processor) for s in sales) == [
        (3000, "eur", "paddle"), (3000, "eur", "paddle"), (4900, "usd", "paddle")]
    # Nothing refused (a 404 is Dub's "lead not found" until the first Sale's lead of user_42 is
    # visible: hooktrack retries, as it would against Dub)
    assert [(r.kind, r.status, r.body) for r in receiver.requests if r.status in (400, 422)] == []
    assert len({s.invoice_id for s in sales}) == 3


def test_each_send_is_a_new_alert_and_order(served: Any, receiver: Any) -> None:
    src = source_of(served)
    first, second = (post_sample(src, "payment_succeeded", "http://testserver", client=served).json()
                     for _ in range(2))
    assert first["status"] == second["status"] == "accepted" and first["eventId"] != second["eventId"]
    sales = wait_for(lambda: len(receiver.counted_sales()) == 2 and receiver.counted_sales())
    assert len({s.invoice_id for s in sales}) == 2


def test_a_sample_signed_with_another_key_is_400(served: Any, receiver: Any) -> None:
    r = post_sample(source_of(served), "payment_succeeded", "http://testserver", secret=_private_pem(OTHER_KEY),
                    client=served)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    time.sleep(0.2)
    assert receiver.requests == []


@pytest.mark.parametrize(("field", "value"), [("sale_gross", "5880.00"), ("passthrough", "dub_id_cl_attacker"),
                                              ("alert_id", "1")])
def test_a_signed_sample_with_one_field_changed_is_400(served: Any, field: str, value: str) -> None:
    src = source_of(served)
    body = src.provider.sign_sample(src.provider.sample("payment_succeeded", unique="t1", now=int(time.time())), "")
    fields = parse_form(body)
    assert fields[field] != value
    r = post(served, {**fields, field: value}, sign=False)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    assert post(served, fields, sign=False).json()["status"] == "accepted"  # the untouched one verifies


def test_a_signing_key_that_is_not_the_public_keys_stops_startup(make_client: Any) -> None:
    with pytest.raises(ConfigError, match="sample_signing_key") as caught:
        make_client(sources={"pc": {"provider": "paddle_classic", "public_key": PUBLIC,
                                    "sample_signing_key": _private_pem(OTHER_KEY)}})
    assert "not the private key of public_key" in str(caught.value)


@pytest.mark.parametrize("key", ["not a key", _private_pem(KEY).replace("MII", "XXX"), PUBLIC])
def test_an_unusable_signing_key_stops_startup(make_client: Any, key: str) -> None:
    with pytest.raises(ConfigError, match="sample_signing_key"):
        make_client(sources={"pc": {"provider": "paddle_classic", "public_key": PUBLIC, "sample_signing_key": key}})


def test_an_encrypted_signing_key_stops_startup_saying_so(make_client: Any) -> None:
    encrypted = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pw")).decode()
    with pytest.raises(ConfigError, match=r"sample_signing_key.*encrypted"):
        make_client(sources={"pc": {"provider": "paddle_classic", "public_key": PUBLIC,
                                    "sample_signing_key": encrypted}})


def test_a_signing_key_in_a_live_source_stops_startup(make_client: Any) -> None:
    with pytest.raises(ConfigError, match=r"sample_signing_key.*live"):
        make_client(sources={"pc": {"provider": "paddle_classic", "livemode": "live", **secrets_block()}})
