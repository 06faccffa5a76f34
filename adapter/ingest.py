"""verify → parse → map → (one transaction) dedupe, resolve identity, name, store.

`Ingestor.receive` is everything `POST /webhooks/{source}` does after reading the body. The
pure steps (verify, parse, map) run first, outside the store; the rest runs in one store
transaction whose commit is durable before the answer is sent (SPEC §3).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from adapter.attribution import apply_identity_keys
from adapter.destinations import Destination
from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Lead, Mapped, PaymentLink, ProviderEvent, Refund, Sale
from adapter.metrics import observe_provider_error, short_error
from adapter.plugin import Headers, Source
from adapter.records import Conversion, ConversionKind, Identity
from adapter.refunds import revive_refunds, store_link, store_refund
from adapter.sampling import RejectionSample
from adapter.store import Store, Tx
from adapter.text import body_text

__all__ = ["Ingestor", "Outcome", "checked", "map_event", "mapped_or_ignored", "now_ms", "parse_event", "parse_events"]

log = logging.getLogger("hooktrack.ingest")


REPLAYED = "replayed_transmission"
"""The 400 code of a delivery whose `delivery_key` was already claimed for another body."""


def now_ms() -> int:
    return int(time.time() * 1000)



@dataclass
class Outcome:
    """What a webhook delivery became; `body()` is the JSON answer."""

    status: str
    event_id: int | None = None
    reason: str | None = None
    conversions: list[dict[str, Any]] = field(default_factory=list)
    error: SignatureError | None = None
    http_status: int = 200
    provider_event_id: str | None = None
    events: list[Outcome] | None = None
    """Set for a delivery that carries several events (SPEC §8): what became of each."""

    def body(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": {"code": self.error.code, "message": self.error.message}}
        if self.events is not None:
            return {"status": self.status, "events": [e.entry() for e in self.events]}
        out: dict[str, Any] = {"status": self.status, "eventId": self.event_id}
        if self.reason:
            out["reason"] = self.reason
        if self.status == "accepted":
            out["conversions"] = self.conversions
        return out

    def entry(self) -> dict[str, Any]:
        """This event's line in the answer to a delivery of several events."""
        out: dict[str, Any] = {"id": self.provider_event_id, "status": self.status, "eventId": self.event_id}
        if self.reason:
            out["reason"] = self.reason
        if self.status == "accepted":
            out["conversions"] = self.conversions
        return out


