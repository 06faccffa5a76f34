"""Adyen: standard notifications, an HMAC per item *and* HTTP Basic credentials.

A delivery is `{"live": "true"|"false", "notificationItems": [{"NotificationRequestItem": {...}}]}`
and carries one or more items; `parse` returns one `ProviderEvent` per item. Each item is signed
on its own: `additionalData.hmacSignature` is the base64 HMAC-SHA256, keyed by the *hex-decoded*
HMAC key from the Customer Area, of

    pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success

with `value`/`currency` from `amount`, an empty string for a missing field and no escaping
(Adyen's "Verify HMAC signatures" page; adyen-python-api-library `Adyen/util.py`,
`generate_notification_sig`, and its published vector in `test/UtilTest.py`). Every item must
verify, else the whole delivery is refused: Adyen retries it, and nothing unverified is stored.

The HMAC leaves `additionalData` unsigned, and that is where identity lives (`shopperReference`,
`shopperEmail`, `metadata.*`), so the source also requires one of its `basic_auth =
["user:password", ...]` pairs (401 otherwise), as Adyen's webhook settings send them. `secrets`
are the HMAC keys (hex; several while rotating).

Each item is its own event, deduped on `pspReference:eventCode:success` (Adyen redelivers an item
with the same three; a `success: false` and a later `true` are two events). Adyen expects the
body `[accepted]` in answer, whatever became of the items.

Sale: the payment's `AUTHORISATION` (`success: "true"`) when the merchant account captures
automatically (the source's `capture = "auto"`, the default: Adyen captures immediately unless
the account is set to delayed or manual capture), or its `CAPTURE` with `capture = "manual"`;
the other of the two is ignored with a reason. `amount.value` is already minor units and
includes any tax (`tax = "included"`). `invoiceId` is the `merchantReference` (the merchant's own
order reference: unique per merchant account, so account-scoped), else the payment's
`pspReference`; both payment ids are the Sale's `payment_refs`. `REFUND` (success) → Refund of
the payment named by `originalReference`; `CHARGEBACK` → a chargeback Refund.
Adyen has no subscription object: every Sale is a `purchase`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from starlette.responses import PlainTextResponse, Response

from adapter.errors import CredentialsError, Ignore, PayloadError, SignatureError
from adapter.events import Mapped, ProviderEvent, Refund, Sale
from adapter.payload import boolean, compact, ident, integer, iso_time, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BasicAuthPairs, basic_credentials, mac, mac_matches, secret_in

__all__ = ["AdyenProvider", "AdyenSettings", "item_signature"]

_FIELDS = ("pspReference", "originalReference", "merchantAccountCode", "merchantReference")


class AdyenSettings(BaseModel):
    """`basic_auth` (required) and `capture`: which notification is the Sale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    basic_auth: BasicAuthPairs
    capture: Literal["auto", "manual"] = "auto"


def _field(value: Any) -> str:
    """A field as Adyen writes it into the signing string: text as is, an integer in decimal,
    a JSON boolean as `true`/`false`, anything missing as the empty string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else ""


def signing_string(item: Mapping[str, Any]) -> str:
    amount = mapping(item.get("amount"))
    parts = [*(item.get(k) for k in _FIELDS), amount.get("value"), amount.get("currency"),
             item.get("eventCode"), item.get("success")]
    return ":".join(_field(p) for p in parts)


def item_signature(item: Mapping[str, Any], hex_key: str) -> str:
    """The base64 `hmacSignature` of one NotificationRequestItem under a hex HMAC key."""
    return base64.b64encode(mac(binascii.unhexlify(hex_key), signing_string(item).encode())).decode()


def _items(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The delivery and its NotificationRequestItems; ValueError when it has another shape."""
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("notificationItems"), list):
        raise ValueError("no notificationItems")
    items = [mapping(mapping(entry).get("NotificationRequestItem")) for entry in data["notificationItems"]]
    if not items or not all(items):
        raise ValueError("an entry without a NotificationRequestItem")
    return data, items


