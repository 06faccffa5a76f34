"""The destination extension point: the tracking API conversions are delivered to (SPEC §10).

A destination plugin is a `Destination` subclass registered under the entry-point group
`hooktrack.destinations`, chosen by `[tracking] api`. The built-in one is declared there exactly
like a third-party one:

    [project.entry-points."hooktrack.destinations"]
    dub = "adapter.destinations.dub:DubDestination"

The outbox holds destination-neutral `Conversion`s; a destination knows one API's rules:

- `check(conversion)` — pure: what the API would refuse (`Problem(action="skip")`) and what
  can be mended without changing meaning (`Problem(action="mend", value=...)`). Runs inside
  the ingest transaction, so nothing is committed that the API is known to refuse.
- `render(conversion)` — pure: the `Request` (method, path, headers, JSON body) in the API's units.
- `classify(conversion, request, answer)` — pure: a `Verdict` from the status, headers and body.
  A change that takes several requests (find a commission, then change it) answers
  `Verdict.follow(next_request)` until it is done.
- `rate(answer)` — what the answer says about the API's rate limit, for the forwarder's pacing.

The forwarder owns the network, pacing, leases and retries and knows nothing of any one API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Literal

from adapter.records import Conversion

__all__ = [
    "ENTRY_POINT_GROUP",
    "Answer",
    "Destination",
    "Problem",
    "RateInfo",
    "Request",
    "Verdict",
    "build_destination",
    "load_destinations",
    "parse_reset",
]

log = logging.getLogger("hooktrack.destinations")
ENTRY_POINT_GROUP = "hooktrack.destinations"


@dataclass(frozen=True)
class Problem:
    """Something the destination's API would refuse in a conversion.

    `field` is the `Conversion` attribute concerned; `action` is `mend` (set it to `value` —
    None drops it — and send) or `skip` (never send: the conversion is stored as `skipped`,
    reason `invalid_for_destination`). `rule` states the API's rule in its own field names.
    """

    field: str
    rule: str
    action: Literal["mend", "skip"]
    value: Any = None

    def describe(self) -> str:
        """`customerName is at most 100 characters (mended)`: for the journey."""
        how = "refused" if self.action == "skip" else "dropped" if self.value is None else "mended"
        return f"{self.rule} ({how})"


@dataclass(frozen=True)
class Request:
    """One HTTP request to the destination; `path` is relative to `tracking.url`."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any] | None = None
    step: str = "send"
    """What this request does, for the journey (`send`, `find_commission`, `update_commission`)."""


