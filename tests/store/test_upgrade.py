"""`hooktrack migrate` on a store written by the released version 1, on SQLite and PostgreSQL.

Each test builds a version-1 store with version 1's own DDL and rows (tests/store/v1.py), runs
`migrate()` of the real store class, and checks what an operator would notice: nothing pending is
lost, nothing delivered or dead-lettered changes its state, journeys keep their attempts,
pending conversions go out with the body version 1 would have sent, dedup and identity memory
still hold. PostgreSQL tests run in a fresh schema and fail (not skip) under HOOKTRACK_REQUIRE_PG=1.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapter.destinations.dub import DubDestination
from adapter.errors import ConfigError
from adapter.forwarder import Forwarder
from adapter.ingest import Ingestor
from adapter.journal import dead_conversion_ids, journey, list_events, requeue
from adapter.receiver import TrackingReceiver
from adapter.records import Conversion, Settlement
from adapter.stats import stats
from adapter.store import open_store
from adapter.store.schema import SCHEMA_VERSION
from adapter.store.upgrade import V1_WINDOW_MS
from tests.conftest import config, fixture, wait_for
from tests.store import v1
from tests.store.conftest import Harness
from tests.store.test_contract import signed, stripe_source
from tests.store.test_postgres import hooktrack, write_config

V1_COLUMNS = {"payload", "idempotency_key", "state", "reason", "attempts", "next_attempt_at", "lease_owner",
              "lease_until", "delivered_at", "last_status", "last_error"}
BODY_FIELDS = ("customerExternalId", "amount", "currency", "eventName", "invoiceId", "paymentProcessor", "clickId",
               "customerName", "customerEmail", "timestamp")
LATER = v1.T0 + 3_600_000


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store location: a SQLite file, or a fresh PostgreSQL schema (not migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'v1.db'}"
    pg_url: str = request.getfixturevalue("pg_url")
    return pg_url


@pytest.fixture
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path, url: str) -> str:
    """A second empty location on the same engine, for a store made by this release alone."""
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    from tests.store import pg

    database: str = request.getfixturevalue("pg_database")
    return pg.create_schema(database)


@pytest.fixture
def upgraded(url: str) -> Iterator[tuple[Harness, v1.V1]]:
    """A version-1 store, migrated, opened."""
    written = v1.write_v1_store(url)
    assert open_store(url).migrate() == SCHEMA_VERSION
    harness = Harness(open_store(url, pool_size=4), "sqlite" if url.startswith("sqlite") else "postgresql")
    harness.run(harness.store.open())
    try:
        yield harness, written
    finally:
        harness.close()


def dub(tmp_path: Path) -> DubDestination:
    return DubDestination(config(tmp_path, "http://127.0.0.1:9").tracking)


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection, outside hooktrack."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as pg:
        cur = pg.execute(statement.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def schema_of(url: str) -> dict[str, Any]:
    """Every table's columns (name, type, not null) and every index name."""
    if url.startswith("sqlite:///"):
        tables = [r[0] for r in sql(url, "SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%'")]
        of_file = {t: {(r[1], r[2].upper(), bool(r[3])) for r in sql(url, f"PRAGMA table_info({t})")} for t in tables}
        indexes = {r[0] for r in sql(url, "SELECT name FROM sqlite_master WHERE type = 'index' "
                                          "AND name NOT LIKE 'sqlite_autoindex%'")}
        return {"columns": of_file, "indexes": indexes}
    columns: dict[str, set[tuple[str, str, bool]]] = {}
    for table, column, kind, nullable in sql(url, "SELECT table_name, column_name, data_type, is_nullable FROM "
                                                  "information_schema.columns WHERE table_schema = current_schema()"):
        columns.setdefault(table, set()).add((column, kind, nullable == "NO"))
    indexes = {r[0] for r in sql(url, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    return {"columns": columns, "indexes": indexes}


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every hooktrack table, sorted."""
    tables = sorted(schema_of(url)["columns"])
    return {t: sorted(sql(url, f"SELECT * FROM {t}"), key=repr) for t in tables if t != "pair"}


def deliveries(harness: Harness) -> dict[int, dict[str, Any]]:
    cols = ("conversion_id", "destination", "state", "reason", "detail", "attempts", "next_attempt_at", "window_until",
            "lease_owner", "lease_until", "created_at", "delivered_at", "last_status", "last_error")
    rows = harness.read(lambda tx: tx.all(f"SELECT {', '.join(cols)} FROM deliveries ORDER BY id"))
    return {int(r[0]): dict(zip(cols, r, strict=True)) for r in rows}


# -- the schema -------------------------------------------------------------------------


def test_v1_upgrade_records_the_version_and_the_schema_a_fresh_store_has(url: str, fresh_url: str) -> None:
    v1.write_v1_store(url)
    assert sql(url, "SELECT value FROM hooktrack_meta WHERE key = 'schema_version'") == [("1",)]
    assert open_store(url).migrate() == SCHEMA_VERSION == 4
    assert sql(url, "SELECT value FROM hooktrack_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert open_store(fresh_url).migrate() == SCHEMA_VERSION
    upgraded, fresh = schema_of(url), schema_of(fresh_url)
    names = {c[0] for c in upgraded["columns"]["conversions"]}
    assert V1_COLUMNS.isdisjoint(names) and "record" in names  # the old columns are gone
    assert {"delivery_id", "step"} <= {c[0] for c in upgraded["columns"]["attempts"]}
    assert {"conversions_due", "conversions_customer", "conversions_state"}.isdisjoint(upgraded["indexes"])
    assert upgraded == fresh  # the same tables, columns, types and indexes as a store made by this release


def test_hooktrack_migrate_upgrades_a_version_1_store_and_check_then_passes(url: str, tmp_path: Path) -> None:
    v1.write_v1_store(url)
    config = write_config(tmp_path, url)
    out = hooktrack("migrate", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert f"schema version {SCHEMA_VERSION}" in out.stdout
    assert sql(url, "SELECT state, count(*) FROM deliveries GROUP BY state ORDER BY state") == [
        ("dead", 1), ("delivered", 1), ("pending", 2), ("skipped", 1)]
    checked = hooktrack("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert f"(schema version {SCHEMA_VERSION})" in checked.stdout


def test_migrating_again_changes_nothing(url: str) -> None:
    v1.write_v1_store(url)
    open_store(url).migrate()
    before = dump(url)
    assert open_store(url).migrate() == SCHEMA_VERSION
    assert dump(url) == before


def test_a_fresh_store_migrates_from_nothing(url: str, tmp_path: Path) -> None:
    store = open_store(url)
    assert store.migrate() == SCHEMA_VERSION
    assert sql(url, "SELECT value FROM hooktrack_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert store.migrate() == SCHEMA_VERSION
    harness = Harness(open_store(url), "sqlite" if url.startswith("sqlite") else "postgresql")
    harness.run(harness.store.open())
    try:
        source = stripe_source(tmp_path)
        ingest = Ingestor(harness.store, dub(tmp_path))
        body, headers = signed(fixture("stripe", "checkout.session.completed"))
        assert harness.run(ingest.receive(source, body, headers)).status == "accepted"
        assert harness.read(lambda tx: tx.all("SELECT destination, state FROM deliveries")) == [("dub", "pending")]
    finally:
        harness.close()


def test_a_store_newer_than_this_release_is_refused_and_left_alone(url: str) -> None:
    v1.write_v1_store(url)
    sql(url, "UPDATE hooktrack_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    before = dump(url)
    store = open_store(url)
    with pytest.raises(ConfigError, match=f"schema is version {SCHEMA_VERSION + 1}, newer than this hooktrack "
                                          f"\\({SCHEMA_VERSION}\\): upgrade hooktrack"):
        store.migrate()
    with pytest.raises(ConfigError, match=r"newer than this hooktrack|needs"):
        asyncio.run(store.open())  # SQLite migrates when it opens; PostgreSQL checks the version
    assert dump(url) == before


def test_replicas_upgrading_at_once_upgrade_once(url: str) -> None:
    written = v1.write_v1_store(url)
    results: list[Any] = []

    def migrate() -> None:
        try:
            results.append(open_store(url, lock_timeout_s=30).migrate())
        except Exception as exc:  # collected, asserted below
            results.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [SCHEMA_VERSION] * 4
    assert sorted(sql(url, "SELECT conversion_id FROM deliveries")) == sorted((c,) for c in written.conversions.values())


# -- what the data became ---------------------------------------------------------------


def test_every_conversion_keeps_its_state_attempts_and_last_answer(upgraded: tuple[Harness, v1.V1]) -> None:
    harness, written = upgraded
    ids = written.conversions
    rows = deliveries(harness)
    assert set(rows) == set(ids.values())
    assert {r["destination"] for r in rows.values()} == {"dub"}
    got = {name: rows[cid] for name, cid in ids.items()}
    assert {name: (r["state"], r["reason"], r["attempts"]) for name, r in got.items()} == {
        "lead": ("delivered", None, 1), "pending": ("pending", None, 2), "dead": ("dead", "http_422", 2),
        "skipped": ("skipped", "no_click_id", 0), "kwd": ("pending", None, 0)}
    assert (got["lead"]["delivered_at"], got["lead"]["last_status"]) == (v1.T0 + 40, 200)
    assert (got["pending"]["next_attempt_at"], got["pending"]["last_status"], got["pending"]["last_error"]) == (
        v1.T0 + 60_000, 503, '{"error":"busy"}')
    assert (got["dead"]["last_status"], got["dead"]["last_error"]) == (422, v1.DEAD_ANSWER)
    for r in rows.values():
        assert r["window_until"] == r["created_at"] + V1_WINDOW_MS
        assert r["lease_owner"] is None and r["lease_until"] is None  # version 1's workers are gone
    attempts = harness.read(lambda tx: tx.all(
        "SELECT a.conversion_id, a.delivery_id, d.conversion_id, a.step FROM attempts a "
        "LEFT JOIN deliveries d ON d.id = a.delivery_id ORDER BY a.id"))
    assert len(attempts) == 5
    assert all(conv == owner and step is None for conv, _, owner, step in attempts)  # each tied to its delivery


def test_the_stored_dub_body_becomes_the_neutral_record(upgraded: tuple[Harness, v1.V1]) -> None:
    harness, written = upgraded
    stored = dict(harness.read(lambda tx: tx.all("SELECT id, record FROM conversions")))
    records = {name: Conversion.from_json(stored[cid]) for name, cid in written.conversions.items()}
    sale = records["pending"]
    assert (sale.kind, sale.source, sale.provider, sale.event_name) == ("sale", "stripe", "stripe", "Purchase")
    assert (sale.customer_external_id, sale.click_id, sale.email, sale.name) == (
        "user_42", "cl_click_pay", "ada@example.com", "Ada Lovelace")
    assert (sale.amount, sale.currency, sale.invoice_id, sale.invoice_unique) == (4900, "usd", "pi_3PaymentIntent01",
                                                                                  True)
    assert (sale.provider_event_id, sale.provider_event_type, sale.provider_customer_id, sale.livemode) == (
        "evt_1CheckoutPayment", "checkout.session.completed", "cus_PAYMENT01", False)
    assert sale.occurred_at == 1775824496000  # 2026-04-10T12:34:56.000Z
    assert sale.metadata == {"checkoutSessionId": "cs_test_a1B2c3D4payment", "taxAmount": 490}
    assert records["dead"].subscription_id == "sub_1GRACE"
    assert records["dead"].metadata == {"billingReason": "subscription_create", "taxAmount": 0}
    lead = records["lead"]
    assert (lead.kind, lead.event_name, lead.customer_external_id, lead.click_id, lead.amount) == (
        "lead", "Sign up", "user_43", "cl_click_lead", None)
    assert records["skipped"].click_id is None and records["kwd"].livemode is True


def test_pending_conversions_render_to_the_body_version_1_stored(upgraded: tuple[Harness, v1.V1],
                                                                 tmp_path: Path) -> None:
    harness, written = upgraded
    destination = dub(tmp_path)
    claimed = {c.conversion_id: c for c in harness.tx(lambda tx: tx.claim("dub", "w", LATER, 60_000, 10))}
    assert set(claimed) == {written.conversions["pending"], written.conversions["kwd"]}  # the pending ones only
    pending = claimed[written.conversions["pending"]]
    assert pending.attempts == 2 and pending.kind == "sale" and pending.source == "stripe"
    request = destination.render(Conversion.from_json(pending.conversion))
    old = written.payloads["pending"]
    body = request.body or {}
    assert (request.method, request.path) == ("POST", "/track/sale")
    assert {k: body.get(k) for k in BODY_FIELDS} == {k: old.get(k) for k in BODY_FIELDS}
    assert old["metadata"].items() <= body["metadata"].items()
    assert request.headers["Idempotency-Key"] == written.idempotency_keys["pending"]
    # Version 1 sent KWD's fils as they were (15005, read by Dub as 150.05); it now goes in Dub's unit.
    kwd = destination.render(Conversion.from_json(claimed[written.conversions["kwd"]].conversion))
    assert (kwd.body or {})["amount"] == 1500 and (kwd.body or {})["metadata"]["exactAmount"] == "15.005"
    assert kwd.headers["Idempotency-Key"] == written.idempotency_keys["kwd"]


def test_pending_conversions_are_forwarded_after_the_upgrade(upgraded: tuple[Harness, v1.V1],
                                                             receiver: TrackingReceiver, tmp_path: Path) -> None:
    harness, written = upgraded
    harness.tx(lambda tx: tx.execute("UPDATE deliveries SET next_attempt_at = 0 WHERE state = 'pending'"))
    settings = config(tmp_path, receiver.url)  # type: ignore[attr-defined]
    forwarder = Forwarder(harness.store, settings.tracking, settings.forwarder, DubDestination(settings.tracking))

    async def drain() -> None:
        task = asyncio.create_task(forwarder.run())
        try:
            await asyncio.to_thread(wait_for, lambda: len(receiver.by_key()) >= 2)
            await asyncio.sleep(0.3)
        finally:
            forwarder.stop()
            await task

    harness.run(drain())
    by_key = receiver.by_key()
    assert set(by_key) == {written.idempotency_keys["pending"], written.idempotency_keys["kwd"]}
    sent = by_key[written.idempotency_keys["pending"]]
    assert len(sent) == 1
    assert {k: sent[0].body.get(k) for k in BODY_FIELDS} == {k: written.payloads["pending"].get(k) for k in BODY_FIELDS}
    states = {cid: (r["state"], r["reason"], r["attempts"]) for cid, r in deliveries(harness).items()}
    # The KWD sale has no clickId and Dub knows no lead of its customer: `"sale": null`, not counted,
    # so it stays pending (tried again within its attribution window), in Dub's units.
    assert states == {written.conversions["lead"]: ("delivered", None, 1),
                      written.conversions["pending"]: ("delivered", None, 3),
                      written.conversions["dead"]: ("dead", "http_422", 2),
                      written.conversions["skipped"]: ("skipped", "no_click_id", 0),
                      written.conversions["kwd"]: ("pending", "customer_not_found", 0)}
    kwd = by_key[written.idempotency_keys["kwd"]][0].body
    assert (kwd["amount"], kwd["currency"], kwd["metadata"]["exactAmount"]) == (1500, "kwd", "15.005")
    assert len(receiver.counted_sales()) == 1  # Dub counted the pending sale only
    trip = harness.read(lambda tx: journey(tx, written.events["pending"]))
    assert trip is not None
    assert [a["status_code"] for a in trip["conversions"][0]["attempts_log"]] == [503, None, 200]


def test_journeys_lists_and_stats_show_what_version_1_did(upgraded: tuple[Harness, v1.V1], tmp_path: Path) -> None:
    harness, written = upgraded
    destination = dub(tmp_path)
    dead = harness.read(lambda tx: journey(tx, written.events["dead"], destination))
    assert dead is not None
    (conv,) = dead["conversions"]
    assert (conv["state"], conv["reason"], conv["destination"]) == ("dead", "http_422", "dub")
    assert "replay" in conv["reason_text"]
    assert [(a["attempted_at"], a["status_code"], a["outcome"]) for a in conv["attempts_log"]] == [
        (v1.T0 + 60, 500, "retry"), (v1.T0 + 1500, 422, "dead")]
    assert conv["attempts_log"][1]["response_excerpt"] == v1.DEAD_ANSWER
    assert conv["payload"]["invoiceId"] == "in_1SUBFIRST"
    assert conv["idempotency_key"] == written.idempotency_keys["dead"]
    lead = harness.read(lambda tx: journey(tx, written.events["lead"]))
    assert lead is not None and lead["conversions"][0]["state"] == "delivered"
    assert [a["status_code"] for a in lead["conversions"][0]["attempts_log"]] == [200]
    skipped = harness.read(lambda tx: journey(tx, written.events["skipped"]))
    assert skipped is not None
    assert (skipped["conversions"][0]["state"], skipped["conversions"][0]["reason"]) == ("skipped", "no_click_id")
    assert "clickId" in skipped["conversions"][0]["reason_text"]
    redelivery = harness.read(lambda tx: journey(tx, written.events["duplicate"]))
    assert redelivery is not None and redelivery["conversions"][0]["id"] == written.conversions["pending"]
    assert [e["id"] for e in harness.read(lambda tx: list_events(tx, state="dead"))] == [written.events["dead"]]
    counts = harness.read(lambda tx: stats(tx, LATER))
    assert counts["conversions"] == {"lead": {"delivered": 1, "skipped": 1}, "sale": {"pending": 2, "dead": 1}}
    assert counts["outbox"]["pending"] == 2 and counts["outbox"]["dead"] == 1
    assert harness.read(lambda tx: dead_conversion_ids(tx)) == [written.conversions["dead"]]
    assert harness.tx(lambda tx: requeue(tx, [written.conversions["dead"]], LATER)) == [written.conversions["dead"]]
    assert deliveries(harness)[written.conversions["dead"]]["state"] == "pending"  # a replay works as before


def test_dedup_and_identity_memory_survive_the_upgrade(upgraded: tuple[Harness, v1.V1], tmp_path: Path) -> None:
    harness, written = upgraded
    source = stripe_source(tmp_path)
    ingest = Ingestor(harness.store, dub(tmp_path))

    def receive(event: dict[str, Any]) -> dict[str, Any]:
        body, headers = signed(event)
        return harness.run(ingest.receive(source, body, headers)).body()

    checkout = fixture("stripe", "checkout.session.completed")
    again = receive(checkout)  # the same delivery version 1 stored
    assert (again["status"], again["eventId"]) == ("duplicate", written.events["pending"])
    resent = receive(dict(checkout, id="evt_after_upgrade"))  # the same payment, as a new event
    assert (resent["status"], resent["reason"]) == ("duplicate", "business_key")
    invoice = receive(dict(fixture("stripe", "invoice.paid"), id="evt_invoice_after_upgrade"))
    assert (invoice["status"], invoice["reason"]) == ("duplicate", "business_key")  # the dead Sale's invoice
    assert harness.read(lambda tx: tx.one("SELECT count(*) FROM conversions"))[0] == len(written.conversions)
    memory = harness.read(lambda tx: tx.identity("stripe", "customer", "cus_PAYMENT01"))
    assert memory is not None and (memory.external_id, memory.click_id) == ("user_42", "cl_click_pay")
    assert harness.tx(lambda tx: tx.subscription_first("stripe", "sub_1GRACE")) == "in_1SUBFIRST"
    # The filled-in record still renders and sends (the fill read the upgraded record).
    (claimed,) = [c for c in harness.tx(lambda tx: tx.claim("dub", "w", LATER, 60_000, 10))
                  if c.conversion_id == written.conversions["pending"]]
    body = dub(tmp_path).render(Conversion.from_json(claimed.conversion)).body or {}
    assert body["invoiceId"] == "pi_3PaymentIntent01" and body["customerExternalId"] == "user_42"
    harness.tx(lambda tx: tx.settle("w", LATER, [Settlement(claimed.id, "delivered", None, LATER, 200, None)]))
    assert deliveries(harness)[written.conversions["pending"]]["state"] == "delivered"


def test_a_sale_of_a_customer_whose_lead_is_still_pending_waits_after_the_upgrade(url: str) -> None:
    v1.write_v1_store(url)
    # The delivered Lead of user_43 was still pending when version 1 stopped; its dead Sale was requeued.
    sql(url, "UPDATE conversions SET state = 'pending', delivered_at = NULL WHERE kind = 'lead' "
             "AND customer_external_id = 'user_43'")
    sql(url, "UPDATE conversions SET state = 'pending', reason = NULL WHERE state = 'dead'")
    open_store(url).migrate()
    harness = Harness(open_store(url), "sqlite" if url.startswith("sqlite") else "postgresql")
    harness.run(harness.store.open())
    try:
        first = harness.tx(lambda tx: tx.claim("dub", "w", LATER, 60_000, 10))
        kinds = {(c.kind, json.loads(c.conversion)["customer_external_id"]) for c in first}
        assert ("lead", "user_43") in kinds and ("sale", "user_43") not in kinds
    finally:
        harness.close()
