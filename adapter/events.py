"""What a provider hands the core: one `ProviderEvent` in, zero or more `Lead` / `Sale` out.

All three are frozen pydantic models, so a `map` cannot change what another step sees, and an
invalid conversion (a float amount, a currency that is not ISO 4217) fails where it is built.
Identity on a conversion is a set of *hints*; the core resolves them into one
`customerExternalId` with the same rules for every provider (SPEC §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from adapter.money import normalize_currency
from adapter.payload import iso_time, utc

__all__ = [
    "Conversion",
    "Lead",
    "LeadKind",
    "Mapped",
    "PaymentLink",
    "ProviderEvent",
    "Refund",
    "Sale",
    "SaleKind",
    "parse_time",
    "utc",
]

SaleKind = Literal["purchase", "subscription", "subscription_update"]
"""`purchase`: one-time payment; `subscription`: a paid cycle (the core names it creation or
renewal from what it has stored for the subscription id); `subscription_update`: proration."""

LeadKind = Literal["sign_up", "started_trial"]


parse_time = iso_time
"""Kept for plugins written against earlier versions: `adapter.payload.iso_time`."""


UtcDatetime = Annotated[datetime, AfterValidator(utc)]
Currency = Annotated[str, AfterValidator(normalize_currency)]
Text = Annotated[str, Field(min_length=1)]
"""A non-empty string. No length limit here: a buyer-controlled string (a long landing URL, a
601-character name) must not turn a verified webhook into a 400; the destination's `check`
mends or skips what its API would refuse, with the rule in the journey."""
_FROZEN = ConfigDict(frozen=True, extra="forbid")
_MAX_STORED = 2**63 - 1
"""The largest amount a store column holds (a signed 64-bit integer): beyond it, malformed."""


class ProviderEvent(BaseModel):
    """One parsed webhook delivery.

    `id` is the provider's delivery/event id (the delivery dedup key); `livemode` is None when
    the provider has no test mode; `data` is the parsed body, for `map` to read.
    `object_key` names the object the event is about (`subscription:sub_1`) for providers that
    deliver out of order: an event older than one already stored for the same object is
    ignored as `out_of_order` (compared by `occurred_at`).
    `delivery_key` names the transmission, for providers whose signature does not bind the
    body tightly (PayPal signs only a CRC32 of it): a later delivery with the same key and
    another body is refused even though its event id differs (see `Provider.parse`).
    """

    model_config = _FROZEN

    id: Text
    type: Text
    occurred_at: UtcDatetime = Field(default_factory=lambda: datetime.now(UTC))
    """When it happened; a provider whose payload has no time leaves it out, and it is the
    moment of receipt (parse runs as the delivery arrives): a verified event is never refused
    for a missing optional timestamp."""
    livemode: bool | None = None
    data: dict[str, Any] = Field(default_factory=dict, repr=False)
    object_key: Text | None = None
    delivery_key: Text | None = None
    """A key that names this transmission (PayPal's `PAYPAL-TRANSMISSION-ID`): a second
    delivery with the same key is refused (`replayed_transmission`) if its body differs, and is
    a plain `duplicate` if the body is the same; claimed durably with the event, per source."""


def _mappings(value: Any) -> Any:
    """Keep only the mapping entries of `metadata_sources`: a provider passes its metadata fields
    as they arrive, and an empty one may be `[]` or `null` (Razorpay's `notes`)."""
    if isinstance(value, Mapping):
        return (dict(value),)
    if isinstance(value, (list, tuple)):
        return tuple(dict(v) for v in value if isinstance(v, Mapping))
    return value


class _Hints(BaseModel):
    """Identity hints every conversion carries: *where* identity lives, not what it is.

    A provider's `map` reports the merchant-controlled metadata objects, a client reference, its
    own customer id, email, phone and name; the core (`adapter.attribution.apply_identity_keys`)
    applies the source's key lists, the client-reference prefix and the precedence, and the
    ingest transaction resolves the rest with identity memory (SPEC §2).
    """

    model_config = _FROZEN

    external_id: Text | None = None
    """A customerExternalId from a field of the provider's own for it (Polar
    `customer.external_id`, Clerk `external_id`); wins over the metadata keys."""
    click_id: Text | None = None
    """A click id from a field of the provider's own for it; wins over the metadata keys."""
    metadata_sources: Annotated[tuple[dict[str, Any], ...], BeforeValidator(_mappings)] = Field(
        default=(), repr=False
    )
    """The merchant-controlled metadata objects, in precedence order (Stripe `metadata`, Paddle
    `custom_data`, ...): the core reads the source's `click_id_keys` / `customer_id_keys` from
    them. Entries that are not mappings are dropped."""
    click_sources: Annotated[tuple[dict[str, Any], ...], BeforeValidator(_mappings)] = Field(
        default=(), repr=False
    )
    """Objects read for the click id only, after `metadata_sources` (a landing URL's query: the
    visitor controls it, so it never gives a customer id)."""
    client_reference: Text | None = None
    """A merchant-set reference (Stripe `client_reference_id`): `<prefix><click id>` gives the
    click id, any other value is the merchant's user id (after the metadata keys)."""
    click_reference: Text | None = None
    """A reference that gives a click id only when it carries the prefix, and is otherwise not an
    identity (a Square payment's `reference_id`, often an order number)."""
    provider_customer_id: Text | None = None
    """The provider's own customer id (`cus_...`, `ctm_...`), the key of identity memory."""
    email: Text | None = None
    phone: Text | None = None
    """A phone number (Razorpay `contact`, Paystack `customer.phone`): the identifier of last
    resort, after the email."""
    name: Text | None = None
    timestamp: UtcDatetime | None = None
    """When the conversion happened; defaults to the event's `occurred_at`."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Small provider details for the tracking API's metadata (never the whole object)."""


class Lead(_Hints):
    """A user showed intent: `sign_up` (customer created) or `started_trial`."""

    kind: LeadKind = "sign_up"


class Sale(_Hints):
    """Money was collected. `amount` is ISO 4217 minor units, tax excluded, after discounts."""

    kind: SaleKind = "purchase"
    amount: StrictInt = Field(ge=0)
    currency: Currency
    invoice_id: Text
    subscription_id: Text | None = None
    starts_subscription: bool | None = None
    """What the provider says about a subscription payment (SPEC §8): True when it starts the
    subscription (Stripe `billing_reason: subscription_create`, Chargebee `first_invoice`), False
    for a cycle payment (`subscription_cycle`, Paddle `origin: subscription_recurring`), None when
    it does not say. The core names the Sale creation or renewal from it and what it has stored."""
    payment_refs: tuple[Text, ...] = ()
    """Other ids of this payment that a later refund may name it by (a charge, a payment intent,
    an order, a transaction), besides `invoice_id`; remembered when the Sale is stored (SPEC §9)."""
    gross_amount: StrictInt | None = Field(default=None, ge=0, le=_MAX_STORED)
    """The amount including tax, in the same minor units, when the provider gives it: a refund
    whose amount includes tax is scaled by `amount / gross_amount` (SPEC §9)."""


class Refund(BaseModel):
    """Money of a Sale going back: a refund, or a chargeback / lost dispute (SPEC §9).

    `reverses` names the payment it reverses by every id the provider gives (charge, payment
    intent, invoice, order, transaction); the core finds the Sale through the ids remembered when
    it was stored (`Sale.invoice_id`, `Sale.payment_refs`) and links learned later
    (`PaymentLink`). `amount` is minor units of `currency`; None means the whole Sale.
    `cumulative` says `amount` is the total refunded so far (Stripe `amount_refunded`, Polar and
    Lemon Squeezy `refunded_amount`): the core applies the difference from what it already
    applied. `includes_tax`: the amount includes tax, so the core scales it by the Sale's
    net/gross. `refund_id` is the provider's refund or dispute id (the dedup key when given).
    """

    model_config = _FROZEN

    reverses: tuple[Text, ...] = Field(min_length=1)
    amount: StrictInt | None = Field(default=None, ge=0, le=_MAX_STORED)
    currency: Currency | None = None
    cumulative: bool = False
    includes_tax: bool = False
    chargeback: bool = False
    refund_id: Text | None = None
    timestamp: UtcDatetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class PaymentLink(BaseModel):
    """Ids that name one payment, learned after its Sale (Stripe `invoice_payment.paid` links an
    invoice to its payment intent): remembered so a later Refund naming any of them finds the
    Sale. The event is answered `ignored`, `payment_link_recorded` (SPEC §9)."""

    model_config = _FROZEN

    ids: tuple[Text, ...] = Field(min_length=2)


Conversion = Lead | Sale
Mapped = Lead | Sale | Refund | PaymentLink
"""What `Provider.map` returns a list of."""
