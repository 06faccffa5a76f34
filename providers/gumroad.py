"""Gumroad Ping: unsigned form posts, authenticated by a secret token in the source's URL.

Gumroad signs nothing. Point its Ping at `https://your-host/webhooks/gumroad?token=SECRET`: the
`token` query parameter must equal one of the source's `secrets` (constant-time compare), and
the form's `seller_id` must equal the source setting `seller_id`. Either failure is a 401
(`CredentialsError`). The token authenticates the sender, not the body: use HTTPS.

The body is `application/x-www-form-urlencoded`, nested values flattened Rails-style
(`url_params[clickId]=...`, `custom_fields[Company]=...`, `card[type]=visa`). Gumroad retries a
failed ping (hourly, for a few hours) with `retry_count` added to the body, so the delivery id is
`{resource_name}:{sale_id}` and never the body: a retry is a duplicate, and the `refund` or
`dispute` ping of the same sale (API resource subscriptions) is a delivery of its own.

Sale: a `sale` ping. `price` is what was paid, in **USD cents** whatever the product's
`currency` (Gumroad's docs: "The price paid, in USD cents"; `price_cents` is the USD value of the
displayed price in Gumroad's source), so the Sale is in USD and the product's currency is kept
as `productCurrency` metadata. The ping has no tax field: Gumroad keeps the sales tax and VAT it
collects outside `price` (`tax_cents`, `gumroad_tax_cents`), so `price` is taken as net of tax.
A ping with a `subscription_id` is a membership payment (kind `subscription`; the core names the
first one it sees creation and later ones renewals; `is_recurring_charge` is kept as metadata).
A gift is paid by the gifter: `gift_price` and `gifter_email`. Ignored: `refunded`, `disputed`,
a preorder authorization (nothing charged yet), $0. `test` purchases (buying your own product)
have `livemode` False, every other ping True.

Refund: the `refund` ping (an API resource subscription) of a sale with `refunded` true is a
Refund of the whole sale (`sale_id`; the ping names no refunded amount). A partial refund pings
`refund` with `refunded` false and no amount: `Ignore("partial_refund_amount_unknown")`, the
commission is left as it is. Its delivery id is `refund:{sale_id}:partial` (`:full` once refunded),
so the full refund that follows a partial one is not taken for its duplicate. The `dispute` ping
with `disputed` true is a chargeback of the whole sale; `dispute_won` is not mapped.
Click and user ids: `url_params` (query parameters of the product link the buyer opened), then
`custom_fields`. Customer: `email`, `full_name`, Gumroad's `purchaser_id`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from adapter.errors import CredentialsError, Ignore, PayloadError
from adapter.events import Mapped, ProviderEvent, Refund, Sale, SaleKind
from adapter.payload import boolean, compact, integer, iso_time, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import secret_in
from providers.forms import encode_form, parse_form, sample_fields

__all__ = ["GumroadProvider", "GumroadSettings"]

# Subscription pings (cancellation, subscription_ended, ...) have no sale_id; one of these
# times tells two of them apart.
_SUBSCRIPTION_TIMES = ("cancelled_at", "ended_at", "effective_as_of", "restarted_at", "created_at")


class GumroadSettings(BaseModel):
    """`seller_id`: the seller id Gumroad's pings carry (Settings → Advanced, or any ping)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seller_id: str = Field(min_length=1)


def _flag(fields: dict[str, str], key: str) -> bool:
    """A form flag: only `true` (any case) is set."""
    return boolean(fields.get(key)) is True


def _nested(fields: dict[str, str], prefix: str) -> dict[str, str]:
    """`{name: value}` of the fields `prefix[name]` (Rails-style nested form fields)."""
    start = prefix + "["
    return {k[len(start):-1]: v for k, v in fields.items() if k.startswith(start) and k.endswith("]")}


def _cents(fields: dict[str, str], key: str) -> int:
    value = integer(fields.get(key))
    if value is None or value < 0:
        raise PayloadError(f"Gumroad `{key}` is not an amount in cents: {fields.get(key, '')[:20]!r}")
    return value


def _timestamp(value: str | None) -> datetime:
    if not value:
        raise PayloadError("Gumroad ping without `sale_timestamp`")
    moment = iso_time(value)
    if moment is None:
        raise PayloadError(f"Gumroad `sale_timestamp` is not an ISO 8601 time: {value[:40]!r}")
    return moment