class Ingestor:
    """Turns one webhook delivery into stored events and conversions."""

    def __init__(self, store: Store, destination: Destination, on_commit: Callable[[], None] | None = None,
                 fill_window_s: float = 0, attribution_window_s: float = 86400) -> None:
        self.store = store
        self.destination = destination
        self.on_commit = on_commit
        self.fill_window_ms = int(fill_window_s * 1000)
        self.window_ms = int(attribution_window_s * 1000)
        self.rejections = RejectionSample()

    async def receive(self, source: Source, body: bytes, headers: Headers,
                      query: Mapping[str, str] | None = None) -> Outcome:
        """Verify, parse, map and store one delivery; raises `StoreUnavailable` (→ 503)."""
        received = now_ms()
        ctx = source.ctx if not query else _with_query(source, query)
        try:
            if source.provider.verify_may_block:  # a certificate fetch must not stall other webhooks
                await asyncio.to_thread(source.provider.verify, body, headers, source.secrets, ctx)
            else:
                source.provider.verify(body, headers, source.secrets, ctx)
            # An API lookup for an id-only webhook (Recurly), off the loop; not for a redelivery
            # of an event already stored (the ingest transaction still dedupes durably).
            if source.provider.fetches and not await self._already_stored(source, body, headers):
                body = await asyncio.to_thread(source.provider.fetch, body, ctx)
        except SignatureError as exc:  # a lookup that cannot be done now is VerifierUnavailable: 503
            await self._reject(source, received, exc.code, None)
            return Outcome("rejected", reason=exc.code, error=exc, http_status=exc.status_code)
        try:
            parsed = _parsed(source, body, headers)
        except PayloadError as exc:
            err = SignatureError("malformed_payload", str(exc))
            await self._reject(source, received, err.code, body)
            return Outcome("rejected", reason=err.code, error=err, http_status=400)
        if isinstance(parsed, ProviderEvent):
            return await self._one(source, body, received, parsed)
        # Several events in one delivery (Adyen items, FastSpring `events`): each is stored,
        # deduped and answered on its own; a malformed one is recorded, the others still count.
        # The delivery's own status is its events' when they agree (a redelivered batch is a
        # `duplicate`, as a single event would be), else `accepted`.
        outcomes = [await self._one(source, body, received, event) for event in parsed]
        statuses = {o.status for o in outcomes}
        return Outcome(statuses.pop() if len(statuses) == 1 else "accepted", events=outcomes,
                       conversions=[c for o in outcomes for c in o.conversions])

    async def _already_stored(self, source: Source, body: bytes, headers: Headers) -> bool:
        """True when every event of the verified, not yet fetched body is already stored (a
        redelivery): `fetch` is then skipped. Only a read, so anything unsure (a body `parse`
        refuses, a store that cannot answer) is False and the lookup runs as before."""
        try:
            parsed = source.provider.parse(body, headers)
            events = [parsed] if isinstance(parsed, ProviderEvent) else list(parsed)
            if not events or not all(isinstance(e, ProviderEvent) for e in events):
                return False
            keys = [e.id for e in events]
            found = await self.store.read(lambda tx: [tx.event_id_for(source.name, k) for k in keys])
        except Exception:  # parse and the transaction say what is wrong, as without this check
            return False
        return all(f is not None for f in found)

    async def _one(self, source: Source, body: bytes, received: int, event: ProviderEvent) -> Outcome:
        """Map and store one verified event of a delivery."""
        try:
            conversions, ignored, trial_of = mapped_or_ignored(source, event)
        except PayloadError as exc:
            err = SignatureError("malformed_payload", str(exc))
            await self._reject(source, received, err.code, body, event)
            return Outcome("rejected", reason=err.code, error=err, http_status=400, provider_event_id=event.id)
        apply = _Apply(source, event, body, received, conversions, ignored, self, trial_of)
        outcome = await self.store.transact(apply)
        outcome.provider_event_id = event.id
        if self.on_commit is not None and any(c.get("state") == "pending" for c in apply.created):
            self.on_commit()
        log.info(
            "webhook %s",
            outcome.status,
            extra={"source": source.name, "event_id": outcome.event_id, "provider_event_id": event.id,
                   "event_type": event.type, "reason": outcome.reason,
                   "conversion_ids": [c["id"] for c in outcome.conversions] or None},
        )
        return outcome

    async def _reject(self, source: Source, received: int, reason: str, body: bytes | None,
                      event: ProviderEvent | None = None) -> None:
        """Log a rejected delivery. Unverified bodies are never stored, and unverified deliveries
        are journaled only as a bounded sample (`adapter.sampling`); metrics count them all."""
        if body is None and not self.rejections.take(source.name, received):
            return
        row = {
            "source": source.name, "provider": source.ctx.provider, "received_at": received,
            "status": "rejected", "reason": reason,
            "provider_event_id": event.id if event else None,
            "event_type": event.type if event else None,
            "body": body_text(body) if body is not None else None,
        }
        event_id: int | None = None
        try:
            event_id = await self.store.transact(lambda tx: tx.insert_event(row))
        except Exception as exc:  # the answer is a 4xx either way; the log row is best effort
            log.warning("could not record a rejected webhook: %s", exc)
        log.info("webhook rejected", extra={"source": source.name, "reason": reason, "event_id": event_id})


def _with_query(source: Source, query: Mapping[str, str]) -> Any:
    from dataclasses import replace

    return replace(source.ctx, query=dict(query))


def _parsed(source: Source, body: bytes, headers: Headers) -> ProviderEvent | list[ProviderEvent]:
    """What `Provider.parse` made of the delivery: one event, or a list (a delivery carrying
    several); any other failure of the provider's code on bad input is a `PayloadError`."""
    try:
        parsed = source.provider.parse(body, headers)
    except (PayloadError, SignatureError):
        raise
    # Anything else may be bad input or a bug in the provider: answered 400 with the body kept
    # (for `hooktrack reprocess`), and counted and logged once so a bug is not taken for input.
    except Exception as exc:
        observe_provider_error(source.name, source.ctx.provider, "parse", exc)
        raise PayloadError(f"{source.ctx.provider} payload could not be parsed ({type(exc).__name__})") from exc
    if isinstance(parsed, ProviderEvent):
        return parsed
    if isinstance(parsed, (list, tuple)) and all(isinstance(e, ProviderEvent) for e in parsed):
        return list(parsed)
    raise PayloadError(f"{source.ctx.provider}.parse returned {type(parsed).__name__}, not a ProviderEvent")


