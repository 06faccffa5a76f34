"""The records the store hands back, and the destination-neutral conversion it keeps.

`Conversion` is what the outbox holds: what a Lead, Sale or Refund *is* (exact ISO 4217 money,
resolved identity, names, ids), independent of any tracking API. A destination plugin turns it
into requests (`adapter.destinations`). The other records are rows the store returns; they live
here, not beside the SQL, so that callers depend on the core and not on a storage engine.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Literal

__all__ = ["Attempt", "Claimed", "Conversion", "ConversionKind", "DestinationState", "Identity", "Settlement"]

ConversionKind = Literal["lead", "sale", "refund"]


@dataclass(frozen=True)
class Conversion:
    """One conversion as hooktrack knows it, before any destination's rules.

    Money is `amount` in ISO 4217 minor units of `currency` (cents, yen, fils), never a float.
    `invoice_id` is the provider's own id; `invoice_unique` says whether it is unique across
    every account of the provider (`in_...`, UUIDs) or only within the merchant's account
    (numeric order numbers), which a destination that dedups across sources must qualify.
    `metadata` holds small provider details (never the whole provider object).
    """

    kind: ConversionKind
    source: str
    provider: str
    event_name: str
    occurred_at: int
    """Epoch milliseconds of the moment the conversion happened (the event's time)."""
    customer_external_id: str | None = None
    click_id: str | None = None
    email: str | None = None
    name: str | None = None
    provider_customer_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    invoice_id: str | None = None
    invoice_unique: bool = True
    subscription_id: str | None = None
    payment_processor: str | None = None
    """A source's own `payment_processor` setting, overriding the destination's mapping."""
    tax: str | None = None
    """How the provider reports tax: `excluded` (amount is net), `estimated`, `included`."""
    provider_event_id: str | None = None
    provider_event_type: str | None = None
    livemode: bool | None = None
    forward_without_click: bool = False
    """The source forwards Leads without a clickId (`forward_leads_without_click_id`)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    # A Refund (kind "refund", SPEC §9) carries the Sale it reverses: `amount`/`currency` are
    # this refund's (tax scaled, never more than the Sale), `invoice_id`/`invoice_unique` and the
    # identity are the Sale's.
    reverses: int | None = None
    """The conversion id of the Sale a Refund reverses."""
    sale_amount: int | None = None
    """The reversed Sale's amount, minor units."""
    refunded: int | None = None
    """The total refunded of the Sale once this refund applies (≤ `sale_amount`): a destination
    that sets an absolute remaining amount uses `sale_amount - refunded`."""
    chargeback: bool = False
    refund_id: str | None = None
    memo: dict[str, Any] = field(default_factory=dict)
    """What the destination asked to remember about the reversed Sale (`Verdict.memo`, such as
    the commission's sale amount as first read); filled in by the forwarder before `render` and
    `classify`, never part of the stored record."""

    def to_json(self) -> str:
        """Compact JSON of the fields that differ from their defaults, as the store keeps it
        (so `amount` 0, `livemode` False and `invoice_unique` False survive the round trip)."""
        data = {}
        for name, default in _defaults(type(self)):
            value = getattr(self, name)
            if default is _REQUIRED or type(value) is not type(default) or value != default:
                data[name] = value
        return _COMPACT.encode(data)

    @classmethod
    def from_json(cls, text: str) -> Conversion:
        """Read what `to_json` wrote; unknown keys (from a newer hooktrack) are dropped."""
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def but(self, **changes: Any) -> Conversion:
        """A copy with `changes` applied."""
        return replace(self, **changes)


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_REQUIRED = object()
_DEFAULTS: dict[type, list[tuple[str, Any]]] = {}


def _defaults(cls: type) -> list[tuple[str, Any]]:
    """`(field name, default)` of a dataclass, `_REQUIRED` for a field without one; worked
    out once per class (a field's value is left out of the JSON when it is its default of the
    same type: `0` is not the default `False`)."""
    found = _DEFAULTS.get(cls)
    if found is None:
        found = []
        for f in fields(cls):
            if callable(f.default_factory):
                found.append((f.name, f.default_factory()))
            elif f.default is not MISSING:
                found.append((f.name, f.default))
            else:
                found.append((f.name, _REQUIRED))
        _DEFAULTS[cls] = found
    return found


@dataclass(frozen=True)
class Identity:
    """A row of identity memory."""

    external_id: str | None
    explicit: bool
    click_id: str | None
    email: str | None
    name: str | None


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one worker: the delivery row and the conversion it carries."""

    id: int
    """The delivery id."""
    conversion_id: int
    kind: str
    source: str
    conversion: str
    """The conversion's JSON (`Conversion.to_json`)."""
    attempts: int
    created_at: int
    window_until: int


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as recorded."""

    delivery_id: int
    conversion_id: int
    status_code: int | None
    latency_ms: int
    outcome: str
    error: str | None
    excerpt: str | None


@dataclass(frozen=True)
class Settlement:
    """What one attempt did to its delivery: its new state, reason and next attempt time.

    `counted` is False for attempts that do not spend `forwarder.max_attempts` (a 429, a
    destination pause, an answer retried within the attribution window).
    """

    delivery_id: int
    state: str
    reason: str | None
    next_at: int
    status_code: int | None
    error: str | None
    counted: bool = True


@dataclass(frozen=True)
class DestinationState:
    """A destination's shared state: paused (and why) or sending."""

    name: str
    paused_reason: str | None = None
    paused_at: int | None = None
    next_probe_at: int | None = None
    failures: int = 0
