"""Stripe refunds, lost disputes, payment links and cancellations, as `map` returns them (SPEC §9).

Shapes from Stripe's API reference: a Charge (`amount_refunded`, `payment_intent`, the `refunds`
list when present, `invoice` before API version 2025-03-31), a Dispute (`amount`, `charge`,
`payment_intent`, `status`), an InvoicePayment (`invoice`, `payment.payment_intent` /
`payment.charge`). The core's use of them is tests/adapter/test_refunds.py.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from adapter.errors import Ignore
from adapter.events import PaymentLink, Refund, Sale
from adapter.receiver import TrackingReceiver, run_in_thread
from adapter.testing import make_source
from providers.stripe import StripeProvider
from tests.conftest import STRIPE_SECRET, fixture
from tests.providers.flow import mapped, one


def source() -> Any:
    return make_source(StripeProvider(), [STRIPE_SECRET], name="stripe")


def event(event_type: str, obj: dict[str, Any], event_id: str = "evt_1") -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": event_type, "created": 1775900000, "livemode": False,
            "data": {"object": obj}}


def charge(**changes: Any) -> dict[str, Any]:
    return {"id": "ch_1", "object": "charge", "amount": 5390, "amount_refunded": 1000, "currency": "usd",
            "payment_intent": "pi_1", "refunded": False, **changes}


def test_a_checkout_sale_names_its_payment_intent_and_session_and_its_gross() -> None:
    sale = one(source(), fixture("stripe", "checkout.session.completed"))
    assert isinstance(sale, Sale)
    assert (sale.invoice_id, sale.payment_refs) == ("pi_3PaymentIntent01", ("cs_test_a1B2c3D4payment",))
    assert (sale.amount, sale.gross_amount) == (4900, 5390)
    sub = one(source(), fixture("stripe", "checkout.session.completed+subscription"))
    assert isinstance(sub, Sale)
    assert (sub.invoice_id, sub.payment_refs) == ("in_1SUBFIRST", ("cs_test_a1B2c3D4subscription",))


def test_an_invoice_sale_names_what_its_payload_names() -> None:
    legacy = one(source(), fixture("stripe", "invoice.paid+legacy"))
    assert isinstance(legacy, Sale)
    assert (legacy.invoice_id, legacy.payment_refs, legacy.gross_amount) == ("in_1LEGACY", ("ch_3Legacy",), 5500)
    basil = one(source(), fixture("stripe", "invoice.paid"))
    assert isinstance(basil, Sale) and basil.payment_refs == ()  # an Invoice names no payment any more
    expanded = copy.deepcopy(fixture("stripe", "invoice.paid"))
    expanded["data"]["object"]["payments"] = {"object": "list", "data": [
        {"id": "inpay_1", "object": "invoice_payment", "payment": {"type": "payment_intent",
                                                                   "payment_intent": "pi_9"}}]}
    sale = one(source(), expanded)
    assert isinstance(sale, Sale) and sale.payment_refs == ("pi_9",)


def test_charge_refunded_is_a_cumulative_refund_including_tax() -> None:
    refund = one(source(), event("charge.refunded", charge(invoice="in_1")))
    assert refund == Refund(reverses=("ch_1", "pi_1", "in_1"), amount=1000, currency="usd", cumulative=True,
                            includes_tax=True, refund_id="ch_1", metadata={"chargeId": "ch_1"})


def test_charge_refunded_names_the_latest_refund_when_listed() -> None:
    refunds = {"object": "list", "data": [{"id": "re_2", "created": 1775900500, "amount": 1500},
                                          {"id": "re_1", "created": 1775900000, "amount": 1000}]}
    refund = one(source(), event("charge.refunded", charge(amount_refunded=2500, refunds=refunds,
                                                           payment_intent=None)))
    assert isinstance(refund, Refund)
    assert (refund.reverses, refund.amount, refund.refund_id) == (("ch_1",), 2500, "re_2")


def test_refund_amounts_are_converted_to_iso_minor_units() -> None:
    refund = one(source(), event("charge.refunded", charge(currency="isk", amount=100000, amount_refunded=50000)))
    assert isinstance(refund, Refund) and (refund.amount, refund.currency) == (500, "isk")


@pytest.mark.parametrize("event_type", ["charge.dispute.funds_withdrawn", "charge.dispute.closed"])
def test_a_lost_dispute_is_a_chargeback_named_by_the_dispute_id(event_type: str) -> None:
    dispute = {"id": "dp_1", "object": "dispute", "amount": 5390, "currency": "usd", "charge": "ch_1",
               "payment_intent": "pi_1", "status": "lost", "reason": "fraudulent"}
    refund = one(source(), event(event_type, dispute))
    assert refund == Refund(reverses=("ch_1", "pi_1"), amount=5390, currency="usd", includes_tax=True,
                            chargeback=True, refund_id="dp_1",
                            metadata={"disputeId": "dp_1", "disputeReason": "fraudulent"})


@pytest.mark.parametrize("status", ["won", "warning_closed", "prevented"])
def test_a_dispute_closed_otherwise_reverses_nothing(status: str) -> None:
    dispute = {"id": "dp_1", "object": "dispute", "amount": 5390, "currency": "usd", "charge": "ch_1",
               "status": status}
    with pytest.raises(Ignore) as caught:
        mapped(source(), event("charge.dispute.closed", dispute))
    assert caught.value.reason == "dispute_not_lost"


def test_invoice_payment_paid_links_the_invoice_to_its_payment_intent() -> None:
    documented = {  # the Invoice Payment object of Stripe's API reference
        "id": "inpay_1M3USa2eZvKYlo2CBjuwbq0N", "object": "invoice_payment", "amount_paid": 2000,
        "amount_requested": 2000, "created": 1391288554, "currency": "usd", "invoice": "in_103Q0w2eZvKYlo2C5PYwf6Wf",
        "is_default": True, "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": "pi_103Q0w2eZvKYlo2C364X582Z"}, "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": 1391288554}}
    assert one(source(), event("invoice_payment.paid", documented)) == PaymentLink(
        ids=("in_103Q0w2eZvKYlo2C5PYwf6Wf", "pi_103Q0w2eZvKYlo2C364X582Z"))
    by_charge = {"id": "inpay_2", "object": "invoice_payment", "invoice": "in_2",
                 "payment": {"type": "charge", "charge": "ch_2"}}
    assert one(source(), event("invoice_payment.paid", by_charge)) == PaymentLink(ids=("in_2", "ch_2"))
    out_of_band = {"id": "inpay_3", "object": "invoice_payment", "invoice": "in_3",
                   "payment": {"type": "payment_record", "payment_record": "pr_1"}}
    with pytest.raises(Ignore) as caught:
        mapped(source(), event("invoice_payment.paid", out_of_band))
    assert caught.value.reason == "no_payment_link"


def test_a_subscription_deleted_is_a_recorded_cancellation() -> None:
    with pytest.raises(Ignore) as caught:
        mapped(source(), event("customer.subscription.deleted", {"id": "sub_1", "status": "canceled"}))
    assert caught.value.reason == "cancellation_recorded"


# -- end to end: Stripe → hooktrack → the strict Dub stand-in's commissions ----------------------


def test_refunds_reach_the_partner_commission_through_the_dub_stand_in(make_client: Any, receiver: Any) -> None:
    """A paid checkout, then two partial refunds of its charge (Stripe's cumulative
    `amount_refunded`) and a redelivery: Dub creates the commission a moment after the sale,
    hooktrack finds it and sets an absolute sale amount each time, from the amount first read."""
    from tests.conftest import post_stripe, wait_for

    receiver.program = True
    receiver.commission_delay_s = 0.3
    client = make_client()
    checkout = fixture("stripe", "checkout.session.completed")  # $53.90 paid, $4.90 tax
    intent = checkout["data"]["object"]["payment_intent"]
    assert post_stripe(client, checkout).json()["status"] == "accepted"
    refunded = event("charge.refunded", charge(id="ch_ada_1", payment_intent=intent,
                                               amount=5390, amount_refunded=1078), "evt_refund_1")
    first = post_stripe(client, refunded).json()
    assert first["status"] == "accepted", first  # right behind its sale

    def commission() -> Any:
        [c] = receiver.commissions()
        return c

    wait_for(lambda: receiver.commissions() and commission().amount == 3920, timeout=15)
    # 1078 of 5390 gross refunded is a fifth: 4900 net → 3920 remain
    again = post_stripe(client, refunded)
    assert again.json()["status"] == "duplicate"
    second = event("charge.refunded", charge(id="ch_ada_1", payment_intent=intent,
                                             amount=5390, amount_refunded=2156), "evt_refund_2")
    assert post_stripe(client, second).json()["status"] == "accepted"
    # two fifths refunded: 2940 remain of the 4900 first read (not 3920 scaled again: 2352)
    wait_for(lambda: commission().amount == 2940, timeout=15)
    more = event("charge.refunded", charge(id="ch_ada_1", payment_intent=intent,
                                           amount=5390, amount_refunded=5390), "evt_refund_3")
    assert post_stripe(client, more).json()["status"] == "accepted"
    wait_for(lambda: commission().status == "refunded", timeout=15)
    patches = [r for r in receiver.requests if r.kind == "commission" and 200 <= r.status < 300]
    assert [r.body for r in patches] == [{"saleAmount": 3920, "currency": "usd"},
                                          {"saleAmount": 2940, "currency": "usd"}, {"status": "refunded"}]
    assert len(receiver.counted_sales()) == 1


@pytest.mark.parametrize(("refunded", "patch"), [(2900, {"status": "refunded"}),
                                                 (580, {"saleAmount": 2320, "currency": "usd"})])
def test_a_refund_before_the_link_to_its_invoice_reaches_the_commission_when_the_link_comes(
        make_client: Any, receiver: Any, refunded: int, patch: dict[str, Any]) -> None:
    """Stripe's current API does not order its events: `invoice.paid` (the Sale, by invoice id),
    `charge.refunded` (the charge names no invoice: answered `unknown_sale`), then
    `invoice_payment.paid`, the link that connects the refund to the invoice's Sale. The refund
    is revived by the link and reaches the partner commission once the Sale is delivered."""
    from tests.conftest import post_stripe, wait_for

    receiver.program = True
    receiver.commission_delay_s = 0.3
    client = make_client()
    assert post_stripe(client, fixture("stripe", "customer.created")).json()["status"] == "accepted"  # the Lead
    invoice = fixture("stripe", "invoice.paid")  # in_1SUBFIRST, $29.00, no payment intent named
    assert post_stripe(client, invoice).json()["status"] == "accepted"
    refund = event("charge.refunded", charge(id="ch_sub_1", payment_intent="pi_sub_1", amount=2900,
                                             amount_refunded=refunded), "evt_refund_early")
    early = post_stripe(client, refund).json()
    assert (early["status"], early["reason"]) == ("ignored", "unknown_sale")
    link = event("invoice_payment.paid", {
        "id": "inpay_sub_1", "object": "invoice_payment", "amount_paid": 2900, "currency": "usd",
        "invoice": "in_1SUBFIRST", "payment": {"type": "payment_intent", "payment_intent": "pi_sub_1"},
        "status": "paid"}, "evt_inpay_sub_1")
    answer = post_stripe(client, link).json()
    assert (answer["status"], answer["reason"]) == ("ignored", "payment_link_recorded")
    wait_for(lambda: [r.body for r in receiver.requests if r.kind == "commission" and 200 <= r.status < 300]
             == [patch], timeout=15)
    (commission,) = receiver.commissions()
    assert commission.invoice_id == "in_1SUBFIRST"
    assert (commission.status, commission.amount) == (("refunded", 2900) if refunded == 2900 else ("pending", 2320))
    assert len(receiver.counted_sales()) == 1
    # the refund's redelivery is a duplicate, nothing is sent again
    assert post_stripe(client, refund).json()["status"] == "duplicate"
    time.sleep(0.3)
    assert len([r for r in receiver.requests if r.kind == "commission" and 200 <= r.status < 300]) == 1


class _SlowOnce(TrackingReceiver):
    """The stand-in, except that the first PATCH is applied and then answered too late for
    hooktrack's timeout: the case where a relative change, retried, would apply twice."""

    slow_patches: int = 1

    def update_commission(self, ws: Any, commission_id: str, body: Any) -> dict[str, Any]:
        answer = super().update_commission(ws, commission_id, body)
        if self.slow_patches:
            self.slow_patches -= 1
            time.sleep(1.5)  # the receiver's own thread: hooktrack gives up after timeout_s
        return answer