def parse_events(source: Source, body: bytes, headers: Headers) -> list[ProviderEvent]:
    """Every event of a delivery (one for most providers); raises `PayloadError`."""
    parsed = _parsed(source, body, headers)
    return [parsed] if isinstance(parsed, ProviderEvent) else parsed


def parse_event(source: Source, body: bytes, headers: Headers) -> ProviderEvent:
    """The one event of a delivery; `PayloadError` for a delivery of several (see `parse_events`)."""
    parsed = _parsed(source, body, headers)
    if not isinstance(parsed, ProviderEvent):
        raise PayloadError(f"{source.ctx.provider} delivery carries {len(parsed)} events; read it with parse_events")
    return parsed


def map_event(source: Source, event: ProviderEvent) -> list[Mapped]:
    mode = source.ctx.settings.livemode
    if mode != "any" and event.livemode is not None and event.livemode != (mode == "live"):
        raise Ignore("livemode_mismatch")
    try:
        ctx = source.ctx
        out = [apply_identity_keys(c, ctx.settings, ctx.options) if isinstance(c, (Lead, Sale)) else c
               for c in source.provider.map(event, ctx)]
    except (Ignore, PayloadError):
        raise
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PayloadError(f"{event.type}: invalid {where}: {first['msg']}") from exc
    except SignatureError:
        raise
    except Exception as exc:  # as in parse_event: 400, body kept, counted and logged once
        observe_provider_error(source.name, source.ctx.provider, "map", exc)
        raise PayloadError(f"{event.type} is missing or has invalid fields ({short_error(exc)})") from exc
    if not out and event.type in source.provider.cancellations:
        raise Ignore("cancellation_recorded")
    return list(out)


def mapped_or_ignored(source: Source, event: ProviderEvent) -> tuple[list[Mapped], str | None, str | None]:
    """`map_event` as the ingest stores it: the conversions, or why the event counts nothing
    (`Ignore`'s reason, or `event_type_not_tracked` for nothing mapped), and the subscription an
    ignored trial invoice belongs to. Raises `PayloadError`."""
    try:
        conversions = map_event(source, event)
    except Ignore as exc:
        return [], exc.reason, exc.trial_of
    return conversions, None if conversions else "event_type_not_tracked", None


