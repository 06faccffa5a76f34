"""A verified delivery is never refused for an optional or long field (SPEC §6): a body without a
time is dated by its receipt, long buyer strings reach the destination's check (which mends them),
and an amount that is not an integer is `malformed_payload` with the body kept."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapter.errors import Ignore, PayloadError
from adapter.events import Sale
from adapter.metrics import REGISTRY, short_error
from adapter.payload import (
    any_time,
    compact,
    decimal,
    epoch_time,
    integer,
    json_object,
    json_value,
    major_amount,
    minor_amount,
)
from adapter.rules import Rule, apply_rules
from adapter.testing import make_source
from providers.chargebee import ChargebeeProvider
from providers.creem import CreemProvider
from providers.lemonsqueezy import LemonSqueezyProvider
from providers.paddle import PaddleProvider
from providers.paystack import PaystackProvider
from providers.shopify import ShopifyProvider
from providers.stripe import StripeProvider
from tests.conftest import STRIPE_SECRET, fixture
from tests.providers import flow as flows
from tests.providers.test_lemonsqueezy import event, lemon_flow
from tests.providers.test_shopify import SECRET as SHOPIFY_SECRET
from tests.providers.test_shopify import ShopFlow, delivery_headers, order
from tests.providers.test_stripe import signature as stripe_signature
from tests.providers.test_stripe import stripe_flow

make_flow = flows.make_flow  # the providers' fixture: the real ingest on a SQLite store


def received_row(flow: flows.Flow, answer: dict[str, Any]) -> tuple[Any, ...]:
    def read(tx: Any) -> Any:
        return tx.all("SELECT status, reason, occurred_at, received_at FROM events WHERE id = ?",
                      (answer["eventId"],))[0]
    return tuple(flow.loop.run_until_complete(flow.store.read(read)))


def test_lemon_squeezy_order_without_timestamps_is_accepted_at_its_receipt_time(make_flow: Any) -> None:
    flow = lemon_flow(make_flow)
    body = event("order_created")
    for key in ("created_at", "updated_at"):
        body["data"]["attributes"].pop(key, None)
    answer = flow.receive(body)
    assert answer["status"] == "accepted"
    _, _, occurred, received = received_row(flow, answer)
    assert abs(occurred - received) < 1000  # dated when it arrived (parse runs as it arrives)
    [sale] = flow.stored()
    assert sale.kind == "sale" and sale.state == "pending"


def test_shopify_paid_order_without_timestamps_is_accepted(make_flow: Any) -> None:
    shop = ShopFlow(make_flow)
    body = order()
    for key in ("created_at", "updated_at", "processed_at"):
        body.pop(key, None)
    answer = shop.receive(body)
    assert answer["status"] == "accepted"
    assert [s.state for s in shop.flow.stored()] == ["pending"]


def test_long_customer_name_and_landing_site_still_store_a_sale(make_flow: Any) -> None:
    shop = ShopFlow(make_flow)
    body = order(landing_site="/?dub_id=cl_shop_click&pad=" + "x" * 5000)
    body["customer"]["first_name"], body["customer"]["last_name"] = "A" * 600, "B"
    answer = shop.receive(body)
    assert answer["status"] == "accepted"
    [sale] = shop.flow.stored()
    assert sale.state == "pending"
    assert sale.name is not None and len(sale.name) <= 100  # mended by the dub check, not refused


def test_stripe_fractional_amount_is_malformed_and_its_body_kept(make_flow: Any) -> None:
    flow = stripe_flow(make_flow)
    body = fixture("stripe", "checkout.session.completed")
    body["data"]["object"]["amount_total"] = 4999.99
    answer = flow.receive(body)
    assert answer["error"]["code"] == "malformed_payload"

    def read(tx: Any) -> Any:
        return tx.all("SELECT status, reason, body FROM events ORDER BY id DESC LIMIT 1")[0]
    status, reason, kept = flow.loop.run_until_complete(flow.store.read(read))
    assert (status, reason) == ("rejected", "malformed_payload")
    assert json.loads(kept)["data"]["object"]["amount_total"] == 4999.99
    assert flow.stored() == []


@pytest.mark.parametrize(("value", "expected"), [
    (Decimal("5000"), 5000), (Decimal("5000.00"), 5000), (Decimal("4999.99"), None),
    (Decimal("NaN"), None), (Decimal("Infinity"), None), (True, None), ("\u0665", None),
])
def test_integer_reads_decimal_json_numbers_exactly(value: Any, expected: int | None) -> None:
    assert integer(value) == expected


# -- exact JSON numbers and what would need guessing ----------------------------------------------


def test_json_numbers_are_read_as_exact_decimals_from_their_text() -> None:
    data = json_object(b'{"price": 4.99, "tiny": 0.1, "whole": 5, "big": 1e3, "odd": NaN}')
    assert data["price"] == Decimal("4.99") and data["tiny"] == Decimal("0.1")
    assert type(data["whole"]) is int and data["big"] == Decimal("1E+3")
    assert isinstance(data["odd"], Decimal) and data["odd"].is_nan()
    assert json_value('"{\\"a\\": 1.10}"') == '{"a": 1.10}'
    assert json_value('{"a": 1.10}') == {"a": Decimal("1.10")}


@pytest.mark.parametrize(("value", "currency", "expected"), [
    (Decimal("4.99"), "usd", 499),        # RevenueCat's `price` as a JSON number
    ("49.00", "USD", 4900),               # FastSpring / Shopify decimal text
    (Decimal("1.234"), "kwd", 1234), (5, "jpy", 5), (Decimal("5"), "usd", 500), (".5", "eur", 50),
    (Decimal("0.1"), "usd", 10),
    (Decimal("4.999"), "usd", None),      # more decimals than the currency has: would round
    (Decimal("12.5"), "jpy", None), (Decimal("-4.99"), "usd", None), ("-1", "usd", None),
    (4.99, "usd", None),                  # a float was already rounded somewhere
    (True, "usd", None), ("\u0664.\u0669\u0669", "usd", None), ("1e3", "usd", None), ("NaN", "usd", None),
    (Decimal("Infinity"), "usd", None), (Decimal("1e999999999"), "usd", None), ({"value": 1}, "usd", None),
])
def test_major_amounts_convert_exactly_or_not_at_all(value: Any, currency: str, expected: int | None) -> None:
    assert major_amount(value, currency) == expected


def test_major_amount_names_a_bad_currency() -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        major_amount("4.99", "dollars")


@pytest.mark.parametrize(("value", "expected"), [
    (Decimal("4.99"), Decimal("4.99")), ("49.00", Decimal("49.00")), (7, Decimal(7)), (" -1.5 ", Decimal("-1.5")),
    (4.99, None), (False, None), ("\u0665", None), ("1e3", None), (Decimal("NaN"), None), ("", None), (None, None),
])
def test_decimal_is_exact_and_refuses_junk(value: Any, expected: Decimal | None) -> None:
    assert decimal(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), (4999, 4999), ("4999", 4999), (Decimal("4999.00"), 4999),
    (-1, None), ("-1", None), (Decimal("4999.99"), None), (True, None), ("\u0665\u0660", None),
])
def test_minor_amount_is_a_non_negative_integer(value: Any, expected: int | None) -> None:
    assert minor_amount(value) == expected


def test_integer_refuses_a_decimal_too_large_to_be_anything() -> None:
    assert integer(Decimal("1e999999999")) is None  # int() of it would take the process's memory


def test_decimal_epoch_times_and_decimal_metadata() -> None:
    assert epoch_time(Decimal("1712745412.5")) == datetime(2024, 4, 10, 10, 36, 52, 500000, UTC)
    assert any_time(Decimal("1712745412500")) == datetime(2024, 4, 10, 10, 36, 52, 500000, UTC)
    assert any_time(Decimal("NaN")) is None
    meta = compact(price=Decimal("4.99"), count=Decimal("2.0"), nested={"a": [Decimal("1.50")]}, gone=None)
    assert meta == {"price": "4.99", "count": 2, "nested": {"a": ["1.50"]}}
    json.dumps(meta)  # stored and sent as JSON: no Decimal left in it


def test_a_decimal_json_number_in_metadata_is_stored(make_flow: Any) -> None:
    """`order_number` 1001.5 goes into the Sale's metadata: it is stored (and would be sent) as
    its exact text, not lost to a json.dumps of a Decimal."""
    flow = lemon_flow(make_flow)
    body = event("order_created")
    raw = json.dumps(body).replace('"order_number": ' + json.dumps(body["data"]["attributes"]["order_number"]),
                                   '"order_number": 1001.5').encode()
    assert b"1001.5" in raw
    answer = flow.receive(raw)
    assert answer["status"] == "accepted", answer

    def read(tx: Any) -> Any:
        return tx.all("SELECT record FROM conversions")[0][0]
    record = json.loads(flow.loop.run_until_complete(flow.store.read(read)))
    assert record["metadata"]["orderNumber"] == "1001.5"


def test_a_major_unit_rule_amount_converts_exactly() -> None:
    """A generic source reading a JSON number in major units (`4.99`): 499 cents, not 498."""
    rule = Rule.model_validate({"event_type": "order.paid", "kind": "sale", "amount": "data.price",
                                "amount_format": "decimal", "currency": "data.currency",
                                "invoice_id": "data.id", "condition": "data.price != 0.1"})
    [sale] = apply_rules([rule], "order.paid", json_object(b'{"data": {"price": 4.99, "currency": "usd", "id": "o1"}}'))
    assert isinstance(sale, Sale) and sale.amount == 499
    with pytest.raises(Ignore):  # the literal 0.1 is read as exactly as the body's 0.1
        apply_rules([rule], "order.paid", json_object(b'{"data": {"price": 0.1, "currency": "usd", "id": "o1"}}'))


def _stripe_checkout(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = fixture("stripe", "checkout.session.completed")
    change(body["data"]["object"])
    return body


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            obj = obj.setdefault(key, {})
        obj[last] = value
    return change


GUESSES: list[Any] = [
    pytest.param(StripeProvider(), "stripe", "checkout.session.completed", "data.object.total_details.amount_tax",
                 -500, id="stripe-negative-checkout-tax"),
    pytest.param(StripeProvider(), "stripe", "checkout.session.completed", "data.object.amount_total", -4900,
                 id="stripe-negative-amount"),
    pytest.param(StripeProvider(), "stripe", "checkout.session.completed", "data.object.amount_total", True,
                 id="stripe-boolean-amount"),
    pytest.param(StripeProvider(), "stripe", "checkout.session.completed", "data.object.amount_total", "\u0664\u0669\u0660\u0660",
                 id="stripe-arabic-indic-digits"),
    pytest.param(StripeProvider(), "stripe", "invoice.paid", "data.object.total_excluding_tax", 3400,
                 id="stripe-invoice-negative-tax"),
    pytest.param(LemonSqueezyProvider(), "lemonsqueezy", "order_created", "data.attributes.tax", -980,
                 id="lemonsqueezy-negative-tax"),
    pytest.param(PaddleProvider(), "paddle", "transaction.completed", "data.details.totals.tax", "-490",
                 id="paddle-negative-tax"),
    pytest.param(CreemProvider(), "creem", "checkout.completed", "object.order.tax_amount", -1029,
                 id="creem-negative-tax"),
    pytest.param(PaystackProvider(), "paystack", "charge.success", "data.amount", "\u0665000",
                 id="paystack-non-ascii-digits"),
]


@pytest.mark.parametrize(("provider", "name", "sample", "path", "value"), GUESSES)
def test_what_would_need_guessing_is_malformed(provider: Any, name: str, sample: str, path: str, value: Any) -> None:
    """A negative tax (which would inflate the amount), a negative amount, a boolean or
    non-ASCII digits as an amount: `PayloadError` (400 `malformed_payload`, body kept)."""
    src = make_source(provider, ["whsec_test"], name=name)
    body = fixture(name, sample)
    mapped_before = flows.mapped(src, body)
    assert mapped_before, "the unchanged sample maps"
    _set(path, value)(body)
    with pytest.raises(PayloadError):
        flows.mapped(src, body)


def test_a_chargebee_negative_tax_is_malformed() -> None:
    src = make_source(ChargebeeProvider(), [], basic_auth=["user:pass"])
    body = fixture("chargebee", "payment_succeeded")
    assert flows.mapped(src, body)
    body["content"]["invoice"]["tax"] = -980
    with pytest.raises(PayloadError):
        flows.mapped(src, body)


def test_a_shopify_negative_tax_is_malformed() -> None:
    src = make_source(ShopifyProvider(), [SHOPIFY_SECRET], name="shopify")
    body = order(taxes_included=True, current_total_tax="-5.00")
    headers = delivery_headers(json.dumps(body).encode(), "orders/paid")
    with pytest.raises(PayloadError):
        flows.mapped(src, body, headers)


# -- an unexpected exception inside a provider ----------------------------------------------------


class BrokenStripe(StripeProvider):
    """A provider with a bug in `map` (as an installed plugin may have): raises `failure`."""

    def __init__(self, failure: Exception) -> None:
        super().__init__()
        self.failure = failure

    def map(self, event: Any, ctx: Any) -> Any:
        raise self.failure


def _errors(source: str) -> float:
    return REGISTRY.get_sample_value("hooktrack_provider_errors_total",
                                     {"source": source, "provider": "stripe"}) or 0


def _broken_flow(make_flow: Any, failure: Exception) -> flows.Flow:
    flow: flows.Flow = make_flow(BrokenStripe(failure), [STRIPE_SECRET],
                                 lambda body: {"Stripe-Signature": stripe_signature(body)}, name="broken")
    return flow


@pytest.mark.parametrize("failure", [TypeError("a bug"), RuntimeError("not in any list of bad input"),
                                     KeyError("id")], ids=type)
def test_an_unexpected_exception_in_a_provider_is_kept_counted_and_logged_once(
        make_flow: Any, caplog: pytest.LogCaptureFixture, failure: Exception) -> None:
    """A bug in a provider is not mistaken for bad input, and the verified webhook is not lost:
    the answer is the 400 `malformed_payload` it always was (never a 500), the body is kept for
    `hooktrack reprocess`, the error is counted in `hooktrack_provider_errors_total` and logged
    once at error level with its traceback."""
    flow = _broken_flow(make_flow, failure)
    before = _errors("broken")
    with caplog.at_level("INFO"):
        answer = flow.receive(fixture("stripe", "checkout.session.completed"))
    assert answer["error"]["code"] == "malformed_payload"
    assert type(failure).__name__ in answer["error"]["message"]
    assert _errors("broken") == before + 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None and type(failure).__name__ in errors[0].getMessage()

    def read(tx: Any) -> Any:
        return tx.all("SELECT status, reason, body FROM events")
    [(status, reason, body)] = flow.loop.run_until_complete(flow.store.read(read))
    assert (status, reason) == ("rejected", "malformed_payload") and json.loads(body)["type"]


def test_a_recursion_error_in_a_provider_is_logged_short_and_without_traceback(
        make_flow: Any, caplog: pytest.LogCaptureFixture) -> None:
    def deep(n: int) -> int:
        return deep(n + 1) + 1
    try:
        deep(0)
    except RecursionError as exc:
        failure = exc
    flow = _broken_flow(make_flow, RecursionError("x" * 5000))
    flow.src.provider.failure = failure  # type: ignore[attr-defined]
    before = _errors("broken")
    with caplog.at_level("INFO"):
        answer = flow.receive(fixture("stripe", "checkout.session.completed"))
    assert answer["error"]["code"] == "malformed_payload"
    assert _errors("broken") == before + 1
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.exc_info is None and "RecursionError" in record.getMessage()
    assert len(record.getMessage()) < 300
    assert len(short_error(RecursionError("x" * 5000))) <= len("RecursionError: ") + 203


def test_bad_input_answered_by_the_provider_itself_is_not_a_provider_error(make_flow: Any) -> None:
    flow = stripe_flow(make_flow)
    body = fixture("stripe", "checkout.session.completed")
    body["data"]["object"]["amount_total"] = 4999.99
    before = REGISTRY.get_sample_value("hooktrack_provider_errors_total",
                                       {"source": flow.src.name, "provider": "stripe"}) or 0
    assert flow.receive(body)["error"]["code"] == "malformed_payload"
    assert (REGISTRY.get_sample_value("hooktrack_provider_errors_total",
                                      {"source": flow.src.name, "provider": "stripe"}) or 0) == before
