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

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from adapter.errors import PayloadError
from adapter.events import Lead, ProviderEvent, Sale
from adapter.payload import any_time, epoch_time
from adapter.plugin import Headers, Provider, SourceContext
from adapter.rules import JsonPath, RuleSet, apply_rules, resolve
from adapter.samples import SamplesMixin
from adapter.signing import StandardWebhooks, message_id

__all__ = ["StandardWebhooksProvider", "StandardWebhooksSettings", "message_id", "moment"]

SecretEncoding = Literal["base64", "utf8"]
_SCHEMES = {"base64": StandardWebhooks(), "utf8": StandardWebhooks(key_encoding="utf8")}


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


def _scheme(ctx: SourceContext) -> StandardWebhooks:
    """The spec's scheme, keyed as the source's `secret_encoding` says."""
    options = ctx.options
    return _SCHEMES[options.secret_encoding if isinstance(options, StandardWebhooksSettings) else "base64"]


class StandardWebhooksProvider(SamplesMixin, Provider):
    """Any Standard Webhooks sender (Dodo, Whop, ...), mapped by the source's `rules`.

    `webhook-signature: v1,<base64>` HMAC-SHA256 over `id.timestamp.body`."""

    name = "standardwebhooks"
    settings_model = StandardWebhooksSettings

    def check_secrets(self, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Refuse a secret that is not `whsec_<base64>` unless `secret_encoding = "utf8"`."""
        try:
            _scheme(ctx).check_secrets(secrets)
        except ValueError as exc:
            raise ValueError(f"{exc}; set secret_encoding = \"utf8\" if the sender uses the secret as shown") from None

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Standard Webhooks verification (`adapter.signing.StandardWebhooks`); raises `SignatureError`."""
        _scheme(ctx).verify(body, headers, secrets, ctx.settings.tolerance_s)

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """The headers a sender would put on `body` at `timestamp` (id derived from the body)."""
        return _scheme(ctx).sign(body, secret, timestamp)

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