class _Apply:
    """The ingest transaction for one verified event (runs on the store's writer)."""

    def __init__(self, source: Source, event: ProviderEvent, body: bytes, received: int,
                 conversions: list[Mapped], ignored: str | None, ingestor: Ingestor,
                 trial_of: str | None = None) -> None:
        self.trial_of = trial_of
        self.fill_window_ms = ingestor.fill_window_ms
        self.window_ms = ingestor.window_ms
        self.destination = ingestor.destination
        self.source = source
        self.event = event
        self.body = body
        self.received = received
        self.conversions = conversions
        self.ignored = ignored
        self.created: list[dict[str, Any]] = []
        self.dedup_key: str | None = event.id  # None: `hooktrack reprocess` of a stored event

    def __call__(self, tx: Tx) -> Outcome:
        self.created = []
        src, event = self.source, self.event
        occurred = int(event.occurred_at.timestamp() * 1000)
        row = {
            "source": src.name, "provider": src.ctx.provider, "dedup_key": self.dedup_key,
            "provider_event_id": event.id, "event_type": event.type, "received_at": self.received,
            "occurred_at": occurred, "livemode": event.livemode,
            "status": "ignored" if self.ignored else "accepted", "reason": self.ignored,
            "body": body_text(self.body),
        }
        # The transmission is claimed before the event id is: a forged body carries an id of its
        # own. `hooktrack reprocess` (no dedup key) maps a stored body again: nothing to claim.
        if event.delivery_key and self.dedup_key is not None and not tx.claim_delivery_key(
                src.name, event.delivery_key, hashlib.sha256(self.body).hexdigest(), self.received):
            # A genuine transmission's headers over another body (PayPal signs only a CRC32 of it):
            # recorded without the body, so nothing (not `hooktrack reprocess`) can count it.
            refused = tx.insert_event({**row, "dedup_key": None, "status": "rejected", "reason": REPLAYED,
                                       "body": None})
            err = SignatureError(REPLAYED, "this transmission was already delivered with another body")
            return Outcome("rejected", event_id=refused, reason=REPLAYED, error=err, http_status=err.status_code)
        event_id = tx.insert_event(row)
        if event_id is None:
            original = tx.event_id_for(src.name, event.id)
            tx.insert_event({**row, "dedup_key": None, "status": "duplicate", "reason": None,
                             "duplicate_of": original, "body": None})
            return Outcome("duplicate", event_id=original)
        if self.trial_of:  # a trial's zero-amount first payment: its first paid cycle is the creation
            tx.remember_trial(src.name, self.trial_of, self.received)
        ignored = self.ignored
        if not ignored and event.object_key and tx.newer_version_seen(src.name, event.object_key, occurred):
            ignored = "out_of_order"
            tx.set_event_status(event_id, "ignored", ignored)
        if ignored:
            return Outcome("ignored", event_id=event_id, reason=ignored)
        for conversion in self.conversions:
            if isinstance(conversion, (Lead, Sale)):
                self.created.append(self._store_one(tx, event_id, conversion))
            elif isinstance(conversion, Refund):
                self.created.append(store_refund(tx, self, event_id, conversion, checked))
            elif isinstance(conversion, PaymentLink):
                self.created.append(store_link(tx, self, conversion, checked))
        return self._settle(tx, event_id)

    def _settle(self, tx: Tx, event_id: int) -> Outcome:
        fresh = [c for c in self.created if not c.get("duplicate")]
        forwarded = [c for c in fresh if c["state"] == "pending"]
        if not fresh:
            tx.set_event_status(event_id, "duplicate", "business_key")
            return Outcome("duplicate", event_id=event_id, reason="business_key")
        if not forwarded:
            reason = fresh[0]["reason"]
            tx.set_event_status(event_id, "ignored", reason)
            return Outcome("ignored", event_id=event_id, reason=reason)
        listed = [{"kind": c["kind"], "id": c["id"]} for c in forwarded]
        return Outcome("accepted", event_id=event_id, conversions=listed)

    def _store_one(self, tx: Tx, event_id: int, conv: Lead | Sale) -> dict[str, Any]:
        src, now = self.source, self.received
        ident = _resolve(tx, src.name, conv, now)
        names = src.ctx.settings.event_names
        kind: ConversionKind = "sale" if isinstance(conv, Sale) else "lead"
        if isinstance(conv, Sale):
            key = f"sale:{conv.invoice_id}"
        else:
            name = names.started_trial if conv.kind == "started_trial" else names.sign_up
            key = f"lead:{ident.external_id or 'event:' + self.event.id}:{name}"
        held = tx.claim_business_key(src.name, key, now)
        trial = isinstance(conv, Lead) and conv.kind == "started_trial"
        trial_of = conv.metadata.get("subscriptionId") if trial else None
        if isinstance(trial_of, str) and trial_of:
            tx.remember_trial(src.name, trial_of, now)  # its first paid cycle is the creation
        if isinstance(conv, Sale):
            # Named on both paths: a subscription payment merged into an order-shaped Sale of the
            # same invoice (Lemon Squeezy sends both) still records the subscription's first invoice.
            name = self._sale_name(tx, conv)
        record = self._record(kind, conv, ident, name)
        if held is not None:
            if held and isinstance(conv, Sale):  # the companion event may name the payment by other ids
                tx.remember_payment_refs(src.name, (conv.invoice_id, *conv.payment_refs), held, conv.gross_amount, now)
            _fill(tx, held, record, ident.explicit, now, self.destination)
            if held and isinstance(conv, Sale):  # its refunds that came first, as the fill left the Sale
                revive_refunds(tx, self, (conv.invoice_id, *conv.payment_refs), checked)
            return {"kind": kind, "id": held, "duplicate": True, "state": "duplicate"}
        state, reason, detail = "pending", None, None
        if ident.external_id is None:
            state, reason = "skipped", "no_identifier"
        elif kind == "lead" and not ident.click_id and not src.ctx.settings.forward_leads_without_click_id:
            state, reason = "skipped", "no_click_id"
        else:
            record, state, reason, detail = checked(self.destination, record)
        conversion_id = tx.insert_conversion({
            "event_id": event_id, "source": src.name, "kind": kind, "event_name": record.event_name,
            "business_key": key, "customer_external_id": record.customer_external_id,
            "identity_explicit": ident.explicit, "record": record.to_json(), "created_at": now, "updated_at": now,
        })
        # A Sale waits briefly before its first send: its companion event (a checkout after its
        # invoice, a subscription payment after its order) may bring a clickId or the subscription.
        due = now + self.fill_window_ms if kind == "sale" else now
        tx.insert_delivery({
            "conversion_id": conversion_id, "destination": self.destination.name, "state": state,
            "reason": reason, "detail": detail, "next_attempt_at": due, "window_until": now + self.window_ms,
            "created_at": now, "updated_at": now,
        })
        tx.bind_business_key(src.name, key, conversion_id)
        if isinstance(conv, Sale):  # the ids a later refund may name it by (SPEC §9)
            tx.remember_payment_refs(src.name, (conv.invoice_id, *conv.payment_refs), conversion_id,
                                     conv.gross_amount, now)
            # and the refunds of it that came first, skipped `unknown_sale`, are linked to it now
            revive_refunds(tx, self, (conv.invoice_id, *conv.payment_refs), checked)
        return {"kind": kind, "id": conversion_id, "state": state, "reason": reason}

    def _sale_name(self, tx: Tx, sale: Sale) -> str:
        names = self.source.ctx.settings.event_names
        if sale.kind == "purchase" or not sale.subscription_id:
            return names.purchase
        if sale.kind == "subscription_update":
            return names.subscription_update
        return names.subscription_creation if self._starts(tx, sale) else names.subscription_renewal

    def _starts(self, tx: Tx, sale: Sale) -> bool:
        """Creation or renewal (SPEC §8), from the provider's own signal and what is stored: a
        payment the provider says starts the subscription, a trial's first paid cycle, or (with
        no signal) the first paid Sale seen for the subscription is its creation."""
        src, sub = self.source.name, sale.subscription_id
        assert sub is not None
        first = tx.subscription_first(src, sub)
        if not first:  # nothing seen of it, or only its trial ("")
            # A cycle payment of a subscription hooktrack never saw start (installed on an account
            # with existing subscribers) is a renewal, remembered so later cycles stay renewals.
            # A signalled creation, a trial's first paid cycle, or no signal: this is the creation.
            before_install = sale.starts_subscription is False and first is None
            tx.record_first_invoice(src, sub, f"before-install:{sale.invoice_id}" if before_install
                                    else sale.invoice_id, self.received)
            first = tx.subscription_first(src, sub)  # re-read: a concurrent writer may have won
        return bool(sale.starts_subscription) or first == sale.invoice_id

    def _record(self, kind: ConversionKind, conv: Lead | Sale, ident: Identity, name: str) -> Conversion:
        """The destination-neutral conversion: what it is, with identity resolved."""
        src, event = self.source, self.event
        provider = src.provider
        sale = conv if isinstance(conv, Sale) else None
        return Conversion(
            kind=kind, source=src.name, provider=src.ctx.provider, event_name=name,
            occurred_at=int((conv.timestamp or event.occurred_at).timestamp() * 1000),
            customer_external_id=ident.external_id.strip() if ident.external_id else None,
            click_id=ident.click_id, email=ident.email, name=ident.name,
            provider_customer_id=conv.provider_customer_id,
            amount=sale.amount if sale else None, currency=sale.currency if sale else None,
            invoice_id=sale.invoice_id if sale else None,
            invoice_unique=getattr(provider, "invoice_ids", "global") != "account",
            subscription_id=sale.subscription_id if sale else None,
            payment_processor=src.ctx.settings.payment_processor,
            tax=getattr(provider, "tax", "excluded") if sale else None,
            provider_event_id=event.id, provider_event_type=event.type, livemode=event.livemode,
            forward_without_click=src.ctx.settings.forward_leads_without_click_id,
            metadata={k: v for k, v in conv.metadata.items() if k != "subscriptionId"},
        )


