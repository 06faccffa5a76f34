"""The store contract, the same on SQLite and PostgreSQL: dedup, identity memory, claims and
leases, per-customer ordering, settling deliveries, destination pause state, retention.
Concurrent cases really overlap on PostgreSQL (one pooled connection per transaction); on
SQLite they queue for the one writer."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import stripe
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.destinations import build_destination
from adapter.destinations.dub import DubDestination
from adapter.forwarder import Forwarder
from adapter.ingest import Ingestor, now_ms
from adapter.plugin import Source, build_sources, load_providers
from adapter.receiver import run_in_thread
from adapter.records import Attempt, Conversion, DestinationState, Settlement
from adapter.retention import DAY_MS, Retention
from adapter.store import Claimed, Identity, Tx
from tests.conftest import STRIPE_SECRET, config, fixture
from tests.store.conftest import Harness

NOW = 1_800_000_000_000
DUB = "dub"
_SEEDED = itertools.count()


def event_row(key: str | None, received_at: int = NOW, status: str = "accepted", source: str = "s") -> dict[str, Any]:
    return {"source": source, "provider": "stripe", "dedup_key": key, "provider_event_id": key,
            "event_type": "invoice.paid", "received_at": received_at, "status": status, "body": "{}"}


def record(key: str, *, kind: str = "sale", customer: str = "u1") -> Conversion:
    """A neutral conversion as ingest stores it."""
    if kind == "sale":
        return Conversion(kind="sale", source="s", provider="stripe", event_name="Purchase", occurred_at=NOW,
                          customer_external_id=customer, amount=4900, currency="usd", invoice_id=key)
    return Conversion(kind="lead", source="s", provider="stripe", event_name="Sign up", occurred_at=NOW,
                      customer_external_id=customer, click_id=f"cl_{customer}")


def conversion_row(event_id: int, key: str, *, kind: str = "sale", customer: str = "u1") -> dict[str, Any]:
    rec = record(key, kind=kind, customer=customer)
    return {"event_id": event_id, "source": "s", "kind": kind, "event_name": rec.event_name,
            "business_key": key, "customer_external_id": customer, "record": rec.to_json(),
            "created_at": 0, "updated_at": 0}


def delivery_row(conversion_id: int, state: str = "pending", *, destination: str = DUB, next_at: int = 0,
                 window_until: int = NOW + DAY_MS) -> dict[str, Any]:
    return {"conversion_id": conversion_id, "destination": destination, "state": state, "next_attempt_at": next_at,
            "window_until": window_until, "created_at": 0, "updated_at": 0}


def seed(store: Harness, *convs: tuple[str, str, str]) -> list[int]:
    """(kind, customer, state) → one event, one conversion and its `dub` delivery each;
    returns conversion ids."""
    def fn(tx: Tx) -> list[int]:
        ids = []
        for i, (kind, customer, state) in enumerate(convs):
            ev = tx.insert_event(event_row(f"evt_seed_{next(_SEEDED)}"))
            assert ev is not None
            cid = tx.insert_conversion(conversion_row(ev, f"{kind}:{i}", kind=kind, customer=customer))
            tx.insert_delivery(delivery_row(cid, state))
            ids.append(cid)
        return ids

    return store.tx(fn)


def delivery(store: Harness, conversion_id: int, destination: str = DUB) -> dict[str, Any]:
    """The conversion's delivery row to `destination`."""
    cols = ("id", "state", "reason", "attempts", "next_attempt_at", "lease_owner", "last_status", "last_error",
            "delivered_at")
    row = store.read(lambda tx: tx.one(f"SELECT {', '.join(cols)} FROM deliveries WHERE conversion_id = ? "
                                       "AND destination = ?", (conversion_id, destination)))
    assert row is not None, f"no {destination} delivery for conversion {conversion_id}"
    return dict(zip(cols, row, strict=True))


