"""In-place upgrades of stores written by earlier hooktrack releases (`hooktrack migrate`).

`upgrade(tx, found)` runs inside the migration transaction, before `TABLES` (which then only
adds what is missing), and brings a schema of version `found` to `SCHEMA_VERSION` on either
engine. Nothing pending is lost: every pending conversion stays pending, delivered stays
delivered, journeys keep their attempts.
"""

from __future__ import annotations

import json
from typing import Any

from adapter.records import Conversion
from adapter.store.schema import DELIVERIES, ORPHANS, REFUNDS
from adapter.store.sql import Tx

__all__ = ["V1_WINDOW_MS", "upgrade", "v1_record"]

V1_WINDOW_MS = 86_400_000
"""The attribution window given to deliveries moved from a version-1 store (the default)."""
_V1_COLUMNS = ("payload", "idempotency_key", "state", "reason", "attempts", "next_attempt_at", "lease_owner",
               "lease_until", "delivered_at", "last_status", "last_error")
_V1_INDEXES = ("conversions_due", "conversions_customer", "conversions_state")
_V1_META = ("provider", "source", "providerEventId", "providerEventType", "providerCustomerId", "livemode")


def upgrade(tx: Tx, found: int, id_column: str) -> None:
    """Upgrade a schema of version `found` (1 or more) in place, one version at a time."""
    if found < 2:
        _v1_to_v2(tx, id_column)
    if found < 3:
        _v2_to_v3(tx)
    if found < 4:
        _v3_to_v4(tx)


def _v3_to_v4(tx: Tx) -> None:
    """Version 4 (refunds that arrive before their Sale): `orphan_refunds`. A refund stored
    `unknown_sale` by version 3 is not added to it: version 3 kept the ids it named but not
    whether its amount was a cumulative total or included tax, which its Sale's arithmetic needs
    (a cumulative total taken as a single refund would be applied again by the next total), so
    it stays skipped, as version 3 left it."""
    for statement in _statements(ORPHANS):
        tx.execute(statement)


def _v2_to_v3(tx: Tx) -> None:
    """Version 3 (refunds, SPEC §9): `conversions.reverses`, and the refund tables (made by
    `TABLES` after this). Every Sale already stored is remembered by its invoice id, read from
    its business key (kept even when retention pruned the conversion), so a refund naming the
    invoice still finds it; its other payment ids were never recorded, and its amount including
    tax is unknown (a refund that includes tax is then taken as it is)."""
    tx.execute("ALTER TABLE conversions ADD COLUMN reverses BIGINT")
    for statement in _statements(REFUNDS):
        tx.execute(statement)
    tx.execute(
        "INSERT INTO payment_refs (source, ref, conversion_id, gross_amount, created_at) "
        "SELECT b.source, substr(b.key, 6), b.conversion_id, NULL, b.created_at FROM business_keys b "
        "WHERE substr(b.key, 1, 5) = 'sale:' AND b.conversion_id IS NOT NULL AND b.conversion_id > 0 "
        "ON CONFLICT (source, ref) DO NOTHING"
    )


def _v1_to_v2(tx: Tx, id_column: str) -> None:
    """Version 1 kept the Dub request body and the delivery state on `conversions`: move the
    state to one `deliveries` row per conversion (destination `dub`), the body to a neutral
    `record`, and tie every attempt to its delivery."""
    for statement in _statements(DELIVERIES.format(id=id_column)):
        tx.execute(statement)
    tx.execute("ALTER TABLE attempts ADD COLUMN delivery_id BIGINT")
    tx.execute("ALTER TABLE attempts ADD COLUMN step TEXT")
    tx.execute("ALTER TABLE conversions ADD COLUMN record TEXT")
    tx.execute(
        "INSERT INTO deliveries (conversion_id, destination, state, reason, attempts, next_attempt_at, "
        "window_until, created_at, updated_at, delivered_at, last_status, last_error) "
        "SELECT id, 'dub', state, reason, attempts, next_attempt_at, created_at + ?, created_at, updated_at, "
        "delivered_at, last_status, last_error FROM conversions",
        (V1_WINDOW_MS,),
    )
    tx.execute("UPDATE attempts SET delivery_id = (SELECT d.id FROM deliveries d "
               "WHERE d.conversion_id = attempts.conversion_id)")
    rows = tx.all("SELECT c.id, c.source, c.kind, c.event_name, c.payload, e.provider, e.occurred_at, e.livemode "
                  "FROM conversions c LEFT JOIN events e ON e.id = c.event_id")
    records = [(v1_record(r[1], r[2], r[3], r[4], r[5], r[6], r[7]).to_json(), int(r[0])) for r in rows]
    if records:
        tx.executemany("UPDATE conversions SET record = ? WHERE id = ?", records)
    for index in _V1_INDEXES:
        tx.execute(f"DROP INDEX IF EXISTS {index}")
    for column in _V1_COLUMNS:
        tx.execute(f"ALTER TABLE conversions DROP COLUMN {column}")


def v1_record(source: str, kind: str, event_name: str, payload: str, provider: str | None,
              occurred_at: int | None, livemode: Any) -> Conversion:
    """The neutral record of a version-1 conversion, read from the Dub body it kept.

    Version 1 sent `amount` in ISO 4217 minor units as it stored them, so the amount is kept
    as is; the invoice id was sent as stored, so it stays unqualified (`invoice_unique`).
    """
    body: dict[str, Any] = json.loads(payload)
    meta = dict(body.get("metadata") or {})
    from adapter.events import parse_time

    moment = parse_time(body.get("timestamp"))
    when = int(moment.timestamp() * 1000) if moment is not None else int(occurred_at or 0)
    return Conversion(
        kind="sale" if kind == "sale" else "lead",
        source=source,
        provider=str(meta.get("provider") or provider or "custom"),
        event_name=str(body.get("eventName") or event_name),
        occurred_at=when,
        customer_external_id=body.get("customerExternalId"),
        click_id=body.get("clickId") or None,
        email=body.get("customerEmail"),
        name=body.get("customerName"),
        provider_customer_id=meta.get("providerCustomerId"),
        amount=body.get("amount"),
        currency=body.get("currency"),
        invoice_id=body.get("invoiceId"),
        invoice_unique=True,
        subscription_id=meta.get("subscriptionId"),
        provider_event_id=meta.get("providerEventId"),
        provider_event_type=meta.get("providerEventType"),
        livemode=None if meta.get("livemode", livemode) is None else bool(meta.get("livemode", livemode)),
        metadata={k: v for k, v in meta.items() if k not in _V1_META and k != "subscriptionId"},
    )


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