def checked(destination: Destination, record: Conversion) -> tuple[Conversion, str, str | None, str | None]:
    """Apply the destination's check (SPEC §1, "checked before commit"): mend what can be mended,
    and say `skipped`, `invalid_for_destination` for what cannot; returns (record, state,
    reason, detail) where detail names every rule that applied."""
    problems = destination.check(record)
    if not problems:
        return record, "pending", None, None
    detail = "; ".join(p.describe() for p in problems)
    refused = [p for p in problems if p.action == "skip"]
    if refused:
        return record, "skipped", "invalid_for_destination", detail
    mended = record.but(**{p.field: p.value for p in problems})
    return mended, "pending", None, detail


def _resolve(tx: Tx, source: str, conv: Lead | Sale, now: int) -> Identity:
    """SPEC §2: explicit id, then memory (by provider customer id, then email, then phone), then
    the provider customer id, then the email, then the phone. Learned values are remembered for
    later events. An email (or phone) match never overrides a provider customer id: two
    customers may share one email (`customer@email.com`), so a conversion that names its own
    customer is never given what was learned for an email, which may be another customer's."""
    email = conv.email.strip().lower() if conv.email else None
    phone = conv.phone.strip() if conv.phone else None
    memory = tx.identity(source, "customer", conv.provider_customer_id) if conv.provider_customer_id else None
    by_customer = memory is not None
    if memory is None and email and not conv.provider_customer_id:
        memory = tx.identity(source, "email", email)
    if memory is None and phone and not conv.provider_customer_id:
        memory = tx.identity(source, "phone", phone)
    external: str | None
    if conv.external_id:
        external, explicit = conv.external_id, True
    elif memory is not None and memory.external_id:
        external, explicit = memory.external_id, memory.explicit
    else:
        external, explicit = conv.provider_customer_id or conv.email or phone, False
    ident = Identity(
        external_id=external,
        explicit=explicit,
        click_id=conv.click_id or (memory.click_id if memory else None),
        email=conv.email or (memory.email if memory else None),
        name=conv.name or (memory.name if memory else None),
    )
    # Memory rows for a customer and its email are written together, so when the customer's row
    # already says all of this there is nothing new to remember (the common case for renewals).
    unchanged = (
        memory is not None
        and (by_customer or not conv.provider_customer_id)
        and _merged(memory, ident) == memory
        and (not email or (memory.email or "").strip().lower() == email)
    )
    if not unchanged:
        keys = [("customer", conv.provider_customer_id)] if conv.provider_customer_id else []
        if email:
            keys.append(("email", email))
        if phone:
            keys.append(("phone", phone))
        tx.remember(source, keys, ident, now)
    return ident