def stripe_source(tmp_path: Path) -> Source:
    settings = config(tmp_path, "http://127.0.0.1:9")
    return build_sources(settings, load_providers())["stripe"]


def signed(event: dict[str, Any]) -> tuple[bytes, Headers]:
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, STRIPE_SECRET)
    return body.encode(), Headers({"stripe-signature": header})


def dub(tmp_path: Path) -> DubDestination:
    """The `dub` destination as the test config's `[tracking]` builds it (nothing is sent here)."""
    return DubDestination(config(tmp_path, "http://127.0.0.1:9").tracking)


def receive_all(store: Harness, source: Source, deliveries: list[tuple[bytes, Headers]]) -> list[dict[str, Any]]:
    ingest = Ingestor(store.store, build_destination(config(Path("unused"), "http://127.0.0.1:9")))

    async def all_of() -> list[dict[str, Any]]:
        import asyncio

        outcomes = await asyncio.gather(*(ingest.receive(source, b, h) for b, h in deliveries))
        return [o.body() for o in outcomes]

    return store.run(all_of())


# -- delivery dedup ---------------------------------------------------------------------


def test_redelivered_event_is_refused_by_the_unique_key(store: Harness) -> None:
    first = store.tx(lambda tx: tx.insert_event(event_row("evt_1")))
    assert first is not None
    assert store.tx(lambda tx: tx.insert_event(event_row("evt_1"))) is None
    assert store.tx(lambda tx: tx.insert_event(event_row("evt_1", source="other"))) is not None
    assert store.read(lambda tx: tx.event_id_for("s", "evt_1")) == first


def test_one_event_delivered_many_times_at_once_has_one_winner(store: Harness) -> None:
    ids = store.concurrently([lambda tx: tx.insert_event(event_row("evt_race")) for _ in range(16)])
    assert len([i for i in ids if i is not None]) == 1


def test_same_webhook_received_concurrently_is_accepted_once(store: Harness, tmp_path: Path) -> None:
    delivery = signed(fixture("stripe", "checkout.session.completed"))
    answers = receive_all(store, stripe_source(tmp_path), [delivery] * 12)
    assert sorted(a["status"] for a in answers) == ["accepted"] + ["duplicate"] * 11
    assert store.read(lambda tx: tx.one("SELECT count(*) FROM conversions")[0]) == 1
    assert store.read(lambda tx: tx.all("SELECT destination, state FROM deliveries")) == [("dub", "pending")]


# -- business dedup ---------------------------------------------------------------------


def test_business_key_is_claimed_once_under_concurrency(store: Harness) -> None:
    def produce(tx: Tx) -> tuple[str, int]:
        held = tx.claim_business_key("s", "sale:in_1", NOW)
        if held is not None:
            return "held", held
        ev = tx.insert_event(event_row(None))
        assert ev is not None
        conversion_id = tx.insert_conversion(conversion_row(ev, "sale:in_1"))
        tx.bind_business_key("s", "sale:in_1", conversion_id)
        return "new", conversion_id

    results = store.concurrently([produce] * 12)
    new = [cid for what, cid in results if what == "new"]
    assert len(new) == 1
    assert all(cid == new[0] for _, cid in results)


def test_checkout_and_first_invoice_arriving_together_are_one_sale(store: Harness, tmp_path: Path) -> None:
    checkout = signed(fixture("stripe", "checkout.session.completed+subscription"))
    invoice = signed(fixture("stripe", "invoice.paid"))
    answers = receive_all(store, stripe_source(tmp_path), [checkout, invoice, checkout, invoice])
    assert sorted(a["status"] for a in answers) == ["accepted", "duplicate", "duplicate", "duplicate"]
    sales = store.read(lambda tx: tx.all("SELECT record FROM conversions WHERE kind = 'sale'"))
    assert len(sales) == 1
    sale = Conversion.from_json(sales[0][0])
    assert sale.invoice_id == "in_1SUBFIRST" and sale.customer_external_id == "user_43"
    assert sale.click_id == "cl_click_sub"  # whichever came first, the checkout's clickId is on the Sale
    body = dub(tmp_path).render(sale).body or {}
    assert (body["invoiceId"], body["customerExternalId"], body["clickId"]) == ("in_1SUBFIRST", "user_43",
                                                                              "cl_click_sub")