class GumroadProvider(SamplesMixin, Provider):
    """Gumroad Ping: `?token=` in the URL (the source's secrets) plus a `seller_id` check."""

    name = "gumroad"
    cancellations = frozenset({"cancellation", "subscription_ended"})
    invoice_ids = "account"  # SPEC §1 names Gumroad: `sale_id` is Gumroad's per-seller sale id, not a global key
    settings_model = GumroadSettings

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Require the URL's `token` to be one of `secrets` and the form's `seller_id` to be the
        source's; raises `CredentialsError` (401) otherwise."""
        token = ctx.query.get("token")
        if not token:
            raise CredentialsError("No ?token= in the webhook URL")
        if not secret_in(token, secrets):  # every secret compared, in constant time
            raise CredentialsError("The URL token does not match the source's secrets")
        settings: GumroadSettings = ctx.options
        try:
            seller = parse_form(body).get("seller_id")
        except PayloadError:
            seller = None
        if seller is None or not secret_in(seller, [settings.seller_id]):
            raise CredentialsError("The ping's seller_id is not the source's seller_id")

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """No headers: a ping is authenticated by the URL's token (see `sample_query`)."""
        return {}

    def sample_query(self, secret: str) -> dict[str, str]:
        """The query parameters a genuine ping's URL carries: `{"token": secret}`."""
        return {"token": secret}

    def samples(self) -> dict[str, bytes]:
        """Samples as form bodies (stored as JSON objects of the form's fields)."""
        return {name: encode_form(sample_fields(raw)) for name, raw in super().samples().items()}

    def sample(self, name: str, *, unique: str, now: int) -> bytes:
        fields = sample_fields(super().samples()[name])
        fields["sale_id"] = f"{unique}=="
        fields["order_number"] = str(int(hashlib.sha256(unique.encode()).hexdigest()[:8], 16))
        fields["sale_timestamp"] = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return encode_form(fields)

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded"}

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The ping by `{resource_name}:{sale_id}` (never the body: retries add `retry_count`)."""
        fields = parse_form(body)
        resource = text(fields.get("resource_name")) or "sale"
        sale_id = text(fields.get("sale_id"))
        if sale_id is not None:
            delivery, occurred = f"{resource}:{sale_id}", _timestamp(fields.get("sale_timestamp"))
            if resource == "refund":  # a partial refund pings too: the full one is a new delivery
                delivery += ":full" if _flag(fields, "refunded") else ":partial"
        else:
            subscription = text(fields.get("subscription_id"))
            moment = next((fields[k] for k in _SUBSCRIPTION_TIMES if fields.get(k)), None)
            if subscription is None or moment is None:
                raise PayloadError("Gumroad ping without `sale_id` (or `subscription_id` and a time)")
            delivery, occurred = f"{resource}:{subscription}:{moment}", _timestamp(moment)
        return ProviderEvent(id=delivery, type=resource, occurred_at=occurred,
                             livemode=not _flag(fields, "test"), data=fields)

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """A `sale` ping → Sale; a `refund` ping of a refunded sale → Refund of the whole sale,
        a `dispute` ping → chargeback; `[]` for other resources (cancellation, ...). Raises
        `Ignore`: `refunded`, `disputed`, `preorder_authorization` (not charged yet),
        `zero_amount` (a free product or a $0 trial start), `partial_refund_amount_unknown`
        (a partial refund: the ping gives no amount), `not_disputed`."""
        fields: dict[str, str] = event.data
        if event.type in ("refund", "dispute"):
            return [_reversal(event.type, fields)]
        if event.type != "sale":
            return []
        for flag, reason in (("refunded", "refunded"), ("disputed", "disputed"),
                             ("is_preorder_authorization", "preorder_authorization")):
            if _flag(fields, flag):
                raise Ignore(reason)
        gift = _flag(fields, "is_gift_receiver_purchase") and bool(fields.get("gift_price"))
        amount = _cents(fields, "gift_price" if gift else "price")
        if amount <= 0:
            raise Ignore("zero_amount")
        subscription = text(fields.get("subscription_id"))
        kind: SaleKind = "subscription" if subscription else "purchase"
        return [Sale(
            kind=kind,
            amount=amount,
            currency="usd",
            invoice_id=str(fields["sale_id"]),
            subscription_id=subscription,
            provider_customer_id=None if gift else text(fields.get("purchaser_id")),
            email=text(fields.get("gifter_email" if gift else "email")),
            name=None if gift else text(fields.get("full_name")),
            metadata_sources=(_nested(fields, "url_params"), _nested(fields, "custom_fields")),
            metadata=compact(subscriptionId=subscription, productCurrency=text(fields.get("currency")),
                              productId=text(fields.get("product_id")), orderNumber=text(fields.get("order_number")),
                              recurringCharge=True if _flag(fields, "is_recurring_charge") else None,
                              gift=True if gift else None),
        )]


def _reversal(resource: str, fields: dict[str, str]) -> Refund:
    """A `refund` (fully refunded) or `dispute` ping: the whole sale, as Gumroad names no amount."""
    sale_id = text(fields.get("sale_id"))
    if sale_id is None:
        raise PayloadError(f"Gumroad {resource} ping without `sale_id`")
    if resource == "refund" and not _flag(fields, "refunded"):
        raise Ignore("partial_refund_amount_unknown")
    if resource == "dispute" and not _flag(fields, "disputed"):
        raise Ignore("not_disputed")
    return Refund(reverses=(sale_id,), amount=None, currency="usd", chargeback=resource == "dispute",
                  metadata=compact(orderNumber=text(fields.get("order_number"))))
