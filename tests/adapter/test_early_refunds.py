"""Refunds that arrive before their Sale (SPEC §9): answered `ignored`, `unknown_sale` at once,
and linked to the Sale when it is stored later (the provider delivered out of order, or the
Sale's delivery was retried after an outage), with the amounts a refund arriving after the Sale
would have had; then sent behind the Sale. Never for a refund skipped for another reason, never
once its attribution window ran out, never twice.

Ingest runs on a real SQLite store (Stripe webhooks signed by Stripe's SDK) and, for what is
store logic, on PostgreSQL too; the end-to-end tests go through the app to the strict Dub
stand-in and its partner commissions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapter.destinations.dub import DubDestination
from adapter.ingest import Ingestor, now_ms
from adapter.journal import journey
from adapter.records import Conversion
from providers.stripe import StripeProvider
from tests.adapter.test_refunds import charge_refunded, checkout, dispute, invoice_paid, invoice_payment_paid, sign
from tests.conftest import STRIPE_SECRET, config, fixture, post_stripe, wait_for
from tests.providers.flow import Flow, make_flow  # noqa: F401  (fixture)
from tests.store.conftest import Harness, migrated_pg_url, pg_database, pg_url, store, store_url  # noqa: F401
from tests.store.test_contract import signed, stripe_source


@pytest.fixture
def flow(make_flow: Callable[..., Flow]) -> Flow:  # noqa: F811
    return make_flow(StripeProvider(), [STRIPE_SECRET], sign, name="stripe")


def _read(flow: Flow, fn: Callable[[Any], Any]) -> Any:
    return flow.loop.run_until_complete(flow.store.read(fn))


def only_conversion(flow: Flow, answer: dict[str, Any]) -> int:
    """The one conversion an event stored (an `ignored` answer names none)."""
    (row,) = _read(flow, lambda tx: tx.all("SELECT id FROM conversions WHERE event_id = ?", (answer["eventId"],)))
    return int(row[0])


def refund_row(flow: Flow, conversion_id: int) -> tuple[Conversion, int | None, str, str | None]:
    """A refund's record, its `reverses` column and its delivery's state and reason."""
    row = _read(flow, lambda tx: tx.one(
        "SELECT c.record, c.reverses, d.state, d.reason FROM conversions c JOIN deliveries d "
        "ON d.conversion_id = c.id WHERE c.id = ?", (conversion_id,)))
    return Conversion.from_json(row[0]), row[1], row[2], row[3]


def ledger(flow: Flow) -> list[tuple[str, int, int | None]]:
    return [tuple(r) for r in _read(flow, lambda tx: tx.all(
        "SELECT refund_key, amount, total FROM refund_ledger ORDER BY created_at, refund_key"))]


# -- ingest (SQLite) -------------------------------------------------------------------------


def test_a_full_refund_before_its_checkout_reverses_the_sale_when_the_checkout_arrives(flow: Flow) -> None:
    early = flow.receive(charge_refunded("evt_r1", 5390, amount=5390))  # $53.90 with tax, all refunded
    assert (early["status"], early["reason"]) == ("ignored", "unknown_sale")  # the answer at once, as before
    refund_id = only_conversion(flow, early)
    assert refund_row(flow, refund_id)[2:] == ("skipped", "unknown_sale")
    sale = flow.receive(checkout(total=5390, tax=490))
    assert sale["status"] == "accepted"
    (sale_conv,) = sale["conversions"]
    conv, reverses, state, reason = refund_row(flow, refund_id)
    assert (state, reason) == ("pending", None)  # back in the outbox, behind its Sale
    assert reverses == conv.reverses == sale_conv["id"]
    # as a refund arriving after the Sale: tax scaled (5390 of 5390 gross is the whole 4900 net)
    assert (conv.amount, conv.sale_amount, conv.refunded, conv.invoice_id, conv.customer_external_id,
            conv.provider_event_id, conv.event_name) == (4900, 4900, 4900, "pi_1", "user_42", "evt_r1", "Refund")
    assert ledger(flow) == [("total:4900", 4900, 4900)]
    # the journey of the refund's event shows it reversing the Sale
    shown = _read(flow, lambda tx: journey(tx, early["eventId"], flow.destination))
    (entry,) = shown["conversions"]
    assert (entry["state"], entry["reverses"], entry["kind"]) == ("pending", sale_conv["id"], "refund")


def test_partial_refunds_before_the_sale_apply_as_differences_in_the_order_they_came(flow: Flow) -> None:
    first = only_conversion(flow, flow.receive(charge_refunded("evt_r1", 1078, amount=5390)))
    second = only_conversion(flow, flow.receive(charge_refunded("evt_r2", 2156, amount=5390)))
    (sale_conv,) = flow.receive(checkout(total=5390, tax=490))["conversions"]
    a, _, a_state, _ = refund_row(flow, first)
    b, _, b_state, _ = refund_row(flow, second)
    # a fifth, then two fifths of 4900 in all: 980 each, cumulative totals applied as differences
    assert (a.amount, a.refunded, a_state) == (980, 980, "pending")
    assert (b.amount, b.refunded, b_state) == (980, 1960, "pending")
    assert a.reverses == b.reverses == sale_conv["id"]
    # and a later total goes on from there, as it would have
    late = flow.receive(charge_refunded("evt_r3", 5390, amount=5390))
    assert late["status"] == "accepted"
    c, _, _, _ = refund_row(flow, late["conversions"][0]["id"])
    assert (c.amount, c.refunded) == (2940, 4900)
    assert sum(amount for _, amount, _ in ledger(flow)) == 4900


def test_a_stale_total_before_the_sale_is_not_applied_again(flow: Flow) -> None:
    newer = only_conversion(flow, flow.receive(charge_refunded("evt_r2", 2156, amount=5390)))
    older = only_conversion(flow, flow.receive(charge_refunded("evt_r1", 1078, amount=5390)))  # arrives late
    flow.receive(checkout(total=5390, tax=490))
    assert refund_row(flow, newer)[0].amount == 1960
    _, reverses, state, reason = refund_row(flow, older)
    assert (reverses, state, reason) == (None, "skipped", "stale_refund_total")  # what it would be answered now
    assert ledger(flow) == [("total:1960", 1960, 1960)]


def test_a_refund_before_its_invoice_is_found_through_a_link_learned_before_both(flow: Flow) -> None:
    """Stripe's current API: the charge names no invoice, the invoice no payment intent, and
    `invoice_payment.paid` links them; here the link and the refund both come before the invoice."""
    assert flow.receive(invoice_payment_paid())["reason"] == "payment_link_recorded"  # in_1 <-> pi_inv
    early = flow.receive(charge_refunded("evt_r1", 500, pi="pi_inv", charge="ch_inv", amount=2900))
    assert early["reason"] == "unknown_sale"
    (sale,) = flow.receive(invoice_paid())["conversions"]
    conv, reverses, state, _ = refund_row(flow, only_conversion(flow, early))
    assert (reverses, conv.invoice_id, conv.amount, conv.customer_external_id, state) == (
        sale["id"], "in_1", 500, "user_43", "pending")


def test_a_refund_before_the_link_to_its_invoice_is_revived_by_the_link(flow: Flow) -> None:
    """Stripe's current API, in an order Stripe may use: `invoice.paid`, `charge.refunded` (the
    charge names no invoice: no Sale yet), then `invoice_payment.paid`, whose link is what
    connects the refund to its Sale."""
    (sale,) = flow.receive(invoice_paid())["conversions"]
    early = flow.receive(charge_refunded("evt_r1", 500, pi="pi_inv", charge="ch_inv", amount=2900))
    assert early["reason"] == "unknown_sale"
    refund_id = only_conversion(flow, early)
    assert flow.receive(invoice_payment_paid())["reason"] == "payment_link_recorded"  # in_1 <-> pi_inv
    conv, reverses, state, reason = refund_row(flow, refund_id)
    assert (reverses, conv.invoice_id, conv.amount, conv.refunded, conv.customer_external_id, state, reason) == (
        sale["id"], "in_1", 500, 500, "user_43", "pending", None)
    assert ledger(flow) == [("total:500", 500, 500)]
    # the link again (a redelivery, or its `invoice_payment` under another event) revives nothing twice
    flow.receive(invoice_payment_paid("evt_inpay_again"))
    assert ledger(flow) == [("total:500", 500, 500)]
    count = _read(flow, lambda tx: tx.one("SELECT count(*) FROM conversions WHERE kind = 'refund'"))[0]
    assert count == 1


def test_a_link_that_reaches_no_sale_yet_leaves_the_refund_for_its_sale(flow: Flow) -> None:
    """The refund, then the link, then the invoice: the link finds the refund but no Sale; the
    refund is still found when the invoice is stored, through the link."""
    early = flow.receive(charge_refunded("evt_r1", 500, pi="pi_inv", charge="ch_inv", amount=2900))
    refund_id = only_conversion(flow, early)
    flow.receive(invoice_payment_paid())
    assert refund_row(flow, refund_id)[1:] == (None, "skipped", "unknown_sale")
    remembered = _read(flow, lambda tx: tx.all("SELECT ref FROM orphan_refunds ORDER BY ref"))
    assert [r[0] for r in remembered] == ["ch_inv", "pi_inv"]
    (sale,) = flow.receive(invoice_paid())["conversions"]
    conv, reverses, state, _ = refund_row(flow, refund_id)
    assert (reverses, conv.invoice_id, conv.amount, state) == (sale["id"], "in_1", 500, "pending")
    assert _read(flow, lambda tx: tx.all("SELECT * FROM orphan_refunds")) == []


def test_a_link_revives_only_inside_the_window_and_only_unknown_sale(flow: Flow) -> None:
    flow.receive(invoice_paid())
    expired = only_conversion(flow, flow.receive(charge_refunded("evt_r1", 500, pi="pi_inv", charge="ch_inv",
                                                                 amount=2900)))
    other = only_conversion(flow, flow.receive(charge_refunded("evt_r2", 700, pi="pi_inv", charge="ch_inv",
                                                               amount=2900)))
    alive = only_conversion(flow, flow.receive(charge_refunded("evt_r3", 900, pi="pi_inv", charge="ch_inv",
                                                               amount=2900)))

    def age(tx: Any) -> None:
        tx.execute("UPDATE deliveries SET window_until = ? WHERE conversion_id = ?", (now_ms() - 1, expired))
        tx.execute("UPDATE deliveries SET reason = 'no_identifier' WHERE conversion_id = ?", (other,))

    flow.loop.run_until_complete(flow.store.transact(age))
    flow.receive(invoice_payment_paid())
    assert refund_row(flow, expired)[1:] == (None, "skipped", "unknown_sale")
    assert refund_row(flow, other)[1:] == (None, "skipped", "no_identifier")
    conv, reverses, state, _ = refund_row(flow, alive)
    assert (conv.amount, state) == (900, "pending") and reverses is not None
    assert ledger(flow) == [("total:900", 900, 900)]


def test_a_refund_whose_sale_never_comes_stays_skipped(flow: Flow) -> None:
    early = flow.receive(charge_refunded("evt_r1", 1000, pi="pi_never", charge="ch_never"))
    refund_id = only_conversion(flow, early)
    flow.receive(checkout())  # another payment
    flow.receive(checkout("evt_other", pi="pi_other", userid="user_7"))
    conv, reverses, state, reason = refund_row(flow, refund_id)
    assert (reverses, state, reason, conv.amount) == (None, "skipped", "unknown_sale", 1000)
    assert ledger(flow) == []


def test_a_refund_whose_window_ran_out_stays_skipped_when_its_sale_arrives(flow: Flow) -> None:
    refund_id = only_conversion(flow, flow.receive(charge_refunded("evt_r1", 1000)))

    def expire(tx: Any) -> None:
        tx.execute("UPDATE deliveries SET window_until = ? WHERE conversion_id = ?", (now_ms() - 1, refund_id))

    flow.loop.run_until_complete(flow.store.transact(expire))
    flow.receive(checkout())
    assert refund_row(flow, refund_id)[1:] == (None, "skipped", "unknown_sale")
    assert ledger(flow) == []  # nothing of the Sale was taken by it: a refund arriving now takes it all
    conv, _, _, _ = refund_row(flow, flow.receive(charge_refunded("evt_r2", 4900))["conversions"][0]["id"])
    assert (conv.amount, conv.refunded) == (4900, 4900)


def test_a_refund_skipped_for_another_reason_is_not_revived(flow: Flow) -> None:
    # a refund in another currency than its Sale: skipped `currency_mismatch`, linked to the Sale
    (sale_conv,) = flow.receive(checkout("evt_eur", pi="pi_eur", currency="eur"))["conversions"]
    other = flow.receive(charge_refunded("evt_r1", 1000, pi="pi_eur", charge="ch_eur", currency="usd"))
    assert other["reason"] == "currency_mismatch"
    refund_id = only_conversion(flow, other)
    # the Sale's checkout again under a new event id (its companion path remembers its ids again)
    assert flow.receive(checkout("evt_eur_again", pi="pi_eur", currency="eur"))["status"] == "duplicate"
    assert refund_row(flow, refund_id)[1:] == (sale_conv["id"], "skipped", "currency_mismatch")
    # a refund of a Sale that was never counted (no identity): `sale_not_counted`, stays so
    flow.receive(checkout("evt_nobody", pi="pi_nobody", userid=None))
    skipped = flow.receive(charge_refunded("evt_r2", 4900, pi="pi_nobody", charge="ch_2"))
    assert skipped["reason"] == "sale_not_counted"
    flow.receive(checkout("evt_nobody_again", pi="pi_nobody", userid=None))
    assert refund_row(flow, only_conversion(flow, skipped))[2:] == ("skipped", "sale_not_counted")


def test_the_sale_again_does_not_revive_twice(flow: Flow) -> None:
    early = flow.receive(dispute("evt_d1", "charge.dispute.funds_withdrawn"))  # a chargeback, before its Sale
    assert early["reason"] == "unknown_sale"
    refund_id = only_conversion(flow, early)
    sale = checkout()
    flow.receive(sale)
    conv, _, state, _ = refund_row(flow, refund_id)
    assert (conv.chargeback, conv.event_name, conv.amount, state) == (True, "Chargeback", 4900, "pending")

    def delivered(tx: Any) -> None:
        tx.execute("UPDATE deliveries SET state = 'delivered' WHERE conversion_id = ?", (refund_id,))

    flow.loop.run_until_complete(flow.store.transact(delivered))
    assert flow.receive(sale)["status"] == "duplicate"  # Stripe redelivers the checkout
    again = copy.deepcopy(sale)
    again["id"] = "evt_checkout_again"  # or sends it again under another event id
    assert flow.receive(again)["status"] == "duplicate"
    assert refund_row(flow, refund_id)[2] == "delivered"
    assert ledger(flow) == [("refund:dp_1", 4900, None)]
    count = _read(flow, lambda tx: tx.one("SELECT count(*) FROM conversions WHERE kind = 'refund'"))[0]
    assert count == 1
    # the same dispute's second event, now: applied already
    assert flow.receive(dispute("evt_d2", "charge.dispute.closed"))["reason"] == "refund_already_applied"


# -- the store, on both engines ----------------------------------------------------------------


@pytest.fixture
def harness(store: Harness) -> Harness:  # noqa: F811  (the imported fixture)
    """A migrated store on each engine (`tests/store/conftest.py`)."""
    return store


def test_orphans_are_found_by_any_id_once_inside_their_window(harness: Harness, tmp_path: Path) -> None:
    source = stripe_source(tmp_path)
    ingest = Ingestor(harness.store, DubDestination(config(tmp_path, "http://127.0.0.1:9").tracking))

    def receive(event: dict[str, Any]) -> dict[str, Any]:
        return harness.run(ingest.receive(source, *signed(event))).body()

    def orphan(event: dict[str, Any]) -> int:
        answer = receive(event)
        assert (answer["status"], answer["reason"]) == ("ignored", "unknown_sale")
        (row,) = harness.read(lambda tx: tx.all("SELECT id FROM conversions WHERE event_id = ?",
                                                (answer["eventId"],)))
        return int(row[0])

    def state(conversion_id: int) -> tuple[Any, ...]:
        return tuple(harness.read(lambda tx: tx.one(
            "SELECT c.reverses, d.state, d.reason FROM conversions c JOIN deliveries d ON d.conversion_id = c.id "
            "WHERE c.id = ?", (conversion_id,))))

    def remembered() -> list[tuple[str, int]]:
        return sorted((str(r[0]), int(r[1])) for r in harness.read(
            lambda tx: tx.all("SELECT ref, conversion_id FROM orphan_refunds")))

    # an older API's invoice names its charge (a Sale's `payment_refs`); the charge names no invoice
    by_charge = orphan(charge_refunded("evt_r1", 1000, pi=None, charge="ch_3Legacy", amount=5500))
    expired = orphan(charge_refunded("evt_r2", 2000, pi="pi_1", charge="ch_9"))
    other_reason = orphan(charge_refunded("evt_r3", 3000, pi="pi_1", charge="ch_8"))
    never = orphan(charge_refunded("evt_r4", 500, pi="pi_never", charge="ch_never"))
    assert remembered() == sorted([("ch_3Legacy", by_charge), ("ch_9", expired), ("pi_1", expired),
                                   ("ch_8", other_reason), ("pi_1", other_reason), ("ch_never", never),
                                   ("pi_never", never)])
    harness.tx(lambda tx: tx.execute("UPDATE deliveries SET window_until = ? WHERE conversion_id = ?",
                                     (now_ms() - 1, expired)))
    harness.tx(lambda tx: tx.execute("UPDATE deliveries SET reason = 'no_identifier' WHERE conversion_id = ?",
                                     (other_reason,)))
    receive(checkout())  # the Sale of pi_1
    assert state(expired) == (None, "skipped", "unknown_sale")
    assert state(other_reason) == (None, "skipped", "no_identifier")
    assert state(by_charge) == (None, "skipped", "unknown_sale")
    # the refunds that named pi_1 were read and cleared, revived or not; the others still wait
    assert remembered() == sorted([("ch_3Legacy", by_charge), ("ch_never", never), ("pi_never", never)])
    legacy = fixture("stripe", "invoice.paid+legacy")
    (sale,) = receive(legacy)["conversions"]
    reverses, delivery_state, _ = state(by_charge)
    assert (reverses, delivery_state) == (sale["id"], "pending")
    assert remembered() == sorted([("ch_never", never), ("pi_never", never)])
    assert state(never) == (None, "skipped", "unknown_sale")


def test_a_sale_stored_after_its_refund_links_it_on_both_engines(harness: Harness, tmp_path: Path) -> None:
    source = stripe_source(tmp_path)
    ingest = Ingestor(harness.store, DubDestination(config(tmp_path, "http://127.0.0.1:9").tracking))

    def receive(event: dict[str, Any]) -> dict[str, Any]:
        return harness.run(ingest.receive(source, *signed(event))).body()

    early = receive(charge_refunded("evt_r1", 1000))
    assert early["reason"] == "unknown_sale"
    (sale,) = receive(checkout())["conversions"]
    rows = harness.read(lambda tx: tx.all(
        "SELECT c.id, c.reverses, c.business_key, d.state, d.reason, d.next_attempt_at, d.window_until "
        "FROM conversions c JOIN deliveries d ON d.conversion_id = c.id WHERE c.kind = 'refund'"))
    ((refund_id, reverses, key, state, reason, due, until),) = rows
    assert (reverses, key, state, reason) == (sale["id"], f"refund:{sale['id']}:total:1000", "pending", None)
    assert until - due == 86_400_000  # a fresh window to find the commission the Sale makes
    assert harness.read(lambda tx: tx.all("SELECT * FROM orphan_refunds")) == []
    # it waits behind its Sale, like any refund
    later = now_ms() + 60_000
    claimed = harness.tx(lambda tx: tx.claim("dub", "w", later, 60_000, 10))
    assert [c.conversion_id for c in claimed] == [sale["id"]]
    assert refund_id != sale["id"]
    # retention prunes an orphan with what it remembered
    orphan = receive(charge_refunded("evt_r9", 100, pi="pi_gone", charge="ch_gone"))
    assert orphan["reason"] == "unknown_sale"
    assert len(harness.read(lambda tx: tx.all("SELECT * FROM orphan_refunds"))) == 2
    harness.tx(lambda tx: tx.execute("UPDATE events SET received_at = 0 WHERE id = ?", (orphan["eventId"],)))
    assert harness.tx(lambda tx: tx.prune_events(1, 100)) == 1
    assert harness.read(lambda tx: tx.all("SELECT * FROM orphan_refunds")) == []


def test_a_refund_its_link_and_its_sale_in_any_order_at_once_end_linked(harness: Harness, tmp_path: Path) -> None:
    """Two replicas (PostgreSQL) store the link at the same moment as the refund (its invoice
    stored before), or as the invoice (its refund stored before): whichever commits first, the
    refund ends linked to the invoice's Sale."""
    import asyncio

    source = stripe_source(tmp_path)
    ingest = Ingestor(harness.store, DubDestination(config(tmp_path, "http://127.0.0.1:9").tracking))

    def event(name: str, n: int) -> dict[str, Any]:
        if name == "refund":
            return charge_refunded(f"evt_r{n}", 500, pi=f"pi_{n}", charge=f"ch_{n}", amount=2900)
        if name == "link":
            return invoice_payment_paid(f"evt_p{n}", invoice=f"in_{n}", pi=f"pi_{n}")
        return invoice_paid(f"evt_i{n}", invoice=f"in_{n}")

    async def at_once(n: int, first: str, *together: str) -> None:
        await ingest.receive(source, *signed(event(first, n)))
        await asyncio.gather(*(ingest.receive(source, *signed(event(name, n))) for name in together))

    rounds = 20
    for n in range(rounds):
        harness.run(at_once(n, "sale", "refund", "link"))
        harness.run(at_once(rounds + n, "refund", "sale", "link"))
    rows = harness.read(lambda tx: tx.all(
        "SELECT r.record, d.state, s.business_key FROM conversions r JOIN deliveries d ON d.conversion_id = r.id "
        "LEFT JOIN conversions s ON s.id = r.reverses WHERE r.kind = 'refund'"))
    assert len(rows) == 2 * rounds
    # each pending, reversing its own invoice's Sale
    linked = {Conversion.from_json(record).provider_event_id: (state, sale) for record, state, sale in rows}
    assert linked == {f"evt_r{n}": ("pending", f"sale:in_{n}") for n in range(2 * rounds)}
    assert harness.read(lambda tx: tx.all("SELECT * FROM orphan_refunds")) == []