def test_first_paid_invoice_of_a_subscription_is_recorded_once(store: Harness) -> None:
    def first(inv: str) -> Any:
        def fn(tx: Any) -> str | None:
            tx.record_first_invoice("s", "sub_1", inv, NOW)
            return tx.subscription_first("s", "sub_1")
        return fn

    firsts = store.concurrently([first(f"in_{i}") for i in range(8)])
    assert len(set(firsts)) == 1 and firsts[0] in {f"in_{i}" for i in range(8)}


# -- identity memory --------------------------------------------------------------------


def test_explicit_identity_is_never_replaced_by_a_fallback(store: Harness) -> None:
    store.tx(lambda tx: tx.remember("s", [("customer", "cus_1")], Identity("cus_1", False, None, "a@x.io", None), NOW))
    store.tx(lambda tx: tx.remember("s", [("customer", "cus_1")], Identity("user_42", True, "cl_1", None, "Ada"), NOW))
    store.tx(lambda tx: tx.remember("s", [("customer", "cus_1")], Identity("cus_1", False, None, None, None), NOW))
    got = store.read(lambda tx: tx.identity("s", "customer", "cus_1"))
    assert got == Identity("user_42", True, "cl_1", "a@x.io", "Ada")
    assert store.read(lambda tx: tx.identity("other", "customer", "cus_1")) is None


def test_concurrent_memory_updates_keep_every_learned_field(store: Harness) -> None:
    updates = [Identity("user_7", True, None, None, None), Identity(None, False, "cl_7", None, None),
               Identity(None, False, None, "g@x.io", None), Identity(None, False, None, None, "Grace")]
    store.concurrently([(lambda i: lambda tx: tx.remember("s", [("customer", "cus_7")], i, NOW))(u) for u in updates * 3])
    assert store.read(lambda tx: tx.identity("s", "customer", "cus_7")) == Identity("user_7", True, "cl_7", "g@x.io", "Grace")


# -- claims, leases, ordering -----------------------------------------------------------


def test_concurrent_claims_never_hand_one_conversion_to_two_workers(store: Harness) -> None:
    ids = seed(store, *[("sale", f"u{i}", "pending") for i in range(120)])
    claimed: list[int] = []
    for _ in range(10):
        batches = store.concurrently([(lambda o: lambda tx: tx.claim(DUB, o, NOW, 60_000, 7))(f"w{w}")
                                      for w in range(6)])
        claimed += [c.conversion_id for batch in batches for c in batch]
    assert sorted(claimed) == sorted(ids)  # all of them, each exactly once


def test_a_claim_carries_the_conversion_and_its_delivery(store: Harness) -> None:
    (cid,) = seed(store, ("sale", "u1", "pending"))
    (got,) = store.tx(lambda tx: tx.claim(DUB, "w", NOW, 60_000, 10))
    assert (got.id, got.conversion_id, got.kind, got.source, got.attempts) == (delivery(store, cid)["id"], cid,
                                                                              "sale", "s", 0)
    assert (got.created_at, got.window_until) == (0, NOW + DAY_MS)
    assert Conversion.from_json(got.conversion) == record("sale:0", customer="u1")


