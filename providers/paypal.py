"""PayPal REST webhooks: RSA-SHA256 signatures checked offline with PayPal's certificate.

PayPal sends `PAYPAL-TRANSMISSION-ID`, `PAYPAL-TRANSMISSION-TIME` (ISO 8601),
`PAYPAL-TRANSMISSION-SIG` (base64), `PAYPAL-CERT-URL` and `PAYPAL-AUTH-ALGO` (`SHA256withRSA`).
The signed message is `{transmission id}|{transmission time}|{webhook id}|{crc32(body)}`, the
CRC32 of the raw body as an unsigned *decimal* integer (PayPal's Java SDK `Event.validateReceivedEvent`,
`SSLUtil.crc32`; PayPal's "Integrate webhooks" guide), and `webhook_id` is the id PayPal shows
for the webhook (a source setting: PayPal's own verify API also takes it).

The certificate is fetched only over HTTPS from PayPal's API hosts (`CERT_HOSTS`, path
`/v1/notifications/certs/...`); any other `PAYPAL-CERT-URL` is refused before any request is
made. Fetched certificates are cached per source. When the certificate cannot be fetched the
delivery is answered 503 (`VerifierUnavailable`) so PayPal retries (up to 25 times over 3 days).
The fetch is `PayPalProvider.fetch_certificate`, a callable `url -> PEM bytes`, replaceable per
instance (tests serve their own certificate on loopback; nothing else ever fetches).

`pinned_certificates` (PEM, optional; several during a rotation, any match passes) replaces the
fetch: the signature is checked against them and nothing is fetched (air-gapped hosts; local
testing). `PAYPAL-CERT-URL` must still name PayPal's certificate hosts, so nothing else about a
delivery is trusted more. A pin cannot be checked offline to be PayPal's: a wrong one makes every
genuine delivery fail (400, PayPal retries and shows the failures), loud rather than a door, unless
its private key is at hand. `sample_signing_key` (PEM private key, optional) is such a key: it signs
`hooktrack send` samples, must match a pinned certificate, and is refused in a `livemode = "live"`
source. `test_source()` makes both fresh (a self-signed throwaway, never PayPal's).

`PAYPAL-TRANSMISSION-TIME` must be within the source's `tolerance_s` of now. The signature covers
only a CRC32 of the body, which is not a cryptographic digest: whoever captures one genuine
delivery can rewrite its body (another event id, capture id, amount) to the same CRC32 and replay
it under the same headers within the tolerance. So besides the event's `id` (`WH-...`, the
delivery id), `parse` gives `PAYPAL-TRANSMISSION-ID` as the event's `delivery_key`: the core claims
it in the transaction that stores the event, in the store every replica shares, and refuses the
same transmission id with another body (400 `replayed_transmission`, recorded as rejected without
its body, never counted); the same body again is a redelivery (`duplicate` by event id).

Sales (tax `included`: PayPal amounts are what the buyer paid, with any tax in them):
`PAYMENT.CAPTURE.COMPLETED` (Orders v2 capture, `amount {value, currency_code}`; invoice = the
capture id, payment refs = its order id from `supplementary_data.related_ids.order_id` or the
`up` link) and `PAYMENT.SALE.COMPLETED` (v1 sale, subscription payments: `amount {total,
currency}`; `billing_agreement_id` is the subscription). Identity: the merchant's `custom_id`
(v2) or `custom` (v1) as a client reference (`dub_id_<click id>` is a click id, anything else
the user id). Refunds: `PAYMENT.CAPTURE.REFUNDED` (reverses the
capture named by the refund's `up` link) and `PAYMENT.SALE.REFUNDED` (`sale_id`). `livemode`:
False for certificates from the sandbox hosts.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from adapter.attribution import ClientReferenceSettings
from adapter.errors import ConfigError, Ignore, PayloadError, SignatureError, VerifierUnavailable
from adapter.events import Mapped, ProviderEvent, Refund, Sale
from adapter.money import to_minor
from adapter.payload import compact, iso_time, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import check_freshness, timestamp_seconds
from providers.paypal_certs import load_certificate, load_private_key, rsa_key, self_signed, sign, signed_by

__all__ = ["CERT_HOSTS", "SAMPLE_CERT_URL", "PayPalProvider", "PayPalSettings", "fetch_over_https",
           "signed_message"]

CERT_HOSTS = frozenset({"api.paypal.com", "api-m.paypal.com", "api.sandbox.paypal.com", "api-m.sandbox.paypal.com"})
"""The hosts PayPal's `PAYPAL-CERT-URL` names (live and sandbox, classic and `api-m`)."""
_CERT_PATH = "/v1/notifications/certs/"
_SANDBOX = frozenset({"api.sandbox.paypal.com", "api-m.sandbox.paypal.com"})
_HEADERS = ("transmission-id", "transmission-time", "transmission-sig", "cert-url", "auth-algo")
_MAX_CERT_BYTES = 64 * 1024
_CACHED = 16
SAMPLE_CERT_URL = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-hooktrack-sample"
"""The `PAYPAL-CERT-URL` of signed samples: a sandbox host (samples are test events), and only a
name with a pin (verification uses `pinned_certificates`, it fetches nothing)."""
_CANNOT_SIGN = (
    "PayPal signs with its own private key, whose certificate hooktrack fetches only from PayPal's "
    "hosts, so hooktrack cannot sign PayPal samples; use the developer dashboard's "
    "webhook simulator or a sandbox payment instead (or, for local testing, a source with the throwaway "
    "pinned_certificates and sample_signing_key that `hooktrack providers paypal --test-secrets` prints)")

