"""Standard Webhooks senders (Dodo Payments, Whop, ...), mapped to conversions by config rules.

Verification follows the Standard Webhooks spec (github.com/standard-webhooks/standard-webhooks,
`spec/standard-webhooks.md`): headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
`webhook-signature` (space-separated `v1,<base64>` entries, several during key rotation); the
signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`, HMAC-SHA256, base64. The key
is the secret with its `whsec_` prefix removed, base64-decoded; senders whose SDKs base64-encode
the secret string first (Whop, Polar) sign with the secret's own UTF-8 bytes instead, which
`secret_encoding = "utf8"` selects. Timestamps further than `tolerance_s` from now, in either
direction, are refused; every configured secret is tried against every `v1` entry.

The delivery id is the `webhook-id` header (the same on every retry of one message). The event
type is the body's `type` (another dotted path with `type_path`), the event time its
`timestamp` (ISO 8601 or Unix time) or else the `webhook-timestamp` header. Payloads carry no
test/live flag this provider could trust, so `livemode` is None: give test mode its own source.

Which events count, and where their amount, ids and identity live, is the source's `rules`
setting (`adapter.rules`); see the README's Standard Webhooks section for Dodo Payments' rules.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from adapter.errors import PayloadError, SignatureError
from adapter.events import Lead, ProviderEvent, Sale
from adapter.payload import any_time, epoch_time
from adapter.plugin import Headers, Provider, SourceContext
from adapter.rules import JsonPath, RuleSet, apply_rules, resolve
from adapter.samples import SamplesMixin

__all__ = [
    "StandardWebhooksProvider",
    "StandardWebhooksSettings",
    "message_id",
    "moment",
    "secret_key",
    "sign_v1",
    "verify_headers",
]

log = logging.getLogger("hooktrack.providers.standardwebhooks")
SecretEncoding = Literal["base64", "utf8"]
_PREFIX = "whsec_"


def secret_key(secret: str, encoding: SecretEncoding = "base64") -> bytes | None:
    """The HMAC key of a configured secret; None when a `base64` secret does not decode."""
    if encoding == "utf8":
        return secret.encode()
    text = secret.strip().removeprefix(_PREFIX)
    try:  # the reference libraries accept unpadded base64 too
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def sign_v1(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    """The raw HMAC-SHA256 of `{msg_id}.{timestamp}.{body}`."""
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def _signatures(header: str) -> list[bytes]:
    """The decoded `v1` entries of a signature header; other versions (`v1a`) are skipped.

    An entry that is not base64 stays in the list as `b""`, which never matches: it was sent,
    so the delivery is `invalid_signature`, not `missing_signature`.
    """
    found: list[bytes] = []
    for entry in header.split():
        version, _, value = entry.partition(",")
        if version == "v1" and value:
            try:
                found.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                found.append(b"")
    return found


def verify_headers(body: bytes, headers: Headers, keys: Sequence[bytes], tolerance_s: int) -> None:
    """Check a Standard Webhooks delivery on its raw bytes: timestamp first, then signatures.

    Reads `webhook-id`, `webhook-timestamp`, `webhook-signature` from `headers` (Svix senders
    map their `svix-*` names onto these first). Raises `SignatureError`: `missing_signature`
    (a header missing, no `v1` entry), `invalid_signature` (a timestamp that is not Unix
    seconds, no match), `stale_timestamp` (older or newer than `tolerance_s`).
    """
    msg_id = headers.get("webhook-id") or ""
    stamp = (headers.get("webhook-timestamp") or "").strip()
    header = headers.get("webhook-signature") or ""
    if not (msg_id and stamp and header):
        raise SignatureError("missing_signature", "Missing required headers")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise SignatureError("invalid_signature", "Invalid Signature Headers")
    age = time.time() - int(stamp)
    if age > tolerance_s:
        raise SignatureError("stale_timestamp", "Message timestamp too old")
    if age < -tolerance_s:
        raise SignatureError("stale_timestamp", "Message timestamp too new")
    candidates = _signatures(header)
    if not candidates:
        raise SignatureError("missing_signature", "No v1 signatures in the signature header")
    matched = False
    for key in keys:  # every pair, so the time taken does not tell which one matched
        want = sign_v1(key, msg_id, stamp, body)
        for got in candidates:
            matched |= hmac.compare_digest(want, got)
    if not matched:
        raise SignatureError("invalid_signature", "No matching signature found")


def message_id(body: bytes) -> str:
    """A `webhook-id` for a body hooktrack signs itself (samples): derived from the body, so a
    redelivery of the same bytes is a duplicate and a refreshed sample is a new message."""
    return "msg_" + base64.b32encode(hashlib.sha256(body).digest()[:15]).decode().lower()


moment = any_time
"""An event time from ISO 8601 text or a Unix time in seconds or milliseconds; None if not one
(`adapter.payload.any_time`, kept under this name for the providers that import it)."""


class StandardWebhooksSettings(RuleSet):
    """Source settings: `rules` (required), `type_path`, `secret_encoding`."""

    type_path: JsonPath = "type"
    """Dotted path of the event type in the body."""
    secret_encoding: SecretEncoding = "base64"  # noqa: S105 (a format name, not a secret)
    """`base64`: the spec's `whsec_<base64>` secret; `utf8`: the secret's own bytes (Whop)."""


def _options(ctx: SourceContext) -> StandardWebhooksSettings:
    if not isinstance(ctx.options, StandardWebhooksSettings):
        raise TypeError(f"source {ctx.source!r} has no standardwebhooks settings")
    return ctx.options


def _encoding(ctx: SourceContext) -> SecretEncoding:
    options = ctx.options
    return options.secret_encoding if isinstance(options, StandardWebhooksSettings) else "base64"


class StandardWebhooksProvider(SamplesMixin, Provider):
    """Any Standard Webhooks sender (Dodo, Whop, ...), mapped by the source's `rules`.

    `webhook-signature: v1,<base64>` HMAC-SHA256 over `id.timestamp.body`."""

    name = "standardwebhooks"
    settings_model = StandardWebhooksSettings

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Verify with every configured secret; raises `SignatureError` (see `verify_headers`)."""
        keys = [k for k in (secret_key(s, _encoding(ctx)) for s in secrets) if k]
        if len(keys) < len(secrets):
            log.warning("source %s: a secret is not whsec_<base64>; set secret_encoding = \"utf8\" "
                        "if the sender uses the secret as shown", ctx.source)
        verify_headers(body, headers, keys, ctx.settings.tolerance_s)

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """The headers a sender would put on `body` at `timestamp` (id derived from the body)."""
        key = secret_key(secret, _encoding(ctx))
        if key is None:
            raise ValueError("the secret is not whsec_<base64>")
        msg_id = message_id(body)
        mac = base64.b64encode(sign_v1(key, msg_id, str(timestamp), body)).decode()
        return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{mac}"}

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        # The webhook-id is derived from the body, so a new `timestamp` is a new message.
        data["timestamp"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        """The `webhook-id` `sign` uses, so a sample parses on its own (tests, tooling)."""
        return {"webhook-id": message_id(body)}

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by its `webhook-id`, timed by the body's `timestamp` or the header's.

        The type recorded is the body's `type` (`map` reads `type_path`, which `parse` cannot
        see). Raises `PayloadError` for a non-object body, no `webhook-id`, or no usable time.
        """
        data = self.json_body(body)
        msg_id = (headers.get("webhook-id") or "").strip()
        if not msg_id:
            raise PayloadError("Standard Webhooks delivery without a webhook-id header")
        occurred = any_time(data.get("timestamp")) or epoch_time(headers.get("webhook-timestamp"))
        if occurred is None:
            raise PayloadError("no event time: neither a body `timestamp` nor a webhook-timestamp header")
        event_type = data.get("type")
        return ProviderEvent(
            id=msg_id,
            type=event_type.strip() if isinstance(event_type, str) and event_type.strip() else "unknown",
            occurred_at=occurred,
            livemode=None,
            data=data,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale]:
        """Apply the source's rules to the event (see `adapter.rules.apply_rules`).

        Raises `PayloadError` when the body has no string at `type_path`, and whatever the rules
        raise: `Ignore("condition_not_met")`, `Ignore("zero_amount")`, `PayloadError`.
        """
        options = _options(ctx)
        event_type = resolve(event.data, options.type_path)
        if not isinstance(event_type, str) or not event_type.strip():
            raise PayloadError(f"no event type (a string) at {options.type_path!r}")
        return apply_rules(options.rules, event_type.strip(), event.data)