def test_a_stored_conversion_comes_back_exactly_zero_amounts_test_mode_and_account_scoped_ids_included(
        store: Harness, tmp_path: Path) -> None:
    free = Conversion(kind="sale", source="s", provider="shopify", event_name="Purchase", occurred_at=NOW,
                      customer_external_id="u1", amount=0, currency="usd", invoice_id="1001", invoice_unique=False,
                      livemode=False, metadata={"orderNumber": 1001})

    def store_it(tx: Tx) -> int:
        ev = tx.insert_event(event_row("evt_free"))
        assert ev is not None
        cid = tx.insert_conversion({**conversion_row(ev, "sale:1001"), "record": free.to_json()})
        tx.insert_delivery(delivery_row(cid))
        return cid

    store.tx(store_it)
    (got,) = store.tx(lambda tx: tx.claim(DUB, "w", NOW, 60_000, 10))
    back = Conversion.from_json(got.conversion)
    assert back == free
    body = dub(tmp_path).render(back).body or {}
    assert (body["amount"], body["invoiceId"], body["metadata"]["livemode"]) == (0, "s:1001", False)


def test_expired_lease_is_claimed_again_and_the_old_owner_cannot_settle_it(store: Harness) -> None:
    (cid,) = seed(store, ("sale", "u1", "pending"))
    (held,) = store.tx(lambda tx: tx.claim(DUB, "a", 1000, 500, 10))
    assert held.conversion_id == cid
    assert store.tx(lambda tx: tx.claim(DUB, "b", 1400, 500, 10)) == []  # lease still held
    assert [c.id for c in store.tx(lambda tx: tx.claim(DUB, "b", 1600, 500, 10))] == [held.id]
    late = Settlement(held.id, "dead", "http_400", 1700, 400, "late")
    store.tx(lambda tx: tx.settle("a", 1700, [late]))  # a lost it: no effect
    assert (delivery(store, cid)["state"], delivery(store, cid)["lease_owner"]) == ("pending", "b")
    store.tx(lambda tx: tx.settle("b", 1800, [Settlement(held.id, "delivered", None, 1800, 200, None)]))
    got = delivery(store, cid)
    assert (got["state"], got["attempts"], got["last_status"], got["delivered_at"], got["lease_owner"]) == (
        "delivered", 1, 200, 1800, None)


def test_a_delivery_the_api_counted_is_delivered_even_when_the_lease_ran_out(store: Harness) -> None:
    (cid,) = seed(store, ("sale", "u1", "pending"))
    (held,) = store.tx(lambda tx: tx.claim(DUB, "a", 1000, 500, 10))
    store.tx(lambda tx: tx.claim(DUB, "b", 1600, 500, 10))
    store.tx(lambda tx: tx.settle("a", 1700, [Settlement(held.id, "delivered", None, 1700, 200, None)]))
    assert delivery(store, cid)["state"] == "delivered"  # the API has it: b must not send it again
    assert store.tx(lambda tx: tx.claim(DUB, "c", 9000, 500, 10)) == []


def test_sale_waits_for_its_customers_pending_lead_whoever_claims(store: Harness) -> None:
    lead, sale, other = seed(store, ("lead", "u1", "pending"), ("sale", "u1", "pending"), ("sale", "u2", "pending"))
    first = store.concurrently([(lambda o: lambda tx: tx.claim(DUB, o, NOW, 60_000, 10))(f"w{w}") for w in range(3)])
    assert sorted(c.conversion_id for batch in first for c in batch) == [lead, other]
    again = store.tx(lambda tx: tx.claim(DUB, "w9", NOW + 120_000, 60_000, 10))
    assert [c.conversion_id for c in again] == [lead, other]  # leases ran out: the lead again, still not its sale
    store.tx(lambda tx: tx.settle("w9", NOW, [Settlement(again[0].id, "delivered", None, NOW, 200, None)]))
    assert [c.conversion_id for c in store.tx(lambda tx: tx.claim(DUB, "w1", NOW + 120_000, 60_000, 10))] == [sale]


def test_dead_lead_does_not_hold_back_its_sale(store: Harness) -> None:
    _lead, sale = seed(store, ("lead", "u1", "dead"), ("sale", "u1", "pending"))
    assert [c.conversion_id for c in store.tx(lambda tx: tx.claim(DUB, "w", NOW, 60_000, 10))] == [sale]