CertificateFetcher = Callable[[str], bytes]


class PayPalSettings(ClientReferenceSettings):
    """`webhook_id`: the webhook's id in PayPal's developer dashboard (part of what is signed);
    `client_reference_prefix` (default `dub_id_`): a `custom_id` with it is a click id;
    `pinned_certificates` and `sample_signing_key` (optional, PEM): see the module docstring.
    Startup refuses a pin that is not a PEM RSA certificate or has expired, and a signing key that
    is not an unencrypted PEM RSA key or matches no pin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_id: str = Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9]+$")
    pinned_certificates: list[str] = Field(default_factory=list)
    """PEM certificates verification uses instead of fetching `PAYPAL-CERT-URL` (any match passes)."""
    sample_signing_key: str | None = None
    """PEM RSA private key of a pinned certificate: signs `hooktrack send` samples, nothing else."""

    @field_validator("pinned_certificates")
    @classmethod
    def _certificates(cls, pems: list[str]) -> list[str]:
        now = datetime.now(UTC)
        for index, pem in enumerate(pems):
            try:
                cert = load_certificate(pem)
            except ValueError as exc:
                raise ValueError(f"[{index}] {exc}") from None
            if cert.not_valid_after_utc < now:
                raise ValueError(f"[{index}] expired on {cert.not_valid_after_utc:%Y-%m-%d}: it can verify nothing")
        return pems

    @field_validator("sample_signing_key")
    @classmethod
    def _signing_key(cls, pem: str | None, info: ValidationInfo) -> str | None:
        if pem is None:
            return None
        public = load_private_key(pem).public_key().public_numbers()
        pins = info.data.get("pinned_certificates")
        if pins is None:  # pinned_certificates itself was refused: that error says why
            return pem
        if not any(rsa_key(load_certificate(p)).public_numbers() == public for p in pins):
            raise ValueError("does not match any of pinned_certificates (pin this key's certificate): "
                             "samples signed with it would be refused")
        return pem


def fetch_over_https(url: str) -> bytes:
    """GET `url` (already checked against `CERT_HOSTS`) over HTTPS with certificate checks, no
    redirects, a 5 s timeout and a size limit. Raises on any failure."""
    with httpx.Client(timeout=5, follow_redirects=False, verify=True) as client:
        response = client.get(url)
        response.raise_for_status()
        if len(response.content) > _MAX_CERT_BYTES:
            raise ValueError("certificate response too large")
        return response.content


def signed_message(transmission_id: str, transmission_time: str, webhook_id: str, body: bytes) -> bytes:
    """What PayPal signs: `id|time|webhook_id|crc32`, the CRC32 of the raw body in decimal."""
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body)}".encode()


def cert_url_allowed(url: str) -> bool:
    """HTTPS, a PayPal API host on the default port, no credentials, under the certs path."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and (parts.hostname or "") in CERT_HOSTS and port in (None, 443)
            and not parts.username and not parts.password and parts.path.startswith(_CERT_PATH)
            and ".." not in parts.path and not parts.query and not parts.fragment)


