"""The provider extension point and its entry-point registry.

A provider plugin is a `Provider` subclass registered under the entry-point group
`hooktrack.providers`. Built-in providers are declared there exactly like third-party ones:

    [project.entry-points."hooktrack.providers"]
    acme = "hooktrack_acme:AcmeProvider"

The entry-point name, `Provider.name`, `provider = "..."` in `hooktrack.toml`, the module and
the fixture folder are one name (letters, digits, `_`). A plugin that fails to import or is not
a `Provider` is logged and skipped; it never blocks startup of the others.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from adapter.errors import PayloadError
from adapter.events import Mapped, ProviderEvent
from adapter.payload import iso_time, json_object, text
from adapter.settings import Settings, SourceSettings
from adapter.signing import Scheme, message_id

if TYPE_CHECKING:
    from starlette.responses import Response

__all__ = [
    "ENTRY_POINT_GROUP",
    "Headers",
    "Provider",
    "Source",
    "SourceContext",
    "StandardWebhooksEnvelope",
    "build_sources",
    "load_providers",
]

log = logging.getLogger("hooktrack.plugin")

ENTRY_POINT_GROUP = "hooktrack.providers"
Headers = Mapping[str, str]
"""Request headers, looked up case-insensitively (the core passes starlette's `Headers`)."""

_NAME = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class SourceContext:
    """What a provider may know about the source it serves, besides the secrets.

    `options` is the provider's `settings_model` instance (None when it has none);
    `query` holds the request's query parameters (for URL-token sources) during `verify`.
    """

    source: str
    provider: str
    settings: SourceSettings
    options: Any = None
    query: Mapping[str, str] = field(default_factory=dict)


class Provider:
    """Base class of provider plugins: verify, then parse, then map.

    Subclasses set `name`, declare their signature `scheme` (or override `verify`) and implement
    the three steps (see each method for its contract).
    Each configured source gets its own instance; `configure(ctx)` runs once at startup, so a
    provider whose `parse` depends on source settings (where the event id lives, say) reads
    them from `self.ctx`, and `check_secrets` can refuse unusable secrets before serving.

    Optional: `settings_model` for the provider's own source settings; `fetch(body, ctx)`, a
    blocking lookup of what a thin webhook lacks (run after `verify`, see `fetches`); `sign(body, secret,
    timestamp, ctx)`, the headers a genuine delivery would carry; and built-in sample events for
    `hooktrack send`, `hooktrack demo` and the `ProviderContract` suite, from
    `adapter.samples.SamplesMixin` (which every built-in provider inherits).
    """

    name: ClassVar[str] = ""
    scheme: ClassVar[Scheme | None] = None
    """How the sender signs (`adapter.signing`); `verify`, `sign`, `check_secrets` use it by default."""
    requires_secrets: ClassVar[bool] = True
    """False for sources authenticated by other settings (HTTP Basic credentials, ...)."""
    settings_model: ClassVar[type[BaseModel] | None] = None
    """Pydantic model of the provider's own source settings; unknown keys are startup errors."""
    verify_may_block: ClassVar[bool] = False
    """True when `verify` may wait on I/O (PayPal fetches its certificate on a cache miss): the
    core then runs it in a worker thread, so one slow fetch does not hold up other webhooks."""
    fetches: bool = False
    """True when `fetch` looks up what the webhook lacks (set in `configure` from the source's
    settings: Recurly with an `api_key`); the core then runs `fetch` in a worker thread."""
    cancellations: ClassVar[frozenset[str]] = frozenset()
    """Event types that end a subscription: an event of one that `map` turns into nothing is
    answered `ignored`, `cancellation_recorded` (SPEC §9), so its journey says what it was."""

    ctx: SourceContext | None = None

    def configure(self, ctx: SourceContext) -> None:
        """Bind this instance to its source (called once, before any webhook)."""
        self.ctx = ctx

    def check_secrets(self, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Raise `ValueError` with a reason if a configured secret can never verify (bad base64,
        wrong prefix); the core turns it into a startup `ConfigError`. By default the scheme's check."""
        if self.scheme is not None:
            self.scheme.check_secrets(secrets)

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Check that `body` comes from the provider; return None if it does, else raise.

        Runs on the raw bytes before anything is parsed, so nothing unverified reaches `parse`
        or `map` (a scheme that signs fields inside the payload parses to verify). Compares in
        constant time (`hmac.compare_digest`), tries every configured secret, and where the scheme
        has a timestamp refuses one further than `ctx.settings.tolerance_s` from now, either way.
        Raises `SignatureError(code, message)` with code `missing_signature`, `invalid_signature`
        or `stale_timestamp` (400), or `CredentialsError` (401) for sources authenticated by
        credentials. Messages never contain a secret or the expected signature.
        """
        if self.scheme is None:
            raise NotImplementedError(f"{self.name} declares no signature scheme and does not override verify")
        self.scheme.verify(body, headers, secrets, ctx.settings.tolerance_s)

    def close(self) -> None:
        """Release what the provider holds open (an HTTP client for `fetch`); called once when
        the app shuts down. Nothing by default."""

    def fetch(self, body: bytes, ctx: SourceContext) -> bytes:
        """The verified body with what `map` needs and the webhook does not carry, looked up from
        the provider's API (Recurly's JSON webhooks carry only ids); called only when `fetches`.

        Runs in a worker thread after `verify` and before `parse`. What it returns is what is
        parsed and stored, so `map` stays pure. `hooktrack reprocess` calls it again on the stored
        body, which it returns unchanged when it already holds the lookup (so an event received
        before the source could look up is completed then). Not called for a redelivery: when `parse` of the body as
        received names events already stored, the core skips `fetch` (so `parse` must give the
        same event ids before and after `fetch`). Returns `body` unchanged when it has nothing
        to add (an event type it does not look up, a body `parse` will refuse). Raises
        `VerifierUnavailable` (503, so the sender retries) when the API cannot answer now, never
        another exception.
        """
        return body

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent | Sequence[ProviderEvent]:
        """The verified delivery as a `ProviderEvent`: the delivery id (the dedup key, the same
        on every retry), the event type, when it happened (the delivery's own time when the
        payload has none), livemode (None when the provider has no test mode) and the data.
        A delivery that carries several events (Adyen items, FastSpring `events`) returns a list:
        each is deduped on its own id, mapped and stored, and the answer lists each (SPEC §8).

        A provider whose signature covers the body only weakly (PayPal signs a CRC32 of it, so a
        captured delivery's body can be rewritten, new event id and all, under the same genuine
        headers) sets `delivery_key` from the signed transmission id: the core claims it in the
        transaction that stores the event, on every replica, and refuses a second delivery with
        the same key and another body (400 `replayed_transmission`, stored as rejected without
        its body, never counted); the same body again is a `duplicate`. Leave it None when the
        signature covers the whole body (an HMAC): the event id is enough.

        Raises `PayloadError` (400 `malformed_payload`) for a body it cannot read; the body is
        kept so that `hooktrack reprocess` can map it after an upgrade.
        """
        raise NotImplementedError

    def map(self, event: ProviderEvent, ctx: SourceContext) -> Sequence[Mapped]:
        """The conversions an event makes: pure (no I/O, clock or secrets).

        `[]` for an event type the provider does not track (`event_type_not_tracked`); raises
        `Ignore(reason)` for a tracked type that must not count (`unpaid`, `zero_amount`,
        `setup_mode`, ...) and `PayloadError` for a tracked event missing a required field.
        Otherwise Leads and Sales: money in ISO 4217 minor units, tax excluded; identity as hints
        saying *where* it lives (`metadata_sources`, `client_reference`, `provider_customer_id`,
        `email`, `phone`, `name`, and `external_id` / `click_id` only for the provider's own
        fields for them). The core applies the source's key lists (`adapter.attribution`),
        resolves identity with its memory, names creation vs renewal and dedupes (SPEC §2, §3).
        A refund or lost dispute is a `Refund`; ids learned later for a stored payment are a
        `PaymentLink`; a cancellation raises `Ignore("cancellation_recorded")` (SPEC §9).
        """
        raise NotImplementedError

    def answer(self, outcome: Mapping[str, Any]) -> Response | None:
        """The HTTP answer to a delivery that was taken (status 200), when the sender expects one
        of its own (Adyen: the body `[accepted]`); `outcome` is the JSON hooktrack would send.
        None (the default) sends hooktrack's JSON answer (SPEC §4)."""
        return None

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """Headers that make `body` verify with `secret`; NotImplementedError if we cannot sign."""
        if self.scheme is None:
            raise NotImplementedError(f"hooktrack cannot sign {self.name} webhooks")
        return self.scheme.sign(body, secret, timestamp)

    @staticmethod
    def json_body(body: bytes) -> dict[str, Any]:
        """Parse a JSON object body or raise `PayloadError` (`adapter.payload.json_object`)."""
        return json_object(body)


def load_providers(group: str = ENTRY_POINT_GROUP) -> dict[str, type[Provider]]:
    """Installed provider classes by name; broken plugins are logged and skipped."""
    found: dict[str, type[Provider]] = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        cls = _load(ep)
        if cls is not None and ep.name not in found:
            found[ep.name] = cls
    return found


def _load(ep: EntryPoint) -> type[Provider] | None:
    try:
        obj = ep.load()
    except Exception as exc:  # a third-party plugin may raise anything on import
        log.warning("provider plugin %r failed to load and is skipped: %r", ep.name, exc)
        return None
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        log.warning("provider plugin %r is not a hooktrack Provider subclass; skipped", ep.name)
        return None
    if not _NAME.match(ep.name) or obj.name != ep.name:
        log.warning(
            "provider plugin %r declares name %r; the two must be equal (letters, digits, _); skipped",
            ep.name,
            obj.name,
        )
        return None
    return obj


@dataclass(frozen=True)
class Source:
    """A configured source: its name, provider instance and context."""

    name: str
    provider: Provider
    ctx: SourceContext
    secrets: tuple[str, ...]


def build_sources(settings: Settings, registry: Mapping[str, type[Provider]]) -> dict[str, Source]:
    """Instantiate every configured source; raises `ConfigError` for unknown providers,
    missing secrets and invalid provider settings."""
    from adapter.errors import ConfigError

    sources: dict[str, Source] = {}
    for name, conf in settings.sources.items():
        cls = registry.get(conf.provider)
        if cls is None:
            known = ", ".join(sorted(registry)) or "none"
            raise ConfigError(
                f"sources.{name}.provider: unknown provider {conf.provider!r} (installed: {known})"
            )
        if cls.requires_secrets and not conf.secrets:
            raise ConfigError(f"sources.{name}.secrets: {conf.provider} needs at least one signing secret")
        extras = dict(conf.model_extra or {})
        options: Any = None
        if cls.settings_model is not None:
            try:
                options = cls.settings_model.model_validate(extras)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: "
                    f"{'unknown setting' if e['type'] == 'extra_forbidden' else e['msg']}"
                    for e in exc.errors()
                )
                raise ConfigError(f"sources.{name}: {problems}") from None
        elif extras:
            raise ConfigError(f"sources.{name}: unknown setting(s) {', '.join(sorted(extras))}")
        provider = cls()
        ctx = SourceContext(source=name, provider=conf.provider, settings=conf, options=options)
        provider.configure(ctx)
        try:
            provider.check_secrets(conf.secrets, ctx)
        except ValueError as exc:
            raise ConfigError(f"sources.{name}.secrets: {exc}") from None
        sources[name] = Source(name=name, provider=provider, ctx=ctx, secrets=tuple(conf.secrets))
    return sources


