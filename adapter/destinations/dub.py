"""Dub's conversion tracking API: `POST /track/lead`, `POST /track/sale` (SPEC §1, §7), and its
commissions API for refunds (SPEC §9): `GET /commissions?invoiceId=`, `PATCH /commissions/{id}`.

The rules come from Dub's request schemas (`apps/web/lib/zod/schemas/leads.ts`, `sales.ts`,
`commissions.ts`) and route handlers (`apps/web/lib/api/conversions/track-lead.ts`, `track-sale.ts`,
`apps/web/lib/api/commissions/update-partner-commission.ts`); docs/dub-api.md lists them with their
sources. Where a handler is laxer than its schema, the schema is kept.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any, ClassVar
from urllib.parse import quote

from adapter.destinations import Answer, Destination, Problem, Request, Verdict, parse_reset
from adapter.money import exponent
from adapter.records import Conversion

__all__ = ["DUB_ZERO_DECIMAL", "PAYMENT_PROCESSORS", "DubDestination", "dub_amount", "utf16_len"]

DUB_ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
                              "vnd", "vuv", "xaf", "xof", "xpf"})
"""The currencies Dub reads in whole units; every other one is read in hundredths."""
PAYMENT_PROCESSORS = frozenset({"stripe", "shopify", "polar", "paddle", "apple", "revenuecat", "dub", "custom"})
_PROCESSORS = ", ".join(sorted(PAYMENT_PROCESSORS))
_PROCESSOR_OF = {"stripe": "stripe", "shopify": "shopify", "polar": "polar", "paddle": "paddle",
                 "paddle_classic": "paddle", "revenuecat": "revenuecat", "appstore": "apple"}
MAX_ID = 100
MAX_NAME = 100
MAX_EMAIL = 100
MAX_EVENT_NAME = 255
MAX_METADATA = 10_000
SETTLED_STATUSES = frozenset({"duplicate", "fraud", "canceled"})
"""Commission statuses that earn nothing already: a refund has nothing left to take back."""
# zod's `z.string().email()` pattern (zod 3.22+, the version Dub's schemas use), case-insensitive.
EMAIL = re.compile(r"^(?!\.)(?!.*\.\.)([A-Z0-9_'+\-\.]*)[A-Z0-9_+-]@([A-Z0-9][A-Z0-9\-]*\.)+[A-Z]{2,}$", re.I)


def utf16_len(text: str) -> int:
    """A string's length as JavaScript counts it (UTF-16 code units), as the API's limits do."""
    if text.isascii():  # the common case, without encoding a copy
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-16 code units, never inside a surrogate pair."""
    out, used = [], 0
    for ch in text:
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > limit:
            break
        out.append(ch)
        used += width
    return "".join(out)


def _json_len(value: Any) -> int:
    """`JSON.stringify(value).length`: compact JSON, non-ASCII kept, counted in UTF-16 units."""
    return utf16_len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def dub_amount(amount: int, currency: str) -> tuple[int, str | None]:
    """ISO 4217 minor units → Dub's unit (whole units for its zero-decimal list, else
    hundredths), with the exact major-unit amount as a decimal string when it had to round
    (half to even): KWD 15005 fils → (1500, "15.005")."""
    iso = exponent(currency)
    dub = 0 if currency in DUB_ZERO_DECIMAL else 2
    if iso == dub:  # most currencies (USD, EUR, JPY): Dub's unit is the ISO minor unit
        return amount, None
    scaled = Decimal(amount).scaleb(dub - iso)
    whole = scaled.to_integral_value(rounding=ROUND_HALF_EVEN)
    if whole == scaled:
        return int(whole), None
    return int(whole), str(Decimal(amount).scaleb(-iso))


