"""FastSpring: X-FS-Signature made by the recipe FastSpring documents, several events per
delivery, exact major-unit amounts, expansion on and off, and one flow end to end."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Refund, Sale
from adapter.ingest import parse_event, parse_events
from adapter.samples import post_sample
from adapter.testing import ProviderContract, make_source
from providers.fastspring import FastSpringProvider
from tests.conftest import fixture, wait_for
from tests.providers.flow import mapped, one

SECRET = "fs-hmac-secret-7f3a9c"
OTHER = "someone-elses-fs-secret"
ORDER_ID = "nTrqfR6gRUqTbSvb9gAz8Q"


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """FastSpring's recipe (Webhooks > Message Security): base64 of HMAC-SHA256(secret, raw body)."""
    mac = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"X-FS-Signature": base64.b64encode(mac).decode()}


class TestFastSpringContract(ProviderContract):
    provider_class = FastSpringProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return signed(body, secret)


def source(**settings: Any) -> Any:
    return make_source(FastSpringProvider(), [SECRET], name="fastspring", **settings)


def event(name: str, **changes: Any) -> dict[str, Any]:
    found: dict[str, Any] = fixture("fastspring", name)["events"][0]
    found["data"].update(changes)
    return found


def delivery(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(events)}


def body_of(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def test_a_forged_signature_is_refused_without_the_secret() -> None:
    src, body = source(), body_of(fixture("fastspring", "order.completed"))
    src.provider.verify(body, Headers(signed(body)), src.secrets, src.ctx)
    with pytest.raises(SignatureError) as caught:
        src.provider.verify(body, Headers(signed(body, OTHER)), src.secrets, src.ctx)
    assert caught.value.code == "invalid_signature" and SECRET not in caught.value.message


# -- mapping --------------------------------------------------------------------------------------


def test_order_completed_is_total_minus_tax_in_the_order_currency() -> None:
    sale = one(source(), fixture("fastspring", "order.completed"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.gross_amount, sale.currency) == ("purchase", 4999, 5949, "eur")
    assert sale.invoice_id == ORDER_ID and sale.payment_refs == ("ACM260410-7531-42197",)
    assert (sale.external_id, sale.provider_customer_id) == ("user_fs_42", "uKj7izZdR9aY3lOvF8xYJQ")
    assert (sale.email, sale.name, sale.click_id) == ("ada@example.com", "Ada Lovelace", "cl_fastspring_click")
    [parsed] = parse_events(source(), body_of(fixture("fastspring", "order.completed")), Headers({}))
    assert (parsed.id, parsed.livemode) == ("4ShTVEcSQDeBZm9ptj2Uxw", False)
    assert parsed.occurred_at.isoformat(timespec="milliseconds") == "2026-04-10T12:34:56.201+00:00"


def test_amounts_are_read_exactly_not_as_floats() -> None:
    sale = one(source(), delivery(event("order.completed", total=0.3, tax=0.1, currency="USD")))
    assert isinstance(sale, Sale) and sale.amount == 20  # 0.3 - 0.1 in floats is 0.19999999999999998
    yen = one(source(), delivery(event("order.completed", total=1100, tax=100, currency="JPY")))
    assert isinstance(yen, Sale) and yen.amount == 1000
    for bad in ({"total": 10.001}, {"total": "ten"}, {"total": True}, {"currency": None}):
        with pytest.raises(PayloadError):
            mapped(source(), delivery(event("order.completed", **bad)))


def test_without_webhook_expansion_what_is_there_is_mapped() -> None:
    bare = event("order.completed", account="uKj7izZdR9aY3lOvF8xYJQ", tags=None)
    sale = one(source(), delivery(bare))
    assert isinstance(sale, Sale) and sale.amount == 4999
    assert (sale.external_id, sale.provider_customer_id, sale.email) == (None, "uKj7izZdR9aY3lOvF8xYJQ",
                                                                        "ada@example.com")
    charge = event("subscription.charge.completed", order="Zt5bV9gWQeS3kL0mN1oP2q",
                   account="uKj7izZdR9aY3lOvF8xYJQ", subscription="Hq8ZKp3vS6yWq2aB4cD5eF")
    renewal = one(source(), delivery(charge))
    assert isinstance(renewal, Sale)  # only the charge's total is known: tax cannot be taken off
    assert (renewal.amount, renewal.invoice_id, renewal.subscription_id) == (
        2174, "Zt5bV9gWQeS3kL0mN1oP2q", "Hq8ZKp3vS6yWq2aB4cD5eF")
    assert (renewal.email, renewal.provider_customer_id) == (None, "uKj7izZdR9aY3lOvF8xYJQ")


def test_subscription_purchase_then_rebill_are_creation_then_renewal(make_flow: Any) -> None:
    flow = make_flow(FastSpringProvider(), [SECRET], signed)
    first = one(source(), fixture("fastspring", "order.completed+subscription"))
    assert isinstance(first, Sale) and (first.kind, first.starts_subscription, first.amount) == (
        "subscription", True, 1999)
    assert first.subscription_id == "Hq8ZKp3vS6yWq2aB4cD5eF"
    flow.receive(fixture("fastspring", "order.completed+subscription"))
    flow.receive(fixture("fastspring", "subscription.charge.completed"))
    assert [(s.event_name, s.external_id) for s in flow.stored()] == [
        ("Subscription creation", "user_fs_42"), ("Subscription renewal", "user_fs_42")]


PLAIN_ITEM = {  # an order item as FastSpring's Orders reference shows one: prorated amounts 0
    "proratedItemChangeAmount": 0, "proratedItemChangeAmountDisplay": "$0.00",
    "proratedItemProratedCharge": 0, "proratedItemProratedChargeDisplay": "$0.00",
    "proratedItemCreditAmount": 0, "proratedItemCreditAmountDisplay": "$0.00",
    "proratedItemTaxAmount": 0, "proratedItemTotal": 0, "proratedItemTotalDisplay": "$0.00"}


def charge_with_items(**item: Any) -> dict[str, Any]:
    """The rebill sample (the docs' `GROUP_REGULAR_PERIOD` charge) with its item's fields changed."""
    charge = fixture("fastspring", "subscription.charge.completed")
    order = charge["events"][0]["data"]["order"]
    order["items"] = [{**order["items"][0], **PLAIN_ITEM, **item}]
    return charge


def test_a_rebill_is_a_renewal_and_a_proration_order_a_subscription_update(make_flow: Any) -> None:
    """FastSpring: the charge event fires for rebills and proration adjustments, never the
    initial purchase; a prorated plan change makes its own order, whose items carry the
    prorated amounts (0 on a plain order)."""
    rebill = one(source(), charge_with_items())
    assert isinstance(rebill, Sale) and (rebill.kind, rebill.starts_subscription) == ("subscription", False)
    upgrade = charge_with_items(proratedItemProratedCharge=12.5, proratedItemCreditAmount=-5.0,
                                proratedItemChangeAmount=7.5, proratedItemTotal=7.5,
                                proratedItemProratedChargeDisplay="$12.50")
    sale = one(source(), upgrade)
    assert isinstance(sale, Sale) and sale.kind == "subscription_update" and sale.starts_subscription is None
    downgrade_credit_only = charge_with_items(proratedItemCreditAmount=-3)
    assert one(source(), downgrade_credit_only).kind == "subscription_update"
    undocumented = charge_with_items()  # a transaction type FastSpring does not document is no signal
    undocumented["events"][0]["data"]["order"]["acquisitionTransactionType"] = "PRORATION"
    assert one(source(), undocumented).kind == "subscription"

    flow = make_flow(FastSpringProvider(), [SECRET], signed)
    flow.receive(fixture("fastspring", "order.completed+subscription"))
    flow.receive(charge_with_items())
    upgrade["events"][0]["id"] = "proration_event"
    upgrade["events"][0]["data"]["order"]["id"] = "ord_proration"
    flow.receive(upgrade)
    assert [s.event_name for s in flow.stored()] == [
        "Subscription creation", "Subscription renewal", "Subscription update"]


def test_a_free_trial_order_is_ignored_and_its_first_paid_charge_is_the_creation(make_flow: Any) -> None:
    """A $0 initial order of a subscription (a free trial) counts nothing; the charge that ends
    the trial is the subscription's creation, the next one a renewal."""
    trial = fixture("fastspring", "order.completed+subscription")
    trial["events"][0]["data"].update(total=0, tax=0, subtotal=0)
    with pytest.raises(Ignore) as caught:
        mapped(source(), trial)
    assert (caught.value.reason, caught.value.trial_of) == ("zero_amount", "Hq8ZKp3vS6yWq2aB4cD5eF")
    flow = make_flow(FastSpringProvider(), [SECRET], signed)
    answer = flow.receive(trial)
    assert (answer["status"], answer["events"][0]["reason"]) == ("ignored", "zero_amount"), answer
    flow.receive(charge_with_items())
    second = charge_with_items()
    second["events"][0]["id"] = "second_rebill"
    second["events"][0]["data"]["order"]["id"] = "ord_second"
    flow.receive(second)
    assert [s.event_name for s in flow.stored()] == ["Subscription creation", "Subscription renewal"]


def test_subscription_activated_is_not_a_sale() -> None:
    """Sent with the initial order.completed (which carries the money): nothing to count."""
    activated = {"id": "act_1", "type": "subscription.activated", "created": 1775824500000, "live": False,
                 "data": {"id": "Hq8ZKp3vS6yWq2aB4cD5eF", "subscription": "Hq8ZKp3vS6yWq2aB4cD5eF",
                          "active": True, "state": "active", "changed": 1775824500000,
                          "account": "uKj7izZdR9aY3lOvF8xYJQ", "product": "acme-monthly", "price": 19.99}}
    assert mapped(source(), delivery(activated)) == []


def test_uncountable_charges_are_ignored() -> None:
    for changes, reason in (({"status": "failed"}, "unpaid"),):
        with pytest.raises(Ignore) as caught:
            mapped(source(), delivery(event("subscription.charge.completed", **changes)))
        assert caught.value.reason == reason
    free = event("order.completed", total=0, tax=0)
    with pytest.raises(Ignore) as caught:
        mapped(source(), delivery(free))
    assert caught.value.reason == "zero_amount"


def test_a_return_is_a_refund_of_the_original_order() -> None:
    [refund] = mapped(source(), fixture("fastspring", "return.created"))
    assert isinstance(refund, Refund)
    assert refund.reverses == (ORDER_ID, "ACM260410-7531-42197")
    assert (refund.amount, refund.currency, refund.includes_tax) == (5949, "eur", True)
    assert refund.refund_id == "Kd2fG5hJ8kL1mN4pQ7rS0t"


# -- several events per delivery, through the core -------------------------------------------------


def test_each_event_of_a_delivery_is_its_own_and_manual_resends_are_caught(make_flow: Any) -> None:
    flow = make_flow(FastSpringProvider(), [SECRET], signed)
    order, untracked = event("order.completed"), copy.deepcopy(event("order.completed"))
    untracked.update(id="evt_activated", type="subscription.activated")
    answer = flow.receive(delivery(order, untracked))
    assert answer["status"] == "accepted"
    assert [(e["id"], e["status"], e.get("reason")) for e in answer["events"]] == [
        ("4ShTVEcSQDeBZm9ptj2Uxw", "accepted", None), ("evt_activated", "ignored", "event_type_not_tracked")]
    retried = flow.receive(delivery(order))  # FastSpring's own retry: the same event id
    assert retried["events"][0]["status"] == "duplicate"
    resent = flow.receive(delivery({**order, "id": "evt_manual_resend"}))  # a manual resend: a new id
    assert (resent["events"][0]["status"], resent["events"][0]["reason"]) == ("duplicate", "business_key")
    assert [s.invoice_id for s in flow.stored()] == [ORDER_ID]


def test_parse_event_refuses_a_delivery_of_several() -> None:
    body = body_of(delivery(event("order.completed"), event("order.completed+subscription")))
    assert [e.id for e in parse_events(source(), body, Headers({}))] == ["4ShTVEcSQDeBZm9ptj2Uxw",
                                                                        "sZ0aUeJ0Rj2pYw3k5Q3XgA"]
    with pytest.raises(PayloadError, match="2 events"):
        parse_event(source(), body, Headers({}))


def test_a_malformed_event_does_not_lose_the_others(make_flow: Any) -> None:
    flow = make_flow(FastSpringProvider(), [SECRET], signed)
    broken = event("order.completed", total="lots")
    broken["id"] = "evt_broken"
    good = event("order.completed+subscription")
    answer = flow.receive(delivery(broken, good))
    assert [(e["id"], e["status"], e.get("reason")) for e in answer["events"]] == [
        ("evt_broken", "rejected", "malformed_payload"), ("sZ0aUeJ0Rj2pYw3k5Q3XgA", "accepted", None)]


def test_test_orders_follow_the_sources_livemode(make_flow: Any) -> None:
    flow = make_flow(FastSpringProvider(), [SECRET], signed, livemode="live")
    answer = flow.receive(fixture("fastspring", "order.completed"))
    assert answer["events"][0]["reason"] == "livemode_mismatch"


# -- end to end: the app, the forwarder and a real loopback receiver -------------------------------


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"fastspring": {"provider": "fastspring", "secrets": [SECRET]}})


