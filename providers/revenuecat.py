"""RevenueCat: unsigned JSON events, authenticated by the `Authorization` header the merchant set.

RevenueCat signs nothing (its docs, Integrations → Webhooks: "(Optional) Set authorization
header that will be sent with each POST request"). The whole `Authorization` header value must
equal one of the source's `secrets` (constant-time compare, every secret tried); otherwise 401
(`CredentialsError`). Set it to something long and random (`Bearer <random>`); use HTTPS.

Body: `{"api_version": "1.0", "event": {...}}`. The delivery id is `event.id` (a retry keeps its
`id` and `event_timestamp_ms`, RevenueCat's docs say); `environment` `SANDBOX` / `PRODUCTION` is
`livemode`.

Sales: `INITIAL_PURCHASE` (not `period_type` `TRIAL`: a free trial is a `Started Trial` Lead),
`RENEWAL` (`is_trial_conversion` → the subscription's creation, else a renewal) and
`NON_RENEWING_PURCHASE` (a purchase). `PRODUCT_CHANGE` is recorded but not counted
(`product_change_not_a_charge`): the charge of the new product arrives as its own event. The
price is `price_in_purchased_currency` (major units, a JSON number read exactly from its text)
in `currency`, which includes tax; RevenueCat gives only an estimate of the tax share
(`tax_percentage`, "the estimated percentage of the transaction price that was deducted for
taxes"), so the Sale is the price less that estimate (tax `estimated`); the store's commission
(`commission_percentage`) is a fee, not tax, and is not taken off. `invoiceId` is the store's
`transaction_id`; the subscription is named by `original_transaction_id`.

Refunds: `CANCELLATION` with `cancel_reason` `CUSTOMER_SUPPORT` (RevenueCat: "customer received
a refund") reverses `transaction_id`, by the price it carries (negative for refunds, gross of
tax) or, without one, the whole Sale. Other cancellations are recorded (`cancellation_recorded`).

Identity: the app's own user id is the first of `app_user_id`, `original_app_user_id`,
`aliases` that is not an anonymous `$RCAnonymousID:` id (those are never a customer id);
`subscriber_attributes` (`{"$email": {"value": ..., "updated_at_ms": ...}, ...}`) give the
email, name and phone, and are read like metadata for the click id (`dub_id`, `clickId`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from adapter.errors import CredentialsError, Ignore, PayloadError
from adapter.events import Lead, ProviderEvent, Refund, Sale, SaleKind
from adapter.money import exponent, normalize_currency
from adapter.payload import boolean, compact, epoch_time, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import secret_in

__all__ = ["RevenueCatProvider"]

ANONYMOUS = "$RCAnonymousID:"
_SALES: dict[str, SaleKind] = {
    "INITIAL_PURCHASE": "subscription",
    "RENEWAL": "subscription",
    "NON_RENEWING_PURCHASE": "purchase",
}
_ENVIRONMENTS = {"PRODUCTION": True, "SANDBOX": False}


class RevenueCatProvider(SamplesMixin, Provider):
    """RevenueCat: the `Authorization` header must equal one of the source's secrets (401)."""

    name = "revenuecat"
    tax = "estimated"  # price includes tax; `tax_percentage` is RevenueCat's estimate of its share

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Require the `Authorization` header to be one of `secrets`; `CredentialsError` (401)."""
        given = (headers.get("authorization") or "").strip()
        if not given:
            raise CredentialsError("No Authorization header (set one in RevenueCat's webhook settings)")
        if not secret_in(given, [s.strip() for s in secrets]):  # every secret compared
            raise CredentialsError("The Authorization header does not match the source's secrets")

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """The header RevenueCat sends: the configured value, verbatim."""
        return {"Authorization": secret}

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        event = mapping(data.get("event"))
        event["id"] = f"{unique[:8]}-0000-4000-8000-{unique[-12:].rjust(12, '0')}"
        event["event_timestamp_ms"] = event["purchased_at_ms"] = now * 1000
        if text(event.get("transaction_id")) and event.get("type") != "CANCELLATION":
            event["transaction_id"] = f"{event['transaction_id']}{unique}"

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by its `id`, typed by `type`, at `event_timestamp_ms`."""
        data = self.json_body(body)
        event = data.get("event")
        if not isinstance(event, dict):
            raise PayloadError("RevenueCat webhook without an `event` object")
        event_id, event_type = text(event.get("id")), text(event.get("type"))
        if event_id is None or event_type is None:
            raise PayloadError("RevenueCat event without string `id` and `type`")
        occurred = epoch_time(event.get("event_timestamp_ms"), "ms")
        if occurred is None:
            raise PayloadError("RevenueCat event without integer `event_timestamp_ms`")
        livemode = _ENVIRONMENTS.get(text(event.get("environment")) or "")
        return ProviderEvent(id=event_id, type=event_type, occurred_at=occurred, livemode=livemode, data=data)

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale | Refund]:
        """Sales, a trial's Lead, refunds (see the module docstring); `[]` for other types.

        Raises `Ignore("product_change_not_a_charge")` for `PRODUCT_CHANGE`,
        `Ignore("cancellation_recorded")` for a cancellation that is not a refund and
        `Ignore("zero_amount")` for a purchase of nothing.
        """
        obj: dict[str, Any] = event.data["event"]
        if event.type == "PRODUCT_CHANGE":
            raise Ignore("product_change_not_a_charge")
        if event.type == "CANCELLATION":
            return [self._refund(obj)]
        if event.type == "INITIAL_PURCHASE" and text(obj.get("period_type")) == "TRIAL":
            return [self._trial(obj)]
        if event.type in _SALES:
            return [self._sale(event.type, obj)]
        return []

    def _sale(self, event_type: str, obj: dict[str, Any]) -> Sale:
        currency, transaction = _currency(obj), text(obj.get("transaction_id"))
        if transaction is None:
            raise PayloadError(f"RevenueCat {event_type} without `transaction_id`")
        price = _decimal(obj, "price_in_purchased_currency")
        if price is None or price <= 0:
            raise Ignore("zero_amount")
        share = _decimal(obj, "tax_percentage") or Decimal(0)
        if not 0 <= share < 1:
            raise PayloadError(f"RevenueCat `tax_percentage` is not a fraction below 1: {obj.get('tax_percentage')!r}")
        gross = _minor(price, currency)
        amount = _minor(price * (1 - share), currency)
        subscription = text(obj.get("original_transaction_id")) if event_type != "NON_RENEWING_PURCHASE" else None
        starts = {"INITIAL_PURCHASE": True, "RENEWAL": boolean(obj.get("is_trial_conversion")) is True}
        return Sale(
            kind=_SALES[event_type],
            amount=amount,
            gross_amount=gross,
            currency=currency,
            invoice_id=transaction,
            subscription_id=subscription,
            starts_subscription=starts.get(event_type),
            timestamp=epoch_time(obj.get("purchased_at_ms"), "ms"),
            **_hints(obj),
            metadata=compact(subscriptionId=subscription, productId=text(obj.get("product_id")),
                             store=text(obj.get("store")), periodType=text(obj.get("period_type")),
                             taxAmount=gross - amount, taxPercentage=str(share),
                             countryCode=text(obj.get("country_code"))),
        )

    def _trial(self, obj: dict[str, Any]) -> Lead:
        subscription = text(obj.get("original_transaction_id")) or text(obj.get("transaction_id"))
        return Lead(kind="started_trial", timestamp=epoch_time(obj.get("purchased_at_ms"), "ms"), **_hints(obj),
                    metadata=compact(subscriptionId=subscription, productId=text(obj.get("product_id")),
                                     store=text(obj.get("store"))))

    def _refund(self, obj: dict[str, Any]) -> Refund:
        if text(obj.get("cancel_reason")) != "CUSTOMER_SUPPORT":
            raise Ignore("cancellation_recorded")
        transaction = text(obj.get("transaction_id"))
        if transaction is None:
            raise PayloadError("RevenueCat refund without `transaction_id`")
        price = _decimal(obj, "price_in_purchased_currency")
        currency = _currency(obj) if price else None
        amount = _minor(abs(price), currency) if price and currency else None
        return Refund(
            reverses=(transaction,),
            amount=amount,
            currency=currency if amount is not None else None,
            includes_tax=amount is not None,
            timestamp=epoch_time(obj.get("event_timestamp_ms"), "ms"),
            metadata=compact(cancelReason="CUSTOMER_SUPPORT",
                             originalTransactionId=text(obj.get("original_transaction_id"))),
        )


