"""FastSpring: `X-FS-Signature`, base64 HMAC-SHA256 of the raw body; several events per delivery.

The HMAC key is the webhook's "HMAC SHA256 Secret" as typed in the FastSpring App (its UTF-8
bytes). A delivery is `{"events": [{"id", "type", "created" (ms), "live", "data"}, ...]}`:
`parse` returns one `ProviderEvent` per entry, each deduped on its own `id`. FastSpring's own
retries keep the event ids, but a *manual* resend (Webhook Log, order page) gets new ones, so
the business key is what protects against counting twice: every Sale's `invoiceId` is the
FastSpring order id (`order.id`; the customer-facing `reference` is a payment ref too).
FastSpring takes any 200 as "all events processed".

Sale: `order.completed` and `subscription.charge.completed`. Creation, renewal and update
follow what FastSpring documents of the two events (developer.fastspring.com):
- `order.completed` fires for new orders only: "For subscriptions, this webhook fires after the
  initial transaction; rebills do not trigger this event" ("Successful Orders"). An order with a
  subscription item starts that subscription (`starts_subscription=True`); a $0 one is a free
  trial (`zero_amount`, `trial_of` the subscription), so its first paid charge is the creation.
- `subscription.charge.completed` fires "for automatic rebills, managed rebills, and proration
  adjustments. It does not fire for the initial purchase" ("Subscription Charges"): a rebill is a
  renewal (`starts_subscription=False`; the docs' rebill sample has `order.acquisitionTransactionType`
  `GROUP_REGULAR_PERIOD`, no other value is documented, so it is not read). A proration is
  `Subscription update`: a prorated plan change creates its own order ("A proration order is
  created for the changes", "Change the product in a subscription"), whose items carry the
  prorated amounts (`proratedItemProratedCharge`, `proratedItemChangeAmount`,
  `proratedItemCreditAmount`, `proratedItemTotal`: order item fields of the Orders API reference,
  "Prorated charge amount in base currency", 0 in its example of a plain order); an item with one
  of them not 0 marks the charge a proration. Proration needs a subscription billed at least once and no
  trial ("Manage active subscriptions"), so it is never the creation. Without Webhook Expansion
  the charge's `order` is an id only and every charge is a renewal.
- `subscription.activated` (sent with the initial `order.completed`) carries no amount and is
  not counted; no `order.reason`, `proration` or `prorated` flag is documented on these events
  (`subscription.changed` is the time of the subscription's last change, not a signal).
Amounts are major-unit JSON numbers, read
exactly (the body is parsed with `Decimal` numbers); the Sale is `total - tax` in the order's
`currency` (not `totalInPayoutCurrency`). `return.created` → Refund of the original order.

Identity needs **Webhook Expansion** on the webhook (FastSpring App → Developer Tools →
Webhooks → Edit Webhook Details): only then do events carry the `account` object (email, name,
`lookup.custom` = the merchant's own account id) and the charge's full order. Without it an
event names the account by id only: the Sale keeps the FastSpring account id as its customer,
the order's `customer` (email, name) where the order is there, and never fails for the rest.
Click ids come from the order's `tags` (set with the Store Builder's `fastspring.builder.tag`).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Mapped, ProviderEvent, Refund, Sale, SaleKind
from adapter.money import to_minor
from adapter.payload import boolean, compact, epoch_time, ident, mapping, object_id, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BodyHmac

__all__ = ["FastSpringProvider"]


def _money(value: Any, currency: str, what: str) -> int:
    """A major-unit JSON number (read as Decimal) in minor units; PayloadError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        raise PayloadError(f"FastSpring `{what}` is not an amount: {value!r}")
    try:
        return to_minor(value, currency)
    except ValueError as exc:
        raise PayloadError(f"FastSpring `{what}`: {exc}") from None


def _subscription(order: dict[str, Any]) -> str | None:
    """The subscription an order's items belong to (an id, or an expanded object)."""
    for item in order.get("items") or []:
        found = object_id(mapping(item).get("subscription")) if isinstance(item, dict) else None
        if found:
            return found
    return None


