"""A verified delivery is never refused for an optional or long field (SPEC §6): a body without a
time is dated by its receipt, long buyer strings reach the destination's check (which mends them),
and an amount that is not an integer is `malformed_payload` with the body kept."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from adapter.payload import integer
from tests.conftest import fixture
from tests.providers import flow as flows
from tests.providers.test_lemonsqueezy import event, lemon_flow
from tests.providers.test_shopify import ShopFlow, order
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
