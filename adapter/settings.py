"""`hooktrack.toml` → validated pydantic models (SPEC §5).

The file is found at `--config PATH`, else `$HOOKTRACK_CONFIG`, else `./hooktrack.toml`.
Any `${NAME}` inside a string is replaced by the environment variable NAME; an unset one is a
`ConfigError` naming the key, as is every other invalid value.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapter.config_checks import redact_url, refusals
from adapter.errors import ConfigError

__all__ = [
    "AdminSettings",
    "EventNames",
    "ForwarderSettings",
    "ServerSettings",
    "Settings",
    "SourceSettings",
    "StoreSettings",
    "TrackingSettings",
    "find_config",
    "load_settings",
    "parse_settings",
]

DEFAULT_CLICK_ID_KEYS = ("clickId", "click_id", "dubClickId", "dub_click_id", "dub_id")
"""Where a click id hides in merchant-controlled metadata by default (SPEC §2)."""
DEFAULT_CUSTOMER_ID_KEYS = (
    "customerExternalId",
    "customer_external_id",
    "dubCustomerExternalId",
    "dubCustomerId",
    "externalId",
    "external_id",
    "userId",
    "user_id",
)
"""Where the merchant's own user id hides in merchant-controlled metadata by default (SPEC §2)."""
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MIN_RETENTION_DAYS = 3  # Stripe and Paddle retry for three days: dedup must outlive that


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """`[server]`: HTTP limits; how `hooktrack serve` applies them is in `adapter.server`."""

    max_body_bytes: int = Field(default=1 << 20, gt=0)
    header_timeout_s: float = Field(default=10, gt=0, le=300)
    body_timeout_s: float = Field(default=20, gt=0, le=3600)
    max_header_bytes: int = Field(default=64 * 1024, ge=4096, le=1 << 20)
    max_connections: int = Field(default=256, ge=2, le=100_000)
    keep_alive_s: int = Field(default=5, ge=1, le=300)


class StoreSettings(_Section):
    """`[store]`: where events, conversions and the outbox live."""

    url: str = "sqlite:///hooktrack.db"
    retention_days: int = Field(default=30, ge=MIN_RETENTION_DAYS)
    pool_size: int = Field(default=10, ge=1)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme == "sqlite":
            if not url.startswith("sqlite:///") or url == "sqlite:///":
                raise ValueError("use sqlite:///relative/path.db or sqlite:////absolute/path.db")
        elif scheme not in ("postgresql", "postgres"):
            raise ValueError(f"unsupported store {scheme!r}: use sqlite:///... or postgresql://...")
        return url


