"""App Store Server Notifications V2: JWS verified with Apple's `app-store-server-library`.

The body is `{"signedPayload": "<JWS>"}`: an ES256 JWS whose `x5c` header carries Apple's leaf
and intermediate certificates. Its payload's `data` holds two more JWS of the same kind,
`signedTransactionInfo` and `signedRenewalInfo`. `verify` checks all three with Apple's own
`SignedDataVerifier` (online OCSP checks off) against the source's `root_certificates`, for the
source's `bundle_id`, `environment` and, in Production, `app_apple_id`: the chain must end at a
configured root, the leaf carry Apple's OID 1.2.840.113635.100.6.11.1 and the intermediate
1.2.840.113635.100.6.2.1, and the certificates be valid at the payload's `signedDate` (the
library's rule when online checks are off). Nothing unverified reaches `parse` or `map`.

`root_certificates` is a list; each entry is either PEM text (`-----BEGIN CERTIFICATE-----`,
one or more certificates) or the path of a file holding PEM or DER (Apple publishes
`AppleRootCA-G3.cer`, DER, at apple.com/certificateauthority). `environment` is `Production` or
`Sandbox`: the library's `Xcode` and `LocalTesting` environments skip signature checks, so
hooktrack refuses them. Apple retries a notification for up to three days, so no freshness
window is applied to `signedDate`; a replay is a duplicate by `notificationUUID`.

Samples: only Apple holds Apple's keys, so hooktrack signs the built-in samples only for a
Sandbox source with a `sample_signing_key` (a PEM: private key, leaf and intermediate
certificates of a chain shaped like Apple's, `providers/appstore_chain.py`), as the throwaway
source `hooktrack providers appstore --test-secrets` prints does. The key only signs samples;
verification stays Apple's library against `root_certificates`, and the key is refused at
startup unless its chain verifies against them (else every send would be a 400).

Mapping (tax `included`: `price` is what the customer paid, any tax in it):
- `SUBSCRIBED` → Sale (kind `subscription`, starts it), or, for a free trial (`offerDiscountType`
  `FREE_TRIAL` or `price` 0), a `Started Trial` Lead, so the first `DID_RENEW` is named the creation;
- `DID_RENEW` → Sale (a cycle payment), `ONE_TIME_CHARGE` → Sale (`purchase`);
- `REFUND` → Refund of `transactionId` (whole, or `revocationPercentage` in milli-percent of it);
- everything else (`TEST`, `DID_CHANGE_RENEWAL_STATUS`, `EXPIRED`, ...) is not tracked.
`price` is in milli-units of `currency` (4990 = 4.99): converted exactly to ISO minor units (a
price that is not a whole number of minor units is a `PayloadError`). Invoice = `transactionId`,
subscription = `originalTransactionId` (also a payment ref); `appAccountToken` (the UUID the app
sets at purchase) is the app's user id (`external_id`). `livemode` is True for Production.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import jwt
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier, VerificationException
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Lead, Mapped, ProviderEvent, Refund, Sale
from adapter.money import rescale
from adapter.payload import compact, epoch_time, integer, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from providers.appstore_chain import Chain, signing_chain

__all__ = ["AppStoreProvider", "AppStoreSettings", "load_roots"]

_PEM = "-----BEGIN CERTIFICATE-----"


def load_roots(entries: Sequence[str]) -> list[bytes]:
    """Each entry's certificates as DER: PEM text, or a PEM/DER file's path. ValueError naming
    the entry (by position) that is neither."""
    ders: list[bytes] = []
    for n, entry in enumerate(entries):
        if _PEM in entry:
            raw = entry.encode()
        else:
            try:
                raw = Path(entry).expanduser().read_bytes()
            except OSError as exc:
                raise ValueError(f"root_certificates[{n}]: cannot read {entry!r} ({exc.strerror})") from None
        try:
            pem = _PEM.encode() in raw
            certs = x509.load_pem_x509_certificates(raw) if pem else [x509.load_der_x509_certificate(raw)]
        except ValueError:
            raise ValueError(f"root_certificates[{n}]: not a PEM or DER certificate") from None
        ders += [c.public_bytes(Encoding.DER) for c in certs]
    return ders


class AppStoreSettings(BaseModel):
    """The source's App Store settings (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root_certificates: list[str] = Field(min_length=1)
    bundle_id: str = Field(min_length=1)
    environment: Literal["Production", "Sandbox"] = "Production"
    app_apple_id: int | None = Field(default=None, gt=0)
    sample_signing_key: str | None = Field(default=None, min_length=1, repr=False)
    """Signs the built-in samples (never used to verify): see the module docstring."""

    @field_validator("root_certificates")
    @classmethod
    def _loadable(cls, value: list[str]) -> list[str]:
        load_roots(value)
        return value

    @field_validator("sample_signing_key")
    @classmethod
    def _signs_for_these_roots(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A PEM key + leaf + intermediate whose chain Apple's library accepts under
        `root_certificates` now (`signing_chain`), in a Sandbox source (the samples are Sandbox notifications, and
        a Production source should trust Apple's root alone)."""
        if value is None or "root_certificates" not in info.data:
            return value  # a root_certificates error is reported on its own
        if info.data.get("environment") != "Sandbox":
            raise ValueError("only for a Sandbox source (the samples are Sandbox notifications; "
                             "a Production source trusts Apple's root only)")
        signing_chain(value, load_roots(info.data["root_certificates"]))
        return value

    @model_validator(mode="after")
    def _app_id_in_production(self) -> AppStoreSettings:
        if self.environment == "Production" and self.app_apple_id is None:
            raise ValueError("app_apple_id is required when environment is Production "
                             "(App Store Connect → App Information → Apple ID)")
        return self


class AppStoreProvider(SamplesMixin, Provider):
    """App Store Server Notifications V2, verified by Apple's library against the source's roots."""

    name = "appstore"
    requires_secrets = False
    settings_model = AppStoreSettings
    tax: ClassVar[str] = "included"
    verifier: SignedDataVerifier | None = None
    signer: Chain | None = None
    """Signs samples (from `sample_signing_key`); never consulted by `verify`."""

    def configure(self, ctx: SourceContext) -> None:
        super().configure(ctx)
        options: AppStoreSettings = ctx.options
        roots = load_roots(options.root_certificates)
        self.verifier = SignedDataVerifier(roots, False, Environment(options.environment), options.bundle_id,
                                           options.app_apple_id)
        if options.sample_signing_key is not None:
            self.signer = signing_chain(options.sample_signing_key, roots)

    def check_secrets(self, secrets: Sequence[str], ctx: SourceContext) -> None:
        """No secrets: Apple signs with its own keys; `root_certificates` is what is trusted."""

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        signed = _signed_payload(body)
        if signed is None:
            raise SignatureError("missing_signature", "No signedPayload in the body")
        verifier = self.verifier
        if verifier is None:
            raise SignatureError("invalid_signature", "the App Store source is not configured")
        try:
            notification = verifier.verify_and_decode_notification(signed)
            data = notification.data
            if data is not None and data.signedTransactionInfo:
                verifier.verify_and_decode_signed_transaction(data.signedTransactionInfo)
            if data is not None and data.signedRenewalInfo:
                verifier.verify_and_decode_renewal_info(data.signedRenewalInfo)
        except VerificationException as exc:
            raise SignatureError("invalid_signature", f"App Store JWS refused: {exc.status.name}") from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # cattrs: a payload of another shape
            raise SignatureError("invalid_signature", f"App Store JWS unreadable ({type(exc).__name__})") from None

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The (verified) notification decoded: `notification`, `transaction`, `renewal`.

        Its id is `notificationUUID`, its type `notificationType`, its time `signedDate`.
        """
        signed = _signed_payload(body)
        if signed is None:
            raise PayloadError("App Store notification without a signedPayload")
        notification = _claims(signed)
        info = mapping(notification.get("data"))
        data = {
            "notification": notification,
            "transaction": _claims(info["signedTransactionInfo"]) if text(info.get("signedTransactionInfo")) else {},
            "renewal": _claims(info["signedRenewalInfo"]) if text(info.get("signedRenewalInfo")) else {},
        }
        uuid, kind = text(notification.get("notificationUUID")), text(notification.get("notificationType"))
        if uuid is None or kind is None:
            raise PayloadError("App Store notification without notificationUUID and notificationType")
        occurred = epoch_time(notification.get("signedDate"), "ms")
        environment = text(info.get("environment"))
        return ProviderEvent(id=uuid, type=kind, data=data,
                             livemode=None if environment is None else environment == "Production",
                             occurred_at=occurred or datetime.now(UTC))

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """SUBSCRIBED / DID_RENEW / ONE_TIME_CHARGE → Sale (a free trial's SUBSCRIBED → Lead),
        REFUND → Refund; `[]` otherwise. `Ignore("zero_amount")` for a renewal of nothing."""
        txn: dict[str, Any] = event.data.get("transaction") or {}
        subtype = text(mapping(event.data.get("notification")).get("subtype"))
        if event.type not in ("SUBSCRIBED", "DID_RENEW", "ONE_TIME_CHARGE", "REFUND"):
            return []
        transaction, original = text(txn.get("transactionId")), text(txn.get("originalTransactionId"))
        if transaction is None:
            raise PayloadError(f"{event.type} without signedTransactionInfo.transactionId")
        if event.type == "REFUND":
            return [_refund(txn, transaction)]
        amount, currency = _price(txn)
        hints = compact(external_id=text(txn.get("appAccountToken")))
        details = compact(productId=text(txn.get("productId")), subtype=subtype,
                          storefront=text(txn.get("storefront")), subscriptionId=original)
        free = text(txn.get("offerDiscountType")) == "FREE_TRIAL" or amount == 0
        if event.type == "SUBSCRIBED" and free:
            return [Lead(kind="started_trial", metadata=details, **hints)]
        if amount == 0:
            raise Ignore("zero_amount")
        subscription = event.type != "ONE_TIME_CHARGE"
        return [Sale(
            kind="subscription" if subscription else "purchase", amount=amount, gross_amount=amount,
            currency=currency, invoice_id=transaction,
            subscription_id=original if subscription else None,
            starts_subscription={"SUBSCRIBED": True, "DID_RENEW": False}.get(event.type),
            payment_refs=(original,) if original and original != transaction else (),
            metadata=details, **hints,
        )]

    def test_source(self) -> dict[str, Any]:
        """A fresh root → intermediate → leaf shaped like Apple's: the root in
        `root_certificates`, the leaf's key and certificates in `sample_signing_key`, for a
        Sandbox source of the samples' `bundle_id`. The chain is valid for three years."""
        chain = Chain.build("hooktrack throwaway", days_back=1, days_ahead=3 * 365)
        return {"root_certificates": [chain.root_pem()], "bundle_id": "com.example.app",
                "environment": "Sandbox", "sample_signing_key": chain.signing_pem()}

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """No headers: the signature is the body's JWS, which `sample()` signs with the
        source's `sample_signing_key`. NotImplementedError without one (what to do instead)."""
        options = ctx.options
        if not isinstance(options, AppStoreSettings) or options.sample_signing_key is None:
            raise NotImplementedError(
                "the App Store signs with Apple's private keys (a JWS whose x5c chain must end at the source's "
                "`root_certificates`), so hooktrack cannot sign App Store samples for this source; send a test "
                "notification from App Store Connect (or the App Store Server API's "
                "requestTestNotification) instead, or try hooktrack locally with the throwaway source "
                "`hooktrack providers appstore --test-secrets` prints (its `sample_signing_key`)")
        return {}

    def sample(self, name: str, *, unique: str, now: int) -> bytes:
        """Sample `name` made fresh and, for a source with a `sample_signing_key`, signed as Apple
        sends it: `{"signedPayload": JWS}` with the transaction and renewal info as JWS inside,
        all by the key's leaf, for the source's `bundle_id`. Without one, the
        decoded notification (which `verify` refuses)."""
        data = json.loads(self.samples()[name])
        self.refresh_sample(data, unique, now)
        if self.signer is None or self.ctx is None:
            return json.dumps(data).encode()
        options: AppStoreSettings = self.ctx.options
        info = mapping(data.get("data"))
        for part in (info, mapping(info.get("transactionInfo"))):
            part["bundleId"] = options.bundle_id
        return self.signer.body(data)

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        """A new notificationUUID, a new transactionId (Apple's are unique, and Dub's sale key),
        and every `signedDate` now (the certificates must be valid at it)."""
        data["notificationUUID"] = f"{str(data.get('notificationUUID', ''))[:24]}{unique[:12]:0>12}"
        data["signedDate"] = now * 1000
        info = mapping(data.get("data"))
        txn, renewal = mapping(info.get("transactionInfo")), mapping(info.get("renewalInfo"))
        if "transactionId" in txn:
            fresh = "2" + str(int(hashlib.sha256(unique.encode()).hexdigest(), 16))[:15]
            if txn.get("originalTransactionId") == txn["transactionId"]:  # a subscription's first
                txn["originalTransactionId"] = renewal["originalTransactionId"] = fresh
            txn["transactionId"] = fresh
        for part in (txn, renewal):
            if part:
                part["signedDate"] = now * 1000


def _signed_payload(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return text(data.get("signedPayload")) if isinstance(data, dict) else None


def _claims(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise PayloadError(f"App Store JWS is not readable ({type(exc).__name__})") from None
    if not isinstance(claims, dict):
        raise PayloadError("App Store JWS payload is not an object")
    return claims


def _price(txn: dict[str, Any]) -> tuple[int, str]:
    """`price` (milli-units) in ISO minor units of `currency`, exactly."""
    milli, currency = integer(txn.get("price")), text(txn.get("currency"))
    if milli is None or currency is None or milli < 0:
        raise PayloadError("App Store transaction without an integer `price` and a `currency`")
    try:
        return rescale(milli, 3, currency), currency
    except ValueError as exc:
        raise PayloadError(f"App Store price {milli} milli-{currency}: {exc}") from None


def _refund(txn: dict[str, Any], transaction: str) -> Refund:
    """The refunded transaction: all of it, or `revocationPercentage` (milli-percent) of it."""
    share = integer(txn.get("revocationPercentage"))
    amount: int | None = None
    currency = text(txn.get("currency"))
    if share is not None and 0 < share < 100_000:
        whole, currency = _price(txn)
        amount = whole * share // 100_000
    return Refund(reverses=(transaction,), amount=amount, currency=currency if amount is not None else None,
                  includes_tax=True, metadata=compact(revocationReason=txn.get("revocationReason")))
