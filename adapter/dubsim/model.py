"""Dub's tracking and commissions behaviour, per workspace, without HTTP.

`DubModel` keeps what each workspace (API key) recorded — customers by `externalId`, lead dedup
keys, the leads and sales it *counted*, the invoice dedup cache and partner commissions — and
answers `/track/lead`, `/track/sale`, `GET /commissions` and `PATCH /commissions/{id}` as the
route handlers named in docs/dub-api.md do. `adapter.receiver.TrackingReceiver` serves it.

One convenience is not Dub's: with `known_clicks=None` every non-empty clickId names a recorded
click (the demo and most tests need no click set up); a set means only those clicks exist.

Raises `DubError` (adapter.dubsim.schemas) for every error answer.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapter.dubsim.schemas import (
    COMMISSION_STATUSES,
    LEAD,
    SALE,
    UPDATE_COMMISSION,
    DubError,
    F,
    iso_time,
    js_round,
    parse,
    query_int,
)

__all__ = ["Commission", "Customer", "DubModel", "Lead", "Sale", "Workspace"]

WEEK_S = 7 * 24 * 3600
MUTABLE_PAYOUT_STATUSES = ("pending", "canceled")
"""apps/web/lib/constants/payouts.ts: a commission in a payout of another status cannot change."""
_NAMES = (("Big", "Small", "Quick", "Calm"), ("Red", "Blue", "Green", "Amber"), ("Caribou", "Heron", "Otter", "Lynx"))


@dataclass
class Customer:
    """A customer of the workspace, by its `externalId`."""

    id: str
    external_id: str
    name: str
    email: str | None
    avatar: str | None
    click_id: str | None
    created_at: float

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "email": self.email, "avatar": self.avatar,
                "externalId": self.external_id}


@dataclass(frozen=True)
class Lead:
    """A lead event the API recorded (counted); a sale finds it from `visible_at` on."""

    customer_id: str
    external_id: str
    event_name: str
    click_id: str
    mode: str
    quantity: int
    metadata: dict[str, Any] | None
    at: float
    visible_at: float


@dataclass(frozen=True)
class Sale:
    """A sale event the API recorded (counted), in the answer's units (USD cents once converted)."""

    customer_id: str
    external_id: str
    event_name: str
    amount: int
    currency: str
    payment_processor: str
    invoice_id: str | None
    metadata: dict[str, Any] | None
    at: float
    direct: bool


@dataclass
class Commission:
    """A partner's sale commission; exists (is listed) from `created_at` on."""

    id: str
    invoice_id: str | None
    customer: Customer
    amount: int
    earnings: int
    currency: str
    created_at: float
    updated_at: float
    status: str = "pending"
    payout_id: str | None = None
    payout_status: str | None = None
    """The status of the payout holding it (`pending`, `processing`, `completed`, ...): a test sets
    `payout_id` and this to play the program owner paying out."""
    type: str = "sale"
    metadata: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        """CommissionEnrichedSchema (no `payoutId`: the API does not show it)."""
        return {"id": self.id, "type": self.type, "amount": self.amount, "earnings": self.earnings,
                "currency": self.currency, "status": self.status, "invoiceId": self.invoice_id,
                "description": None, "quantity": 1, "userId": None, "metadata": self.metadata,
                "createdAt": iso_time(self.created_at), "updatedAt": iso_time(self.updated_at),
                "paidAt": iso_time(self.updated_at) if self.status == "paid" else None,
                "partner": {"id": "pn_local", "name": "Local Partner", "email": "partner@example.com", "image": None,
                            "payoutsEnabledAt": None, "country": None, "groupId": None},
                "customer": {**self.customer.json(), "createdAt": iso_time(self.customer.created_at)}}


@dataclass
class Workspace:
    """Everything one workspace (one API key) has recorded."""

    customers: dict[str, Customer] = field(default_factory=dict)
    lead_keys: dict[str, float] = field(default_factory=dict)  # dedup key → expiry
    leads: list[Lead] = field(default_factory=list)
    sales: list[Sale] = field(default_factory=list)
    invoices: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)  # → (expiry, answer)
    commissions: list[Commission] = field(default_factory=list)


def _random_name(seed: str) -> str:
    """generateRandomName ("Big Red Caribou"), stable per customer here."""
    h = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    return " ".join(words[h >> (4 * i) & 3] for i, words in enumerate(_NAMES))


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