def test_each_destination_claims_only_its_own_deliveries(store: Harness) -> None:
    (cid,) = seed(store, ("sale", "u1", "delivered"))
    store.tx(lambda tx: tx.insert_delivery(delivery_row(cid, "pending", destination="other")))
    assert store.tx(lambda tx: tx.claim(DUB, "w", NOW, 60_000, 10)) == []
    (got,) = store.tx(lambda tx: tx.claim("other", "w", NOW, 60_000, 10))
    assert (got.id, got.conversion_id) == (delivery(store, cid, "other")["id"], cid)
    # A Lead pending to one destination does not hold back a Sale to another.
    _lead, sale = seed(store, ("lead", "u2", "pending"), ("sale", "u2", "delivered"))
    store.tx(lambda tx: tx.insert_delivery(delivery_row(sale, "pending", destination="third")))
    assert [c.conversion_id for c in store.tx(lambda tx: tx.claim("third", "w", NOW, 60_000, 10))] == [sale]


# -- settling: retries, verdicts that do not count, replay -------------------------------


def test_a_retry_counts_an_attempt_and_waits_until_its_next_time(store: Harness) -> None:
    (cid,) = seed(store, ("sale", "u1", "pending"))
    (held,) = store.tx(lambda tx: tx.claim(DUB, "w", NOW, 60_000, 10))
    attempt = Attempt(held.id, cid, 503, 7, "retry", None, "busy")
    store.tx(lambda tx: tx.settle("w", NOW, [Settlement(held.id, "pending", None, NOW + 5000, 503, "busy")],
                                  [attempt]))
    got = delivery(store, cid)
    assert (got["state"], got["attempts"], got["next_attempt_at"], got["lease_owner"], got["last_status"],
            got["last_error"]) == ("pending", 1, NOW + 5000, None, 503, "busy")
    assert store.tx(lambda tx: tx.claim(DUB, "w", NOW + 4999, 60_000, 10)) == []
    (again,) = store.tx(lambda tx: tx.claim(DUB, "w", NOW + 5000, 60_000, 10))
    assert again.attempts == 1
    rows = store.read(lambda tx: tx.all("SELECT conversion_id, delivery_id, status_code, outcome FROM attempts"))
    assert rows == [(cid, held.id, 503, "retry")]


def test_not_counted_answers_are_retried_without_spending_max_attempts(store: Harness) -> None:
    (cid,) = seed(store, ("sale", "u1", "pending"))
    def claim(at: int) -> list[Claimed]:
        return store.tx(lambda tx: tx.claim(DUB, "w", at, 60_000, 10))

    def settle(at: int, verdict: Settlement, *attempts: Attempt) -> None:
        store.tx(lambda tx: tx.settle("w", at, [verdict], attempts))

    at = NOW
    for _ in range(6):  # a sale answered `"sale": null`, again and again, inside the window
        (held,) = claim(at)
        assert held.attempts == 0  # the forwarder's max_attempts check sees no spent attempt
        settle(at, Settlement(held.id, "pending", "customer_not_found", at + 1000, 200, '{"sale":null}',
                              counted=False),
               Attempt(held.id, cid, 200, 5, "not_counted", None, '{"sale":null}'))
        got = delivery(store, cid)
        assert (got["state"], got["reason"], got["attempts"], got["lease_owner"]) == (
            "pending", "customer_not_found", 0, None)
        assert claim(at + 999) == []  # waits its turn
        at += 1000
    assert store.read(lambda tx: tx.one("SELECT count(*) FROM attempts WHERE delivery_id = ?", (held.id,)))[0] == 6
    (held,) = store.tx(lambda tx: tx.claim(DUB, "w", at, 60_000, 10))
    store.tx(lambda tx: tx.settle("w", at, [Settlement(held.id, "pending", None, at, 503, None)]))  # counts
    assert delivery(store, cid)["attempts"] == 1
    (held,) = store.tx(lambda tx: tx.claim(DUB, "w", at, 60_000, 10))
    store.tx(lambda tx: tx.settle("w", at, [Settlement(held.id, "unattributed", "customer_not_found", at, 200,
                                                       '{"sale":null}', counted=False)]))
    got = delivery(store, cid)
    assert (got["state"], got["reason"], got["attempts"], got["delivered_at"]) == (
        "unattributed", "customer_not_found", 1, None)  # not shown as delivered
    assert store.tx(lambda tx: tx.claim(DUB, "w", at + DAY_MS, 60_000, 10)) == []


