"""PayPal: offline RSA-SHA256 verification with a certificate built here and served on loopback."""

from __future__ import annotations

import base64
import json
import threading
import tomllib
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from starlette.datastructures import Headers

from adapter.cli import main
from adapter.errors import ConfigError, Ignore, PayloadError, SignatureError, VerifierUnavailable
from adapter.events import Refund, Sale
from adapter.plugin import Source, build_sources, load_providers
from adapter.samples import post_sample
from adapter.settings import parse_settings
from adapter.testing import ProviderContract, make_source
from providers.paypal import SAMPLE_CERT_URL, PayPalProvider
from tests.conftest import fixture, sent_once, wait_for
from tests.providers.flow import mapped, one

WEBHOOK_ID = "8PT597110X687430LKGECATA"
CERT_URL = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-test0001"
OTHER_URL = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-test0002"


def _key_and_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "messageverificationcerts.paypal.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


KEY, PEM = _key_and_cert()
OTHER_KEY, OTHER_PEM = _key_and_cert()
CERTS = {urlsplit(CERT_URL).path: PEM, urlsplit(OTHER_URL).path: OTHER_PEM}


class _Certs(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        pem = CERTS.get(self.path)
        self.send_response(200 if pem else 404)
        self.end_headers()
        self.wfile.write(pem or b"not found")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def cert_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Certs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class LoopbackFetch:
    """PayPal's certificate URL answered by the loopback server (same path); counts fetches."""

    def __init__(self, base: str) -> None:
        self.base, self.urls = base, []  # type: ignore[var-annotated]

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        response = httpx.get(self.base + urlsplit(url).path, timeout=5)
        response.raise_for_status()
        return response.content


def signed(body: bytes, key: rsa.RSAPrivateKey = KEY, *, cert_url: str = CERT_URL, webhook_id: str = WEBHOOK_ID,
           when: datetime | None = None, transmission_id: str | None = None) -> dict[str, str]:
    """PayPal's recipe written out: RSA-SHA256 over `id|time|webhook_id|crc32` (decimal CRC32)."""
    tid = transmission_id or str(uuid.uuid1())
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = f"{tid}|{stamp}|{webhook_id}|{zlib.crc32(body) & 0xFFFFFFFF:d}".encode()
    sig = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {"PAYPAL-TRANSMISSION-ID": tid, "PAYPAL-TRANSMISSION-TIME": stamp,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(sig).decode(), "PAYPAL-CERT-URL": cert_url,
            "PAYPAL-AUTH-ALGO": "SHA256withRSA"}


def source(fetch: Any, **settings: Any) -> Source:
    src = make_source(PayPalProvider(), [], name="paypal", **{"webhook_id": WEBHOOK_ID, **settings})
    src.provider.fetch_certificate = fetch  # type: ignore[attr-defined]
    return src


def verify(src: Source, body: bytes, headers: dict[str, str]) -> None:
    src.provider.verify(body, Headers(headers), src.secrets, src.ctx)


def refused(src: Source, body: bytes, headers: dict[str, str]) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(src, body, headers)
    return caught.value


BODY = json.dumps(fixture("paypal", "PAYMENT.CAPTURE.COMPLETED")).encode()


@pytest.fixture
def fetch(cert_server: str) -> LoopbackFetch:
    return LoopbackFetch(cert_server)


class TestPayPalContract(ProviderContract):
    provider_class = PayPalProvider
    source_settings: ClassVar[dict[str, Any]] = {"webhook_id": WEBHOOK_ID}

    @pytest.fixture(autouse=True)
    def _serve(self, cert_server: str) -> None:
        self.base = cert_server

    def source(self, secrets: list[str] | None = None) -> Source:
        src = super().source(secrets)
        src.provider.fetch_certificate = LoopbackFetch(self.base)  # type: ignore[attr-defined]
        return src

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        key = KEY if secret == self.secret else OTHER_KEY
        return signed(body, key, when=datetime.fromtimestamp(timestamp, UTC))


# -- verification ---------------------------------------------------------------------------------


def test_genuine_delivery_verifies_and_the_certificate_is_fetched_once(fetch: LoopbackFetch) -> None:
    src = source(fetch)
    verify(src, BODY, signed(BODY))
    verify(src, BODY, signed(BODY))
    assert fetch.urls == [CERT_URL]


def test_the_signed_crc_is_decimal_not_hex(fetch: LoopbackFetch) -> None:
    tid, stamp = str(uuid.uuid1()), datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    hex_message = f"{tid}|{stamp}|{WEBHOOK_ID}|{zlib.crc32(BODY):08x}".encode()
    headers = {**signed(BODY, transmission_id=tid, when=datetime.fromisoformat(stamp)),
               "PAYPAL-TRANSMISSION-SIG": base64.b64encode(
                   KEY.sign(hex_message, padding.PKCS1v15(), hashes.SHA256())).decode()}
    assert refused(source(fetch), BODY, headers).code == "invalid_signature"


def test_a_certificate_of_another_key_is_refused(fetch: LoopbackFetch) -> None:
    assert refused(source(fetch), BODY, signed(BODY, cert_url=OTHER_URL)).code == "invalid_signature"


def test_another_webhook_id_is_refused(fetch: LoopbackFetch) -> None:
    assert refused(source(fetch), BODY, signed(BODY, webhook_id="OTHERWEBHOOK1")).code == "invalid_signature"


def test_a_forged_body_is_refused(fetch: LoopbackFetch) -> None:
    forged = BODY.replace(b'"49.99"', b'"99.99"')
    assert refused(source(fetch), forged, signed(BODY)).code == "invalid_signature"


@pytest.mark.parametrize("url", [
    "http://api.paypal.com/v1/notifications/certs/CERT-1",
    "https://evil.example/v1/notifications/certs/CERT-1",
    "https://api.paypal.com.evil.example/v1/notifications/certs/CERT-1",
    "https://api.paypal.com:8443/v1/notifications/certs/CERT-1",
    "https://user@api.paypal.com/v1/notifications/certs/CERT-1",
    "https://api.paypal.com/v1/oauth2/token",
    "https://127.0.0.1/v1/notifications/certs/CERT-1",
])
def test_certificates_come_only_from_paypals_hosts(fetch: LoopbackFetch, url: str) -> None:
    assert refused(source(fetch), BODY, signed(BODY, cert_url=url)).code == "invalid_signature"
    assert fetch.urls == []  # refused before any request


def test_an_unfetchable_certificate_is_verifier_unavailable(fetch: LoopbackFetch) -> None:
    missing = "https://api.paypal.com/v1/notifications/certs/CERT-unknown"
    with pytest.raises(VerifierUnavailable) as caught:
        verify(source(fetch), BODY, signed(BODY, cert_url=missing))
    assert caught.value.status_code == 503


@pytest.mark.parametrize("offset", [-400, 400])
def test_transmission_time_outside_the_tolerance_is_stale(fetch: LoopbackFetch, offset: int) -> None:
    when = datetime.now(UTC) + timedelta(seconds=offset)
    assert refused(source(fetch), BODY, signed(BODY, when=when)).code == "stale_timestamp"


def test_the_transmission_id_is_the_delivery_key(fetch: LoopbackFetch) -> None:
    """What refuses a CRC32-collided body under a genuine transmission is the core's durable
    claim of this key (tests/adapter/test_delivery_key.py), shared by every replica."""
    src, tid = source(fetch), str(uuid.uuid1())
    headers = signed(BODY, transmission_id=tid)
    verify(src, BODY, headers)
    event = src.provider.parse(BODY, Headers(headers))
    assert not isinstance(event, list) and event.delivery_key == tid
    assert src.provider.parse(BODY, Headers({})).delivery_key is None  # type: ignore[union-attr]


def test_webhook_id_is_required(make_client: Any) -> None:
    with pytest.raises(ConfigError, match="webhook_id"):
        make_client(sources={"paypal": {"provider": "paypal"}})


# -- mapping ------------------------------------------------------------------------------------


def conv(event: dict[str, Any], cert_url: str = CERT_URL) -> Any:
    return one(source(None), event, {"PAYPAL-CERT-URL": cert_url})


def test_capture_is_a_purchase_with_exact_amount_and_refs() -> None:
    sale = conv(fixture("paypal", "PAYMENT.CAPTURE.COMPLETED"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.gross_amount, sale.currency) == ("purchase", 4999, 4999, "usd")
    assert (sale.invoice_id, sale.payment_refs) == ("42311647XV020574X", ("5O190127TN364715T",))
    assert sale.external_id == "user_paypal_42"  # custom_id, a client reference without the click prefix


def test_a_prefixed_custom_id_is_a_click_id() -> None:
    event = fixture("paypal", "PAYMENT.CAPTURE.COMPLETED")
    event["resource"]["custom_id"] = "dub_id_cl_paypal_click"
    sale = conv(event)
    assert (sale.click_id, sale.external_id) == ("cl_paypal_click", None)


def test_subscription_sale_names_the_billing_agreement() -> None:
    sale = conv(fixture("paypal", "PAYMENT.SALE.COMPLETED"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.subscription_id) == ("subscription", 1200, "I-BW452GLLEP1G")


def test_capture_refund_reverses_the_capture_of_its_up_link() -> None:
    [refund] = mapped(source(None), fixture("paypal", "PAYMENT.CAPTURE.REFUNDED"))
    assert isinstance(refund, Refund)
    assert (refund.reverses, refund.amount, refund.currency, refund.includes_tax) == (
        ("42311647XV020574X",), 1000, "usd", True)
    assert refund.refund_id == "1JU08902781691411"


@pytest.mark.parametrize(("change", "error"), [({"status": "PENDING"}, Ignore),
                                               ({"amount": {"value": "10.005", "currency_code": "USD"}}, PayloadError),
                                               ({"amount": {"value": "0.00", "currency_code": "USD"}}, Ignore)])
def test_uncountable_captures(change: dict[str, Any], error: type[Exception]) -> None:
    event = fixture("paypal", "PAYMENT.CAPTURE.COMPLETED")
    event["resource"].update(change)
    with pytest.raises(error):
        conv(event)


def test_jpy_amount_is_whole_yen() -> None:
    event = fixture("paypal", "PAYMENT.CAPTURE.COMPLETED")
    event["resource"]["amount"] = {"value": "5000", "currency_code": "JPY"}
    assert conv(event).amount == 5000


def test_livemode_from_the_certificate_host_and_untracked_types() -> None:
    from adapter.ingest import parse_event
    src = source(None)
    live = parse_event(src, BODY, Headers({"PAYPAL-CERT-URL": CERT_URL}))
    sandbox = parse_event(src, BODY, Headers({"PAYPAL-CERT-URL": OTHER_URL}))
    assert (live.id, live.livemode, sandbox.livemode) == ("WH-58D329510W468432D-8HN650336L201105X", True, False)
    other = fixture("paypal", "PAYMENT.CAPTURE.COMPLETED")
    other["event_type"] = "CHECKOUT.ORDER.APPROVED"
    assert mapped(src, other) == []


# -- end to end -----------------------------------------------------------------------------------


def test_a_capture_reaches_dub_end_to_end_and_an_unfetchable_certificate_is_503(
        make_client: Any, receiver: Any, fetch: LoopbackFetch) -> None:
    client = make_client(sources={"paypal": {"provider": "paypal", "webhook_id": WEBHOOK_ID}})
    client.app.state.sources["paypal"].provider.fetch_certificate = fetch
    missing = "https://api.paypal.com/v1/notifications/certs/CERT-gone"
    r = client.post("/webhooks/paypal", content=BODY, headers=signed(BODY, cert_url=missing))
    assert r.status_code == 503 and r.json()["error"]["code"] == "verifier_unavailable"
    r = client.post("/webhooks/paypal", content=BODY, headers={**signed(BODY), "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    again = client.post("/webhooks/paypal", content=BODY, headers=signed(BODY))
    assert again.json()["status"] == "duplicate"
    sale = sent_once(receiver)
    assert (sale.body["invoiceId"], sale.body["amount"], sale.body["paymentProcessor"]) == (
        "42311647XV020574X", 4999, "custom")


def test_a_slow_certificate_fetch_does_not_hold_up_other_webhooks(
        make_client: Any, fetch: LoopbackFetch) -> None:
    """The fetch on a cache miss runs off the event loop: a Stripe webhook arriving meanwhile
    is answered at once, not after PayPal's certificate host answers."""
    import threading
    import time

    from tests.conftest import post_stripe

    def slow(url: str) -> Any:
        time.sleep(1.5)
        return fetch(url)

    client = make_client(sources={"paypal": {"provider": "paypal", "webhook_id": WEBHOOK_ID},
                                  "stripe": {"provider": "stripe", "secrets": ["whsec_test_secret_0123456789abcdef"]}})
    client.app.state.sources["paypal"].provider.fetch_certificate = slow
    answers: list[int] = []
    paypal = threading.Thread(target=lambda: answers.append(
        client.post("/webhooks/paypal", content=BODY, headers=signed(BODY)).status_code))
    paypal.start()
    time.sleep(0.3)  # PayPal's verify is now waiting on the certificate
    started = time.monotonic()
    r = post_stripe(client, fixture("stripe", "customer.created"))
    took = time.monotonic() - started
    paypal.join()
    assert r.status_code == 200 and answers == [200]
    assert took < 1.0, f"the Stripe webhook waited {took:.2f}s behind PayPal's certificate fetch"


# -- pinned certificates and signed samples (`--test-secrets`) --------------------------------------


def _pem_key(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()  # `BEGIN RSA PRIVATE KEY` is fine too


def test_secrets_block() -> dict[str, Any]:
    """The `[sources.paypal]` table `hooktrack providers paypal --test-secrets` prints."""
    result = CliRunner().invoke(main, ["providers", "paypal", "--test-secrets"])
    assert result.exit_code == 0, result.output
    assert "# note:" not in result.output, result.output
    block: dict[str, Any] = tomllib.loads(result.output)["sources"]["paypal"]
    return block


test_secrets_block.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


class NoFetch:
    """A `fetch_certificate` that records the URL and fails: with a pin, nothing may be fetched."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        raise AssertionError(f"fetched {url} although the certificate is pinned")


def build(conf: dict[str, Any], name: str = "paypal") -> Source:
    settings = parse_settings({"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"}, "sources": {name: conf}})
    return build_sources(settings, load_providers())[name]


def test_the_test_secrets_block_parses_as_toml_and_builds_a_source_that_signs() -> None:
    block = test_secrets_block()
    assert set(block) == {"provider", "webhook_id", "pinned_certificates", "sample_signing_key"}
    assert "secrets" not in block
    src = build(block)
    headers = src.provider.sign(BODY, "", int(datetime.now(UTC).timestamp()), src.ctx)
    assert headers["PAYPAL-CERT-URL"] == SAMPLE_CERT_URL and headers["PAYPAL-AUTH-ALGO"] == "SHA256withRSA"
    src.provider.fetch_certificate = NoFetch()  # type: ignore[attr-defined]
    verify(src, BODY, headers)
    assert test_secrets_block()["sample_signing_key"] != block["sample_signing_key"]  # fresh each time


@pytest.fixture
def sample_app(make_client: Any) -> tuple[Any, Source, dict[str, Any]]:
    block = test_secrets_block()
    client = make_client(sources={"paypal": block})
    src: Source = client.app.state.sources["paypal"]
    src.provider.fetch_certificate = NoFetch()  # type: ignore[attr-defined]
    return client, src, block


def test_every_sample_signed_with_the_test_secrets_is_accepted_and_its_sale_counted_at_dub(
        sample_app: tuple[Any, Source, dict[str, Any]], receiver: Any) -> None:
    client, src, _ = sample_app
    # The merchant's app tracked the sign-up of the samples' user (their `custom_id`) with Dub.
    receiver.track_lead(receiver.workspace(receiver.api_key), {
        "clickId": "cl_paypal_signup", "eventName": "Sign up", "customerExternalId": "user_paypal_42",
        "mode": "wait"})
    answers = {name: post_sample(src, name, "http://testserver", client=client)
               for name in sorted(src.provider.samples())}  # type: ignore[attr-defined]
    assert sorted(answers) == ["PAYMENT.CAPTURE.COMPLETED", "PAYMENT.CAPTURE.REFUNDED", "PAYMENT.SALE.COMPLETED"]
    assert {n: a.status_code for n, a in answers.items()} == dict.fromkeys(answers, 200), \
        {n: a.text for n, a in answers.items()}
    for sale in ("PAYMENT.CAPTURE.COMPLETED", "PAYMENT.SALE.COMPLETED"):
        assert answers[sale].json()["status"] == "accepted", answers[sale].text
    sales = wait_for(lambda: receiver.counted_sales() if len(receiver.counted_sales()) >= 2 else None, timeout=10)
    assert sorted((s.amount, s.payment_processor) for s in sales) == [(1200, "custom"), (4999, "custom")]
    assert [(r.kind, r.status, r.body) for r in receiver.requests if r.status in (400, 422)] == []
    assert src.provider.fetch_certificate.urls == []  # type: ignore[attr-defined]


def test_a_sample_signed_with_another_key_is_refused(sample_app: tuple[Any, Source, dict[str, Any]]) -> None:
    client, src, _ = sample_app
    r = post_sample(src, "PAYMENT.CAPTURE.COMPLETED", "http://testserver", client=client,
                    secret=test_secrets_block()["sample_signing_key"])  # a key of another pin
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature", r.text


def test_a_tampered_sample_is_refused(sample_app: tuple[Any, Source, dict[str, Any]]) -> None:
    client, src, _ = sample_app
    now = int(datetime.now(UTC).timestamp())
    body = src.provider.sample("PAYMENT.CAPTURE.COMPLETED", unique="tampered", now=now)  # type: ignore[attr-defined]
    headers = src.provider.sign(body, "", now, src.ctx)
    r = client.post("/webhooks/paypal", content=body.replace(b'"49.99"', b'"99.99"'), headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature", r.text
    assert client.post("/webhooks/paypal", content=body, headers=headers).json()["status"] == "accepted"


@pytest.mark.parametrize("url", [
    "https://evil.example/v1/notifications/certs/CERT-hooktrack-sample",
    "http://api.sandbox.paypal.com/v1/notifications/certs/CERT-hooktrack-sample",
    "https://api.sandbox.paypal.com/v1/oauth2/token",
])
def test_the_allow_list_holds_with_a_pinned_certificate(
        sample_app: tuple[Any, Source, dict[str, Any]], url: str) -> None:
    client, src, _ = sample_app
    now = int(datetime.now(UTC).timestamp())
    body = src.provider.sample("PAYMENT.CAPTURE.COMPLETED", unique="allowlist", now=now)  # type: ignore[attr-defined]
    headers = {**src.provider.sign(body, "", now, src.ctx), "PAYPAL-CERT-URL": url}
    r = client.post("/webhooks/paypal", content=body, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature", r.text
    assert "CERT-URL" in r.json()["error"]["message"]


def test_a_genuine_paypal_delivery_fails_against_a_throwaway_pin(fetch: LoopbackFetch) -> None:
    """A live config left with a test pin is loud: PayPal's own signature does not verify (400,
    PayPal retries and shows the failures), and nothing is fetched to paper over it."""
    block = test_secrets_block()
    src = source(fetch, pinned_certificates=block["pinned_certificates"])
    assert refused(src, BODY, signed(BODY)).code == "invalid_signature"
    assert fetch.urls == []


def test_any_pinned_certificate_verifies_during_a_rotation(fetch: LoopbackFetch) -> None:
    src = source(fetch, pinned_certificates=[OTHER_PEM.decode(), PEM.decode()])
    verify(src, BODY, signed(BODY))
    verify(src, BODY, signed(BODY, OTHER_KEY, cert_url=OTHER_URL))
    assert fetch.urls == []


def test_sign_without_a_signing_key_says_hooktrack_cannot_sign() -> None:
    src = source(None)
    with pytest.raises(NotImplementedError, match="cannot sign PayPal samples"):
        src.provider.sign(BODY, "", 0, src.ctx)


def _odd_certificate(kind: str) -> str:
    """An expired RSA certificate (`EXPIRED`) or a current one of an EC key (`EC`)."""
    key: Any = ec.generate_private_key(ec.SECP256R1()) if kind == "EC" else OTHER_KEY
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kind)])
    now = datetime.now(UTC)
    end = now - timedelta(days=1) if kind == "EXPIRED" else now + timedelta(days=30)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=60)).not_valid_after(end)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(("change", "key", "why"), [
    ({"pinned_certificates": ["not a certificate"]}, "pinned_certificates", "not a PEM certificate"),
    ({"pinned_certificates": "EXPIRED"}, "pinned_certificates", "expired"),
    ({"pinned_certificates": "EC"}, "pinned_certificates", "not an RSA certificate"),
    ({"sample_signing_key": KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")).decode()}, "sample_signing_key", "encrypted"),
    ({"sample_signing_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
     "sample_signing_key", "not a PEM private key"),
    ({"sample_signing_key": _pem_key(OTHER_KEY)}, "sample_signing_key", "does not match"),
    ({"pinned_certificates": [], "sample_signing_key": _pem_key(KEY)}, "sample_signing_key", "does not match"),
    ({"livemode": "live"}, "sample_signing_key", "livemode"),
])
def test_bad_pins_and_keys_stop_startup_naming_the_key(change: dict[str, Any], key: str, why: str) -> None:
    conf = {"provider": "paypal", "webhook_id": WEBHOOK_ID, "pinned_certificates": [PEM.decode()],
            "sample_signing_key": _pem_key(KEY), **change}
    if conf["pinned_certificates"] in ("EXPIRED", "EC"):
        conf["pinned_certificates"] = [_odd_certificate(conf["pinned_certificates"])]
    with pytest.raises(ConfigError, match=key) as caught:
        build(conf)
    assert why in str(caught.value)


def test_a_pin_without_a_signing_key_serves_an_air_gapped_host(fetch: LoopbackFetch) -> None:
    src = build({"provider": "paypal", "webhook_id": WEBHOOK_ID, "livemode": "live",
                 "pinned_certificates": [PEM.decode().replace("\n", "\\n")]})  # squeezed into one line
    src.provider.fetch_certificate = fetch  # type: ignore[attr-defined]
    verify(src, BODY, signed(BODY))
    assert fetch.urls == []