class TrackingSettings(_Section):
    """`[tracking]`: the conversion-tracking API conversions are forwarded to."""

    api: str = Field(default="dub", pattern=r"^[a-z0-9_]+$")
    """The destination plugin (entry-point group `hooktrack.destinations`); `dub` is built in."""
    url: str
    api_key: str = Field(min_length=1)
    timeout_s: float = Field(default=10, gt=0)
    """How long one request may take, counted from when it is sent (not while it waits for a
    connection of the pool)."""
    max_requests_per_minute: int | None = Field(default=None, ge=1)
    """A cap below the API's own limit; by default the forwarder paces itself by the API's
    `X-RateLimit-*` answers."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
        return url.rstrip("/")


class ForwarderSettings(_Section):
    """`[forwarder]`: retries, backoff and the lease a worker holds on what it sends."""

    max_attempts: int = Field(default=20, ge=1)
    base_delay_s: float = Field(default=1, gt=0)
    max_delay_s: float = Field(default=3600, gt=0)
    concurrency: int = Field(default=32, ge=1, le=1000)
    lease_s: float = Field(default=60, gt=0)
    poll_interval_s: float = Field(default=0.5, gt=0)
    attribution_window_s: float = Field(default=86400, gt=0)
    """How long a conversion the API accepted but did not count (its customer or lead not known
    yet) is tried again before it is `unattributed` (SPEC §7)."""
    pause_probe_s: float = Field(default=60, gt=0)
    """A paused destination (wrong key, or failing) is probed with one request this often."""
    pause_after_failures: int = Field(default=20, ge=1)
    """Consecutive 5xx answers, timeouts or connection errors that pause the destination."""
    fill_window_s: float = Field(default=5, ge=0)
    """A Sale waits this long before its first send, so that a companion event of the same payment
    (Stripe's checkout after its invoice.paid, Lemon Squeezy's subscription payment after its
    order) can fill in a clickId, an explicit customer id or the subscription it belongs to."""


class AdminSettings(_Section):
    """`[admin]`: the operator API and page; disabled without a token."""

    token: str | None = Field(default=None, min_length=16)


class EventNames(_Section):
    """`event_names`: what each conversion is called at the tracking API."""

    purchase: str = "Purchase"
    subscription_creation: str = "Subscription creation"
    subscription_renewal: str = "Subscription renewal"
    subscription_update: str = "Subscription update"
    sign_up: str = "Sign up"
    started_trial: str = "Started Trial"


class SourceSettings(BaseModel):
    """`[sources.NAME]`: one webhook endpoint, `POST /webhooks/NAME`.

    Keys other than these are provider settings (`notification_url`, `basic_auth`, ...),
    validated by the provider's `settings_model`.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    provider: str = Field(pattern=r"^[a-z0-9_]+$")
    secrets: list[str] = Field(default_factory=list)
    tolerance_s: int = Field(default=300, ge=1)
    livemode: Literal["live", "test", "any"] = "any"
    click_id_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_CLICK_ID_KEYS), min_length=1)
    customer_id_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CUSTOMER_ID_KEYS), min_length=1
    )
    event_names: EventNames = Field(default_factory=EventNames)
    forward_leads_without_click_id: bool = False
    payment_processor: str | None = None
    """Overrides the `paymentProcessor` the destination would send for this source's Sales."""

    @field_validator("secrets")
    @classmethod
    def _no_empty_secret(cls, secrets: list[str]) -> list[str]:
        if any(not s.strip() for s in secrets):
            raise ValueError("a secret is empty (is its environment variable set to nothing?)")
        return secrets


class Settings(_Section):
    """The whole `hooktrack.toml`."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    tracking: TrackingSettings
    forwarder: ForwarderSettings = Field(default_factory=ForwarderSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    sources: dict[str, SourceSettings] = Field(default_factory=dict)

    @field_validator("sources")
    @classmethod
    def _source_names(cls, sources: dict[str, SourceSettings]) -> dict[str, SourceSettings]:
        for name in sources:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                raise ValueError(f"source name {name!r} must be letters, digits, '-' or '_'")
        return sources


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config path: `explicit`, else `$HOOKTRACK_CONFIG`, else `./hooktrack.toml`."""
    chosen = explicit or os.environ.get("HOOKTRACK_CONFIG") or "hooktrack.toml"
    path = Path(chosen)
    if not path.is_file():
        how = "--config" if explicit else "$HOOKTRACK_CONFIG" if os.environ.get("HOOKTRACK_CONFIG") else "default"
        raise ConfigError(f"config file not found: {path} ({how}); run `hooktrack demo` for an example")
    return path


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, expand and validate the config file; raises `ConfigError`."""
    found = find_config(path)
    try:
        raw = tomllib.loads(found.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{found}: not valid TOML: {exc}") from exc
    settings = parse_settings(raw, origin=str(found))
    if settings.store.url.startswith("sqlite:///") and not settings.store.url.startswith("sqlite:////"):
        # A relative SQLite path is relative to the config file, not to wherever the command ran.
        db = found.parent / settings.store.url.removeprefix("sqlite:///")
        store = settings.store.model_copy(update={"url": f"sqlite:///{db.resolve()}"})
        settings = settings.model_copy(update={"store": store})
    return settings


def parse_settings(raw: dict[str, Any], origin: str = "hooktrack.toml") -> Settings:
    """Validate an already-parsed config mapping (after `${ENV}` expansion)."""
    expanded = _expand(raw, path="")
    refused = refusals(raw, expanded)
    if refused:
        lines = [f"  {key}: {problem}" for key, problem in refused]
        raise ConfigError(f"{origin}: invalid configuration\n" + "\n".join(lines))
    try:
        return Settings.model_validate(expanded)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(f"{origin}: invalid configuration\n" + "\n".join(lines)) from None


def _expand(value: Any, path: str) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):

        def env(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{path}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(env, value)
    return value