def test_a_sale_the_api_keeps_not_counting_outlives_max_attempts_then_is_unattributed(
        store: Harness, tmp_path: Path) -> None:
    """The real forwarder against a loopback API that answers every sale `{"sale": null}`."""
    answers: list[float] = []

    async def track(request: Request) -> Response:
        answers.append(time.time())
        return JSONResponse({"eventName": "Purchase", "customer": None, "sale": None})

    api = Starlette(routes=[Route("/track/{kind:str}", track, methods=["POST"])])
    (cid,) = seed(store, ("sale", "u1", "pending"))
    window_ms = 1500
    store.tx(lambda tx: tx.execute("UPDATE deliveries SET window_until = ?, created_at = ? WHERE conversion_id = ?",
                                   (now_ms() + window_ms, now_ms(), cid)))
    with run_in_thread(api) as url:
        settings = config(tmp_path, url, forwarder={"max_attempts": 2})
        forwarder = Forwarder(store.store, settings.tracking, settings.forwarder, DubDestination(settings.tracking))

        async def until_settled() -> None:
            task = asyncio.create_task(forwarder.run())
            try:
                async with asyncio.timeout(20):
                    while (await store.store.read(lambda tx: tx.one(
                            "SELECT state FROM deliveries WHERE conversion_id = ?", (cid,))))[0] == "pending":
                        await asyncio.sleep(0.05)
            finally:
                forwarder.stop()
                await task

        store.run(until_settled())
    got = delivery(store, cid)
    assert (got["state"], got["reason"], got["attempts"], got["delivered_at"]) == (
        "unattributed", "customer_not_found", 0, None)
    assert len(answers) > 2  # more requests than max_attempts allows for failures, none dead-lettered
    assert answers[-1] - answers[0] < window_ms / 1000 + 1
    logged = store.read(lambda tx: tx.all("SELECT outcome, status_code FROM attempts WHERE conversion_id = ?", (cid,)))
    assert logged == [("not_counted", 200)] * len(answers)


def test_requeue_gives_a_dead_delivery_a_fresh_budget_and_window(store: Harness) -> None:
    dead, pending = seed(store, ("sale", "u1", "dead"), ("sale", "u2", "pending"))
    store.tx(lambda tx: tx.execute("UPDATE deliveries SET attempts = 20, reason = 'max_attempts'"))
    assert store.tx(lambda tx: tx.requeue([dead, pending, 999_999], NOW, 3_600_000)) == [dead]
    got = delivery(store, dead)
    assert (got["state"], got["reason"], got["attempts"], got["next_attempt_at"]) == ("pending", None, 0, NOW)
    assert store.read(lambda tx: tx.one("SELECT window_until FROM deliveries WHERE id = ?", (got["id"],)))[0] == (
        NOW + 3_600_000)
    assert delivery(store, pending)["attempts"] == 20  # not dead: left alone
    assert {c.conversion_id for c in store.tx(lambda tx: tx.claim(DUB, "w", NOW, 60_000, 10))} == {dead, pending}


# -- destinations -----------------------------------------------------------------------


