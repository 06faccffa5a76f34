"""Creem: `creem-signature`, HMAC-SHA256 hex of the raw body, keyed by the webhook secret.

The scheme signs no timestamp, so there is no freshness check; delivery dedup on the body's
`id` (`evt_...`, the same on every retry and on a resend from the dashboard) is what stops a
replayed body from counting twice. The type is `eventType`, the time `created_at` (epoch ms).

Sales: `checkout.completed` of a paid one-time order, and `subscription.paid` (each paid cycle of
a subscription). Creem sends `checkout.completed` *and* `subscription.paid` for the first payment
of a new subscription. Both name the payment's transaction (`tran_...`): the checkout's
`order.transaction` and the subscription's `last_transaction` / `last_transaction_id`. Both Sales
therefore use that transaction id as `invoice_id`, and the core's business dedup keeps one
(the second fills in what the first lacked, such as the checkout's metadata). A subscription
checkout whose order does not name its transaction (older payloads) is ignored as
`counted_by_subscription_paid`: the `subscription.paid` of the same payment is the Sale, never
a second one.

Amounts are integers in cents. The Sale is `amount_paid - tax_amount` of the order (checkout)
or of the last transaction (subscription): after discounts, without tax. Where `amount_paid` is
absent, `amount` is used (in Creem's payloads it is the total before tax, equal to
`sub_total`). A `subscription.paid` without its `last_transaction` object falls back to the
product's `price` (before tax for `tax_mode` `exclusive`, the common case).

A Sale also remembers the payment's order and checkout ids (`payment_refs`) and what was paid with
tax (`gross_amount`). Refund: `refund.created` (status `succeeded`): `refund_amount` in
`refund_currency`, tax included (Creem refunds from `amount_paid`; the core scales it by the
Sale's net/gross), reversing the refund's transaction, order and checkout, keyed by the refund's
`id`. `dispute.created` is not mapped: it opens a dispute, whose outcome Creem does not send.

Lead: `subscription.trialing` (`Started Trial`). Click and user ids come from the checkout's and
the subscription's `metadata` (set when creating the checkout; Creem copies it onto the
subscription), with Creem's own `referenceId` key read as the client reference (the user id, or a click id
with the `dub_id_` prefix) after the configured keys.
`mode` (`prod`, `test`, `sandbox`) is the livemode.
"""

from __future__ import annotations

from typing import Any

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, Mapped, ProviderEvent, Refund, Sale
from adapter.money import rescale
from adapter.payload import compact, epoch_time, mapping, minor_amount, object_id, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import BodyHmac

__all__ = ["CreemProvider"]

_CENTS = 2  # Creem amounts: "in cents. 1000 = $10.00"
_UNPAID = frozenset({"pending", "declined", "void", "uncollectible"})
_LIVEMODE = {"prod": True, "test": False, "sandbox": False}


