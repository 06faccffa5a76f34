"""Any HMAC-signing processor, described entirely in the source's config: `provider = "generic"`.

Verification: the signature header (`signature_header`) holds one or more entries (split on
`signature_separator`, for senders that list old and new signatures during a key rotation),
each `prefix` + the `encoding` (hex or base64) of the HMAC (`algorithm`: sha256, sha512, sha1)
of `signed_payload` — the raw body (`"{body}"`, the default) or a template such as
`"{timestamp}.{body}"` whose `{timestamp}` is the `timestamp_header` value as sent. A signed
timestamp further than the source's `tolerance_s` from now, in either direction, is refused.
Every configured secret is tried against every entry with `hmac.compare_digest`, on the raw
bytes, before anything is parsed.

Parsing: `event_id` and `event_type` are each read from a header (`{header = "X-Event-Id"}`)
or a dotted JSON path (`{path = "id"}`, or just `"id"`); `occurred_at` likewise (Unix seconds
or milliseconds, or ISO 8601; else the signed timestamp, else the time of receipt);
`live_when` is a condition (`'livemode == true'`) telling live events from test ones.
Mapping: the source's `rules` (`adapter.rules`). Every setting is validated at startup, so a
mistake stops hooktrack with a message naming its key. See the README's generic provider section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from adapter.errors import PayloadError
from adapter.events import Lead, ProviderEvent, Sale
from adapter.payload import any_time, ident, integer
from adapter.plugin import Headers, Provider, SourceContext
from adapter.rules import Condition, apply_rules, resolve
from adapter.samples import SamplesMixin
from adapter.signing import message_id, secret_keys
from providers.generic import scheme
from providers.generic.settings import GenericSettings, Locator

__all__ = ["GenericProvider", "GenericSettings", "Locator"]


def _options(ctx: SourceContext | None) -> GenericSettings:
    if ctx is None or not isinstance(ctx.options, GenericSettings):
        raise RuntimeError("the generic provider is used before configure() gave it its settings")
    return ctx.options


class GenericProvider(SamplesMixin, Provider):
    """Any processor that signs with an HMAC of the body (and maybe a timestamp), configured per source."""

    name = "generic"
    settings_model = GenericSettings

    def check_secrets(self, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Refuse secrets that cannot be the HMAC key (bad base64/hex, stray whitespace)."""
        encoding = _options(ctx).secret_encoding
        for n, secret in enumerate(secrets):
            if secret != secret.strip():
                raise ValueError(f"secret {n} has leading or trailing whitespace (a stray newline?)")
            if not secret_keys(secret, encoding):
                raise ValueError(f"secret {n} is not {encoding} (secret_encoding = \"{encoding}\")")

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Check the signature header on the raw bytes with every secret against every entry,
        with the core scheme the settings describe (`scheme.build`).

        Raises `SignatureError`: `missing_signature` (no signature or timestamp header),
        `stale_timestamp` (outside `tolerance_s` either way), `invalid_signature` (a timestamp
        that is not one, no entry with the prefix, no match).
        """
        scheme.build(_options(ctx)).verify(body, headers, secrets, ctx.settings.tolerance_s)

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """The headers a sender configured like this source would put on `body` at `timestamp`."""
        options = _options(ctx)
        headers = scheme.build(options).sign(body, secret, timestamp)
        if options.event_id.header:
            headers[options.event_id.header] = message_id(body)
        return headers

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        """The event id and type headers a sample needs when the config reads them from headers."""
        if self.ctx is None:
            return {}
        options = _options(self.ctx)
        extra = {options.event_id.header: message_id(body)} if options.event_id.header else {}
        if options.event_type.header:
            extra[options.event_type.header] = sample.partition("+")[0]
        return extra

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        """A fresh event id, time and invoice id at the configured paths: a resent sample is a
        new payment, as with `stripe trigger`."""
        if self.ctx is None:
            return
        options = _options(self.ctx)
        if options.event_id.path:
            _assign(data, options.event_id.path, f"evt_{unique}")
        for path in {r.invoice_id for r in options.rules if r.invoice_id}:
            old = resolve(data, path)
            if isinstance(old, str):  # keep the id's kind: pay_... stays pay_...
                _assign(data, path, f"{old.partition('_')[0]}_{unique}" if "_" in old else unique)
        if options.occurred_at and options.occurred_at.path:
            old = resolve(data, options.occurred_at.path)
            new: Any = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
            if isinstance(old, int) and not isinstance(old, bool):
                new = now * 1000 if old >= 10**11 else now
            _assign(data, options.occurred_at.path, new)

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by the configured id, type, time and live flag.

        Raises `PayloadError` for a body that is not a JSON object, or an id or type that is
        absent or not text, or an `occurred_at` present but not a time.
        """
        options = _options(self.ctx)
        data = self.json_body(body)
        return ProviderEvent(
            id=_required_text(options.event_id, data, headers, "event_id"),
            type=_required_text(options.event_type, data, headers, "event_type"),
            occurred_at=_occurred(options, data, headers),
            livemode=_live(options.live_when, data),
            data=data,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale]:
        """Apply the source's rules (`adapter.rules.apply_rules`): `[]` for types without a rule,
        `Ignore("condition_not_met")`, `Ignore("zero_amount")`, or `PayloadError`."""
        return apply_rules(_options(ctx).rules, event.type, event.data)


def _required_text(where: Locator, data: Mapping[str, Any], headers: Headers, key: str) -> str:
    value = ident(where.read(data, headers))
    if value is None:
        raise PayloadError(f"no {key} (text) at {where.describe()}")
    return value


def _occurred(options: GenericSettings, data: Mapping[str, Any], headers: Headers) -> datetime:
    where = options.occurred_at
    value = where.read(data, headers) if where else None
    if isinstance(value, str) and integer(value) is not None:
        value = integer(value)  # a Unix time sent as text
    if where is not None and value is not None:
        when = any_time(value)
        if when is None:
            raise PayloadError(f"occurred_at ({where.describe()}) is not a time: {str(value)[:40]!r}")
        return when
    signed = scheme.seconds((headers.get(options.timestamp_header) or "").strip()) if options.timestamp_header else None
    return datetime.fromtimestamp(signed, UTC) if signed is not None else datetime.now(UTC)


def _live(condition: Condition | None, data: Mapping[str, Any]) -> bool | None:
    if condition is None or resolve(data, condition.path) is None:
        return None
    return condition.holds(data)


def _assign(data: dict[str, Any], path: str, value: Any) -> None:
    """Set `value` at dotted `path`, creating objects on the way; leaves lists alone."""
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        if not isinstance(node, dict):
            return
        node = node.setdefault(key, {})
    if isinstance(node, dict):
        node[last] = value