def test_destination_pause_state_round_trips_and_every_worker_sees_it(store: Harness) -> None:
    assert store.read(lambda tx: tx.destination_state(DUB)) == DestinationState(DUB)  # never paused: sending
    assert store.read(lambda tx: tx.destination_names()) == []
    paused = DestinationState(DUB, "http_401: Unauthorized", NOW, NOW + 60_000, 3)
    store.tx(lambda tx: tx.set_destination_state(paused, NOW))
    seen = store.concurrently([lambda tx: tx.destination_state(DUB) for _ in range(4)])
    assert seen == [paused] * 4
    assert store.read(lambda tx: tx.destination_state("other")) == DestinationState("other")
    probed = DestinationState(DUB, "http_401: Unauthorized", NOW, NOW + 120_000, 4)
    store.tx(lambda tx: tx.set_destination_state(probed, NOW + 60_000))
    assert store.read(lambda tx: tx.destination_state(DUB)) == probed
    store.tx(lambda tx: tx.set_destination_state(DestinationState(DUB), NOW + 120_000))  # a probe succeeded
    assert store.read(lambda tx: tx.destination_state(DUB)) == DestinationState(DUB)
    assert store.read(lambda tx: tx.destination_names()) == [DUB]


# -- retention --------------------------------------------------------------------------


def _age(store: Harness, event_ids: list[int], received_at: int) -> None:
    marks = ", ".join("?" for _ in event_ids)
    store.tx(lambda tx: tx.execute(f"UPDATE events SET received_at = ? WHERE id IN ({marks})", [received_at, *event_ids]))


def _event_of(store: Harness, conversion_id: int) -> int:
    return int(store.read(lambda tx: tx.one("SELECT event_id FROM conversions WHERE id = ?", (conversion_id,)))[0])


def test_retention_prunes_old_settled_events_and_keeps_what_is_still_owed(store: Harness) -> None:
    old = NOW - 31 * DAY_MS
    delivered, skipped, unattributed, pending, dead, young = seed(
        store, ("sale", "u1", "delivered"), ("lead", "u2", "skipped"), ("sale", "u6", "unattributed"),
        ("sale", "u3", "pending"), ("sale", "u4", "dead"), ("sale", "u5", "delivered"))
    logged = [Attempt(delivery(store, c)["id"], c, 200, 5, "delivered", None, None)
              for c in (delivered, unattributed, dead)]
    store.tx(lambda tx: tx.settle("w", old, [], logged))
    events = {cid: _event_of(store, cid) for cid in (delivered, skipped, unattributed, pending, dead, young)}
    _age(store, [events[c] for c in (delivered, skipped, unattributed, pending, dead)], old)
    bare = [store.tx(lambda tx: tx.insert_event(event_row(None, old, "duplicate"))) for _ in range(5)]
    store.tx(lambda tx: tx.claim_business_key("s", "sale:in_old", old))
    store.tx(lambda tx: tx.record_first_invoice("s", "sub_old", "in_old", old))
    store.tx(lambda tx: tx.remember("s", [("customer", "cus_old")], Identity("user_old", True, None, None, None), old))

    pruned = store.run(Retention(store.store, 30, batch=2, pause_s=0).run_once(NOW))

    assert pruned == 3 + len(bare)
    left = {r[0] for r in store.read(lambda tx: tx.all("SELECT id FROM conversions"))}
    assert left == {pending, dead, young}
    owed = store.read(lambda tx: tx.all("SELECT conversion_id, state FROM deliveries"))
    assert sorted(owed) == sorted([(pending, "pending"), (dead, "dead"), (young, "delivered")])
    kept_events = {r[0] for r in store.read(lambda tx: tx.all("SELECT id FROM events"))}
    assert kept_events == {events[pending], events[dead], events[young]}
    attempts = store.read(lambda tx: tx.all("SELECT conversion_id FROM attempts"))
    assert [r[0] for r in attempts] == [dead]
    assert store.tx(lambda tx: tx.claim_business_key("s", "sale:in_old", NOW)) == 0  # still a duplicate
    assert store.tx(lambda tx: tx.subscription_first("s", "sub_old")) == "in_old"
    assert store.read(lambda tx: tx.identity("s", "customer", "cus_old")).external_id == "user_old"  # type: ignore[union-attr]