def _amount(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    amount = minor_amount(value)  # negative: never a payment or a tax
    if amount is None:
        raise PayloadError(f"Creem `{key}` is not an integer amount: {value!r}")
    return amount


def _net(obj: dict[str, Any]) -> tuple[int, int]:
    """(paid without tax, tax) of an order or transaction, in Creem's cents."""
    tax = _amount(obj, "tax_amount") or 0
    paid = _amount(obj, "amount_paid")
    if paid is not None:
        return paid - tax, tax
    amount = _amount(obj, "amount")
    if amount is None:
        raise PayloadError("Creem order or transaction without `amount_paid` or `amount`")
    return amount, tax


class CreemProvider(SamplesMixin, Provider):
    """Creem: `creem-signature`, HMAC-SHA256 hex of the raw body; no timestamp."""

    name = "creem"
    cancellations = frozenset({"subscription.canceled", "subscription.expired"})
    scheme = BodyHmac(header="creem-signature")

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["id"] = f"evt_{unique}"
        data["created_at"] = now * 1000
        obj = mapping(data.get("object"))
        transaction = f"tran_{unique}"
        if isinstance(obj.get("order"), dict):
            obj["order"]["transaction"] = transaction
        if isinstance(obj.get("last_transaction"), dict):
            obj["last_transaction"]["id"] = obj["last_transaction_id"] = transaction

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by its `id`, typed by `eventType`, at `created_at` (epoch milliseconds).

        Raises `PayloadError` without those or without an `object`.
        """
        data = self.json_body(body)
        event_id, event_type = text(data.get("id")), text(data.get("eventType"))
        created = epoch_time(data.get("created_at"), "ms")
        if event_id is None or event_type is None:
            raise PayloadError("Creem webhook without string `id` and `eventType`")
        if created is None:
            raise PayloadError("Creem webhook without integer `created_at` (epoch milliseconds)")
        obj = data.get("object")
        if not isinstance(obj, dict):
            raise PayloadError("Creem webhook without an `object`")
        mode = obj.get("mode")
        return ProviderEvent(
            id=event_id,
            type=event_type,
            occurred_at=created,
            livemode=_LIVEMODE.get(mode) if isinstance(mode, str) else None,
            data=data,
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`checkout.completed` and `subscription.paid` → Sales, `refund.created` → Refund,
        `subscription.trialing` → a `Started Trial` Lead, `[]` otherwise. Raises `Ignore`:
        `unpaid`, `zero_amount`, `counted_by_subscription_paid` (see the module doc),
        `refund_not_succeeded`."""
        obj: dict[str, Any] = event.data["object"]
        if event.type == "checkout.completed":
            return [self._checkout_sale(obj)]
        if event.type == "subscription.paid":
            return [self._subscription_sale(obj)]
        if event.type == "refund.created":
            return [_refund(obj)]
        if event.type == "subscription.trialing":
            return [Lead(kind="started_trial", **_hints(obj.get("customer"), obj.get("metadata")),
                         metadata=compact(subscriptionId=text(obj.get("id"))))]
        return []

    def _checkout_sale(self, checkout: dict[str, Any]) -> Sale:
        order = mapping(checkout.get("order"))
        if not order:
            raise PayloadError("Creem checkout without an `order`")
        if order.get("status") != "paid":
            raise Ignore("unpaid")
        subscription = checkout.get("subscription")
        subscription_id = object_id(subscription)
        transaction = text(order.get("transaction"))
        if (subscription_id or order.get("type") == "recurring") and transaction is None:
            raise Ignore("counted_by_subscription_paid")
        order_id = text(order.get("id"))
        invoice = transaction or order_id
        if invoice is None:
            raise PayloadError("Creem order without `id`")
        amount, tax, currency = _paid(order, order.get("currency"))
        return Sale(
            kind="subscription" if subscription_id else "purchase",
            amount=amount,
            currency=currency,
            invoice_id=invoice,
            payment_refs=_others(invoice, order_id, text(checkout.get("id"))),
            gross_amount=amount + tax,
            subscription_id=subscription_id,
            **_hints(checkout.get("customer") or order.get("customer"), checkout.get("metadata"),
                     mapping(subscription).get("metadata")),
            metadata=compact(subscriptionId=subscription_id, orderId=order_id, checkoutId=text(checkout.get("id")),
                              requestId=text(checkout.get("request_id")), taxAmount=tax),
        )

    def _subscription_sale(self, subscription: dict[str, Any]) -> Sale:
        subscription_id = text(subscription.get("id"))
        last = mapping(subscription.get("last_transaction"))
        transaction = text(last.get("id")) or text(subscription.get("last_transaction_id"))
        if subscription_id is None or transaction is None:
            raise PayloadError("Creem subscription without `id` and `last_transaction_id`")
        product = mapping(subscription.get("product"))
        if last:
            if last.get("status") in _UNPAID:
                raise Ignore("unpaid")
            amount, tax, currency = _paid(last, last.get("currency") or product.get("currency"))
        else:
            amount, tax, currency = _paid({"amount": product.get("price")}, product.get("currency"))
        return Sale(
            kind="subscription",
            amount=amount,
            currency=currency,
            invoice_id=transaction,
            payment_refs=_others(transaction, object_id(last.get("order"))),
            gross_amount=amount + tax,
            subscription_id=subscription_id,
            **_hints(subscription.get("customer"), subscription.get("metadata")),
            metadata=compact(subscriptionId=subscription_id, orderId=text(last.get("order")),
                              taxAmount=tax if last else None, amountFrom=None if last else "product_price"),
        )


def _others(invoice: str, *ids: str | None) -> tuple[str, ...]:
    """The payment's other ids (its order, its checkout), without the Sale's invoice id."""
    return tuple(dict.fromkeys(i for i in ids if i and i != invoice))


def _refund(refund: dict[str, Any]) -> Refund:
    """A succeeded refund: `refund_amount` (tax included) of its transaction, order, checkout."""
    if refund.get("status", "succeeded") != "succeeded":
        raise Ignore("refund_not_succeeded")
    transaction = refund.get("transaction")
    ids = (object_id(transaction), object_id(refund.get("order")) or object_id(mapping(transaction).get("order")),
           object_id(refund.get("checkout")))
    reverses = tuple(dict.fromkeys(i for i in ids if i))
    currency = text(refund.get("refund_currency")) or text(mapping(transaction).get("currency"))
    amount = _amount(refund, "refund_amount")
    if not reverses or currency is None:
        raise PayloadError("Creem refund without a transaction, order or checkout and a `refund_currency`")
    return Refund(
        reverses=reverses,
        amount=None if amount is None else rescale(amount, _CENTS, currency),
        currency=currency,
        includes_tax=True,
        refund_id=text(refund.get("id")),
        timestamp=epoch_time(refund.get("created_at"), "ms"),
        metadata=compact(reason=text(refund.get("reason"))),
    )


def _paid(obj: dict[str, Any], currency: Any) -> tuple[int, int, str]:
    """(amount, tax, currency) in ISO minor units; `Ignore("zero_amount")` for nothing paid."""
    code = text(currency)
    if code is None:
        raise PayloadError("Creem amount without a `currency`")
    net, tax = _net(obj)
    amount = rescale(net, _CENTS, code)
    if amount <= 0:
        raise Ignore("zero_amount")
    return amount, rescale(tax, _CENTS, code), code


def _hints(customer: Any, *metadata: Any) -> dict[str, Any]:
    """Identity from the (expanded) customer and merchant metadata. `referenceId` is the user id
    key of Creem's own SDK adapters: it is the client reference, read after the configured keys."""
    details = mapping(customer)
    references = (text(m.get("referenceId")) for m in metadata if isinstance(m, dict))
    return {
        "provider_customer_id": object_id(customer),
        "email": text(details.get("email")),
        "name": text(details.get("name")),
        "metadata_sources": metadata,
        "client_reference": next((r for r in references if r), None),
    }
