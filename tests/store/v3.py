"""A store as the previous release (schema version 3) left it, for the version 3 → 4 upgrade.

`TABLES` is version 3's DDL, copied verbatim from `git show 2487d1c:adapter/store/schema.py`
(`TABLES` with `DELIVERIES` and `REFUNDS` inlined), and `write_v3_store` fills it with rows as
version 3's code wrote them: a delivered Sale remembered by its payment ids, a refund of it with
its ledger row and the destination's memo, a pending Lead, a payment link, and a refund that came
before its Sale: `skipped`, `unknown_sale`, its record naming the ids it reverses in
`metadata.reverses` (version 3 kept nothing else of it).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.store.v2 import ID

__all__ = ["T0", "TABLES", "V3", "write_v3_store"]

TABLES = """CREATE TABLE IF NOT EXISTS hooktrack_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id {id},
    source TEXT NOT NULL,
    provider TEXT NOT NULL,
    dedup_key TEXT,
    provider_event_id TEXT,
    event_type TEXT,
    received_at BIGINT NOT NULL,
    occurred_at BIGINT,
    livemode BOOLEAN,
    status TEXT NOT NULL,
    reason TEXT,
    duplicate_of BIGINT,
    body TEXT,
    UNIQUE (source, dedup_key)
);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at);
CREATE INDEX IF NOT EXISTS events_source_status ON events (source, status, received_at);
CREATE TABLE IF NOT EXISTS conversions (
    id {id},
    event_id BIGINT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_name TEXT NOT NULL,
    business_key TEXT NOT NULL,
    customer_external_id TEXT,
    identity_explicit BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    record TEXT,
    reverses BIGINT
);
CREATE INDEX IF NOT EXISTS conversions_event ON conversions (event_id);
CREATE INDEX IF NOT EXISTS conversions_customer_kind ON conversions (source, customer_external_id, kind);
CREATE INDEX IF NOT EXISTS conversions_reverses ON conversions (reverses) WHERE reverses IS NOT NULL;

CREATE TABLE IF NOT EXISTS deliveries (
    id {id},
    conversion_id BIGINT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    detail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    window_until BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT,
    last_status INTEGER,
    last_error TEXT,
    UNIQUE (conversion_id, destination)
);
CREATE TABLE IF NOT EXISTS destinations (
    name TEXT PRIMARY KEY,
    paused_reason TEXT,
    paused_at BIGINT,
    next_probe_at BIGINT,
    failures INTEGER NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries (state, updated_at);
CREATE TABLE IF NOT EXISTS business_keys (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    conversion_id BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    source TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    first_invoice_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source, subscription_id)
);
CREATE TABLE IF NOT EXISTS identities (
    source TEXT NOT NULL,
    key_kind TEXT NOT NULL,
    key TEXT NOT NULL,
    external_id TEXT,
    explicit BOOLEAN NOT NULL,
    click_id TEXT,
    email TEXT,
    name TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (source, key_kind, key)
);
CREATE TABLE IF NOT EXISTS object_versions (
    source TEXT NOT NULL,
    object_key TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (source, object_key)
);
CREATE TABLE IF NOT EXISTS attempts (
    id {id},
    conversion_id BIGINT NOT NULL,
    attempted_at BIGINT NOT NULL,
    status_code INTEGER,
    latency_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    response_excerpt TEXT,
    delivery_id BIGINT,
    step TEXT
);
CREATE INDEX IF NOT EXISTS attempts_conversion ON attempts (conversion_id);

