"""Every statement hooktrack runs, written once for SQLite and PostgreSQL.

`Tx` wraps one open transaction on a DB-API connection. Statements use `?` placeholders,
rewritten to `%s` for PostgreSQL. Dedup relies on `INSERT ... ON CONFLICT DO NOTHING
RETURNING`, which both engines run atomically, so two replicas inserting the same key at the
same moment see exactly one winner.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from adapter.records import Attempt, Claimed, DestinationState, Identity, Settlement
from adapter.store.reports import Reports

__all__ = ["Attempt", "Claimed", "Identity", "Settlement", "Tx"]

_ATTEMPT = ("INSERT INTO attempts (conversion_id, delivery_id, attempted_at, status_code, latency_ms, outcome, "
            "error, response_excerpt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_FINISH = ("UPDATE deliveries SET state = ?, reason = ?, attempts = attempts + ?, next_attempt_at = ?, "
           "lease_owner = NULL, lease_until = NULL, updated_at = ?, delivered_at = ?, last_status = ?, "
           "last_error = ? WHERE id = ? AND state = 'pending'")


_NOT_COUNTED = ("unattributed", "dead", "skipped")
_SKIP_REFUNDS = (
    "UPDATE deliveries SET state = 'skipped', reason = 'sale_not_counted', updated_at = ? "
    "WHERE state = 'pending' AND lease_owner IS NULL "
    "AND destination = (SELECT s.destination FROM deliveries s WHERE s.id = ?) "
    "AND conversion_id IN (SELECT r.id FROM conversions r WHERE r.reverses = "
    "  (SELECT s.conversion_id FROM deliveries s WHERE s.id = ? "
    "   AND s.state IN ('unattributed', 'dead', 'skipped')))"
)

_PAYMENT_ID_LOCKS = 0x68746B  # pg_advisory_xact_lock's first key: the payment id locks (`lock_payment_ids`)

_SETTLED = "('delivered', 'skipped', 'unattributed')"
"""Delivery states that retention may prune: nothing more will happen to them."""


class Tx(Reports):
    """One transaction; every method is one or two statements."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        return self.conn.execute(sql, params)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, params).fetchall())

    def heartbeat(self, now: int) -> None:
        """Write one small row: readiness means the store can commit a real write now."""
        self.execute(
            "INSERT INTO hooktrack_meta (key, value) VALUES ('heartbeat', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(now),),
        )

    # -- events -------------------------------------------------------------------------

    def insert_event(self, row: dict[str, Any]) -> int | None:
        """Insert an event; None when `(source, dedup_key)` already exists (a redelivery)."""
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        found = self.one(
            f"INSERT INTO events ({cols}) VALUES ({marks}) ON CONFLICT (source, dedup_key) DO NOTHING "
            "RETURNING id",
            list(row.values()),
        )
        return int(found[0]) if found else None

    def event_id_for(self, source: str, provider_event_id: str) -> int | None:
        found = self.one("SELECT id FROM events WHERE source = ? AND dedup_key = ?", (source, provider_event_id))
        return int(found[0]) if found else None

    def set_event_status(self, event_id: int, status: str, reason: str | None) -> None:
        self.execute("UPDATE events SET status = ?, reason = ? WHERE id = ?", (status, reason, event_id))

    def newer_version_seen(self, source: str, object_key: str, occurred_at: int) -> bool:
        """True if an event newer than `occurred_at` was stored for the object; else record this one."""
        row = self.one(
            "SELECT occurred_at FROM object_versions WHERE source = ? AND object_key = ?", (source, object_key)
        )
        if row is not None and int(row[0]) > occurred_at:
            return True
        self.execute(
            "INSERT INTO object_versions (source, object_key, occurred_at) VALUES (?, ?, ?) "
            "ON CONFLICT (source, object_key) DO UPDATE SET occurred_at = excluded.occurred_at",
            (source, object_key, occurred_at),
        )
        return False

    # -- business keys, subscriptions ----------------------------------------------------

    def claim_business_key(self, source: str, key: str, now: int) -> int | None:
        """Reserve `key`; None if new, else the conversion id that holds it (0 if pruned)."""
        fresh = self.one(
            "INSERT INTO business_keys (source, key, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (source, key) DO NOTHING RETURNING key",
            (source, key, now),
        )
        if fresh:
            return None
        held = self.one("SELECT conversion_id FROM business_keys WHERE source = ? AND key = ?", (source, key))
        return int(held[0]) if held and held[0] is not None else 0

    def claim_delivery_key(self, source: str, key: str, digest: str, now: int) -> bool:
        """Claim a transmission `key` (`ProviderEvent.delivery_key`) for a body of `digest` (its
        SHA-256, hex); False when the key is already claimed for another body (a replay under a
        genuine signature), True when it is new or claimed for this same body (a redelivery).

        Two `business_keys` rows, never bound to a conversion and never pruned, like the others:
        `delivery:{key}`, the claim (one winner among concurrent replicas, as for any business
        key), and `delivery-body:{digest}:{key}`, the body it was claimed for. Neither prefix is
        `sale:` or `lead:`, the only keys anything else reads."""
        fresh = self.one(
            "INSERT INTO business_keys (source, key, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (source, key) DO NOTHING RETURNING key",
            (source, f"delivery:{key}", now),
        )
        body_key = f"delivery-body:{digest}:{key}"
        if fresh:
            self.execute("INSERT INTO business_keys (source, key, created_at) VALUES (?, ?, ?)",
                         (source, body_key, now))
            return True
        return self.one("SELECT 1 FROM business_keys WHERE source = ? AND key = ?", (source, body_key)) is not None

    def bind_business_key(self, source: str, key: str, conversion_id: int) -> None:
        self.execute(
            "UPDATE business_keys SET conversion_id = ? WHERE source = ? AND key = ?",
            (conversion_id, source, key),
        )

    def subscription_first(self, source: str, subscription_id: str) -> str | None:
        """The first paid invoice recorded for a subscription; `""` when only its trial is known
        (`remember_trial`), None when hooktrack has seen nothing of it."""
        row = self.one(
            "SELECT first_invoice_id FROM subscriptions WHERE source = ? AND subscription_id = ?",
            (source, subscription_id),
        )
        return str(row[0]) if row else None

    def remember_trial(self, source: str, subscription_id: str, now: int) -> None:
        """Record that a subscription started in trial, before any paid Sale of it."""
        self.execute(
            "INSERT INTO subscriptions (source, subscription_id, first_invoice_id, created_at) "
            "VALUES (?, ?, '', ?) ON CONFLICT (source, subscription_id) DO NOTHING",
            (source, subscription_id, now),
        )

    def record_first_invoice(self, source: str, subscription_id: str, invoice_id: str, now: int) -> None:
        """Record `invoice_id` as the subscription's first paid invoice, over a trial marker."""
        self.execute(
            "INSERT INTO subscriptions (source, subscription_id, first_invoice_id, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (source, subscription_id) DO UPDATE "
            "SET first_invoice_id = excluded.first_invoice_id WHERE subscriptions.first_invoice_id = ''",
            (source, subscription_id, invoice_id, now),
        )

    # -- identity memory -----------------------------------------------------------------

    def identity(self, source: str, key_kind: str, key: str) -> Identity | None:
        row = self.one(
            "SELECT external_id, explicit, click_id, email, name FROM identities "
            "WHERE source = ? AND key_kind = ? AND key = ?",
            (source, key_kind, key),
        )
        return Identity(row[0], bool(row[1]), row[2], row[3], row[4]) if row else None

    def remember(self, source: str, keys: Sequence[tuple[str, str]], ident: Identity, now: int) -> None:
        """Upsert memory under each `(key_kind, key)`, in one statement: an explicit external id
        replaces a fallback one, never the reverse; other fields keep their newest known value."""
        if not keys:
            return
        values = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?, ?)" for _ in keys)
        params: list[Any] = []
        for key_kind, key in keys:
            params += (source, key_kind, key, ident.external_id, ident.explicit, ident.click_id, ident.email,
                       ident.name, now)
        self.execute(
            "INSERT INTO identities (source, key_kind, key, external_id, explicit, click_id, email, name,"
            f" updated_at) VALUES {values} "
            "ON CONFLICT (source, key_kind, key) DO UPDATE SET "
            "external_id = CASE WHEN identities.explicit AND NOT excluded.explicit "
            "  THEN identities.external_id ELSE COALESCE(excluded.external_id, identities.external_id) END, "
            "explicit = (identities.explicit OR excluded.explicit), "
            "click_id = COALESCE(excluded.click_id, identities.click_id), "
            "email = COALESCE(excluded.email, identities.email), "
            "name = COALESCE(excluded.name, identities.name), "
            "updated_at = excluded.updated_at",
            params,
        )

    # -- conversions and deliveries ------------------------------------------------------

    def insert_conversion(self, row: dict[str, Any]) -> int:
        """Insert a conversion (its neutral `record`); returns its id."""
        return self._insert_returning_id("conversions", row)

    def insert_delivery(self, row: dict[str, Any]) -> int:
        """Insert a conversion's delivery to one destination; returns its id."""
        return self._insert_returning_id("deliveries", row)

    def _insert_returning_id(self, table: str, row: dict[str, Any]) -> int:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        found = self.one(f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING id", list(row.values()))
        return int(found[0])

    def conversion_for_fill(self, conversion_id: int) -> tuple[str, bool, list[tuple[int, str, str | None]]] | None:
        """(record, identity_explicit, [(delivery id, state, reason)]) of a conversion, for
        business-dedup filling; None when it is gone."""
        row = self.one("SELECT record, identity_explicit FROM conversions WHERE id = ?", (conversion_id,))
        if row is None or row[0] is None:
            return None
        deliveries = [(int(r[0]), str(r[1]), r[2]) for r in self.all(
            "SELECT id, state, reason FROM deliveries WHERE conversion_id = ? ORDER BY id", (conversion_id,))]
        return str(row[0]), bool(row[1]), deliveries

    def update_fill(self, conversion_id: int, record: str, customer_external_id: str | None, explicit: bool,
                    event_name: str, now: int) -> None:
        """Store a conversion's record after a later event filled it in."""
        self.execute(
            "UPDATE conversions SET record = ?, updated_at = ?, customer_external_id = ?, identity_explicit = ?, "
            "event_name = ? WHERE id = ?",
            (record, now, customer_external_id, explicit, event_name, conversion_id),
        )

    def set_delivery_state(self, delivery_id: int, state: str, reason: str | None, detail: str | None,
                           now: int) -> None:
        """Set a not-yet-sent delivery's state (a fill revived it, or a check now refuses it)."""
        self.execute(
            "UPDATE deliveries SET state = ?, reason = ?, detail = ?, updated_at = ? WHERE id = ? "
            "AND state IN ('pending', 'skipped') AND attempts = 0 AND lease_owner IS NULL",
            (state, reason, detail, now, delivery_id),
        )

    # -- refunds (SPEC §9) ---------------------------------------------------------------

    def remember_payment_refs(self, source: str, refs: Iterable[str], conversion_id: int, gross_amount: int | None,
                              now: int) -> None:
        """Remember the ids a stored Sale may be named by; an id already remembered keeps its Sale."""
        wanted = [ref for ref in dict.fromkeys(refs) if ref]
        if wanted:  # one statement for all of them: a Sale names two or three
            params: list[Any] = []
            for ref in wanted:
                params += (source, ref, conversion_id, gross_amount, now)
            self.execute("INSERT INTO payment_refs (source, ref, conversion_id, gross_amount, created_at) VALUES "
                         + ", ".join("(?, ?, ?, ?, ?)" for _ in wanted) + " ON CONFLICT (source, ref) DO NOTHING",
                         params)

    def link_payments(self, source: str, ids: Sequence[str], now: int) -> None:
        """Remember that `ids` name one payment (every pair, both ways)."""
        pairs = [(source, a, b, now) for a in ids for b in ids if a != b]
        if pairs:
            self.executemany("INSERT INTO payment_links (source, ref, linked, created_at) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT (source, ref, linked) DO NOTHING", pairs)

    def sale_for_refs(self, source: str, refs: Sequence[str]) -> tuple[int, int | None] | None:
        """(conversion id, amount including tax) of the stored Sale that any of `refs` names,
        directly or through a remembered link; the first of `refs` that names one wins."""
        wanted = list(dict.fromkeys(refs))
        if not wanted:
            return None
        marks = ", ".join("?" for _ in wanted)
        direct = {str(r[0]): (int(r[1]), None if r[2] is None else int(r[2])) for r in self.all(
            f"SELECT ref, conversion_id, gross_amount FROM payment_refs WHERE source = ? AND ref IN ({marks})",
            [source, *wanted])}
        for ref in wanted:
            if ref in direct:
                return direct[ref]
        linked = self.all(
            "SELECT l.ref, p.conversion_id, p.gross_amount FROM payment_links l JOIN payment_refs p "
            f"ON p.source = l.source AND p.ref = l.linked WHERE l.source = ? AND l.ref IN ({marks}) "
            "ORDER BY p.conversion_id", [source, *wanted])
        by_ref: dict[str, tuple[int, int | None]] = {}
        for r in linked:
            by_ref.setdefault(str(r[0]), (int(r[1]), None if r[2] is None else int(r[2])))
        for ref in wanted:
            if ref in by_ref:
                return by_ref[ref]
        return None

    def sale_for_refund(self, conversion_id: int, destination: str) -> tuple[str, str | None] | None:
        """(record, delivery state to `destination`) of a Sale (or of a Sale retention pruned),
        locked against concurrent refunds of it on PostgreSQL; None when it is not a Sale."""
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        row = self.one(f"SELECT record FROM conversions WHERE id = ? AND kind = 'sale'{lock}", (conversion_id,))
        if row is None or row[0] is None:
            pruned = self.one("SELECT record, state FROM pruned_sales WHERE conversion_id = ? AND destination = ?"
                              f"{lock}", (conversion_id, destination))
            return (str(pruned[0]), str(pruned[1])) if pruned else None
        state = self.one("SELECT state FROM deliveries WHERE conversion_id = ? AND destination = ?",
                         (conversion_id, destination))
        return str(row[0]), (str(state[0]) if state else None)

    def refund_ledger(self, sale_id: int) -> list[tuple[str, int, int | None]]:
        """What was applied of a Sale: (refund key, amount, cumulative total level or None)."""
        return [(str(r[0]), int(r[1]), None if r[2] is None else int(r[2])) for r in self.all(
            "SELECT refund_key, amount, total FROM refund_ledger WHERE sale_id = ? ORDER BY created_at, refund_key",
            (sale_id,))]

    def record_refund(self, sale_id: int, refund_key: str, refund_id: str | None, event_id: int,
                      conversion_id: int | None, amount: int, total: int | None, now: int) -> bool:
        """Add a ledger row; False when `refund_key` was already applied to the Sale."""
        found = self.one(
            "INSERT INTO refund_ledger (sale_id, refund_key, refund_id, event_id, conversion_id, amount, total, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sale_id, refund_key) DO NOTHING "
            "RETURNING refund_key", (sale_id, refund_key, refund_id, event_id, conversion_id, amount, total, now))
        return found is not None

    def set_reverses(self, conversion_id: int, sale_id: int) -> None:
        self.execute("UPDATE conversions SET reverses = ? WHERE id = ?", (sale_id, conversion_id))

    def remember_orphan_refund(self, source: str, refs: Iterable[str], conversion_id: int, refund: str,
                               now: int) -> None:
        """Remember a refund stored `unknown_sale` by every id it names, with the Refund as mapped
        (`refund`, its JSON), so that its Sale, stored later, finds it (`orphan_refunds`)."""
        rows = [(source, ref, conversion_id, refund, now) for ref in dict.fromkeys(refs) if ref]
        if rows:
            self.executemany("INSERT INTO orphan_refunds (source, ref, conversion_id, refund, created_at) "
                             "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, ref, conversion_id) DO NOTHING", rows)

    def lock_payment_ids(self, source: str, refs: Sequence[str], *, linked: bool = False) -> None:
        """On PostgreSQL, hold a lock per id (and, with `linked`, per id linked to one) until
        commit, so that a refund finding no Sale and a Sale looking for its refunds that came
        first never miss each other by running at the same moment on two replicas: whichever
        takes the lock second sees what the first committed. SQLite has one writer: nothing."""
        wanted = sorted(set(refs))
        if self.dialect != "postgresql" or not wanted:
            return
        marks = ", ".join("(?)" for _ in wanted)
        more = " UNION SELECT linked FROM payment_links WHERE source = ? AND ref IN (" \
            f"{', '.join('?' for _ in wanted)})" if linked else ""
        self.one(f"SELECT count(pg_advisory_xact_lock({_PAYMENT_ID_LOCKS}, hashtext(k))) FROM ("
                 f"SELECT k FROM (VALUES {marks}) v(k){more} ORDER BY 1) ids",
                 [*wanted, *([source, *wanted] if linked else [])])

    def orphan_refunds(self, source: str, refs: Sequence[str], destination: str,
                       now: int) -> list[tuple[int, int, int, str, str]]:
        """(conversion id, delivery id, event id, record, Refund JSON) of the refunds that named
        any of `refs` (or an id linked to one) and are still `skipped`, `unknown_sale` to
        `destination` inside their attribution window, oldest first (locked on PostgreSQL); what
        was remembered for them, and for these ids, is cleared (the caller remembers again a
        refund that still reaches no Sale, as a link may find it before its Sale is stored)."""
        wanted = list(dict.fromkeys(refs))
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        taken = self.all(  # one statement when nothing came first, the usual case
            f"DELETE FROM orphan_refunds WHERE source = ? AND (ref IN ({marks}) OR ref IN ("
            f"SELECT linked FROM payment_links WHERE source = ? AND ref IN ({marks}))) "
            "RETURNING conversion_id, refund", [source, *wanted, source, *wanted])
        if not taken:
            return []
        refunds = {int(r[0]): str(r[1]) for r in taken}
        ids = sorted(refunds)
        id_marks = ", ".join("?" for _ in ids)
        self.execute(f"DELETE FROM orphan_refunds WHERE conversion_id IN ({id_marks})", ids)
        lock = " FOR UPDATE OF d" if self.dialect == "postgresql" else ""
        return [(int(r[0]), int(r[1]), int(r[2]), str(r[3]), refunds[int(r[0])]) for r in self.all(
            "SELECT c.id, d.id, c.event_id, c.record FROM conversions c JOIN deliveries d ON d.conversion_id = c.id "
            f"WHERE c.id IN ({id_marks}) AND c.kind = 'refund' AND c.reverses IS NULL AND d.destination = ? "
            "AND d.state = 'skipped' AND d.reason = 'unknown_sale' AND d.window_until > ? "
            f"ORDER BY c.id{lock}", [*ids, destination, now])]

    def revive_refund(self, conversion_id: int, delivery_id: int, conversion: Mapping[str, Any], state: str,
                      reason: str | None, detail: str | None, now: int, window_until: int) -> bool:
        """Give a refund stored `unknown_sale` the columns of its link to the Sale (`conversion`:
        record, business key, reverses, ...) and its delivery `state` (pending: back in the
        outbox now); False when the delivery is no longer that skipped orphan."""
        cur = self.execute(
            "UPDATE deliveries SET state = ?, reason = ?, detail = ?, next_attempt_at = ?, window_until = ?, "
            "updated_at = ? WHERE id = ? AND state = 'skipped' AND reason = 'unknown_sale' AND attempts = 0 "
            "AND lease_owner IS NULL", (state, reason, detail, now, window_until, now, delivery_id))
        if not cur.rowcount:
            return False
        sets = ", ".join(f"{col} = ?" for col in conversion)
        self.execute(f"UPDATE conversions SET {sets} WHERE id = ?", [*conversion.values(), conversion_id])
        return True

    def refund_memos(self, sale_ids: Iterable[int], destination: str) -> dict[int, dict[str, Any]]:
        """What `destination` asked to remember about each of these Sales (`Verdict.memo`)."""
        wanted = sorted(set(sale_ids))
        if not wanted:
            return {}
        marks = ", ".join("?" for _ in wanted)
        out: dict[int, dict[str, Any]] = {}
        for sale_id, key, value in self.all(
                "SELECT conversion_id, key, value FROM refund_memos WHERE destination = ? "
                f"AND conversion_id IN ({marks})", [destination, *wanted]):
            out.setdefault(int(sale_id), {})[str(key)] = json.loads(value)
        return out

    def remember_memo(self, sale_id: int, destination: str, memo: Mapping[str, Any], now: int) -> None:
        """Store `memo` for a Sale and destination; a key already stored keeps its value."""
        rows = [(sale_id, destination, str(k), json.dumps(v, separators=(",", ":")), now) for k, v in memo.items()]
        if rows:
            self.executemany("INSERT INTO refund_memos (conversion_id, destination, key, value, created_at) "
                             "VALUES (?, ?, ?, ?, ?) ON CONFLICT (conversion_id, destination, key) DO NOTHING", rows)

    # -- outbox --------------------------------------------------------------------------

    def claim(self, destination: str, owner: str, now: int, lease_ms: int, limit: int) -> list[Claimed]:
        """Lease up to `limit` due deliveries to `destination`. A Sale waits while an earlier Lead
        of the same customer and source is still pending (a dead Lead no longer holds it back); a
        Refund waits while its Sale, or an earlier Refund of the same Sale, is still pending
        (SPEC §7, §9): refunds carry absolute totals, so they go out in the order they were made."""
        lock = " FOR UPDATE OF d SKIP LOCKED" if self.dialect == "postgresql" else ""
        rows = self.all(
            "WITH due AS (SELECT d.id FROM deliveries d JOIN conversions c ON c.id = d.conversion_id "
            "WHERE d.destination = ? AND d.state = 'pending' AND d.next_attempt_at <= ? "
            "AND (d.lease_until IS NULL OR d.lease_until < ?) "
            "AND NOT (c.kind = 'sale' AND c.customer_external_id IS NOT NULL AND EXISTS ("
            "  SELECT 1 FROM conversions l JOIN deliveries ld ON ld.conversion_id = l.id "
            "  WHERE ld.destination = d.destination AND ld.state = 'pending' AND l.kind = 'lead' "
            "  AND l.source = c.source AND l.customer_external_id = c.customer_external_id "
            "  AND l.id < c.id)) "
            "AND NOT (c.reverses IS NOT NULL AND EXISTS ("
            "  SELECT 1 FROM deliveries sd WHERE sd.destination = d.destination AND sd.state = 'pending' "
            "  AND (sd.conversion_id = c.reverses OR sd.conversion_id IN ("
            "    SELECT r.id FROM conversions r WHERE r.reverses = c.reverses AND r.id < c.id)))) "
            f"ORDER BY d.next_attempt_at, d.id LIMIT ?{lock}) "
            "UPDATE deliveries SET lease_owner = ?, lease_until = ? "
            "WHERE id IN (SELECT id FROM due) "
            "RETURNING id, conversion_id, attempts, created_at, window_until",
            (destination, now, now, limit, owner, now + lease_ms),
        )
        if not rows:
            return []
        marks = ", ".join("?" for _ in rows)
        convs = {int(r[0]): r for r in self.all(
            f"SELECT id, kind, source, record FROM conversions WHERE id IN ({marks})", [r[1] for r in rows])}
        claimed = [Claimed(int(r[0]), int(r[1]), convs[int(r[1])][1], convs[int(r[1])][2], convs[int(r[1])][3],
                           int(r[2]), int(r[3]), int(r[4])) for r in rows if int(r[1]) in convs]
        claimed.sort(key=lambda c: c.id)
        return claimed

    def settle(self, owner: str, now: int, rows: Sequence[Settlement], attempts: Sequence[Attempt] = ()) -> None:
        """Record a batch's attempts and settle its deliveries in at most three statements, however
        large the batch: one round trip each on PostgreSQL. A delivery always counts; a retry or
        dead-letter only applies while this worker still holds the lease (else another worker
        owns it now)."""
        if attempts:
            self.executemany(_ATTEMPT, [(a.conversion_id, a.delivery_id, now, a.status_code, a.latency_ms,
                                         a.outcome, a.error, a.excerpt) for a in attempts])
        delivered = [r for r in rows if r.state == "delivered"]
        others = [r for r in rows if r.state != "delivered"]
        if delivered:
            self.executemany(_FINISH, [(r.state, r.reason, int(r.counted), r.next_at, now, now, r.status_code,
                                        r.error, r.delivery_id) for r in delivered])
        if others:
            self.executemany(_FINISH + " AND lease_owner = ?", [
                (r.state, r.reason, int(r.counted), r.next_at, now, None, r.status_code, r.error, r.delivery_id,
                 owner) for r in others])
        ended = [r for r in others if r.state in _NOT_COUNTED]
        if ended:  # a Sale that ends not counted: its refunds have nothing to reverse (SPEC §9)
            self.executemany(_SKIP_REFUNDS, [(now, r.delivery_id, r.delivery_id) for r in ended])

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        self.conn.cursor().executemany(sql, rows)

    def requeue(self, conversion_ids: Iterable[int], now: int, window_ms: int) -> list[int]:
        """Put the dead deliveries of these conversions back in the outbox (replay), with a fresh
        attempt budget and attribution window, and a replayed Sale's refunds skipped as
        `sale_not_counted` with it; returns the conversion ids that moved."""
        moved = []
        for conversion_id in conversion_ids:
            cur = self.execute(
                "UPDATE deliveries SET state = 'pending', reason = NULL, next_attempt_at = ?, "
                "lease_owner = NULL, lease_until = NULL, updated_at = ?, attempts = 0, window_until = ? "
                "WHERE conversion_id = ? AND state = 'dead'",
                (now, now, now + window_ms, conversion_id),
            )
            if cur.rowcount:
                moved.append(conversion_id)
                # Its refunds, skipped because the Sale was not counted, wait behind it again.
                self.execute(
                    "UPDATE deliveries SET state = 'pending', reason = NULL, next_attempt_at = ?, updated_at = ?, "
                    "window_until = ? WHERE state = 'skipped' AND reason = 'sale_not_counted' "
                    "AND conversion_id IN (SELECT r.id FROM conversions r WHERE r.reverses = ?)",
                    (now, now, now + window_ms, conversion_id),
                )
        return moved

    # -- destinations ----------------------------------------------------------------------

    def destination_state(self, name: str) -> DestinationState:
        """The destination's shared state; a destination never paused is sending."""
        row = self.one("SELECT paused_reason, paused_at, next_probe_at, failures FROM destinations WHERE name = ?",
                       (name,))
        if row is None:
            return DestinationState(name)
        return DestinationState(name, row[0], row[1], row[2], int(row[3]))

    def destination_names(self) -> list[str]:
        """Destinations that ever had a state recorded (were paused once)."""
        return [str(r[0]) for r in self.all("SELECT name FROM destinations ORDER BY name")]

    def set_destination_state(self, state: DestinationState, now: int) -> None:
        self.execute(
            "INSERT INTO destinations (name, paused_reason, paused_at, next_probe_at, failures, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET paused_reason = excluded.paused_reason, "
            "paused_at = excluded.paused_at, next_probe_at = excluded.next_probe_at, "
            "failures = excluded.failures, updated_at = excluded.updated_at",
            (state.name, state.paused_reason, state.paused_at, state.next_probe_at, state.failures, now),
        )

    # -- retention (SPEC §3.4) -------------------------------------------------------------

    def prune_events(self, cutoff: int, limit: int) -> int:
        """Delete up to `limit` events received before `cutoff` (epoch ms) whose conversions are
        all settled (delivered, or skipped as never forwardable), with those conversions and
        their attempts; returns how many events went. An event with a pending or dead-lettered
        conversion stays with it. Identity memory, business keys and subscriptions are never
        touched, so an old invoice re-sent is still a duplicate. On PostgreSQL, concurrent
        pruners (one per replica) take disjoint batches."""
        lock = " FOR UPDATE OF e SKIP LOCKED" if self.dialect == "postgresql" else ""
        ids = [int(r[0]) for r in self.all(
            "SELECT e.id FROM events e WHERE e.received_at < ? AND NOT EXISTS ("
            "  SELECT 1 FROM conversions c JOIN deliveries d ON d.conversion_id = c.id "
            f"  WHERE c.event_id = e.id AND d.state NOT IN {_SETTLED}) "
            f"ORDER BY e.received_at, e.id LIMIT ?{lock}",
            (cutoff, limit),
        )]
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        # A refund may come months after its Sale (SPEC §9): a pruned Sale's record stays, small.
        self.execute(
            "INSERT INTO pruned_sales (conversion_id, destination, record, state, pruned_at) "
            "SELECT c.id, d.destination, c.record, d.state, ? FROM conversions c JOIN deliveries d "
            f"ON d.conversion_id = c.id WHERE c.event_id IN ({marks}) AND c.kind = 'sale' AND c.record IS NOT NULL "
            f"AND NOT EXISTS (SELECT 1 FROM deliveries u WHERE u.conversion_id = c.id AND u.state NOT IN {_SETTLED}) "
            "ON CONFLICT (conversion_id, destination) DO NOTHING",
            [cutoff, *ids],
        )
        # The state is checked again: a business-key fill may have revived a skipped conversion.
        gone = [int(r[0]) for r in self.all(
            f"DELETE FROM conversions WHERE event_id IN ({marks}) AND NOT EXISTS (SELECT 1 FROM deliveries d "
            f"WHERE d.conversion_id = conversions.id AND d.state NOT IN {_SETTLED}) RETURNING id",
            ids,
        )]
        self._delete_attempts(gone)
        if gone:  # an orphan refund pruned: its Sale, if it ever comes, has nothing to revive
            marks_gone = ", ".join("?" for _ in gone)
            self.execute(f"DELETE FROM orphan_refunds WHERE conversion_id IN ({marks_gone})", gone)
        cur = self.execute(
            f"DELETE FROM events WHERE id IN ({marks}) "
            "AND NOT EXISTS (SELECT 1 FROM conversions c WHERE c.event_id = events.id)",
            ids,
        )
        return int(cur.rowcount)

    def purge_dead(self, ids: Iterable[int]) -> int:
        """Delete dead-lettered conversions (an operator's explicit purge) and their attempts;
        returns how many went. Their events then age out with retention; business keys stay."""
        wanted = list(ids)
        if not wanted:
            return 0
        marks = ", ".join("?" for _ in wanted)
        gone = [int(r[0]) for r in self.all(
            f"DELETE FROM conversions WHERE id IN ({marks}) AND EXISTS (SELECT 1 FROM deliveries d "
            "WHERE d.conversion_id = conversions.id AND d.state = 'dead') RETURNING id", wanted
        )]
        self._delete_attempts(gone)
        return len(gone)

    def _delete_attempts(self, conversion_ids: Sequence[int]) -> None:
        if conversion_ids:
            marks = ", ".join("?" for _ in conversion_ids)
            self.execute(f"DELETE FROM attempts WHERE conversion_id IN ({marks})", list(conversion_ids))
            self.execute(f"DELETE FROM deliveries WHERE conversion_id IN ({marks})", list(conversion_ids))
