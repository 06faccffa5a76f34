"""Paddle Classic alerts: form posts signed with Paddle's RSA key (`p_signature`).

`p_signature` is base64 RSA-SHA1 (PKCS#1 v1.5) over the PHP `serialize()` of every other field,
sorted by name, values as strings — Paddle's documented algorithm
(https://developer.paddle.com/webhook-reference/verifying-webhooks, also
https://classic.paddle.com/webhooks/verifying-webhooks/: "remove p_signature, ksort() the fields,
serialize, verify with SHA1 and your public key"). It is checked with the vendor public key, the
source setting `public_key` (PEM, Developer Tools → Public Key). Paddle holds the private key, so
hooktrack cannot sign real alerts. `sample_signing_key` (PEM RSA private key, optional) is only for
trying hooktrack locally: it signs the built-in samples (`sign_fields`, over the same
`signed_data` the verifier checks), must be the private half of `public_key`, and is refused in a
`livemode = "live"` source. `test_source()` makes a fresh pair (never Paddle's, so real alerts
fail against it). Without the key, signing raises NotImplementedError saying what to do instead.
The scheme has no timestamp; delivery dedup on `alert_id` stops replays from counting twice.

Sales: `payment_succeeded` (a one-time order) and `subscription_payment_succeeded` (each paid
cycle; `initial_payment` kept as metadata, the core names creation and renewal). The amount is
`sale_gross - payment_tax`, decimal strings in `currency` converted exactly; `invoiceId` is
`order_id` for both, so if Paddle sent both for one order they would be one Sale.
The Sale's `gross_amount` is `sale_gross`; a subscription payment also remembers
`subscription_payment:<subscription_payment_id>`, a one-time order its `checkout_id`.
Refunds: `payment_refunded` and `subscription_payment_refunded` reverse `order_id` (and those
ids); `refund_type` `full` refunds the whole Sale, otherwise the amount is `gross_refund -
tax_refund` (net of tax, exact); a VAT-only refund returns none of the Sale (`zero_amount`).
Click and user ids come from `passthrough`: a JSON object is read with the source's keys; any
other string is a click id when it has the `dub_id_` prefix (`client_reference_prefix`), else
the merchant's user id — the rule Stripe's `client_reference_id` follows. `user_id` is Paddle's
own customer id. Sandbox and live are separate vendor accounts, so `livemode` is None.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import ValidationInfo, field_validator

from adapter.attribution import ClientReferenceSettings
from adapter.errors import ConfigError, Ignore, PayloadError, SignatureError
from adapter.events import Mapped, ProviderEvent, Refund, Sale, SaleKind
from adapter.money import to_minor
from adapter.payload import compact, json_value
from adapter.pem import pem_bytes, rsa_private_key
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from providers.forms import FORM_CONTENT_TYPE, encode_form, parse_form, sample_fields

__all__ = ["PaddleClassicProvider", "PaddleClassicSettings", "php_serialize", "sign_fields", "signed_data"]

_SALES = frozenset({"payment_succeeded", "subscription_payment_succeeded"})
_REFUNDS = frozenset({"payment_refunded", "subscription_payment_refunded"})
_CANNOT_SIGN = (
    "hooktrack cannot sign Paddle Classic alerts: Paddle signs them with its own private key, so use "
    "Paddle's Webhook Alert Simulator (Developer Tools) to send signed test alerts instead; or, to try "
    "hooktrack locally, use the throwaway source `hooktrack providers paddle_classic --test-secrets` "
    "prints (a public_key with its sample_signing_key)")


@functools.lru_cache(maxsize=16)
def _load_key(pem: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem_bytes(pem))
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("public_key is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("public_key is not an RSA key")
    return key


def _load_private_key(pem: str) -> rsa.RSAPrivateKey:
    return rsa_private_key(pem, "Paddle Classic signs RSA-SHA1")


def _is_private_pem(text: str) -> bool:
    return "PRIVATE KEY-----" in text


class PaddleClassicSettings(ClientReferenceSettings):
    """`public_key`: the vendor's RSA public key in PEM, from Paddle's Developer Tools;
    `client_reference_prefix` (default `dub_id_`), which makes a plain `passthrough` a click id."""

    public_key: str
    sample_signing_key: str | None = None
    """PEM RSA private key of `public_key`: signs `hooktrack send` samples, nothing else."""

    @field_validator("public_key")
    @classmethod
    def _pem(cls, value: str) -> str:
        _load_key(value)
        return value

    @field_validator("sample_signing_key")
    @classmethod
    def _signing_key(cls, pem: str | None, info: ValidationInfo) -> str | None:
        if pem is None:
            return None
        public = _load_private_key(pem).public_key().public_numbers()
        verifying = info.data.get("public_key")
        if verifying is None:  # public_key itself was refused: that error says why
            return pem
        if _load_key(verifying).public_numbers() != public:
            raise ValueError("is not the private key of public_key: samples signed "
                             "with it would be refused")
        return pem


def php_serialize(fields: Sequence[tuple[str, str]]) -> bytes:
    """PHP's `serialize()` of an array of string keys and string values, in the given order.

    Lengths are in UTF-8 bytes, as PHP counts them. (PHP would turn a decimal-integer key like
    "12" into an integer key; Paddle sends no such field names.)
    """
    out = [b"a:%d:{" % len(fields)]
    for key, value in fields:
        for text in (key, value):
            raw = text.encode("utf-8")
            out.append(b's:%d:"%s";' % (len(raw), raw))
    out.append(b"}")
    return b"".join(out)


def signed_data(fields: dict[str, str]) -> bytes:
    """The bytes Paddle signs: every field but `p_signature`, sorted by name, PHP-serialised."""
    return php_serialize(sorted((k, v) for k, v in fields.items() if k != "p_signature"))


def sign_fields(fields: dict[str, str], private_pem: str) -> str:
    """`p_signature` as Paddle computes it: base64 RSA-SHA1 (PKCS#1 v1.5) of `signed_data(fields)`
    with the PEM private key `private_pem`. Raises `ValueError` for a key that is not RSA PEM."""
    key = _load_private_key(private_pem)  # SHA-1 is Paddle Classic's scheme, not our choice
    return base64.b64encode(key.sign(signed_data(fields), padding.PKCS1v15(), hashes.SHA1())).decode()  # noqa: S303


def _event_time(value: str | None) -> datetime:
    # Paddle Classic sends "2024-04-10 10:36:52", in UTC.
    try:
        return datetime.strptime(value or "", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        shown = (value or "")[:30]
        raise PayloadError(f"Paddle Classic `event_time` is not 'YYYY-MM-DD HH:MM:SS': {shown!r}") from None


class PaddleClassicProvider(SamplesMixin, Provider):
    """Paddle Classic: `p_signature`, RSA-SHA1 over the PHP-serialised sorted form fields."""

    name = "paddle_classic"
    cancellations = frozenset({"subscription_cancelled"})
    invoice_ids = "account"  # `order_id` is a numeric order number (`8511230-4399001`) of the vendor
    requires_secrets = False
    settings_model = PaddleClassicSettings

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Check `p_signature` against the source's `public_key`. Raises `SignatureError`:
        `missing_signature` (no field), `invalid_signature` (not base64, or no match)."""
        try:
            fields = parse_form(body)
        except PayloadError:
            raise SignatureError("missing_signature", "Body is not a form with a p_signature field") from None
        encoded = fields.get("p_signature")
        if not encoded:
            raise SignatureError("missing_signature", "No p_signature field")
        try:  # a form decoder that turned base64's "+" into spaces is forgiven
            signature = base64.b64decode(encoded.replace(" ", "+"), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("invalid_signature", "p_signature is not base64") from None
        settings: PaddleClassicSettings = ctx.options
        try:  # SHA-1 is Paddle Classic's scheme, not our choice
            _load_key(settings.public_key).verify(
                signature, signed_data(fields), padding.PKCS1v15(), hashes.SHA1()  # noqa: S303
            )
        except InvalidSignature:
            raise SignatureError("invalid_signature", "p_signature does not match the fields and public_key") from None

    def configure(self, ctx: SourceContext) -> None:
        """Refuse a sample-signing key in a live source: whoever holds it could sign alerts.
        Raises `ConfigError` naming `sample_signing_key`."""
        super().configure(ctx)
        options: PaddleClassicSettings | None = ctx.options
        if options is not None and options.sample_signing_key is not None and ctx.settings.livemode == "live":
            raise ConfigError(f"sources.{ctx.source}.sample_signing_key: a key that signs samples does not belong "
                              "in a livemode = \"live\" source (anyone holding it could sign alerts); remove it, "
                              "and put Paddle's public key in public_key")

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """No headers: the signature is the body's `p_signature` field, which `sign_sample` adds.
        Raises `NotImplementedError` (what to do instead) unless the source has a
        `sample_signing_key` or `secret` is a PEM private key (a forgery in tests)."""
        options: PaddleClassicSettings | None = ctx.options
        if not _is_private_pem(secret) and (options is None or options.sample_signing_key is None):
            raise NotImplementedError(_CANNOT_SIGN)
        return {}

    def sign_sample(self, body: bytes, secret: str) -> bytes:
        """The form with `p_signature` appended, signed with `secret` when it is a PEM private key
        (`post_sample(..., secret=other_key)` forges one), else with the source's
        `sample_signing_key`; the body unchanged without either (`sign` then says why)."""
        options: PaddleClassicSettings | None = self.ctx.options if self.ctx is not None else None
        key = secret if _is_private_pem(secret) else options.sample_signing_key if options else None
        if key is None:
            return body
        fields = {k: v for k, v in parse_form(body).items() if k != "p_signature"}
        return encode_form({**fields, "p_signature": sign_fields(fields, key)})

    def test_source(self) -> dict[str, Any]:
        """A fresh RSA-2048 pair: `public_key` and its private key as `sample_signing_key`
        (never Paddle's, so real alerts fail against it)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return {"public_key": public.decode(), "sample_signing_key": private.decode()}

    def samples(self) -> dict[str, bytes]:
        """Samples as form bodies without `p_signature` (stored as JSON objects of the fields)."""
        return {name: encode_form(sample_fields(raw)) for name, raw in super().samples().items()}

    def sample(self, name: str, *, unique: str, now: int) -> bytes:
        """Sample `name` made fresh by `refresh_sample`, as a form body (unsigned: `sign_sample`)."""
        fields = sample_fields(super().samples()[name])
        self.refresh_sample(fields, unique, now)
        return encode_form(fields)

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        """A fresh `alert_id`, `order_id` (Dub's invoice id), `subscription_payment_id` where there
        is one, and `event_time` now, in Paddle's formats."""
        number = int(hashlib.sha256(unique.encode()).hexdigest()[:12], 16) % 10**9
        data.update(alert_id=str(number), order_id=f"{number}-{number % 9973}",
                    event_time=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S"))
        if "subscription_payment_id" in data:
            data["subscription_payment_id"] = str(number % 10**8)

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        return {"Content-Type": FORM_CONTENT_TYPE}

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The alert by `alert_id`, typed by `alert_name`, at `event_time` (UTC)."""
        fields = parse_form(body)
        alert_id, alert_name = fields.get("alert_id", "").strip(), fields.get("alert_name", "").strip()
        if not alert_id or not alert_name:
            raise PayloadError("Paddle Classic alert without `alert_id` and `alert_name`")
        data = {k: v for k, v in fields.items() if k != "p_signature"}
        return ProviderEvent(id=alert_id, type=alert_name, occurred_at=_event_time(fields.get("event_time")),
                             livemode=None, data=data)

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`payment_succeeded` and `subscription_payment_succeeded` → Sale, `payment_refunded` and
        `subscription_payment_refunded` → Refund; `[]` for other alerts. Raises
        `Ignore("zero_amount")` for a payment (or a refund) of nothing once tax is taken off."""
        fields: dict[str, str] = event.data
        if event.type in _REFUNDS:
            return [_refund(event.type, fields)]
        if event.type not in _SALES:
            return []
        currency = fields.get("currency", "")
        gross, tax = to_minor(fields["sale_gross"], currency), to_minor(fields.get("payment_tax") or "0", currency)
        if gross < 0 or tax < 0:  # a negative tax would inflate the amount (issue 12)
            raise PayloadError(f"alert with a negative sale_gross or payment_tax ({gross}, {tax})")
        if gross - tax <= 0:
            raise Ignore("zero_amount")
        subscription = (fields.get("subscription_id") or "").strip() or None
        if event.type == "payment_succeeded":
            subscription = None  # a one-time order, whatever else the alert mentions
        elif subscription is None:
            raise PayloadError("subscription_payment_succeeded without `subscription_id`")
        kind: SaleKind = "subscription" if subscription else "purchase"
        initial = fields.get("initial_payment")  # "true"/"false" in Paddle's payloads; "1" read as true too
        first = initial.strip().lower() in ("1", "true") if initial and subscription else None
        return [Sale(
            kind=kind,
            amount=gross - tax,
            currency=currency,
            invoice_id=fields["order_id"],
            payment_refs=_refs(event.type, fields),
            gross_amount=gross,
            subscription_id=subscription,
            provider_customer_id=(fields.get("user_id") or "").strip() or None,
            email=(fields.get("email") or "").strip() or None,
            name=(fields.get("customer_name") or "").strip() or None,
            **_passthrough_hints(fields.get("passthrough")),
            metadata=compact(subscriptionId=subscription, taxAmount=tax,
                              subscriptionPaymentId=fields.get("subscription_payment_id") or None,
                              initialPayment=first,
                              checkoutId=fields.get("checkout_id") or None),
        )]


def _refs(alert: str, fields: dict[str, str]) -> tuple[str, ...]:
    """Other ids of one payment: its subscription payment, or a one-time order's checkout (a
    subscription's `checkout_id` is its first checkout, shared by every cycle: not used)."""
    if alert.startswith("subscription_"):
        payment = (fields.get("subscription_payment_id") or "").strip()
        return (f"subscription_payment:{payment}",) if payment else ()
    checkout = (fields.get("checkout_id") or "").strip()
    return (checkout,) if checkout else ()


def _refund(alert: str, fields: dict[str, str]) -> Refund:
    """A refund alert: the whole Sale (`refund_type` full) or `gross_refund - tax_refund`."""
    order_id, currency = (fields.get("order_id") or "").strip(), (fields.get("currency") or "").strip()
    if not order_id or not currency:
        raise PayloadError(f"{alert} without `order_id` and `currency`")
    refund_type = (fields.get("refund_type") or "").strip()
    amount: int | None = None
    if refund_type != "full":
        gross = to_minor(fields.get("gross_refund") or fields.get("amount") or "0", currency)
        amount = gross - to_minor(fields.get("tax_refund") or "0", currency)
        if amount <= 0:
            raise Ignore("zero_amount")
    return Refund(reverses=(order_id, *_refs(alert, fields)), amount=amount, currency=currency,
                  metadata=compact(refundType=refund_type or None,
                                   refundReason=(fields.get("refund_reason") or "").strip() or None))


def _passthrough_hints(passthrough: str | None) -> dict[str, Any]:
    """Where identity lives in `passthrough`: a JSON object is metadata, any other value is one
    client reference (a click id with the prefix, else the merchant's user id)."""
    raw = (passthrough or "").strip()
    if not raw:
        return {}
    try:
        decoded = json_value(raw)
    except (ValueError, RecursionError):
        decoded = raw
    if isinstance(decoded, dict):
        return {"metadata_sources": (decoded,)}
    if isinstance(decoded, str) and decoded.strip():
        raw = decoded.strip()  # a JSON-quoted string: its content
    return {"client_reference": raw}
