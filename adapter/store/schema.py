"""The store's tables, shared by SQLite and PostgreSQL (`{id}` is the dialect's id column).

Times are epoch milliseconds (BIGINT) so both engines compare them the same way.

- `events`: every received webhook, the audit trail. `dedup_key` is the provider's event id
  on a first delivery and NULL on duplicate and rejected rows, so `UNIQUE (source, dedup_key)`
  is the delivery dedup. Rejected rows never keep a body.
- `conversions`: Leads and Sales as hooktrack knows them, destination-neutral (`record` is the
  JSON of `adapter.records.Conversion`: exact ISO 4217 money, resolved identity, names, ids).
- `deliveries`: one row per conversion and destination — its state, attempts, lease and last
  answer; the pending ones are the outbox. A second destination is a second row.
- `destinations`: a destination's shared state (paused, and why), seen by every worker.
- `business_keys`: one row per Sale invoice / Lead key ever produced, and the
  `delivery:` claims of providers whose events name their transmission
  (`ProviderEvent.delivery_key`, PayPal); never pruned.
- `subscriptions`: first paid Sale per subscription id (creation vs renewal); never pruned.
- `identities`: identity memory per provider customer id and per email; never pruned.
- `object_versions`: newest `occurred_at` per object for out-of-order providers; pruned with events.
- `attempts`: every request sent for a delivery.
- `payment_refs`: every id a stored Sale may be named by (its invoice id and `payment_refs`) →
  its conversion, with the Sale's amount including tax when known; never pruned (SPEC §9).
- `payment_links`: ids learned later to name one payment (`PaymentLink`), both ways.
- `refund_ledger`: what was applied of each Sale, per refund id (or cumulative total level):
  cumulative totals, "applied once" and "never more than the Sale" rest on it.
- `pruned_sales`: the record and final state of a Sale retention pruned, so a refund months
  later still finds what it reverses; never pruned.
- `refund_memos`: what a destination asked to remember about a reversed Sale (`Verdict.memo`),
  per Sale, destination and key; first write wins.
- `orphan_refunds`: every id a refund stored `unknown_sale` named → that refund, with the Refund
  as mapped (JSON): when its Sale, or a link to it, is stored later, the refund is linked to it
  then. Read and cleared when a Sale or a payment link naming the id is stored (written again
  when that reached no Sale yet); pruned with the refund.

Version 1 (hooktrack 0.1) kept the Dub request body and the delivery state on `conversions`;
`adapter/store/upgrade.py` brings such a store to version 2 in place. Version 3 (refunds) added
`conversions.reverses` and the refund tables; the upgrade remembers every stored Sale's invoice id.
Version 4 added `orphan_refunds` (refunds that arrive before their Sale).
"""

from __future__ import annotations

SCHEMA_VERSION = 4

DELIVERIES = """
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
"""

REFUNDS = """
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

ORPHANS = """
CREATE TABLE IF NOT EXISTS orphan_refunds (
    source TEXT NOT NULL,
    ref TEXT NOT NULL,
    conversion_id BIGINT NOT NULL,
    refund TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source, ref, conversion_id)
);
CREATE INDEX IF NOT EXISTS orphan_refunds_conversion ON orphan_refunds (conversion_id);
"""

TABLES = """
CREATE TABLE IF NOT EXISTS hooktrack_meta (
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
""" + DELIVERIES + """
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
""" + REFUNDS + ORPHANS
