"""`hooktrack migrate` on a store written by the previous release (schema version 2), SQLite and
PostgreSQL: the refund tables and `conversions.reverses` appear, nothing pending stops being
pending, and a refund of a Sale stored before the upgrade finds it by its invoice id (SPEC §9).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapter.destinations.dub import DubDestination
from adapter.ingest import Ingestor, now_ms
from adapter.records import Conversion
from adapter.store import open_store
from adapter.store.schema import SCHEMA_VERSION
from tests.conftest import config
from tests.store import v2
from tests.store.conftest import Harness
from tests.store.test_contract import signed, stripe_source
from tests.store.test_upgrade import dump, fresh_url, schema_of, sql, url  # noqa: F401  (fixtures)

LATER = v2.T0 + 3_600_000


def refund_event(event_id: str, amount_refunded: int, *, invoice: str | None = None,
                 payment_intent: str | None = None) -> dict[str, Any]:
    charge: dict[str, Any] = {"id": f"ch_{event_id}", "object": "charge", "amount": 5390,
                              "amount_refunded": amount_refunded, "currency": "usd", "refunded": False}
    if invoice:
        charge["invoice"] = invoice  # API versions before 2025-03-31 name the invoice on the charge
    if payment_intent:
        charge["payment_intent"] = payment_intent
    return {"id": event_id, "object": "event", "type": "charge.refunded", "created": 1775900000,
            "livemode": False, "data": {"object": charge}}


def opened(location: str) -> Harness:
    harness = Harness(open_store(location, pool_size=4), "sqlite" if location.startswith("sqlite") else "postgresql")
    harness.run(harness.store.open())
    return harness


def test_a_version_2_store_upgrades_to_the_schema_a_fresh_store_has(url: str, fresh_url: str) -> None:  # noqa: F811
    v2.write_v2_store(url)
    assert sql(url, "SELECT value FROM hooktrack_meta WHERE key = 'schema_version'") == [("2",)]
    assert open_store(url).migrate() == SCHEMA_VERSION == 4
    assert sql(url, "SELECT value FROM hooktrack_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    open_store(fresh_url).migrate()
    upgraded, fresh = schema_of(url), schema_of(fresh_url)
    assert "reverses" in {c[0] for c in upgraded["columns"]["conversions"]}
    assert {"payment_refs", "payment_links", "refund_ledger", "refund_memos"} <= set(upgraded["columns"])
    assert upgraded == fresh


def test_the_upgrade_keeps_every_delivery_and_record_and_remembers_invoices(url: str) -> None:  # noqa: F811
    written = v2.write_v2_store(url)
    before = dump(url)
    open_store(url).migrate()
    after = dump(url)
    assert after["deliveries"] == before["deliveries"]  # pending stays pending, leases and attempts as they were
    assert after["attempts"] == before["attempts"] and after["business_keys"] == before["business_keys"]
    assert [r[:-1] for r in after["conversions"]] == before["conversions"]  # only `reverses` (NULL) is new
    assert {r[-1] for r in after["conversions"]} == {None}
    refs = sorted((r[1], r[2]) for r in sql(url, "SELECT source, ref, conversion_id FROM payment_refs"))
    sales = written.conversions
    assert refs == sorted([("in_2DEAD", sales["dead"]), ("in_2DELIVERED", sales["delivered"]),
                           ("pi_2PENDING", sales["pending"])])
    assert open_store(url).migrate() == SCHEMA_VERSION
    assert dump(url) == after  # migrating again changes nothing


def test_refunds_of_sales_stored_before_the_upgrade(url: str, tmp_path: Path) -> None:  # noqa: F811
    written = v2.write_v2_store(url)
    open_store(url).migrate()
    harness = opened(url)
    try:
        source = stripe_source(tmp_path)
        ingest = Ingestor(harness.store, DubDestination(config(tmp_path, "http://127.0.0.1:9").tracking))

        def receive(event: dict[str, Any]) -> dict[str, Any]:
            body, headers = signed(event)
            return harness.run(ingest.receive(source, body, headers)).body()

        # The delivered Sale is named by its invoice (an older API's charge): found, refunded in part.
        # Its amount including tax was never recorded, so the refund is taken as it is.
        part = receive(refund_event("evt_r1", 1000, invoice="in_2DELIVERED", payment_intent="pi_unknown"))
        assert part["status"] == "accepted" and [c["kind"] for c in part["conversions"]] == ["refund"]
        (refund_id,) = [c["id"] for c in part["conversions"]]
        row = harness.read(lambda tx: tx.one("SELECT record, reverses FROM conversions WHERE id = ?", (refund_id,)))
        record = Conversion.from_json(row[0])
        assert row[1] == record.reverses == written.conversions["delivered"]
        assert (record.amount, record.sale_amount, record.refunded, record.invoice_id,
                record.customer_external_id) == (1000, 4900, 1000, "in_2DELIVERED", "user_52")
        # A refund of the still-pending Sale waits behind it; the pending Sale goes first.
        held = receive(refund_event("evt_r2", 2000, payment_intent="pi_2PENDING"))
        assert held["status"] == "accepted"
        soon = max(LATER, now_ms()) + 100_000
        claimed = harness.tx(lambda tx: tx.claim("dub", "w", soon, 60_000, 10))
        ids = {c.conversion_id for c in claimed}
        assert refund_id in ids and written.conversions["pending"] in ids
        assert held["conversions"][0]["id"] not in ids
        # A refund naming only ids version 2 never recorded: unknown.
        unknown = receive(refund_event("evt_r3", 500, payment_intent="pi_never_seen"))
        assert (unknown["status"], unknown["reason"]) == ("ignored", "unknown_sale")
        # A refund of the dead Sale: never counted.
        dead = receive(refund_event("evt_r4", 900, invoice="in_2DEAD"))
        assert (dead["status"], dead["reason"]) == ("ignored", "sale_not_counted")
    finally:
        harness.close()
