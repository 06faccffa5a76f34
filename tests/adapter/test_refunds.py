"""Refunds and chargebacks in the core (SPEC §9): finding the Sale, the amounts, dedup, skips,
ordering behind the Sale and the destination's memo.

Ingest runs against a real SQLite store (tests/providers/flow.py `Flow`, Stripe webhooks signed
by Stripe's SDK); what is store logic (concurrent refunds of one Sale) also runs on PostgreSQL.
The delivery side uses a small destination defined here against a real HTTP peer on loopback
(a starlette app served by uvicorn), since the dub destination's refund requests live elsewhere.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapter.destinations import Answer, Destination, Problem, Request, Verdict
from adapter.events import Refund
from adapter.forwarder import Forwarder
from adapter.ingest import Ingestor, now_ms
from adapter.journal import journey
from adapter.receiver import run_in_thread
from adapter.records import Conversion, Settlement
from adapter.refunds import plan, scale
from providers.stripe import StripeProvider
from tests.conftest import STRIPE_SECRET, config, fixture, wait_for
from tests.providers.flow import Flow, make_flow  # noqa: F401  (fixture)
from tests.store.conftest import Harness, migrated_pg_url, pg_database, pg_url, store, store_url  # noqa: F401
from tests.store.test_contract import signed, stripe_source

# -- bodies --------------------------------------------------------------------------------


def sign(body: bytes) -> dict[str, str]:
    return {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_SECRET)}


def checkout(event_id: str = "evt_checkout", *, total: int = 4900, tax: int = 0, pi: str = "pi_1",
             userid: str | None = "user_42", currency: str = "usd") -> dict[str, Any]:
    """A paid one-time Checkout Session: `total` including `tax`."""
    event = copy.deepcopy(fixture("stripe", "checkout.session.completed"))
    event["id"] = event_id
    session = event["data"]["object"]
    session.update(amount_total=total, payment_intent=pi, currency=currency, invoice=None)
    session["total_details"]["amount_tax"] = tax
    if userid is None:
        session.update(customer=None, customer_details={}, customer_email=None, metadata={})
    else:
        session["metadata"] = {"userId": userid}
    return event


def charge_refunded(event_id: str, refunded: int, *, pi: str | None = "pi_1", charge: str = "ch_1",
                    currency: str = "usd", amount: int = 4900) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": charge, "object": "charge", "amount": amount, "amount_refunded": refunded,
                           "currency": currency, "refunded": refunded >= amount, "payment_intent": pi}
    return {"id": event_id, "object": "event", "type": "charge.refunded", "created": 1775900000,
            "livemode": False, "data": {"object": obj}}


def dispute(event_id: str, event_type: str, *, status: str = "lost", amount: int = 4900,
            dispute_id: str = "dp_1") -> dict[str, Any]:
    obj = {"id": dispute_id, "object": "dispute", "amount": amount, "currency": "usd", "charge": "ch_1",
           "payment_intent": "pi_1", "status": status, "reason": "fraudulent"}
    return {"id": event_id, "object": "event", "type": event_type, "created": 1775900100, "livemode": False,
            "data": {"object": obj}}


def invoice_paid(event_id: str = "evt_invoice", invoice: str = "in_1") -> dict[str, Any]:
    """A Basil `invoice.paid`: it names no charge and no payment intent."""
    event = copy.deepcopy(fixture("stripe", "invoice.paid"))
    event["id"] = event_id
    event["data"]["object"]["id"] = invoice
    event["data"]["object"]["metadata"] = {"userId": "user_43"}
    return event


def invoice_payment_paid(event_id: str = "evt_inpay", invoice: str = "in_1", pi: str = "pi_inv") -> dict[str, Any]:
    obj = {"id": "inpay_1", "object": "invoice_payment", "amount_paid": 2900, "currency": "usd", "invoice": invoice,
           "payment": {"type": "payment_intent", "payment_intent": pi}, "status": "paid"}
    return {"id": event_id, "object": "event", "type": "invoice_payment.paid", "created": 1775900000,
            "livemode": False, "data": {"object": obj}}


@pytest.fixture
def flow(make_flow: Callable[..., Flow]) -> Flow:  # noqa: F811
    return make_flow(StripeProvider(), [STRIPE_SECRET], sign, name="stripe")


def record(flow: Flow, conversion_id: int) -> tuple[Conversion, str, str | None]:
    """A stored conversion's record and its delivery's state and reason."""
    def read(tx: Any) -> Any:
        return tx.one("SELECT c.record, d.state, d.reason FROM conversions c JOIN deliveries d "
                      "ON d.conversion_id = c.id WHERE c.id = ?", (conversion_id,))

    row = flow.loop.run_until_complete(flow.store.read(read))
    return Conversion.from_json(row[0]), row[1], row[2]


def refund_of(flow: Flow, answer: dict[str, Any]) -> tuple[Conversion, str, str | None]:
    assert answer["status"] == "accepted", answer
    (conv,) = answer["conversions"]
    assert conv["kind"] == "refund"
    return record(flow, conv["id"])


def only_stored(flow: Flow, answer: dict[str, Any]) -> int:
    """The one conversion an event stored (an `ignored` answer names none)."""
    def read(tx: Any) -> Any:
        return tx.all("SELECT id FROM conversions WHERE event_id = ?", (answer["eventId"],))

    (row,) = flow.loop.run_until_complete(flow.store.read(read))
    return int(row[0])


# -- the arithmetic ------------------------------------------------------------------------


def test_tax_scaling_is_exact_and_rounds_half_to_even() -> None:
    assert scale(5390, 4900, 5390) == 4900
    assert scale(1000, 4900, 5390) == 909  # 909.09...
    assert scale(5, 1, 2) == 2 and scale(15, 1, 2) == 8 and scale(25, 1, 2) == 12  # .5 to even
    assert scale(10**18 + 1, 10**18, 10**18 * 2) == 5 * 10**17  # no float anywhere
    assert scale(700, 100, None) == 700  # gross unknown: taken as it is


def test_plan_applies_cumulative_totals_as_differences() -> None:
    first = plan(Refund(reverses=("ch",), amount=1000, cumulative=True), 4900, None, [], "e1")
    assert (first.amount, first.refunded, first.ignored) == (1000, 1000, None)
    ledger = [(first.key, first.amount, first.total)]
    second = plan(Refund(reverses=("ch",), amount=2500, cumulative=True), 4900, None, ledger, "e2")
    assert (second.amount, second.refunded) == (1500, 2500)
    ledger.append((second.key, second.amount, second.total))
    assert plan(Refund(reverses=("ch",), amount=1000, cumulative=True), 4900, None, ledger, "e3").ignored == \
        "stale_refund_total"
    assert plan(Refund(reverses=("ch",), amount=2500, cumulative=True), 4900, None, ledger, "e4").ignored == \
        "refund_already_applied"
    rest = plan(Refund(reverses=("ch",), chargeback=True, refund_id="dp_1"), 4900, None, ledger, "e5")
    assert (rest.amount, rest.refunded) == (2400, 4900)  # amount None: what remains of the Sale
    over = plan(Refund(reverses=("ch",), amount=9000, refund_id="re_9"), 4900, None, ledger, "e6")
    assert (over.amount, over.refunded) == (2400, 4900)  # never more than what remains


# -- ingest ----------------------------------------------------------------------------------


def test_a_full_refund_reverses_the_sale_by_its_payment_intent_with_tax_scaled(flow: Flow) -> None:
    sale = flow.receive(checkout(total=5390, tax=490))
    (sale_conv,) = sale["conversions"]
    conv, state, _ = refund_of(flow, flow.receive(charge_refunded("evt_r1", 5390, amount=5390)))
    assert state == "pending"
    assert (conv.kind, conv.event_name, conv.amount, conv.sale_amount, conv.refunded, conv.chargeback) == (
        "refund", "Refund", 4900, 4900, 4900, False)
    assert (conv.reverses, conv.invoice_id, conv.customer_external_id, conv.currency, conv.refund_id) == (
        sale_conv["id"], "pi_1", "user_42", "usd", "ch_1")


def test_partial_cumulative_refunds_apply_differences_once(flow: Flow) -> None:
    flow.receive(checkout())
    first, _, _ = refund_of(flow, flow.receive(charge_refunded("evt_r1", 1000)))
    assert (first.amount, first.refunded) == (1000, 1000)
    again = flow.receive(charge_refunded("evt_r1", 1000))  # Stripe redelivers the same event
    assert again["status"] == "duplicate"
    second, _, _ = refund_of(flow, flow.receive(charge_refunded("evt_r2", 2500)))
    assert (second.amount, second.refunded, second.sale_amount) == (1500, 2500, 4900)
    same_total = flow.receive(charge_refunded("evt_r3", 2500))  # another event, the same total
    assert (same_total["status"], same_total["reason"]) == ("ignored", "refund_already_applied")
    late = flow.receive(charge_refunded("evt_r0", 1000))  # an older total arriving late
    assert (late["status"], late["reason"]) == ("ignored", "stale_refund_total")
    rest, _, _ = refund_of(flow, flow.receive(charge_refunded("evt_r4", 9000)))
    assert (rest.amount, rest.refunded) == (2400, 4900)  # capped at what remains


def test_a_lost_dispute_is_a_chargeback_applied_once_per_dispute(flow: Flow) -> None:
    flow.receive(checkout())
    refund_of(flow, flow.receive(charge_refunded("evt_r1", 1000)))
    won = flow.receive(dispute("evt_d0", "charge.dispute.closed", status="won", dispute_id="dp_0"))
    assert (won["status"], won["reason"]) == ("ignored", "dispute_not_lost")
    conv, _, _ = refund_of(flow, flow.receive(dispute("evt_d1", "charge.dispute.funds_withdrawn", amount=3900)))
    assert (conv.event_name, conv.chargeback, conv.refund_id, conv.amount, conv.refunded) == (
        "Chargeback", True, "dp_1", 3900, 4900)
    closed = flow.receive(dispute("evt_d2", "charge.dispute.closed", amount=3900))
    assert (closed["status"], closed["reason"]) == ("ignored", "refund_already_applied")


def test_refunds_that_cannot_reverse_anything_are_skipped_with_the_reason(flow: Flow) -> None:
    unknown = flow.receive(charge_refunded("evt_r1", 1000, pi="pi_never", charge="ch_never"))
    assert (unknown["status"], unknown["reason"]) == ("ignored", "unknown_sale")
    (stored,) = flow.stored(unknown)
    assert (stored.kind, stored.state, stored.reason) == ("refund", "skipped", "unknown_sale")
    # A Sale never counted (no identity at all: skipped no_identifier).
    nobody = flow.receive(checkout("evt_nobody", pi="pi_nobody", userid=None))
    assert nobody["reason"] == "no_identifier"
    skipped = flow.receive(charge_refunded("evt_r2", 4900, pi="pi_nobody", charge="ch_2"))
    assert (skipped["status"], skipped["reason"]) == ("ignored", "sale_not_counted")
    # A refund in another currency than its Sale.
    flow.receive(checkout("evt_eur", pi="pi_eur", currency="eur"))
    other = flow.receive(charge_refunded("evt_r3", 1000, pi="pi_eur", charge="ch_3", currency="usd"))
    assert (other["status"], other["reason"]) == ("ignored", "currency_mismatch")


def test_an_invoice_payment_link_lets_a_charge_refund_find_its_invoice_sale(flow: Flow) -> None:
    """The charge names no invoice, the invoice no payment intent: `invoice_payment.paid` links
    them. Stripe does not order its events, so a refund that came before the link is answered
    `unknown_sale` at once, and the link, when it comes, connects it to the stored Sale: it is
    revived then (it used to stay skipped for good; changed deliberately), and a later
    cumulative total of the same charge takes only the difference."""
    sale = flow.receive(invoice_paid())
    (sale_conv,) = sale["conversions"]
    before = flow.receive(charge_refunded("evt_r0", 500, pi="pi_inv", charge="ch_inv", amount=2900))
    assert before["reason"] == "unknown_sale"  # the link is not known yet
    link = flow.receive(invoice_payment_paid())
    assert (link["status"], link["reason"]) == ("ignored", "payment_link_recorded")
    early, state, _ = record(flow, only_stored(flow, before))
    assert (early.reverses, early.invoice_id, early.amount, early.refunded, state) == (
        sale_conv["id"], "in_1", 500, 500, "pending")
    conv, _, _ = refund_of(flow, flow.receive(charge_refunded("evt_r1", 2900, pi="pi_inv", charge="ch_inv",
                                                              amount=2900)))
    assert (conv.reverses, conv.invoice_id, conv.amount, conv.refunded, conv.customer_external_id) == (
        sale_conv["id"], "in_1", 2400, 2900, "user_43")


def test_a_link_learned_before_its_sale_still_counts(flow: Flow) -> None:
    assert flow.receive(invoice_payment_paid(invoice="in_2", pi="pi_2"))["reason"] == "payment_link_recorded"
    flow.receive(invoice_paid("evt_invoice2", invoice="in_2"))
    conv, state, _ = refund_of(flow, flow.receive(charge_refunded("evt_r1", 1000, pi="pi_2", charge="ch_2",
                                                                  amount=2900)))
    assert (conv.invoice_id, conv.amount, state) == ("in_2", 1000, "pending")


def test_a_refund_months_later_finds_a_sale_retention_pruned(flow: Flow) -> None:
    sale = flow.receive(checkout())
    (sale_conv,) = sale["conversions"]

    def deliver_and_prune(tx: Any) -> int:
        tx.execute("UPDATE deliveries SET state = 'delivered' WHERE conversion_id = ?", (sale_conv["id"],))
        return int(tx.prune_events(now_ms() + 10_000, 100))

    assert flow.loop.run_until_complete(flow.store.transact(deliver_and_prune)) == 1
    assert flow.loop.run_until_complete(flow.store.read(
        lambda tx: tx.one("SELECT count(*) FROM conversions")))[0] == 0
    conv, state, _ = refund_of(flow, flow.receive(charge_refunded("evt_r1", 4900)))
    assert (conv.reverses, conv.amount, conv.customer_external_id, state) == (sale_conv["id"], 4900, "user_42",
                                                                              "pending")


def test_a_cancellation_is_recorded(flow: Flow) -> None:
    body = {"id": "evt_del", "object": "event", "type": "customer.subscription.deleted", "created": 1775900000,
            "data": {"object": {"id": "sub_1", "object": "subscription", "status": "canceled"}}}
    answer = flow.receive(body)
    assert (answer["status"], answer["reason"]) == ("ignored", "cancellation_recorded")


# -- store logic on both engines ---------------------------------------------------------


@pytest.fixture
def harness(store: Harness) -> Harness:  # noqa: F811  (the imported fixture)
    """A migrated store on each engine (`tests/store/conftest.py`)."""
    return store


def test_concurrent_refunds_of_one_sale_never_exceed_it(harness: Harness, tmp_path: Path) -> None:
    source = stripe_source(tmp_path)
    ingest = Ingestor(harness.store, ToyDestination(config(tmp_path, "http://127.0.0.1:9").tracking))

    async def receive_all(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        outcomes = await asyncio.gather(*(ingest.receive(source, *signed(e)) for e in events))
        return [o.body() for o in outcomes]

    harness.run(receive_all([checkout()]))
    answers = harness.run(receive_all([
        charge_refunded("evt_r1", 1000), charge_refunded("evt_r2", 2500), charge_refunded("evt_r3", 2500),
        dispute("evt_d1", "charge.dispute.funds_withdrawn"), dispute("evt_d2", "charge.dispute.closed")]))
    rows = harness.read(lambda tx: tx.all("SELECT record FROM conversions WHERE kind = 'refund'"))
    refunds = [Conversion.from_json(r[0]) for r in rows]
    assert sum(r.amount or 0 for r in refunds) == 4900  # the whole Sale, never more
    assert max(r.refunded or 0 for r in refunds) == 4900
    assert len([r for r in refunds if r.chargeback]) == 1  # one dispute, two events
    reasons = sorted(a.get("reason") or a["status"] for a in answers)
    assert reasons.count("accepted") == len(refunds)


def test_links_ordering_skips_and_memos_in_the_store(harness: Harness, tmp_path: Path) -> None:
    source = stripe_source(tmp_path)
    ingest = Ingestor(harness.store, ToyDestination(config(tmp_path, "http://127.0.0.1:9").tracking))

    def receive(event: dict[str, Any]) -> dict[str, Any]:
        return harness.run(ingest.receive(source, *signed(event))).body()

    (sale,) = receive(invoice_paid())["conversions"]
    assert receive(invoice_payment_paid())["reason"] == "payment_link_recorded"
    (refund,) = receive(charge_refunded("evt_r1", 1000, pi="pi_inv", charge="ch_inv", amount=2900))["conversions"]
    later = now_ms() + 60_000
    claimed = harness.tx(lambda tx: tx.claim("toy", "w", later, 60_000, 10))
    assert [c.conversion_id for c in claimed] == [sale["id"]]  # the refund waits behind its Sale
    (delivery,) = claimed
    harness.tx(lambda tx: tx.settle("w", later, [Settlement(delivery.id, "unattributed", "not_found", later, 404,
                                                            None)]))
    state = harness.read(lambda tx: tx.one("SELECT state, reason FROM deliveries WHERE conversion_id = ?",
                                           (refund["id"],)))
    assert tuple(state) == ("skipped", "sale_not_counted")
    assert harness.tx(lambda tx: tx.claim("toy", "w", later, 60_000, 10)) == []
    # A dead Sale replayed takes its skipped refunds back with it.
    harness.tx(lambda tx: tx.execute("UPDATE deliveries SET state = 'dead' WHERE conversion_id = ?", (sale["id"],)))
    assert harness.tx(lambda tx: tx.requeue([sale["id"]], later, 60_000)) == [sale["id"]]
    states = harness.read(lambda tx: tx.all("SELECT conversion_id, state FROM deliveries ORDER BY conversion_id"))
    assert [tuple(r) for r in states] == [(sale["id"], "pending"), (refund["id"], "pending")]
    again = harness.tx(lambda tx: tx.claim("toy", "w", later + 1, 60_000, 10))
    assert [c.conversion_id for c in again] == [sale["id"]]
    harness.tx(lambda tx: tx.remember_memo(sale["id"], "toy", {"first": 2900}, later))
    harness.tx(lambda tx: tx.remember_memo(sale["id"], "toy", {"first": 1, "other": "x"}, later))
    memos = harness.read(lambda tx: tx.refund_memos([sale["id"]], "toy"))
    assert memos == {sale["id"]: {"first": 2900, "other": "x"}}  # first write wins, per key


# -- delivery: a refund after its Sale, memo, follow -------------------------------------------


class ToyDestination(Destination):
    """Sale: POST /sale. Refund: GET /find (read the sale amount), then PATCH /update with an
    absolute amount scaled from the amount *as first read* (kept in `memo`)."""

    name = "toy"

    def check(self, conversion: Conversion) -> list[Problem]:
        return []

    def render(self, conversion: Conversion) -> Request:
        if conversion.kind == "refund":
            return Request("GET", f"/find?invoice={conversion.invoice_id}", {}, None, step="find_commission")
        return Request("POST", f"/{conversion.kind}", {"Content-Type": "application/json"},
                       {"invoice": conversion.invoice_id, "amount": conversion.amount})

    def classify(self, conversion: Conversion, request: Request, answer: Answer) -> Verdict:
        if answer.status == 404:
            return Verdict.unattributed("not_found")
        if request.step == "find_commission":
            first = int(conversion.memo.get("first", answer.json()["saleAmount"]))
            sale, refunded = conversion.sale_amount or 0, conversion.refunded or 0
            body = {"saleAmount": first * (sale - refunded) // sale}
            return Verdict("follow", next=Request("PATCH", "/update", {"Content-Type": "application/json"}, body,
                                                  step="update_commission"),
                           memo={"first": answer.json()["saleAmount"]})
        return Verdict.delivered()


class Peer:
    """A real HTTP API on loopback: one commission whose sale amount PATCH /update sets."""

    def __init__(self) -> None:
        self.amount = 4900
        self.log: list[tuple[str, str]] = []
        self.missing = False

    def app(self) -> Starlette:
        async def sale(request: HttpRequest) -> JSONResponse:
            self.log.append(("POST", "/sale"))
            return JSONResponse({}, status_code=404 if self.missing else 200)

        async def find(request: HttpRequest) -> JSONResponse:
            self.log.append(("GET", "/find"))
            return JSONResponse({"saleAmount": self.amount})

        async def update(request: HttpRequest) -> JSONResponse:
            self.log.append(("PATCH", "/update"))
            self.amount = int(json.loads(await request.body())["saleAmount"])
            return JSONResponse({"saleAmount": self.amount})

        return Starlette(routes=[Route("/sale", sale, methods=["POST"]), Route("/find", find, methods=["GET"]),
                                 Route("/update", update, methods=["PATCH"])])


@pytest.fixture
def peer() -> Iterator[tuple[Peer, str]]:
    p = Peer()
    with run_in_thread(p.app()) as url:
        yield p, url


def drain(flow: Flow, forwarder: Forwarder, done: Callable[[], bool]) -> None:
    async def run() -> None:
        task = asyncio.create_task(forwarder.run())
        try:
            await asyncio.to_thread(wait_for, done)
            await asyncio.sleep(0.2)  # nothing more goes out
        finally:
            forwarder.stop()
            await task

    flow.loop.run_until_complete(run())


def toy_flow(flow: Flow, tmp_path: Path, url: str) -> Forwarder:
    settings = config(tmp_path, url)
    toy = ToyDestination(settings.tracking)
    flow.destination = toy  # type: ignore[assignment]
    flow.ingestor = Ingestor(flow.store, toy)
    return Forwarder(flow.store, settings.tracking, settings.forwarder, toy)


def test_refunds_go_after_their_sale_in_order_with_the_amount_first_read(
        flow: Flow, peer: tuple[Peer, str], tmp_path: Path) -> None:
    api, url = peer
    forwarder = toy_flow(flow, tmp_path, url)
    sale = flow.receive(checkout())
    r1 = flow.receive(charge_refunded("evt_r1", 1000))
    r2 = flow.receive(charge_refunded("evt_r2", 2500))
    drain(flow, forwarder, lambda: len(api.log) >= 5)
    # The Sale first, then each refund's two requests, one refund after the other.
    assert api.log == [("POST", "/sale"), ("GET", "/find"), ("PATCH", "/update"), ("GET", "/find"),
                       ("PATCH", "/update")]
    # 4900 * 2400 / 4900: the second refund scaled the amount first read (4900, the memo), not 3900.
    assert api.amount == 2400
    for answer in (r1, r2):
        trip = flow.loop.run_until_complete(flow.store.read(lambda tx, a=answer: journey(tx, a["eventId"])))
        assert trip is not None
        (conv,) = trip["conversions"]
        assert conv["state"] == "delivered" and conv["record"]["reverses"] == sale["conversions"][0]["id"]
        assert [a["outcome"] for a in conv["attempts_log"]] == ["find_commission:follow",
                                                                "update_commission:delivered"]
    memo = flow.loop.run_until_complete(flow.store.read(
        lambda tx: tx.refund_memos([sale["conversions"][0]["id"]], "toy")))
    assert memo == {sale["conversions"][0]["id"]: {"first": 4900}}  # first write wins


def test_refunds_of_a_sale_that_ends_not_counted_are_skipped(flow: Flow, peer: tuple[Peer, str],
                                                              tmp_path: Path) -> None:
    api, url = peer
    api.missing = True
    forwarder = toy_flow(flow, tmp_path, url)
    flow.receive(checkout())
    refund = flow.receive(charge_refunded("evt_r1", 1000))
    drain(flow, forwarder, lambda: len(api.log) >= 1)
    assert api.log == [("POST", "/sale")]  # the refund was never sent
    _, state, reason = record(flow, refund["conversions"][0]["id"])
    assert (state, reason) == ("skipped", "sale_not_counted")