class StandardWebhooksEnvelope:
    """`parse` and `sample_headers` of a Standard Webhooks sender whose body is the envelope
    `{"type": ..., "timestamp": <ISO 8601>, "data": {...}}` (Polar, Whop, Dodo): the delivery id
    is the `webhook-id` header, the type and time come from the body. `label` names the sender
    in the errors. Mix in before `Provider`."""

    label: ClassVar[str] = "Standard Webhooks"

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        """The `webhook-id` `sign` uses, so a sample parses on its own (tests, tooling)."""
        return {"webhook-id": message_id(body)}

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by its `webhook-id` header, typed and timed by the body.

        Raises `PayloadError` without a `webhook-id`, a string `type`, an ISO 8601 `timestamp`
        or a `data` object.
        """
        data = json_object(body)
        msg_id, event_type = text(headers.get("webhook-id")), text(data.get("type"))
        if msg_id is None:
            raise PayloadError(f"{self.label} webhook without a webhook-id header")
        if event_type is None or not isinstance(data.get("data"), dict):
            raise PayloadError(f"{self.label} event without string `type` and a `data` object")
        occurred = iso_time(data.get("timestamp"))
        if occurred is None:
            raise PayloadError(f"{self.label} event without an ISO 8601 `timestamp`")
        return ProviderEvent(id=msg_id, type=event_type, occurred_at=occurred, livemode=None, data=data)