def test_two_partial_refunds_leave_2400_of_4900_through_a_redelivery_and_a_timed_out_patch(
        tmp_path: Any) -> None:
    """SPEC §9 / issue 13: refunds of 1000, then 2500 in all, of a 4900 sale leave the
    commission's sale amount at 2400, though Stripe redelivers and the first PATCH times out."""
    from starlette.testclient import TestClient

    from adapter.app import create_app
    from adapter.plugin import load_providers
    from tests.conftest import config, post_stripe, wait_for

    receiver = _SlowOnce(api_key="test_key", program=True, commission_delay_s=0.2)
    with run_in_thread(receiver.app()) as url:
        settings = config(tmp_path, url, tracking={"timeout_s": 0.5})
        with TestClient(create_app(settings, registry=load_providers())) as client:
            checkout = copy.deepcopy(fixture("stripe", "checkout.session.completed"))
            session = checkout["data"]["object"]
            session.update(amount_subtotal=4900, amount_total=4900, total_details={"amount_tax": 0})
            intent = session["payment_intent"]
            assert post_stripe(client, checkout).json()["status"] == "accepted"

            def refund(total: int, event_id: str) -> dict[str, Any]:
                return event("charge.refunded", charge(id="ch_x", payment_intent=intent, amount=4900,
                                                       amount_refunded=total), event_id)

            assert post_stripe(client, refund(1000, "evt_r1")).json()["status"] == "accepted"
            assert post_stripe(client, refund(1000, "evt_r1")).json()["status"] == "duplicate"
            wait_for(lambda: receiver.commissions() and receiver.commissions()[0].amount == 3900, timeout=15)
            assert post_stripe(client, refund(2500, "evt_r2")).json()["status"] == "accepted"
            wait_for(lambda: receiver.commissions()[0].amount == 2400, timeout=15)
            time.sleep(0.5)  # whatever is still retrying has had its chance to apply twice
            [commission] = receiver.commissions()
            assert (commission.amount, commission.status) == (2400, "pending")
            assert receiver.slow_patches == 0  # the timeout did happen
