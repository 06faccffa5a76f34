"""The store contract, the same on SQLite and PostgreSQL: dedup, identity memory, claims and
leases, per-customer ordering, retention. Concurrent cases really overlap on PostgreSQL (one
pooled connection per transaction); on SQLite they queue for the one writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import stripe
from starlette.datastructures import Headers

from adapter.ingest import Ingestor
from adapter.plugin import Source, build_sources, load_providers
from adapter.retention import DAY_MS, Retention
from adapter.store import Identity, Tx
from tests.conftest import STRIPE_SECRET, config, fixture
from tests.store.conftest import Harness

NOW = 1_800_000_000_000


def event_row(key: str | None, received_at: int = NOW, status: str = "accepted", source: str = "s") -> dict[str, Any]:
    return {"source": source, "provider": "stripe", "dedup_key": key, "provider_event_id": key,
            "event_type": "invoice.paid", "received_at": received_at, "status": status, "body": "{}"}


def conversion_row(event_id: int, key: str, *, kind: str = "sale", customer: str = "u1", state: str = "pending",
                   next_at: int = 0) -> dict[str, Any]:
    return {"event_id": event_id, "source": "s", "kind": kind, "event_name": "Purchase" if kind == "sale" else "Sign up",
            "business_key": key, "customer_external_id": customer, "idempotency_key": key,
            "payload": json.dumps({"invoiceId": key}), "state": state, "next_attempt_at": next_at,
            "created_at": 0, "updated_at": 0}


def seed(store: Harness, *convs: tuple[str, str, str]) -> list[int]:
    """(kind, customer, state) → one event and one conversion each; returns conversion ids."""
    def fn(tx: Tx) -> list[int]:
        ids = []
        for i, (kind, customer, state) in enumerate(convs):
            ev = tx.insert_event(event_row(f"evt_seed_{i}"))
            assert ev is not None
            ids.append(tx.insert_conversion(conversion_row(ev, f"{kind}:{i}", kind=kind, customer=customer, state=state)))
        return ids

    return store.tx(fn)


def stripe_source(tmp_path: Path) -> Source:
    settings = config(tmp_path, "http://127.0.0.1:9")
    return build_sources(settings, load_providers())["stripe"]


def signed(event: dict[str, Any]) -> tuple[bytes, Headers]:
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, STRIPE_SECRET)
    return body.encode(), Headers({"stripe-signature": header})


def receive_all(store: Harness, source: Source, deliveries: list[tuple[bytes, Headers]]) -> list[dict[str, Any]]:
    ingest = Ingestor(store.store)

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
    sales = store.read(lambda tx: tx.all("SELECT payload FROM conversions WHERE kind = 'sale'"))
    assert len(sales) == 1
    payload = json.loads(sales[0][0])
    assert payload["invoiceId"] == "in_1SUBFIRST" and payload["customerExternalId"] == "user_43"
    assert payload["clickId"] == "cl_click_sub"  # whichever came first, the checkout's clickId is on the Sale


def test_first_paid_invoice_of_a_subscription_is_recorded_once(store: Harness) -> None:
    firsts = store.concurrently([
        (lambda inv: lambda tx: tx.first_invoice_of("s", "sub_1", inv, NOW))(f"in_{i}") for i in range(8)
    ])
    assert len(set(firsts)) == 1


# -- identity memory --------------------------------------------------------------------


def test_explicit_identity_is_never_replaced_by_a_fallback(store: Harness) -> None:
    store.tx(lambda tx: tx.remember("s", "customer", "cus_1", Identity("cus_1", False, None, "a@x.io", None), NOW))
    store.tx(lambda tx: tx.remember("s", "customer", "cus_1", Identity("user_42", True, "cl_1", None, "Ada"), NOW))
    store.tx(lambda tx: tx.remember("s", "customer", "cus_1", Identity("cus_1", False, None, None, None), NOW))
    got = store.read(lambda tx: tx.identity("s", "customer", "cus_1"))
    assert got == Identity("user_42", True, "cl_1", "a@x.io", "Ada")
    assert store.read(lambda tx: tx.identity("other", "customer", "cus_1")) is None


def test_concurrent_memory_updates_keep_every_learned_field(store: Harness) -> None:
    updates = [Identity("user_7", True, None, None, None), Identity(None, False, "cl_7", None, None),
               Identity(None, False, None, "g@x.io", None), Identity(None, False, None, None, "Grace")]
    store.concurrently([(lambda i: lambda tx: tx.remember("s", "customer", "cus_7", i, NOW))(u) for u in updates * 3])
    assert store.read(lambda tx: tx.identity("s", "customer", "cus_7")) == Identity("user_7", True, "cl_7", "g@x.io", "Grace")


# -- claims, leases, ordering -----------------------------------------------------------


def test_concurrent_claims_never_hand_one_conversion_to_two_workers(store: Harness) -> None:
    ids = seed(store, *[("sale", f"u{i}", "pending") for i in range(120)])
    claimed: list[int] = []
    for _ in range(10):
        batches = store.concurrently([(lambda o: lambda tx: tx.claim(o, NOW, 60_000, 7))(f"w{w}") for w in range(6)])
        claimed += [c.id for batch in batches for c in batch]
    assert sorted(claimed) == sorted(ids)  # all of them, each exactly once


def test_expired_lease_is_claimed_again_and_the_old_owner_cannot_settle_it(store: Harness) -> None:
    (cid,) = seed(store, ("sale", "u1", "pending"))
    assert [c.id for c in store.tx(lambda tx: tx.claim("a", 1000, 500, 10))] == [cid]
    assert store.tx(lambda tx: tx.claim("b", 1400, 500, 10)) == []  # lease still held
    assert [c.id for c in store.tx(lambda tx: tx.claim("b", 1600, 500, 10))] == [cid]
    store.tx(lambda tx: tx.finish(cid, "a", "dead", "http_400", 1700, 1700, 400, "late"))  # a lost it: no effect
    assert store.read(lambda tx: tx.one("SELECT state, lease_owner FROM conversions WHERE id = ?", (cid,))) == ("pending", "b")
    store.tx(lambda tx: tx.finish(cid, "b", "delivered", None, 1800, 1800, 200, None))
    assert store.read(lambda tx: tx.one("SELECT state FROM conversions WHERE id = ?", (cid,)))[0] == "delivered"


def test_sale_waits_for_its_customers_pending_lead_whoever_claims(store: Harness) -> None:
    lead, sale, other = seed(store, ("lead", "u1", "pending"), ("sale", "u1", "pending"), ("sale", "u2", "pending"))
    first = store.concurrently([(lambda o: lambda tx: tx.claim(o, NOW, 60_000, 10))(f"w{w}") for w in range(3)])
    assert sorted(c.id for batch in first for c in batch) == [lead, other]
    assert store.tx(lambda tx: tx.claim("w9", NOW + 120_000, 60_000, 10))[0].id == lead  # lease ran out: lead again
    store.tx(lambda tx: tx.finish(lead, "w9", "delivered", None, NOW, NOW, 200, None))
    assert [c.id for c in store.tx(lambda tx: tx.claim("w1", NOW + 120_000, 60_000, 10))] == [sale]


def test_dead_lead_does_not_hold_back_its_sale(store: Harness) -> None:
    _lead, sale = seed(store, ("lead", "u1", "dead"), ("sale", "u1", "pending"))
    assert [c.id for c in store.tx(lambda tx: tx.claim("w", NOW, 60_000, 10))] == [sale]


# -- retention --------------------------------------------------------------------------


def _age(store: Harness, event_ids: list[int], received_at: int) -> None:
    marks = ", ".join("?" for _ in event_ids)
    store.tx(lambda tx: tx.execute(f"UPDATE events SET received_at = ? WHERE id IN ({marks})", [received_at, *event_ids]))


def _event_of(store: Harness, conversion_id: int) -> int:
    return int(store.read(lambda tx: tx.one("SELECT event_id FROM conversions WHERE id = ?", (conversion_id,)))[0])


def test_retention_prunes_old_settled_events_and_keeps_what_is_still_owed(store: Harness) -> None:
    old = NOW - 31 * DAY_MS
    delivered, skipped, pending, dead, young = seed(store, ("sale", "u1", "delivered"), ("lead", "u2", "skipped"),
                                                   ("sale", "u3", "pending"), ("sale", "u4", "dead"),
                                                   ("sale", "u5", "delivered"))
    for cid in (delivered, dead):
        store.tx(lambda tx, c=cid: tx.record_attempt(c, old, 200, 5, "delivered", None, None))
    events = {cid: _event_of(store, cid) for cid in (delivered, skipped, pending, dead, young)}
    _age(store, [events[c] for c in (delivered, skipped, pending, dead)], old)
    bare = [store.tx(lambda tx, i=i: tx.insert_event(event_row(None, old, "duplicate"))) for i in range(5)]
    store.tx(lambda tx: tx.claim_business_key("s", "sale:in_old", old))
    store.tx(lambda tx: tx.first_invoice_of("s", "sub_old", "in_old", old))
    store.tx(lambda tx: tx.remember("s", "customer", "cus_old", Identity("user_old", True, None, None, None), old))

    pruned = store.run(Retention(store.store, 30, batch=2, pause_s=0).run_once(NOW))

    assert pruned == 2 + len(bare)
    left = {r[0] for r in store.read(lambda tx: tx.all("SELECT id FROM conversions"))}
    assert left == {pending, dead, young}
    kept_events = {r[0] for r in store.read(lambda tx: tx.all("SELECT id FROM events"))}
    assert kept_events == {events[pending], events[dead], events[young]}
    attempts = store.read(lambda tx: tx.all("SELECT conversion_id FROM attempts"))
    assert [r[0] for r in attempts] == [dead]
    assert store.tx(lambda tx: tx.claim_business_key("s", "sale:in_old", NOW)) == 0  # still a duplicate
    assert store.tx(lambda tx: tx.first_invoice_of("s", "sub_old", "in_new", NOW)) == "in_old"
    assert store.read(lambda tx: tx.identity("s", "customer", "cus_old")).external_id == "user_old"  # type: ignore[union-attr]


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
    store.tx(lambda tx: tx.execute("UPDATE conversions SET state = 'delivered'"))
    assert store.run(Retention(store.store, 30, pause_s=0).run_once(NOW + 365 * DAY_MS)) == 2
    assert store.read(lambda tx: tx.one("SELECT count(*) FROM events")[0]) == 0

    resent = dict(invoice, id="evt_resent_much_later")
    answer = receive_all(store, source, [signed(resent)])[0]
    assert (answer["status"], answer["reason"]) == ("duplicate", "business_key")
    renewal = json.loads(json.dumps(invoice))
    renewal["id"] = "evt_renewal"
    renewal["data"]["object"].update(id="in_RENEWAL", billing_reason="subscription_cycle")
    assert receive_all(store, source, [signed(renewal)])[0]["status"] == "accepted"
    payload = json.loads(store.read(lambda tx: tx.one("SELECT payload FROM conversions WHERE state = 'pending'"))[0])
    assert payload["customerExternalId"] == "user_43" and payload["eventName"] == "Subscription renewal"


def test_purge_removes_only_dead_letters(store: Harness) -> None:
    dead, pending = seed(store, ("sale", "u1", "dead"), ("sale", "u2", "pending"))
    assert store.tx(lambda tx: tx.purge_dead([dead, pending])) == 1
    assert [r[0] for r in store.read(lambda tx: tx.all("SELECT id FROM conversions"))] == [pending]