# -- end to end: Stripe → hooktrack → the strict Dub stand-in's commission ----------------------


def _stripe_refund(total: int, event_id: str, intent: str) -> dict[str, Any]:
    obj = {"id": "ch_early", "object": "charge", "amount": 5390, "amount_refunded": total, "currency": "usd",
           "payment_intent": intent, "refunded": total >= 5390}
    return {"id": event_id, "object": "event", "type": "charge.refunded", "created": 1775900000, "livemode": False,
            "data": {"object": obj}}


@pytest.mark.parametrize(("total", "remaining", "status"), [(5390, 4900, "refunded"), (1078, 3920, "pending")])
def test_a_refund_before_its_checkout_reaches_the_commission_once_the_sale_is_delivered(
        make_client: Any, receiver: Any, tmp_path: Path, total: int, remaining: int, status: str) -> None:
    """Stripe sends `charge.refunded` before `checkout.session.completed` (or the checkout's
    delivery failed during an outage and is retried after the refund went through)."""
    receiver.program = True
    receiver.commission_delay_s = 0.3
    client = make_client()
    checkout_event = fixture("stripe", "checkout.session.completed")  # $53.90 paid, $4.90 tax
    intent = checkout_event["data"]["object"]["payment_intent"]
    early = post_stripe(client, _stripe_refund(total, "evt_early_refund", intent)).json()
    assert (early["status"], early["reason"]) == ("ignored", "unknown_sale")
    assert post_stripe(client, checkout_event).json()["status"] == "accepted"
    wait_for(lambda: receiver.commissions() and receiver.commissions()[0].status == status
             and (status == "refunded" or receiver.commissions()[0].amount == remaining), timeout=15)
    assert len(receiver.counted_sales()) == 1
    patches = [r.body for r in receiver.requests if r.kind == "commission" and 200 <= r.status < 300]
    assert patches == ([{"status": "refunded"}] if status == "refunded" else
                       [{"saleAmount": remaining, "currency": "usd"}])
    # `hooktrack events show` of the refund's event: delivered, reversing the Sale
    toml = tmp_path / "hooktrack.toml"
    toml.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "hooktrack.db"}"\n'
                    f'[tracking]\nurl = "{receiver.url}"\napi_key = "test_key"\n'
                    f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n')
    from adapter.cli import main

    def shown() -> str:
        result = CliRunner().invoke(main, ["events", "show", str(early["eventId"]), "--config", str(toml)])
        assert result.exit_code == 0, result.output
        return result.output

    out = wait_for(lambda: "delivered" in shown() and shown(), timeout=10)
    sale_id = next(c["id"] for c in receiver_sale_conversions(tmp_path))
    assert f"reverses: sale #{sale_id}" in out