@dataclass(frozen=True)
class Answer:
    """The API's answer to one request: status, lower-cased headers, body, when it arrived."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    at_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        import json

        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


Outcome = Literal["delivered", "not_counted", "unattributed", "retry", "dead", "pause", "rate_limited", "follow"]


@dataclass(frozen=True)
class Verdict:
    """What an answer means for the conversion (SPEC §7).

    - `delivered`: the API counted it (`note` may say `duplicate_at_api`, `already_refunded`).
    - `not_counted`: accepted but not counted; tried again until the attribution window ends,
      then `unattributed` with `reason`.
    - `unattributed`: counted nothing and never will (no retry).
    - `retry`: a transient failure; backoff, spends an attempt, `after_s` is a floor.
    - `dead`: refused; kept for `hooktrack replay`.
    - `pause`: the destination as a whole cannot accept anything now (a wrong key); nothing is
      dead-lettered, one probe goes out every `forwarder.pause_probe_s`.
    - `rate_limited`: the whole destination waits `after_s` (or backs off when None).
    - `follow`: send `next` now, as the next step of the same delivery.

    `memo` (any verdict): small values the destination wants remembered about the Sale a Refund
    reverses (the commission's sale amount as first read); the forwarder stores them for that
    Sale and this destination (keys already stored are kept: first write wins) and hands them
    back as `Conversion.memo` to every later `render`/`classify` of a refund of that Sale.
    """

    outcome: Outcome
    reason: str | None = None
    after_s: float | None = None
    note: str | None = None
    next: Request | None = None
    memo: Mapping[str, Any] | None = None

    @classmethod
    def delivered(cls, note: str | None = None) -> Verdict:
        return cls("delivered", note=note)

    @classmethod
    def not_counted(cls, reason: str) -> Verdict:
        return cls("not_counted", reason=reason)

    @classmethod
    def unattributed(cls, reason: str) -> Verdict:
        return cls("unattributed", reason=reason)

    @classmethod
    def retry(cls, reason: str, after_s: float | None = None) -> Verdict:
        return cls("retry", reason=reason, after_s=after_s)

    @classmethod
    def dead(cls, reason: str) -> Verdict:
        return cls("dead", reason=reason)

    @classmethod
    def pause(cls, reason: str) -> Verdict:
        return cls("pause", reason=reason)

    @classmethod
    def rate_limited(cls, after_s: float | None) -> Verdict:
        return cls("rate_limited", reason="rate_limited", after_s=after_s)

    @classmethod
    def follow(cls, request: Request, note: str | None = None) -> Verdict:
        return cls("follow", next=request, note=note)


@dataclass(frozen=True)
class RateInfo:
    """An answer's rate-limit headers: `limit` requests per window, `remaining` now, and when
    the current window ends (`reset_at_ms`, epoch ms), each None when absent."""

    limit: int | None
    remaining: int | None
    reset_at_ms: int | None


class Destination:
    """Base class of destination plugins (see the module docstring for the contract).

    An instance is built once per process with the `[tracking]` settings (`url`, `api_key`,
    `timeout_s`); `check`, `render`, `classify` and `rate` must stay pure: no I/O, no clock
    (an `Answer` carries its own arrival time), no shared state.
    """

    name: ClassVar[str] = ""
    key_prefix: ClassVar[str | None] = None
    """The usual prefix of the API's keys (Dub: `dub_`): `hooktrack check` warns without it."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def validate_source(self, source: str, settings: Any) -> list[str]:
        """Startup errors for a source's settings this API cannot honour (a `payment_processor`
        it does not accept), as `key: message` strings; none by default."""
        return []

    def check(self, conversion: Conversion) -> list[Problem]:
        raise NotImplementedError

    def render(self, conversion: Conversion) -> Request:
        raise NotImplementedError

    def classify(self, conversion: Conversion, request: Request, answer: Answer) -> Verdict:
        raise NotImplementedError

    def rate(self, answer: Answer) -> RateInfo:
        """Rate-limit information of an answer; the common `X-RateLimit-*` headers by default."""
        return RateInfo(_int(answer.headers.get("x-ratelimit-limit")),
                        _int(answer.headers.get("x-ratelimit-remaining")),
                        parse_reset(answer.headers.get("x-ratelimit-reset"), answer.at_ms))


def _int(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def parse_reset(value: str | None, now_ms: int) -> int | None:
    """A `Retry-After` / `X-RateLimit-Reset` value as an epoch-ms moment, or None.

    Accepted: seconds to wait (`30`), an HTTP date, a Unix time in seconds or in milliseconds
    (Dub sends milliseconds). Which one a number is follows from its size: a Unix time in
    seconds is above 10^9 and in milliseconds above 10^12; anything smaller is a delay.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            return int(parsedate_to_datetime(text).timestamp() * 1000)
        except (TypeError, ValueError, IndexError):
            return None
    if number != number or number < 0:  # NaN or negative
        return None
    if number >= 1e12:
        return int(number)
    if number >= 1e9:
        return int(number * 1000)
    return now_ms + int(number * 1000)


def load_destinations(group: str = ENTRY_POINT_GROUP) -> dict[str, type[Destination]]:
    """Installed destination classes by name; broken plugins are logged and skipped."""
    found: dict[str, type[Destination]] = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        cls = _load(ep)
        if cls is not None and ep.name not in found:
            found[ep.name] = cls
    return found


def _load(ep: EntryPoint) -> type[Destination] | None:
    try:
        obj = ep.load()
    except Exception as exc:  # a third-party plugin may raise anything on import
        log.warning("destination plugin %r failed to load and is skipped: %r", ep.name, exc)
        return None
    if not (isinstance(obj, type) and issubclass(obj, Destination)) or obj.name != ep.name:
        log.warning("destination plugin %r is not a Destination subclass named %r; skipped", ep.name, ep.name)
        return None
    return obj


def build_destination(settings: Any, registry: dict[str, type[Destination]] | None = None) -> Destination:
    """The destination `[tracking] api` names, built with the `[tracking]` settings; raises
    `ConfigError` for an unknown one and for source settings it cannot honour."""
    from adapter.errors import ConfigError

    found = registry if registry is not None else load_destinations()
    cls = found.get(settings.tracking.api)
    if cls is None:
        known = ", ".join(sorted(found)) or "none"
        raise ConfigError(f"tracking.api: unknown destination {settings.tracking.api!r} (installed: {known})")
    destination = cls(settings.tracking)
    problems = [p for name, src in settings.sources.items() for p in destination.validate_source(name, src)]
    if problems:
        raise ConfigError("\n".join(problems))
    return destination