def _currency(obj: dict[str, Any]) -> str:
    try:
        return normalize_currency(text(obj.get("currency")) or "")
    except ValueError:
        raise PayloadError(f"RevenueCat event without an ISO 4217 `currency`: {obj.get('currency')!r}") from None


def _decimal(obj: dict[str, Any], key: str) -> Decimal | None:
    """A JSON number read exactly: a float by its shortest repr (`4.99` → `Decimal("4.99")`),
    never by its binary value; None when absent or null; PayloadError for anything else."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise PayloadError(f"RevenueCat `{key}` is not a number: {value!r}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise PayloadError(f"RevenueCat `{key}` is not a number: {value!r}") from None
    if not number.is_finite():
        raise PayloadError(f"RevenueCat `{key}` is not a finite number: {value!r}")
    return number


def _minor(amount: Decimal, currency: str) -> int:
    """Major units → ISO minor units, half to even (an estimated net has more decimals)."""
    return int(amount.scaleb(exponent(currency)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _attributes(obj: dict[str, Any]) -> dict[str, Any]:
    """`subscriber_attributes` as plain `{name: value}` (each arrives as `{value, updated_at_ms}`)."""
    return {name: attr.get("value") for name, attr in mapping(obj.get("subscriber_attributes")).items()
            if isinstance(attr, dict) and text(attr.get("value"))}


def app_user_id(obj: dict[str, Any]) -> str | None:
    """The app's own user id: the first non-anonymous of `app_user_id`, `original_app_user_id`
    and `aliases`; None when RevenueCat knows the user only anonymously."""
    raw = obj.get("aliases")
    aliases: list[Any] = raw if isinstance(raw, list) else []
    for candidate in (obj.get("app_user_id"), obj.get("original_app_user_id"), *aliases):
        value = text(candidate)
        if value and not value.startswith(ANONYMOUS):
            return value
    return None


def _hints(obj: dict[str, Any]) -> dict[str, Any]:
    attributes = _attributes(obj)
    original = text(obj.get("original_app_user_id"))
    return {
        "external_id": app_user_id(obj),
        "provider_customer_id": original if original and not original.startswith(ANONYMOUS) else None,
        "metadata_sources": (attributes,),
        "email": text(attributes.get("$email")),
        "name": text(attributes.get("$displayName")),
        "phone": text(attributes.get("$phoneNumber")),
    }
