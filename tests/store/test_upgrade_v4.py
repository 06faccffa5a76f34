"""`hooktrack migrate` on a store written by the previous release (schema version 3), SQLite and
PostgreSQL: `orphan_refunds` appears, every row stays as it was, refunds of Sales stored before
the upgrade go on from their ledger, and a refund that arrives before its Sale is linked when
the Sale comes (SPEC §9). A refund version 3 stored `unknown_sale` is not remembered by the
upgrade (version 3 did not keep whether its amount was a cumulative total or included tax): it
stays skipped when its Sale arrives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapter.destinations.dub import DubDestination
from adapter.ingest import Ingestor
from adapter.records import Conversion
from adapter.store import open_store
from adapter.store.schema import SCHEMA_VERSION
from tests.adapter.test_refunds import charge_refunded, checkout
from tests.conftest import config
from tests.store import v3
from tests.store.test_contract import signed, stripe_source
from tests.store.test_upgrade import dump, fresh_url, schema_of, sql, url  # noqa: F401  (fixtures)
from tests.store.test_upgrade_v3 import opened


def test_a_version_3_store_upgrades_to_the_schema_a_fresh_store_has(url: str, fresh_url: str) -> None:  # noqa: F811
    v3.write_v3_store(url)
    assert sql(url, "SELECT value FROM hooktrack_meta WHERE key = 'schema_version'") == [("3",)]
    assert "orphan_refunds" not in schema_of(url)["columns"]
    assert open_store(url).migrate() == SCHEMA_VERSION == 4
    assert sql(url, "SELECT value FROM hooktrack_meta WHERE key = 'schema_version'") == [("4",)]
    open_store(fresh_url).migrate()
    upgraded, fresh = schema_of(url), schema_of(fresh_url)
    assert "orphan_refunds" in upgraded["columns"] and "orphan_refunds_conversion" in upgraded["indexes"]
    assert upgraded == fresh


def test_the_upgrade_keeps_every_row_and_remembers_no_orphan(url: str) -> None:  # noqa: F811
    v3.write_v3_store(url)
    before = dump(url)
    open_store(url).migrate()
    after = dump(url)
    assert after.pop("orphan_refunds") == []  # no backfill (see the module's docstring)
    meta = "hooktrack_meta"
    assert {t: rows for t, rows in after.items() if t != meta} == {t: rows for t, rows in before.items() if t != meta}
    assert open_store(url).migrate() == SCHEMA_VERSION
    assert {t: rows for t, rows in dump(url).items() if t not in ("orphan_refunds", meta)} == \
        {t: rows for t, rows in after.items() if t != meta}  # migrating again changes nothing


def test_refunds_after_the_upgrade(url: str, tmp_path: Path) -> None:  # noqa: F811
    written = v3.write_v3_store(url)
    open_store(url).migrate()
    harness = opened(url)
    try:
        source = stripe_source(tmp_path)
        ingest = Ingestor(harness.store, DubDestination(config(tmp_path, "http://127.0.0.1:9").tracking))

        def receive(event: dict[str, Any]) -> dict[str, Any]:
            return harness.run(ingest.receive(source, *signed(event))).body()

        def refund(conversion_id: int) -> tuple[Conversion, str, str | None]:
            row = harness.read(lambda tx: tx.one(
                "SELECT c.record, d.state, d.reason FROM conversions c JOIN deliveries d ON d.conversion_id = c.id "
                "WHERE c.id = ?", (conversion_id,)))
            return Conversion.from_json(row[0]), row[1], row[2]

        # the Sale version 3 delivered and refunded in part: the next cumulative total goes on from its ledger
        more = receive(charge_refunded("evt_r1", 2156, pi="pi_3DELIVERED", charge="ch_3DELIVERED", amount=5390))
        assert more["status"] == "accepted", more
        conv, state, _ = refund(more["conversions"][0]["id"])
        assert (conv.amount, conv.refunded, conv.reverses, state) == (980, 1960, written.conversions["sale"],
                                                                      "pending")
        # the orphan version 3 stored: its Sale arrives now, and it stays as version 3 left it
        receive(checkout("evt_late", total=5390, tax=490, pi="pi_3LATE", userid="user_64"))
        conv, state, reason = refund(written.conversions["orphan"])
        assert (conv.reverses, state, reason) == (None, "skipped", "unknown_sale")
        # a refund that arrives before its Sale after the upgrade is linked when the Sale comes
        early = receive(charge_refunded("evt_r2", 1078, pi="pi_new", charge="ch_new", amount=5390))
        assert (early["status"], early["reason"]) == ("ignored", "unknown_sale")
        (row,) = harness.read(lambda tx: tx.all("SELECT id FROM conversions WHERE event_id = ?", (early["eventId"],)))
        (sale,) = receive(checkout("evt_new", total=5390, tax=490, pi="pi_new", userid="user_65"))["conversions"]
        conv, state, reason = refund(int(row[0]))
        assert (conv.reverses, conv.amount, conv.refunded, state, reason) == (sale["id"], 980, 980, "pending", None)
    finally:
        harness.close()