class AdyenProvider(SamplesMixin, Provider):
    """Adyen standard notifications: item HMAC (hex key) and HTTP Basic credentials; one event per item."""

    name = "adyen"
    settings_model = AdyenSettings
    tax = "included"
    invoice_ids = "account"  # merchantReference is the merchant's own, unique per merchant account

    def check_secrets(self, secrets: Sequence[str], ctx: SourceContext) -> None:
        for index, secret in enumerate(secrets):
            try:
                key = binascii.unhexlify(secret.strip())
            except (binascii.Error, ValueError):
                key = b""
            if not key:
                raise ValueError(f"secrets[{index}] is not an Adyen HMAC key "
                                 "(hexadecimal, as the Customer Area shows it)")

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """HTTP Basic credentials first (401), then every item's HMAC under any configured key."""
        settings: AdyenSettings = ctx.options
        given = basic_credentials(headers.get("authorization"))
        if not secret_in(given, [pair.encode() for pair in settings.basic_auth]):
            raise CredentialsError("HTTP Basic credentials do not match the source's basic_auth")
        try:
            _, items = _items(body)
        except (ValueError, RecursionError):
            raise SignatureError("missing_signature",
                                 "body is not an Adyen notification with items to verify") from None
        keys = [binascii.unhexlify(s.strip()) for s in secrets]
        for index, item in enumerate(items):
            signature = text(mapping(item.get("additionalData")).get("hmacSignature"))
            if signature is None:
                raise SignatureError("missing_signature",
                                     f"notification item {index} has no additionalData.hmacSignature")
            try:
                given_mac = base64.b64decode(signature, validate=True)
            except (binascii.Error, ValueError):
                raise SignatureError("invalid_signature",
                                     f"notification item {index}: hmacSignature is not base64") from None
            message = signing_string(item).encode()
            if not mac_matches(keys, message, [given_mac]):
                raise SignatureError("invalid_signature",
                                     f"notification item {index}: no HMAC key matches its hmacSignature; "
                                     "the whole delivery is refused")

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """The `Authorization` header Adyen sends (the item HMACs are in the body: `sign_sample`)."""
        settings: AdyenSettings = ctx.options
        return {"Authorization": "Basic " + base64.b64encode(settings.basic_auth[0].encode()).decode()}

    def test_source(self) -> dict[str, Any]:
        """A fresh hex HMAC key (as the Customer Area generates) and HTTP Basic credentials."""
        return {"secrets": [secrets.token_hex(32).upper()],
                "basic_auth": [f"hooktrack:{secrets.token_urlsafe(18)}"]}

    def sign_sample(self, body: bytes, secret: str) -> bytes:
        """Every item's `additionalData.hmacSignature` computed under the hex key `secret`."""
        data = json.loads(body)
        for entry in data.get("notificationItems", []):
            item = entry["NotificationRequestItem"]
            item.setdefault("additionalData", {})["hmacSignature"] = item_signature(item, secret)
        return json.dumps(data).encode()

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        """New 16-digit pspReferences (the dedup key) and merchantReference, so a sample sent
        twice is two payments; an item's `originalReference` names the sample's first item."""
        digits = str(int(hashlib.sha256(unique.encode()).hexdigest(), 16))[:14]
        for index, entry in enumerate(data.get("notificationItems", [])):
            item = entry["NotificationRequestItem"]
            item["pspReference"] = f"{index + 10}{digits}"
            if item.get("originalReference"):
                item["originalReference"] = f"10{digits}"
            item["merchantReference"] = f"order-{unique}-{index}"
            item["eventDate"] = datetime.fromtimestamp(now, UTC).isoformat()

    def answer(self, outcome: Mapping[str, Any]) -> Response | None:
        """Adyen expects `[accepted]` (any other answer, or none within 10 s, is a failure it retries)."""
        return PlainTextResponse("[accepted]")

    def parse(self, body: bytes, headers: Headers) -> list[ProviderEvent]:
        """One event per item, id `pspReference:eventCode:success`, at its `eventDate`."""
        try:
            data, items = _items(body)
        except (ValueError, RecursionError):
            raise PayloadError("Adyen notification without notificationItems") from None
        live = boolean(data.get("live"))
        events = []
        for item in items:
            psp, code = ident(item.get("pspReference")), text(item.get("eventCode"))
            success = boolean(item.get("success"))
            if psp is None or code is None or success is None:
                raise PayloadError("Adyen notification item without pspReference, eventCode and success")
            clean = copy.deepcopy(item)
            mapping(clean.get("additionalData")).pop("hmacSignature", None)  # verified; never stored twice
            kwargs: dict[str, Any] = {}
            occurred = iso_time(item.get("eventDate"))
            if occurred is not None:
                kwargs["occurred_at"] = occurred
            events.append(ProviderEvent(id=f"{psp}:{code}:{'true' if success else 'false'}", type=code,
                                        livemode=live, data={"item": clean}, **kwargs))
        return events

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """The Sale (`AUTHORISATION` or `CAPTURE` per `capture`), `REFUND` and `CHARGEBACK` → Refund."""
        settings: AdyenSettings = ctx.options
        item: dict[str, Any] = event.data["item"]
        success = boolean(item.get("success"))
        code = event.type
        if code in ("AUTHORISATION", "CAPTURE"):
            counted = "AUTHORISATION" if settings.capture == "auto" else "CAPTURE"
            if code != counted:
                raise Ignore("counted_at_authorisation" if code == "CAPTURE" else "awaiting_capture")
            if not success:
                raise Ignore("unpaid")
            return [self._sale(item, code)]
        if code in ("REFUND", "CHARGEBACK"):
            if not success:
                raise Ignore("refund_failed")
            return [self._refund(item, chargeback=code == "CHARGEBACK")]
        return []

    def _amount(self, item: dict[str, Any]) -> tuple[int, str]:
        amount = mapping(item.get("amount"))
        value, currency = integer(amount.get("value")), text(amount.get("currency"))
        if value is None or currency is None:
            raise PayloadError(f"{item.get('eventCode')} without amount.value (minor units) and amount.currency")
        return value, currency

    def _sale(self, item: dict[str, Any], code: str) -> Sale:
        value, currency = self._amount(item)
        if value <= 0:
            raise Ignore("zero_amount")
        psp = ident(item.get("pspReference"))
        payment = ident(item.get("originalReference")) if code == "CAPTURE" else psp
        payment = payment or psp
        assert psp is not None and payment is not None  # parse requires the pspReference
        extra = mapping(item.get("additionalData"))
        reference = text(item.get("merchantReference"))
        return Sale(
            kind="purchase",
            amount=value,
            currency=currency,
            invoice_id=reference or payment,
            payment_refs=tuple(dict.fromkeys(r for r in (payment, psp, reference) if r)),
            gross_amount=value,
            external_id=text(extra.get("shopperReference")),
            email=text(extra.get("shopperEmail")),
            name=_name(extra),
            metadata_sources=({k.removeprefix("metadata."): v for k, v in extra.items()
                               if k.startswith("metadata.")},),
            metadata=compact(pspReference=payment, merchantAccount=text(item.get("merchantAccountCode")),
                             paymentMethod=text(item.get("paymentMethod"))),
        )

    def _refund(self, item: dict[str, Any], chargeback: bool) -> Refund:
        value, currency = self._amount(item)
        psp, original = ident(item.get("pspReference")), ident(item.get("originalReference"))
        reference = text(item.get("merchantReference"))
        # A REFUND's and a CHARGEBACK's own pspReference is the refund's / the dispute's (Adyen's
        # "Dispute webhooks" page); `originalReference` is the payment's.
        reverses = tuple(dict.fromkeys(r for r in (original, reference) if r))
        if not reverses:
            raise PayloadError(f"{item.get('eventCode')} without originalReference or merchantReference")
        return Refund(reverses=reverses, amount=value, currency=currency, includes_tax=True,
                      chargeback=chargeback, refund_id=psp,
                      metadata=compact(reason=text(item.get("reason"))))


def _name(extra: dict[str, Any]) -> str | None:
    """`shopperName` in additionalData: text, or Adyen's `[first name=..., last name=...]` form."""
    raw = text(extra.get("shopperName"))
    if raw is None or not raw.startswith("["):
        return raw
    parts = dict(p.strip().partition("=")[::2] for p in raw.strip("[]").split(","))
    name = " ".join(v for v in (parts.get("first name"), parts.get("last name")) if v)
    return name or None