class FastSpringProvider(SamplesMixin, Provider):
    """FastSpring: base64 HMAC-SHA256 of the body in `X-FS-Signature`; a list of events per delivery."""

    name = "fastspring"
    scheme = BodyHmac(header="X-FS-Signature", encoding="base64",
                      hint="; the key is the webhook's HMAC SHA256 Secret, exactly as entered in FastSpring")
    tax = "excluded"

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        for index, event in enumerate(data.get("events", [])):
            event["id"] = f"{unique}{index}"
            event["created"] = now * 1000
            order = event["data"].get("order") if event["type"] != "order.completed" else event["data"]
            if isinstance(order, dict):
                order["id"] = order["order"] = f"ord_{unique}{index}"
            elif isinstance(order, str):
                event["data"]["order"] = f"ord_{unique}{index}"

    def parse(self, body: bytes, headers: Headers) -> list[ProviderEvent]:
        """One event per entry of `events`, by its `id`, at `created` (ms), `live` as livemode."""
        try:
            data = json.loads(body, parse_float=Decimal)
        except (ValueError, RecursionError) as exc:
            raise PayloadError(f"body is not valid JSON: {type(exc).__name__}") from None
        entries = data.get("events") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise PayloadError("FastSpring delivery without an `events` list")
        events = []
        for entry in entries:
            entry = mapping(entry)
            event_id, event_type = ident(entry.get("id")), text(entry.get("type"))
            if event_id is None or event_type is None or not isinstance(entry.get("data"), dict):
                raise PayloadError("FastSpring event without `id`, `type` and a `data` object")
            kwargs: dict[str, Any] = {}
            created = epoch_time(entry.get("created"), "ms")
            if created is not None:
                kwargs["occurred_at"] = created
            events.append(ProviderEvent(id=event_id, type=event_type, livemode=boolean(entry.get("live")),
                                        data=entry["data"], **kwargs))
        return events

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`order.completed` and `subscription.charge.completed` → Sale, `return.created` → Refund."""
        data = event.data
        if event.type == "order.completed":
            if data.get("completed") is False:
                raise Ignore("unpaid")
            subscription = _subscription(data)
            return [self._sale(data, data, "subscription" if subscription else "purchase", subscription,
                               True if subscription else None)]
        if event.type == "subscription.charge.completed":
            if text(data.get("status")) not in (None, "successful"):
                raise Ignore("unpaid")
            order = mapping(data.get("order"))
            kind: SaleKind = "subscription_update" if _proration(order) else "subscription"
            return [self._sale(data, order, kind, object_id(data.get("subscription")) or _subscription(order),
                               False)]
        if event.type == "return.created":
            return [self._refund(data)]
        return []

    def _sale(self, data: dict[str, Any], order: dict[str, Any], kind: SaleKind, subscription: str | None,
              starts: bool | None) -> Sale:
        currency = text(order.get("currency")) or text(data.get("currency"))
        order_id = ident(order.get("id")) or object_id(data.get("order"))
        if currency is None or order_id is None:
            raise PayloadError("FastSpring charge without an order id and `currency`")
        if "total" in order:  # the order itself: its tax is known
            gross = _money(order.get("total"), currency, "total")
            tax = _money(order.get("tax", 0), currency, "tax")
        else:  # a charge without expansion: only its total, tax unknown (counted as it is)
            gross, tax = _money(data.get("total"), currency, "total"), 0
        if gross - tax <= 0:  # a free trial's $0 order: the subscription's first paid charge is its creation
            raise Ignore("zero_amount", trial_of=subscription if starts else None)
        account = data.get("account") if isinstance(data.get("account"), dict) else order.get("account")
        account_obj, customer = mapping(account), mapping(order.get("customer"))
        contact = mapping(account_obj.get("contact")) or customer
        reference = text(order.get("reference"))
        return Sale(
            kind=kind,
            amount=gross - tax,
            currency=currency,
            invoice_id=order_id,
            subscription_id=subscription,
            starts_subscription=starts if kind == "subscription" else None,
            payment_refs=(reference,) if reference else (),
            gross_amount=gross,
            external_id=text(mapping(account_obj.get("lookup")).get("custom")),
            provider_customer_id=object_id(account) or object_id(data.get("account")),
            email=text(contact.get("email")) or text(customer.get("email")),
            name=" ".join(p for p in (text(contact.get("first")), text(contact.get("last"))) if p) or None,
            phone=text(contact.get("phone")),
            metadata_sources=(mapping(order.get("tags")), mapping(data.get("tags"))),
            metadata=compact(subscriptionId=subscription, orderReference=reference, taxAmount=tax,
                             sequence=data.get("sequence") if isinstance(data.get("sequence"), int) else None),
        )

    def _refund(self, data: dict[str, Any]) -> Refund:
        original = mapping(data.get("original"))
        reverses = tuple(dict.fromkeys(r for r in (ident(original.get("id")), ident(original.get("order")),
                                                    text(original.get("reference")), object_id(data.get("order")))
                                       if r))
        if not reverses:
            raise PayloadError("return.created without the original order")
        currency = text(data.get("currency"))
        amount = _money(data["totalReturn"], currency, "totalReturn") if currency and "totalReturn" in data else None
        return Refund(reverses=reverses, amount=amount, currency=currency if amount is not None else None,
                      includes_tax=True, refund_id=ident(data.get("return")) or ident(data.get("id")),
                      metadata=compact(reason=text(data.get("reason")), returnReference=text(data.get("reference"))))


_PRORATED = ("proratedItemProratedCharge", "proratedItemChangeAmount", "proratedItemCreditAmount",
             "proratedItemTotal")
"""Order item amounts FastSpring fills on a proration order (0 on other orders)."""


def _proration(order: dict[str, Any]) -> bool:
    """A charge for a prorated plan change: an item of its order has a prorated amount not 0."""
    for item in order.get("items") or []:
        for key in _PRORATED:
            value = mapping(item).get(key)
            if isinstance(value, (int, Decimal)) and not isinstance(value, bool) and value != 0:
                return True
    return False