@dataclass
class DubModel:
    """The API's behaviour and settings; `TrackingReceiver` serves it over HTTP.

    `lead_visibility_delay_s`: how long an `async` lead stays invisible to sales (Tinybird lag);
    `program`: the workspace has a partner program (else commissions answer 404 "Program not
    found"); `partner_clicks`: the clicks on partner links (None = all); `commission_delay_s`:
    how long after a counted sale its commission appears; `commission_rate`: earnings per sale
    amount; `usd_rates`: USD cents per unit of other currencies (a currency without a rate is
    kept as sent); `clock`: the time source (tests may move it)."""

    known_clicks: set[str] | None = None
    lead_visibility_delay_s: float = 1.0
    program: bool = False
    partner_clicks: set[str] | None = None
    commission_delay_s: float = 2.0
    commission_rate: float = 0.1
    usd_rates: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    workspaces: dict[str, Workspace] = field(default_factory=dict, repr=False)

    def workspace(self, key: str) -> Workspace:
        return self.workspaces.setdefault(key, Workspace())

    def _click_known(self, click_id: str) -> bool:
        return self.known_clicks is None or click_id in self.known_clicks

    def _partner(self, click_id: str | None) -> bool:
        return self.program and click_id is not None \
            and (self.partner_clicks is None or click_id in self.partner_clicks)

    def _link(self, click_id: str) -> dict[str, Any]:
        key = hashlib.sha256(click_id.encode()).hexdigest()[:7]
        partner = self._partner(click_id)
        return {"id": f"link_{key}", "domain": "dub.sh", "key": key, "shortLink": f"https://dub.sh/{key}",
                "url": "https://example.com/", "partnerId": "pn_local" if partner else None,
                "programId": "prog_local" if partner else None, "tenantId": None, "externalId": None}

    def _new_customer(self, ws: Workspace, b: dict[str, Any], click_id: str, now: float) -> Customer:
        ext = b["customerExternalId"]
        c = Customer(_id("cus_"), ext, b["customerName"] or b["customerEmail"] or _random_name(ext),
                     b["customerEmail"], b["customerAvatar"], click_id, now)
        ws.customers[c.external_id] = c
        return c

    def track_lead(self, ws: Workspace, body: Any) -> dict[str, Any]:
        """POST /track/lead, as apps/web/lib/api/conversions/track-lead.ts (newest) does it."""
        b, now = parse(LEAD, body), self.clock()
        ext, name, mode, click = b["customerExternalId"], b["eventName"], b["mode"], b["clickId"]
        customer = ws.customers.get(ext)
        if not click:  # deferred lead tracking: the click the customer already has
            if customer is None or not customer.click_id:
                raise DubError("bad_request", "The `clickId` property was not provided in the request, and no existing "
                                              "customer with the provided `customerExternalId` was found.")
            click = customer.click_id
        duplicate = False
        if mode != "deferred":  # the dedup key is set before the click is looked up
            key = f"{ext}:{name.lower().replace(' ', '-')}"
            duplicate = ws.lead_keys.get(key, 0.0) > now
            if not duplicate:
                ws.lead_keys[key] = now + WEEK_S
        link = None
        if not duplicate:
            if not self._click_known(click):
                raise DubError("not_found", f"Click event not found for clickId: {click}")
            link = self._link(click)
            customer = customer or self._new_customer(ws, b, click, now)
            if mode != "deferred":
                visible = now if mode == "wait" else now + self.lead_visibility_delay_s
                ws.leads.append(Lead(customer.id, ext, name, click, mode, int(b["eventQuantity"] or 1),
                                     b["metadata"], now, visible))
        shown = {k: v for k, v in customer.json().items() if k != "id"} if customer else {
            "name": b["customerName"] or b["customerEmail"] or _random_name(ext), "email": b["customerEmail"],
            "avatar": b["customerAvatar"], "externalId": ext}
        return {"click": {"id": click}, "link": link, "customer": shown}

    def _lead_of(self, ws: Workspace, customer: Customer, lead_event_name: str | None, now: float) -> Lead | None:
        for lead in reversed(ws.leads):
            if lead.customer_id == customer.id and lead.visible_at <= now \
                    and (lead_event_name is None or lead.event_name == lead_event_name):
                return lead
        return None

    def _to_usd(self, amount: float, currency: str) -> tuple[int, str]:
        rate = self.usd_rates.get(currency)
        return (int(amount), currency) if currency == "usd" or rate is None else (js_round(amount * rate), "usd")

    def track_sale(self, ws: Workspace, body: Any) -> dict[str, Any]:
        """POST /track/sale, as apps/web/lib/api/conversions/track-sale.ts does it."""
        b, now = parse(SALE, body), self.clock()
        invoice, ext = b["invoiceId"], b["customerExternalId"]
        nothing = {"eventName": b["eventName"], "customer": None, "sale": None}
        if invoice and invoice in ws.invoices and ws.invoices[invoice][0] > now:
            return ws.invoices[invoice][1]  # the answer cached for this invoice (7 days)
        customer, direct = ws.customers.get(ext), False
        if customer is not None:
            if self._lead_of(ws, customer, b["leadEventName"], now) is None:
                lead_name = "null" if b["leadEventName"] is None else b["leadEventName"]
                raise DubError("not_found",
                               f"Lead event not found for externalId: {ext} and leadEventName: {lead_name}")
        else:  # direct sale tracking
            click = b["clickId"]
            if not click:
                return nothing
            if not self._click_known(click):
                raise DubError("not_found", f"Click event not found for clickId: {click}")
            customer, direct = self._new_customer(ws, b, click, now), True
            lead_name = "Sign up" if b["leadEventName"] is None else b["leadEventName"]
            ws.leads.append(Lead(customer.id, ext, lead_name, click, "async", 1, b["metadata"], now,
                                 now + self.lead_visibility_delay_s))
        if b["amount"] <= 0:
            return nothing  # counted nothing, cached nothing
        amount, currency = self._to_usd(b["amount"], b["currency"])
        answer = {"eventName": b["eventName"], "customer": customer.json(),
                  "sale": {"amount": amount, "currency": currency, "paymentProcessor": b["paymentProcessor"],
                           "invoiceId": invoice, "metadata": b["metadata"]}}
        ws.sales.append(Sale(customer.id, ext, b["eventName"], amount, currency, b["paymentProcessor"], invoice,
                             b["metadata"], now, direct))
        if invoice:
            ws.invoices[invoice] = (now + WEEK_S, answer)
        if self._partner(customer.click_id):
            at = now + self.commission_delay_s
            ws.commissions.append(Commission(_id("cm_"), invoice, customer, amount,
                                             js_round(amount * self.commission_rate), currency, at, at,
                                             metadata=b["metadata"]))
        return answer

    def _existing(self, ws: Workspace) -> list[Commission]:
        if not self.program:  # getDefaultProgramIdOrThrow
            raise DubError("not_found", "Program not found")
        now = self.clock()
        return [c for c in ws.commissions if c.created_at <= now]

    def list_commissions(self, ws: Workspace, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /commissions (apps/web/app/(ee)/api/commissions/route.ts): a JSON array."""
        rows = self._existing(ws)
        status, order = query.get("status"), query.get("sortOrder", "desc")
        for name, value, allowed in (("status", status, COMMISSION_STATUSES), ("sortOrder", order, ("asc", "desc")),
                                     ("sortBy", query.get("sortBy", "createdAt"), ("createdAt", "amount"))):
            if value is not None:
                F("enum", values=allowed).check(name, value)
        page, size = query_int(query, "page", 1, None), query_int(query, "pageSize", 100, 100)
        if query.get("invoiceId"):  # only {invoiceId, programId}: at most one commission
            rows = [c for c in rows if c.invoice_id == query["invoiceId"]]
        else:
            rows = [c for c in rows if c.earnings != 0 and status in (None, c.status)
                    and query.get("customerId") in (None, c.customer.id)
                    and query.get("payoutId") in (None, c.payout_id)]
        key = "amount" if query.get("sortBy") == "amount" else "created_at"
        rows.sort(key=lambda c: getattr(c, key), reverse=order == "desc")
        return [c.json() for c in rows[(page - 1) * size: page * size]]

    def update_commission(self, ws: Workspace, commission_id: str, body: Any) -> dict[str, Any]:
        """PATCH /commissions/{id}, as apps/web/lib/api/commissions/update-partner-commission.ts (newest
        stored version, 079dda7: payout lock, `!== undefined` amounts, earnings override)."""
        existing = self._existing(ws)
        b = parse(UPDATE_COMMISSION, body)
        c = next((c for c in existing if c.id == commission_id), None)
        if c is None:
            raise DubError("not_found", f"Commission {commission_id} not found.")
        if c.status == "paid":
            raise DubError("bad_request",
                           f"Cannot update commission: Commission {commission_id} has already been paid.")
        if c.payout_id is not None and c.payout_status is not None and c.payout_status not in MUTABLE_PAYOUT_STATUSES:
            raise DubError("bad_request", f"Cannot update commission: Its payout is already {c.payout_status}.")
        status = b["status"]
        if status and status == c.status:
            raise DubError("bad_request", f"This commission is already in the {status} status.")
        absolute = b["saleAmount"] if b["saleAmount"] is not None else b["amount"]
        relative = b["modifySaleAmount"] if b["modifySaleAmount"] is not None else b["modifyAmount"]
        final_amount = final_earnings = None
        if absolute is not None or relative is not None:  # `!== undefined`: a saleAmount of 0 counts
            if c.type != "sale":
                raise DubError("bad_request", f"Cannot update sale amount: Commission {commission_id} is not a sale "
                                              "commission.")
            if b["currency"] != "usd":  # converted to USD like the sale was
                if relative is not None:
                    relative = self._to_usd(relative, b["currency"])[0]
                else:
                    absolute = self._to_usd(absolute, b["currency"])[0]
            final_amount = max(c.amount + relative if relative is not None else absolute, 0)
            final_earnings = js_round(final_amount * self.commission_rate)
        if b["earnings"] is not None:  # overrides the earnings computed from the sale amount
            final_earnings = b["earnings"]
        refunded = final_amount == 0 or final_earnings == 0
        final_status = status or ("refunded" if refunded else None)
        if not refunded:
            if final_amount is not None:
                c.amount = int(final_amount)
            if final_earnings is not None:
                c.earnings = int(final_earnings)
        if final_status:
            c.status, c.payout_id, c.payout_status = final_status, None, None
        c.updated_at = self.clock()
        return c.json()