def _merged(old: Identity, new: Identity) -> Identity:
    """What `Tx.remember` stores when `new` is remembered over `old` (kept in step with its SQL)."""
    keep_old_id = old.explicit and not new.explicit
    return Identity(
        external_id=old.external_id if keep_old_id else (new.external_id or old.external_id),
        explicit=old.explicit or new.explicit,
        click_id=new.click_id or old.click_id,
        email=new.email or old.email,
        name=new.name or old.name,
    )


_FILLABLE = ("customer_external_id", "click_id", "email", "name")


def _fill(tx: Tx, conversion_id: int, newer: Conversion, newer_explicit: bool, now: int,
          destination: Destination) -> None:
    """Business dedup: a later event fills what a still-unsent Sale or Lead lacked, and an
    explicit customerExternalId replaces a fallback one (a provider customer id or an email)."""
    found = tx.conversion_for_fill(conversion_id) if conversion_id else None
    if found is None:
        return
    raw, explicit, deliveries = found
    open_ones = [(d, state, reason) for d, state, reason in deliveries if state in ("pending", "skipped")]
    if not open_ones:
        return
    old = Conversion.from_json(raw)
    changes: dict[str, Any] = {f: getattr(newer, f) for f in _FILLABLE
                               if getattr(old, f) is None and getattr(newer, f) is not None}
    if newer_explicit and not explicit and old.kind == "sale":  # a Lead's key holds its id: Sales only
        changes["customer_external_id"] = newer.customer_external_id
        explicit = True
    if old.subscription_id is None and newer.subscription_id is not None:
        changes["subscription_id"] = newer.subscription_id
        changes["event_name"] = newer.event_name  # the merged event knew it was a subscription
    meta_added = {k: v for k, v in newer.metadata.items() if k not in old.metadata}
    if not changes and not meta_added:
        return
    filled = old.but(**changes, metadata={**old.metadata, **meta_added})
    record, state, reason, detail = checked(destination, filled)
    for delivery_id, was, why in open_ones:
        if was == "pending" or (why == "no_identifier" and filled.customer_external_id) or \
                (why == "no_click_id" and filled.click_id) or why == "invalid_for_destination":
            tx.set_delivery_state(delivery_id, state, reason, detail, now)
    tx.update_fill(conversion_id, record.to_json(), record.customer_external_id, explicit, record.event_name, now)