CREATE TABLE IF NOT EXISTS payment_refs (
    source TEXT NOT NULL,
    ref TEXT NOT NULL,
    conversion_id BIGINT NOT NULL,
    gross_amount BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source, ref)
);
CREATE TABLE IF NOT EXISTS payment_links (
    source TEXT NOT NULL,
    ref TEXT NOT NULL,
    linked TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source, ref, linked)
);
CREATE TABLE IF NOT EXISTS refund_ledger (
    sale_id BIGINT NOT NULL,
    refund_key TEXT NOT NULL,
    refund_id TEXT,
    event_id BIGINT,
    conversion_id BIGINT,
    amount BIGINT NOT NULL,
    total BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (sale_id, refund_key)
);
CREATE TABLE IF NOT EXISTS pruned_sales (
    conversion_id BIGINT NOT NULL,
    destination TEXT NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL,
    pruned_at BIGINT NOT NULL,
    PRIMARY KEY (conversion_id, destination)
);
CREATE TABLE IF NOT EXISTS refund_memos (
    conversion_id BIGINT NOT NULL,
    destination TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (conversion_id, destination, key)
);
"""

T0 = (int(time.time()) - 3600) * 1000  # an hour ago: pending deliveries stay inside their window
WINDOW = 86_400_000


def _record(**fields: Any) -> str:
    """A version-3 `record`: compact JSON of the fields that differ from their defaults."""
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


_BASE = {"source": "stripe", "provider": "stripe", "livemode": False, "payment_processor": None}
_SALE = {**_BASE, "kind": "sale", "event_name": "Purchase", "customer_external_id": "user_62", "click_id": "cl_62",
         "email": "ada@example.com", "provider_customer_id": "cus_62", "amount": 4900, "currency": "usd",
         "invoice_id": "pi_3DELIVERED", "tax": "excluded", "occurred_at": 1775824496000,
         "provider_event_id": "evt_3Sale", "provider_event_type": "checkout.session.completed",
         "metadata": {"checkoutSessionId": "cs_3DELIVERED"}}
_REFUND = {**_BASE, "kind": "refund", "event_name": "Refund", "customer_external_id": "user_62", "click_id": "cl_62",
           "email": "ada@example.com", "provider_customer_id": "cus_62", "amount": 980, "currency": "usd",
           "invoice_id": "pi_3DELIVERED", "tax": "excluded", "occurred_at": 1775824500000,
           "provider_event_id": "evt_3Refund", "provider_event_type": "charge.refunded",
           "metadata": {"chargeId": "ch_3DELIVERED"}, "sale_amount": 4900, "refunded": 980,
           "refund_id": "ch_3DELIVERED"}
_ORPHAN = {**_BASE, "kind": "refund", "event_name": "Refund", "amount": 1078, "currency": "usd",
           "occurred_at": 1775824600000, "provider_event_id": "evt_3Orphan", "provider_event_type": "charge.refunded",
           "metadata": {"chargeId": "ch_3LATE", "reverses": ["ch_3LATE", "pi_3LATE"]}, "refund_id": "ch_3LATE"}
_LEAD = {**_BASE, "kind": "lead", "event_name": "Sign up", "customer_external_id": "user_63", "click_id": "cl_63",
         "occurred_at": 1775824400000, "provider_event_id": "evt_3Lead", "provider_event_type": "customer.created"}


@dataclass(frozen=True)
class V3:
    """Ids of the rows `write_v3_store` wrote."""

    events: dict[str, int]
    conversions: dict[str, int]
    deliveries: dict[str, int]


def _insert(conn: Any, dialect: str, table: str, row: dict[str, Any], returning: bool = False) -> int | None:
    mark = "?" if dialect == "sqlite" else "%s"
    sql = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(mark for _ in row)})"
    if returning:
        return int(conn.execute(sql + " RETURNING id", list(row.values())).fetchone()[0])
    conn.execute(sql, list(row.values()))
    return None


def _write(conn: Any, dialect: str) -> V3:
    for statement in TABLES.format(id=ID[dialect]).split(";"):
        if statement.strip():
            conn.execute(statement)
    events: dict[str, int] = {}
    conversions: dict[str, int] = {}
    deliveries: dict[str, int] = {}
    rows: list[tuple[str, dict[str, Any], str, str, dict[str, Any]]] = [
        # name, record, business key, event status, delivery columns
        ("lead", _LEAD, "lead:user_63:Sign up", "accepted", {"state": "pending", "attempts": 0}),
        ("sale", _SALE, "sale:pi_3DELIVERED", "accepted",
         {"state": "delivered", "attempts": 1, "delivered_at": T0 + 40, "last_status": 200}),
        ("refund", _REFUND, "refund:{sale}:total:980", "accepted",
         {"state": "delivered", "attempts": 2, "delivered_at": T0 + 90, "last_status": 200}),
        ("orphan", _ORPHAN, "refund:event:evt_3Orphan", "ignored",
         {"state": "skipped", "reason": "unknown_sale", "attempts": 0}),
    ]
    for n, (name, fields, key, status, delivery) in enumerate(rows):
        received = T0 + n
        event_id, event_type = fields["provider_event_id"], fields["provider_event_type"]
        body = {"id": event_id, "object": "event", "type": event_type, "livemode": False, "created": 1775824496,
                "data": {"object": {}}}
        eid = _insert(conn, dialect, "events", {
            "source": "stripe", "provider": "stripe", "dedup_key": event_id, "provider_event_id": event_id,
            "event_type": event_type, "received_at": received, "occurred_at": 1775824496000, "livemode": False,
            "status": status, "reason": delivery.get("reason"), "body": json.dumps(body)}, returning=True)
        assert eid is not None
        events[name] = eid
        reverses = conversions["sale"] if name == "refund" else None
        record = {**fields, "reverses": reverses} if reverses else fields
        cid = _insert(conn, dialect, "conversions", {
            "event_id": eid, "source": "stripe", "kind": fields["kind"], "event_name": fields["event_name"],
            "business_key": key.format(sale=conversions.get("sale")),
            "customer_external_id": fields.get("customer_external_id"),
            "identity_explicit": fields["kind"] != "refund", "created_at": received, "updated_at": received + 50,
            "record": _record(**record), "reverses": reverses}, returning=True)
        assert cid is not None
        conversions[name] = cid
        did = _insert(conn, dialect, "deliveries", {
            "conversion_id": cid, "destination": "dub", "next_attempt_at": received, "window_until": received + WINDOW,
            "created_at": received, "updated_at": received + 50, **delivery}, returning=True)
        assert did is not None
        deliveries[name] = did
        if fields["kind"] != "refund":
            _insert(conn, dialect, "business_keys", {"source": "stripe", "key": key, "conversion_id": cid,
                                                     "created_at": received})
        for step in range(delivery["attempts"]):
            _insert(conn, dialect, "attempts", {
                "conversion_id": cid, "delivery_id": did, "attempted_at": received + 40 + step, "status_code": 200,
                "latency_ms": 12, "outcome": "delivered" if step == delivery["attempts"] - 1 else "follow",
                "step": "find_commission" if name == "refund" and step == 0 else None}, returning=True)
    sale = conversions["sale"]
    for ref in ("pi_3DELIVERED", "cs_3DELIVERED"):
        _insert(conn, dialect, "payment_refs", {"source": "stripe", "ref": ref, "conversion_id": sale,
                                                "gross_amount": 5390, "created_at": T0 + 1})
    for a, b in (("in_3LINK", "pi_3LINK"), ("pi_3LINK", "in_3LINK")):
        _insert(conn, dialect, "payment_links", {"source": "stripe", "ref": a, "linked": b, "created_at": T0 + 4})
    _insert(conn, dialect, "refund_ledger", {
        "sale_id": sale, "refund_key": "total:980", "refund_id": "ch_3DELIVERED", "event_id": events["refund"],
        "conversion_id": None, "amount": 980, "total": 980, "created_at": T0 + 2})
    for key, value in (("commission_id", '"cm_3"'), ("commission_sale_amount", "4900")):
        _insert(conn, dialect, "refund_memos", {"conversion_id": sale, "destination": "dub", "key": key,
                                                "value": value, "created_at": T0 + 60})
    _insert(conn, dialect, "identities", {"source": "stripe", "key_kind": "customer", "key": "cus_62",
                                          "external_id": "user_62", "explicit": True, "click_id": "cl_62",
                                          "email": "ada@example.com", "name": None, "updated_at": T0})
    _insert(conn, dialect, "hooktrack_meta", {"key": "schema_version", "value": "3"})
    return V3(events, conversions, deliveries)


def write_v3_store(url: str) -> V3:
    """Create a version-3 store at `url` (see the module's docstring for what it holds)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN")
            written = _write(conn, "sqlite")
            conn.execute("COMMIT")
        finally:
            conn.close()
        return written
    with psycopg.connect(url) as pg, pg.transaction():
        return _write(pg, "postgresql")