def test_retention_keeps_a_conversion_while_any_destination_still_owes_it(store: Harness) -> None:
    (cid,) = seed(store, ("sale", "u1", "delivered"))
    store.tx(lambda tx: tx.insert_delivery(delivery_row(cid, "pending", destination="other")))
    _age(store, [_event_of(store, cid)], NOW - 31 * DAY_MS)
    assert store.run(Retention(store.store, 30, pause_s=0).run_once(NOW)) == 0
    assert delivery(store, cid)["state"] == "delivered" and delivery(store, cid, "other")["state"] == "pending"
    store.tx(lambda tx: tx.execute("UPDATE deliveries SET state = 'unattributed' WHERE destination = 'other'"))
    assert store.run(Retention(store.store, 30, pause_s=0).run_once(NOW)) == 1
    assert store.read(lambda tx: tx.one("SELECT count(*) FROM deliveries"))[0] == 0


def test_retention_never_prunes_inside_the_three_day_retry_window(store: Harness) -> None:
    (cid,) = seed(store, ("sale", "u1", "delivered"))
    _age(store, [_event_of(store, cid)], NOW - 2 * DAY_MS)
    retention = Retention(store.store, 1)
    assert retention.cutoff(NOW) == NOW - 3 * DAY_MS
    assert store.run(retention.run_once(NOW)) == 0
    assert store.run(retention.run_once(NOW + 2 * DAY_MS)) == 1


def test_renewal_a_year_later_keeps_its_identity_and_an_old_invoice_is_still_a_duplicate(
        store: Harness, tmp_path: Path) -> None:
    source = stripe_source(tmp_path)
    customer, invoice = fixture("stripe", "customer.created"), fixture("stripe", "invoice.paid")
    receive_all(store, source, [signed(customer)])
    receive_all(store, source, [signed(invoice)])
    store.tx(lambda tx: tx.execute("UPDATE deliveries SET state = 'delivered'"))
    assert store.run(Retention(store.store, 30, pause_s=0).run_once(NOW + 365 * DAY_MS)) == 2
    assert store.read(lambda tx: tx.one("SELECT count(*) FROM events")[0]) == 0

    resent = dict(invoice, id="evt_resent_much_later")
    answer = receive_all(store, source, [signed(resent)])[0]
    assert (answer["status"], answer["reason"]) == ("duplicate", "business_key")
    renewal = json.loads(json.dumps(invoice))
    renewal["id"] = "evt_renewal"
    renewal["data"]["object"].update(id="in_RENEWAL", billing_reason="subscription_cycle")
    assert receive_all(store, source, [signed(renewal)])[0]["status"] == "accepted"
    (raw,) = store.read(lambda tx: tx.one("SELECT c.record FROM conversions c JOIN deliveries d "
                                          "ON d.conversion_id = c.id WHERE d.state = 'pending'"))
    renewed = Conversion.from_json(raw)
    assert renewed.customer_external_id == "user_43" and renewed.event_name == "Subscription renewal"


def test_purge_removes_only_dead_letters(store: Harness) -> None:
    dead, pending = seed(store, ("sale", "u1", "dead"), ("sale", "u2", "pending"))
    did = delivery(store, dead)["id"]
    store.tx(lambda tx: tx.settle("w", NOW, [], [Attempt(did, dead, 422, 5, "dead", None, "refused")]))
    assert store.tx(lambda tx: tx.purge_dead([dead, pending])) == 1
    assert [r[0] for r in store.read(lambda tx: tx.all("SELECT id FROM conversions"))] == [pending]
    assert [r[0] for r in store.read(lambda tx: tx.all("SELECT conversion_id FROM deliveries"))] == [pending]
    assert store.read(lambda tx: tx.one("SELECT count(*) FROM attempts"))[0] == 0