def _processor(c: Conversion) -> str:
    """The source's `payment_processor`, else the provider's own name where Dub knows it."""
    return c.payment_processor or _PROCESSOR_OF.get(c.provider, "custom")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class DubDestination(Destination):
    """Dub's conversion tracking API: /track/lead, /track/sale."""

    name = "dub"
    key_prefix: ClassVar[str | None] = "dub_"
    rate_window_s: ClassVar[float] = 60.0
    """Dub limits each API key per minute (trial 120, Pro 600, Business 1,200, Advanced 3,000)."""

    def validate_source(self, source: str, settings: Any) -> list[str]:
        chosen = getattr(settings, "payment_processor", None)
        if chosen is not None and chosen not in PAYMENT_PROCESSORS:
            return [f"sources.{source}.payment_processor: Dub accepts only {_PROCESSORS}"]
        return []

    # -- check -------------------------------------------------------------------------

    def check(self, conversion: Conversion) -> list[Problem]:
        """What Dub would refuse (422) in `conversion`, and what can be mended."""
        c = conversion
        if c.kind == "refund":  # the commission is found by the Sale's invoiceId; nothing else is sent
            return [] if c.invoice_id else [
                Problem("invoice_id", "invoiceId is required (a refund finds its commission by it)", "skip")]
        problems: list[Problem] = []
        external = (c.customer_external_id or "").strip()
        if not external:
            problems.append(Problem("customer_external_id", "customerExternalId is required", "skip"))
        elif utf16_len(external) > MAX_ID:
            problems.append(Problem("customer_external_id", f"customerExternalId is at most {MAX_ID} characters",
                                    "skip"))
        event_name = c.event_name.strip() if c.kind == "lead" else c.event_name
        if not event_name or utf16_len(event_name) > MAX_EVENT_NAME:
            problems.append(Problem("event_name", f"eventName is 1 to {MAX_EVENT_NAME} characters", "skip"))
        if c.name is not None and utf16_len(c.name) > MAX_NAME:
            problems.append(Problem("name", f"customerName is at most {MAX_NAME} characters", "mend",
                                    _cut(c.name, MAX_NAME)))
        if c.email is not None and (utf16_len(c.email) > MAX_EMAIL or not EMAIL.match(c.email)):
            problems.append(Problem("email", f"customerEmail is a valid address of at most {MAX_EMAIL} characters",
                                    "mend", None))
        if c.kind == "sale":
            problems += self._check_sale(c)
        if c.kind in ("lead", "sale"):
            meta = self._metadata(c)
            if _json_len(meta) > MAX_METADATA:
                problems.append(Problem("metadata", f"metadata is at most {MAX_METADATA:,} characters as JSON", "mend",
                                        self._fit_metadata(c)))
        return problems

    def _check_sale(self, c: Conversion) -> list[Problem]:
        problems = []
        if c.amount is None or isinstance(c.amount, bool) or c.amount < 0:
            problems.append(Problem("amount", "amount is an integer of at least 0", "skip"))
        if not c.currency or not re.fullmatch(r"[a-z]{3}", c.currency):
            problems.append(Problem("currency", "currency is a lowercase ISO 4217 code", "skip"))
        if not c.invoice_id:
            problems.append(Problem("invoice_id", "invoiceId is required (hooktrack dedups sales by it)", "skip"))
        if _processor(c) not in PAYMENT_PROCESSORS:
            problems.append(Problem("payment_processor", f"paymentProcessor is one of {_PROCESSORS}", "skip"))
        return problems

    def _fit_metadata(self, c: Conversion) -> dict[str, Any]:
        """The provider details that fit beside hooktrack's own keys, dropping the last first."""
        kept = dict(c.metadata)
        while kept and _json_len(self._metadata(c.but(metadata=kept))) > MAX_METADATA:
            kept.popitem()
        return kept

    # -- render ------------------------------------------------------------------------

    def render(self, conversion: Conversion) -> Request:
        """The body of `/track/lead` or `/track/sale` in Dub's units, with its headers."""
        c = conversion
        if c.kind == "refund":  # every attempt starts by reading the commission again
            return self.find_commission(c)
        headers = {"Authorization": f"Bearer {self.settings.api_key}", "Content-Type": "application/json",
                   "Idempotency-Key": self.idempotency_key(c)}
        body: dict[str, Any] = {}
        if c.kind == "lead":
            body["clickId"] = c.click_id or ""
            body["eventName"] = c.event_name.strip()
            body["customerExternalId"] = (c.customer_external_id or "").strip()
        else:
            assert c.amount is not None and c.currency is not None
            amount, _ = dub_amount(c.amount, c.currency)
            body.update(customerExternalId=(c.customer_external_id or "").strip(), amount=amount,
                        currency=c.currency, eventName=c.event_name, invoiceId=self.invoice_id(c),
                        paymentProcessor=_processor(c))
            if c.click_id:
                body["clickId"] = c.click_id
        if c.name:
            body["customerName"] = c.name
        if c.email:
            body["customerEmail"] = c.email
        if c.kind == "lead":
            body["mode"] = "wait"  # recorded at once: a Sale sent right after finds it
        body["timestamp"] = _iso(c.occurred_at)
        body["metadata"] = self._metadata(c)
        return Request("POST", f"/track/{c.kind}", headers, body)

    @staticmethod
    def invoice_id(c: Conversion) -> str:
        """Dub dedups invoices across the whole workspace: ids unique only within one account
        are qualified by the source."""
        return c.invoice_id or "" if c.invoice_unique else f"{c.source}:{c.invoice_id}"

    def find_commission(self, c: Conversion) -> Request:
        """`GET /commissions?invoiceId=`: the Sale's commission (at most one per invoice and program),
        by the invoiceId exactly as the Sale sent it."""
        return Request("GET", f"/commissions?invoiceId={quote(self.invoice_id(c), safe='')}",
                       {"Authorization": f"Bearer {self.settings.api_key}"}, None, step="find_commission")

    def update_commission(self, c: Conversion, commission_id: str, body: dict[str, Any]) -> Request:
        headers = {"Authorization": f"Bearer {self.settings.api_key}", "Content-Type": "application/json",
                   "Idempotency-Key": self.idempotency_key(c)}
        return Request("PATCH", f"/commissions/{quote(commission_id, safe='')}", headers, body,
                       step="update_commission")

    def idempotency_key(self, c: Conversion) -> str:
        """The same on every retry (Dub ignores it; other APIs honour it)."""
        if c.kind == "refund":
            return f"refund:{c.source}:{self.invoice_id(c)}:{c.refund_id or c.refunded}"
        if c.kind == "sale":
            return f"sale:{c.source}:{self.invoice_id(c)}"
        return f"lead:{c.source}:{(c.customer_external_id or '').strip()}:{c.event_name.strip()}"

    def _metadata(self, c: Conversion) -> dict[str, Any]:
        meta: dict[str, Any] = {"provider": c.provider, "source": c.source}
        if c.provider_event_id:
            meta["providerEventId"] = c.provider_event_id
        if c.provider_event_type:
            meta["providerEventType"] = c.provider_event_type
        if c.provider_customer_id:
            meta["providerCustomerId"] = c.provider_customer_id
        if c.subscription_id:
            meta["subscriptionId"] = c.subscription_id
        if c.kind == "sale":
            if c.tax:
                meta["tax"] = c.tax
            if c.amount is not None and c.currency:
                exact = dub_amount(c.amount, c.currency)[1]
                if exact is not None:
                    meta["exactAmount"] = exact
        meta.update({k: v for k, v in c.metadata.items() if k not in meta})
        meta["occurredAt"] = _iso(c.occurred_at)
        if c.livemode is not None:
            meta["livemode"] = c.livemode
        return meta

    # -- classify ----------------------------------------------------------------------

    def classify(self, conversion: Conversion, request: Request, answer: Answer) -> Verdict:
        """SPEC §7, line by line."""
        status, kind = answer.status, conversion.kind
        body = answer.json()
        message = _message(body).lower()
        if kind == "refund":
            return self._classify_refund(conversion, request, answer, body, message)
        if 200 <= status < 300:
            if kind == "sale":
                if isinstance(body, dict) and "sale" in body and body["sale"] is None:
                    return Verdict.not_counted("customer_not_found")
                return Verdict.delivered()
            if isinstance(body, dict) and "link" in body and body["link"] is None:
                return Verdict.delivered("duplicate_at_api")
            return Verdict.delivered()
        if status in (401, 403):
            return Verdict.pause(f"http_{status}: {_message(body) or 'refused the API key'}"[:200])
        if status == 404:
            if "workspace" in message:
                return Verdict.pause(f"http_404: {_message(body)}"[:200])
            for phrase, reason in (("lead event not found", "lead_not_found"),
                                   ("click event not found", "click_not_found")):
                if phrase in message:
                    return Verdict.unattributed(reason) if kind == "lead" else Verdict.not_counted(reason)
            return Verdict.dead("http_404")
        if status == 400 and kind == "lead" and request.body is not None and request.body.get("clickId") == "":
            return Verdict.unattributed("no_click_id")
        if status == 429:
            return Verdict.rate_limited(_wait_s(answer))
        return self._common(answer, body)

    def _common(self, answer: Answer, body: Any) -> Verdict:
        """What any request's answer means beyond its own endpoint: a refused key, the rate
        limit, a transient failure, or a refusal kept for replay."""
        status = answer.status
        if status in (401, 403):
            return Verdict.pause(f"http_{status}: {_message(body) or 'refused the API key'}"[:200])
        if status == 404 and "workspace" in _message(body).lower():
            return Verdict.pause(f"http_404: {_message(body)}"[:200])
        if status == 429:
            return Verdict.rate_limited(_wait_s(answer))
        if status in (408, 425) or status >= 500:
            return Verdict.retry(f"http_{status}")
        return Verdict.dead(f"http_{status}")

    # -- refunds (SPEC §9) ---------------------------------------------------------------

    def _classify_refund(self, c: Conversion, request: Request, answer: Answer, body: Any,
                         message: str) -> Verdict:
        status = answer.status
        if status == 404 and "program not found" in message:  # getDefaultProgramIdOrThrow
            return Verdict.unattributed("no_program")
        if request.step == "update_commission":
            if 200 <= status < 300:
                return Verdict.delivered()
            if status == 400 and ("already been paid" in message or "its payout is already" in message):
                return Verdict.unattributed("commission_paid")
            if status == 400 and "already in the refunded status" in message:  # refunded since it was read
                return Verdict.delivered("already_refunded")
            if status == 404 and "commission" in message:  # deleted since it was read: read again
                return Verdict.not_counted("no_commission")
            return self._common(answer, body)
        if not 200 <= status < 300:
            return self._common(answer, body)
        if not isinstance(body, list):
            return Verdict.dead(f"http_{status}: not a list of commissions")
        if not body:  # created seconds after the sale, or never (no partner on the link)
            return Verdict.not_counted("no_commission")
        row = body[0]
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            return Verdict.dead(f"http_{status}: a commission without an id")
        amount = row.get("amount")
        memo = {"commission_id": row["id"]}
        if isinstance(amount, int) and not isinstance(amount, bool):
            memo["commission_sale_amount"] = amount
        state = row.get("status")
        if state == "paid":
            return Verdict("unattributed", reason="commission_paid", memo=memo)
        if state == "refunded":
            return Verdict("delivered", note="already_refunded", memo=memo)
        if state in SETTLED_STATUSES:
            return Verdict("delivered", note=f"commission_{state}", memo=memo)
        change = self.commission_change(c, {**memo, **c.memo})
        if change is None:
            return Verdict("dead", reason="refund_without_totals", memo=memo)
        if change.get("saleAmount") == amount:  # a retried PATCH that had already arrived
            return Verdict("delivered", note="already_applied", memo=memo)
        return Verdict("follow", next=self.update_commission(c, row["id"], change), memo=memo)

    @staticmethod
    def commission_change(c: Conversion, memo: dict[str, Any]) -> dict[str, Any] | None:
        """The PATCH body: `{"status": "refunded"}` for a whole Sale or a chargeback; otherwise the
        absolute `{"saleAmount": N, "currency": "usd"}`, N = the commission's sale amount as first
        read (`memo`, USD cents) scaled by what remains of the Sale, half to even. Never the
        relative `modifySaleAmount`: a retried request would apply it twice. None when the
        refund lacks the totals to compute it."""
        if c.chargeback:
            return {"status": "refunded"}
        if c.sale_amount is None or c.refunded is None:
            return {"status": "refunded"} if c.amount is None else None
        if c.sale_amount <= 0 or c.refunded >= c.sale_amount:
            return {"status": "refunded"}
        first = memo.get("commission_sale_amount")
        if not isinstance(first, int) or isinstance(first, bool):
            return None
        remaining = round(Fraction(first * (c.sale_amount - max(c.refunded, 0)), c.sale_amount))
        if remaining <= 0:  # nothing left to earn on: Dub marks a 0 sale amount refunded anyway
            return {"status": "refunded"}
        return {"saleAmount": remaining, "currency": "usd"}


def _wait_s(answer: Answer) -> float | None:
    """How long a 429 says to wait: `Retry-After`, else `X-RateLimit-Reset` (Dub sends both as a
    Unix time in milliseconds); None when neither makes sense, so the forwarder backs off."""
    for header in ("retry-after", "x-ratelimit-reset"):
        moment = parse_reset(answer.headers.get(header), answer.at_ms)
        if moment is not None and moment > answer.at_ms:
            return (moment - answer.at_ms) / 1000
    return None


def _message(body: Any) -> str:
    """The error message of Dub's error shape `{"error": {"code", "message", "doc_url"}}`."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return ""