class PayPalProvider(SamplesMixin, Provider):
    """PayPal: `PAYPAL-TRANSMISSION-*` headers, RSA-SHA256 over `id|time|webhook_id|crc32(body)`,
    certificate from PayPal's hosts only. Needs the `webhook_id` setting, no secrets."""

    name = "paypal"
    requires_secrets = False
    verify_may_block = True  # the certificate fetch on a cache miss (up to its timeout)
    settings_model = PayPalSettings
    tax: ClassVar[str] = "included"

    def __init__(self) -> None:
        self.fetch_certificate: CertificateFetcher = fetch_over_https
        self._certs: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def configure(self, ctx: SourceContext) -> None:
        """Refuse a sample-signing key in a live source: whoever holds it could sign live events.
        Raises `ConfigError` naming `sample_signing_key`."""
        super().configure(ctx)
        options: PayPalSettings | None = ctx.options
        if options is not None and options.sample_signing_key is not None and ctx.settings.livemode == "live":
            raise ConfigError(f"sources.{ctx.source}.sample_signing_key: a key that signs samples does not belong "
                              "in a livemode = \"live\" source (anyone holding it could sign deliveries); "
                              "remove it, and the test certificate from pinned_certificates")

    def check_secrets(self, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Secrets are not used (PayPal signs with its own key); `webhook_id` is required."""

    # -- verification ------------------------------------------------------------------

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        values = {h: (headers.get(f"paypal-{h}") or "").strip() for h in _HEADERS}
        for header, value in values.items():
            if not value:
                raise SignatureError("missing_signature", f"No PAYPAL-{header.upper()} header")
        if values["auth-algo"] != "SHA256withRSA":
            raise SignatureError("invalid_signature", "PAYPAL-AUTH-ALGO is not SHA256withRSA")
        when = timestamp_seconds(values["transmission-time"], "any")
        if when is None:
            raise SignatureError("invalid_signature", "PAYPAL-TRANSMISSION-TIME is not an ISO 8601 time")
        check_freshness(when, ctx.settings.tolerance_s)
        if not cert_url_allowed(values["cert-url"]):
            raise SignatureError("invalid_signature",
                                 "PAYPAL-CERT-URL is not an HTTPS URL of PayPal's certificate hosts")
        try:
            signature = base64.b64decode(values["transmission-sig"], validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("invalid_signature", "PAYPAL-TRANSMISSION-SIG is not base64") from None
        options: PayPalSettings = ctx.options
        message = signed_message(values["transmission-id"], values["transmission-time"], options.webhook_id, body)
        if not any(signed_by(cert, signature, message) for cert in self._certificates(values["cert-url"], options)):
            raise SignatureError("invalid_signature", "PAYPAL-TRANSMISSION-SIG does not match the body "
                                 "for this webhook_id")

    def _certificates(self, url: str, options: PayPalSettings) -> list[x509.Certificate]:
        """The pinned certificates valid now (nothing is fetched), else the one `url` names."""
        if not options.pinned_certificates:
            return [self._certificate(url)]
        now = datetime.now(UTC)
        valid = [c for c in map(load_certificate, options.pinned_certificates)
                 if c.not_valid_before_utc <= now <= c.not_valid_after_utc]
        if not valid:
            raise SignatureError("invalid_signature", "no certificate of pinned_certificates is valid now")
        return valid

    def _certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            cached = self._certs.get(url)
        now = datetime.now(UTC)
        if cached is not None and cached.not_valid_after_utc > now:
            return cached
        try:
            cert = x509.load_pem_x509_certificate(self.fetch_certificate(url))
        except Exception as exc:  # network, TLS, HTTP status, not a PEM certificate: PayPal retries
            raise VerifierUnavailable(
                f"PayPal's signing certificate could not be fetched ({type(exc).__name__})") from None
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SignatureError("invalid_signature", "PayPal's certificate is not valid now")
        with self._lock:
            self._certs[url] = cert
            while len(self._certs) > _CACHED:
                self._certs.popitem(last=False)
        return cert

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """The headers PayPal would send, signed with the source's `sample_signing_key`, or with
        `secret` when it is a PEM private key (`post_sample(..., secret=other_key)` forges one;
        PayPal sources have no secrets, so any other `secret` is unused). Raises
        `NotImplementedError` without a key: only PayPal holds PayPal's."""
        options: PayPalSettings | None = ctx.options
        key = secret if "PRIVATE KEY-----" in secret else options.sample_signing_key if options else None
        if options is None or key is None:
            raise NotImplementedError(_CANNOT_SIGN)
        transmission_id = str(uuid.uuid1())  # PayPal's are time-based UUIDs
        stamp = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = signed_message(transmission_id, stamp, options.webhook_id, body)
        signature = sign(key, message)
        return {"PAYPAL-TRANSMISSION-ID": transmission_id, "PAYPAL-TRANSMISSION-TIME": stamp,
                "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
                "PAYPAL-CERT-URL": SAMPLE_CERT_URL, "PAYPAL-AUTH-ALGO": "SHA256withRSA"}

    # -- parse and map -------------------------------------------------------------------

    def test_source(self) -> dict[str, Any]:
        """A throwaway webhook id, a fresh self-signed certificate pinned and its private key as
        `sample_signing_key` (valid a year; never PayPal's, so real deliveries fail against it)."""
        cert, key = self_signed("hooktrack PayPal sample signer (not PayPal)", days=365)
        return {"webhook_id": "HOOKTRACKTEST" + secrets.token_hex(6).upper(),
                "pinned_certificates": [cert], "sample_signing_key": key}

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by its `id` (`WH-...`), typed by `event_type`, timed by `create_time`; its
        `delivery_key` is `PAYPAL-TRANSMISSION-ID` (signed with the body's CRC32).

        Raises `PayloadError` without `id`, `event_type` or a `resource` object.
        """
        data = self.json_body(body)
        event_id, event_type = text(data.get("id")), text(data.get("event_type"))
        if event_id is None or event_type is None or not isinstance(data.get("resource"), dict):
            raise PayloadError("PayPal event without `id`, `event_type` and a `resource` object")
        host = urlsplit(headers.get("paypal-cert-url") or "").hostname or ""
        livemode = None if host not in CERT_HOSTS else host not in _SANDBOX
        occurred = iso_time(data.get("create_time"))
        return ProviderEvent(id=event_id, type=event_type, livemode=livemode, data=data,
                             occurred_at=occurred or datetime.now(UTC),
                             delivery_key=(headers.get("paypal-transmission-id") or "").strip() or None)

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """Captures and sales → Sale; their refunds → Refund; `[]` for other types.

        Raises `Ignore("unpaid")` for a capture or sale not completed, `Ignore("zero_amount")`
        for one of nothing.
        """
        res: dict[str, Any] = event.data["resource"]
        if event.type == "PAYMENT.CAPTURE.COMPLETED":
            return [self._capture(res)]
        if event.type == "PAYMENT.SALE.COMPLETED":
            return [self._sale(res)]
        if event.type == "PAYMENT.CAPTURE.REFUNDED":
            capture = _link_id(res, "up")
            return [self._refund(res, capture, _money(res, "value", "currency_code"))]
        if event.type == "PAYMENT.SALE.REFUNDED":
            return [self._refund(res, text(res.get("sale_id")), _money(res, "total", "currency"))]
        return []

    def _capture(self, res: dict[str, Any]) -> Sale:
        if text(res.get("status")) != "COMPLETED":
            raise Ignore("unpaid")
        capture_id = text(res.get("id"))
        if capture_id is None:
            raise PayloadError("PAYMENT.CAPTURE.COMPLETED without a capture `id`")
        amount, currency = _money(res, "value", "currency_code")
        related = mapping(mapping(res.get("supplementary_data")).get("related_ids"))
        order_id = text(related.get("order_id")) or _link_id(res, "up")
        return _sale(
            "purchase", amount, currency, capture_id, refs=(order_id,), subscription=None,
            reference=text(res.get("custom_id")),
            metadata=compact(orderId=order_id, merchantInvoiceId=text(res.get("invoice_id"))),
        )

    def _sale(self, res: dict[str, Any]) -> Sale:
        if text(res.get("state")) != "completed":
            raise Ignore("unpaid")
        sale_id = text(res.get("id"))
        if sale_id is None:
            raise PayloadError("PAYMENT.SALE.COMPLETED without a sale `id`")
        amount, currency = _money(res, "total", "currency")
        agreement = text(res.get("billing_agreement_id"))
        payment = text(res.get("parent_payment"))
        return _sale(
            "subscription" if agreement else "purchase", amount, currency, sale_id, refs=(payment,),
            subscription=agreement, reference=text(res.get("custom")),
            metadata=compact(parentPayment=payment, merchantInvoiceId=text(res.get("invoice_number"))),
        )

    def _refund(self, res: dict[str, Any], reverses: str | None, money: tuple[int, str]) -> Refund:
        if reverses is None:
            raise PayloadError("PayPal refund without the payment it refunds (`up` link / `sale_id`)")
        status = text(res.get("status")) or text(res.get("state"))
        if status is not None and status.upper() != "COMPLETED":
            raise Ignore("refund_not_completed")
        amount, currency = money
        return Refund(reverses=(reverses,), amount=amount, currency=currency, includes_tax=True,
                      refund_id=text(res.get("id")))

    # -- samples ------------------------------------------------------------------------

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["id"] = f"WH-{unique.upper()}"
        data["create_time"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
        resource = mapping(data.get("resource"))
        if "id" in resource:
            resource["id"] = f"{resource['id'][:8]}{unique.upper()}"


def _sale(kind: Any, amount: int, currency: str, invoice: str, *, refs: tuple[str | None, ...],
          subscription: str | None, reference: str | None, metadata: dict[str, Any]) -> Sale:
    if amount <= 0:
        raise Ignore("zero_amount")
    return Sale(kind=kind, amount=amount, gross_amount=amount, currency=currency, invoice_id=invoice,
                subscription_id=subscription, payment_refs=tuple(r for r in refs if r and r != invoice),
                client_reference=reference, metadata=metadata)


def _money(res: dict[str, Any], value_key: str, currency_key: str) -> tuple[int, str]:
    """`amount {value, currency_code}` (v2) or `{total, currency}` (v1), exactly, in minor units."""
    amount = mapping(res.get("amount"))
    value, currency = text(amount.get(value_key)), text(amount.get(currency_key))
    if value is None or currency is None:
        raise PayloadError(f"PayPal `amount` without `{value_key}` and `{currency_key}`")
    try:
        return to_minor(value, currency), currency
    except ValueError as exc:
        raise PayloadError(f"PayPal amount {value!r} {currency}: {exc}") from None


def _link_id(res: dict[str, Any], rel: str) -> str | None:
    """The last path segment of the HATEOAS link `rel` (`up` of a refund names its capture)."""
    links = res.get("links")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("rel") == rel:
            href = text(link.get("href"))
            if href:
                return text(urlsplit(href).path.rstrip("/").rpartition("/")[2])
    return None