def receiver_sale_conversions(tmp_path: Path) -> list[dict[str, Any]]:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "hooktrack.db")
    try:
        return [{"id": r[0]} for r in conn.execute("SELECT id FROM conversions WHERE kind = 'sale'")]
    finally:
        conn.close()


def test_a_refund_and_its_sale_at_the_same_moment_never_leave_the_refund_unknown(
        harness: Harness, tmp_path: Path) -> None:
    """Two replicas (PostgreSQL) store the refund and its Sale at once: whichever commits first,
    the refund ends linked to the Sale, either at once or when the Sale is stored."""
    import asyncio

    source = stripe_source(tmp_path)
    ingest = Ingestor(harness.store, DubDestination(config(tmp_path, "http://127.0.0.1:9").tracking))

    async def both(n: int) -> None:
        await asyncio.gather(ingest.receive(source, *signed(charge_refunded(f"evt_r{n}", 1000, pi=f"pi_{n}",
                                                                            charge=f"ch_{n}"))),
                             ingest.receive(source, *signed(checkout(f"evt_c{n}", pi=f"pi_{n}"))))

    rounds = 30
    for n in range(rounds):
        harness.run(both(n))
    rows = harness.read(lambda tx: tx.all(
        "SELECT c.reverses, d.state, d.reason FROM conversions c JOIN deliveries d ON d.conversion_id = c.id "
        "WHERE c.kind = 'refund'"))
    assert len(rows) == rounds
    assert [r for r in rows if r[0] is None or r[1] != "pending"] == []