def test_a_delivery_of_two_orders_reaches_the_tracking_api(client: Any, receiver: Any) -> None:
    body = body_of(delivery(event("order.completed"), event("order.completed+subscription")))
    r = client.post("/webhooks/fastspring", content=body, headers={**signed(body), "Content-Type": "application/json"})
    assert r.status_code == 200
    answer = r.json()
    assert answer["status"] == "accepted" and [e["status"] for e in answer["events"]] == ["accepted", "accepted"]
    sales = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    assert [s.body["invoiceId"] for s in sales] == [ORDER_ID, "q1WcC2nOQ3u8o4xWb5rT7g"]
    assert [s.body["eventName"] for s in sales] == ["Purchase", "Subscription creation"]
    assert [s.body["amount"] for s in sales] == [4999, 1999]
    forged = client.post("/webhooks/fastspring", content=body, headers=signed(body, OTHER))
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_signature"


def test_every_sale_sample_is_accepted_the_way_hooktrack_send_posts_it(client: Any, receiver: Any) -> None:
    src = client.app.state.sources["fastspring"]
    for name in ("order.completed", "order.completed+subscription", "subscription.charge.completed"):
        r = post_sample(src, name, "", client=client)
        assert r.status_code == 200 and r.json()["events"][0]["status"] == "accepted", (name, r.text)
    wait_for(lambda: len(receiver.delivered()) == 3)
