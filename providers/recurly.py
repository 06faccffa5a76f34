"""Recurly: JSON webhooks signed with `recurly-signature: <ms timestamp>,<hex>[,<hex>...]`.

Recurly signs `{timestamp}.{body}` with HMAC-SHA256 under the endpoint's secret key (Webhook
Endpoints page), hex; during a key rotation the header lists one signature per key. The
timestamp is Unix *milliseconds* and is checked against the source's `tolerance_s` (Recurly's
client libraries default to five minutes). Only JSON endpoints are signed; XML endpoints are not
(docs.recurly.com, "Signature verification"), so point hooktrack at a JSON endpoint.

Recurly's JSON webhooks are thin by design ("JSON payloads include only event type, object
context, and identifiers — full resource data must be fetched via the API", docs.recurly.com,
"Webhook payloads: JSON vs. XML"): `id` (the object's API id), `object_type`, `event_type`,
`site_id`, `event_time`, and `account_code` (account events) or the object's `uuid` (the others).

- `account.created` → `Sign up` Lead; the customer is Recurly's `account_code`, the merchant's own
  code for the account (usually its user id).
- `charge_invoice.paid` → Sale, when the source has an `api_key`: `fetch` reads the invoice
  (`GET {api}/invoices/{id}`, API v3, HTTP Basic with the key as user) and folds what `map` needs
  of it into the stored body under `hooktrack_invoice`, so `map` stays pure and `hooktrack
  reprocess` maps it again without a second call (one stored without it, received before the
  `api_key` was set or `invoice_not_found`, is looked up then). The amount is `total - tax` (after discounts,
  decimals as Recurly sends them), the customer the invoice's `account.code` (its `email` too);
  `origin` says creation or renewal (SPEC §8): `purchase` starts the subscription, `renewal` is a
  cycle, `immediate_change` a proration (`Subscription update`); a $0 purchase is a trial
  (`zero_amount`, its first renewal is then the creation). Without an `api_key` it is
  `Ignore("amount_not_in_payload")`. The key goes only to Recurly's API hosts (`API_HOSTS`),
  over HTTPS; an API that cannot answer now (down, 5xx, 429, a timeout, a refused key) is a 503
  (`VerifierUnavailable`) so Recurly retries, and a 404 for the invoice is `invoice_not_found`.
  The lookups of a source share one `httpx.Client` (`close()` closes it; the core has no
  shutdown hook for providers yet), and the core skips `fetch` for a redelivery it has stored.
- `credit_invoice.created` of a refund (`origin` `refund`, `line_item_refund`, `open_amount_refund`,
  `external_refund`, `termination`) → Refund of the
  charge invoice its credit lines came from (`original_line_item_invoice_id`, or the older
  `previous_invoice_id`), by the credit's total (tax included), once per credit invoice. An
  invoice carries its first lines only; when `has_more_line_items` is true ("a request needs to
  be made to the `list_invoice_line_items` endpoint", Recurly's OpenAPI) `fetch` reads
  `GET /invoices/{id}/line_items?limit=200` and follows the list's `next` (a path, with the
  `cursor`) while `has_more` (Recurly's pagination guide), at most `MAX_LINE_PAGES` pages and
  only on the API host; a list cut short is stored as `line_items_complete: false` and mapped
  from what was read. Paid charge invoices are not paged: the Sale reads no line.

The delivery id is `{object_type}.{event_type}:{id}`: Recurly's `id` names the object, so the
event type keeps `account.created` and a later `account.updated` of one account apart, while a
redelivery of one notification is a duplicate. A Sale's invoice id is the invoice's API `id`,
unique across Recurly (not its site-scoped `number`, kept as metadata). Recurly sites have a
sandbox mode but the JSON body carries no live/test flag, so `livemode` is None (use one source
per site).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapter.errors import Ignore, PayloadError, VerifierUnavailable
from adapter.events import Lead, Mapped, ProviderEvent, Refund, Sale, SaleKind
from adapter.payload import compact, decimal, ident, iso_time, json_object, json_value, major_amount, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import TimestampedHmac
from adapter.text import body_text

__all__ = ["ACCEPT", "API_HOSTS", "INVOICE_KEY", "RecurlyProvider", "RecurlySettings"]

API_HOSTS = {"us": "v3.recurly.com", "eu": "v3.eu.recurly.com"}
"""Recurly's API v3 hosts by region: the only hosts the `api_key` is ever sent to."""
ACCEPT = "application/vnd.recurly.v2021-02-25+json"
"""The API version hooktrack reads (Recurly's current v3 version, v2021-02-25)."""
INVOICE_KEY = "hooktrack_invoice"
"""Where `fetch` puts the looked-up invoice in the stored body (not a Recurly field)."""
_SPLICE = f', "{INVOICE_KEY}": '
TIMEOUT_S = 3.0
"""Recurly waits 5 s for an answer; the whole lookup (invoice and line item pages) gets 3 s,
leaving room for the store's commit."""
LINE_PAGE_SIZE = 200
"""Line items asked for per page (`limit`, Recurly's maximum)."""
MAX_LINE_PAGES = 10
"""At most this many line item pages per credit invoice, so an API answer that keeps saying
`has_more` cannot hold a webhook forever (2,000 lines)."""
_LOOKED_UP = frozenset({"charge_invoice.paid", "credit_invoice.created"})
_REFUND_ORIGINS = frozenset({"refund", "line_item_refund", "open_amount_refund", "external_refund", "termination"})
_INVOICE_FIELDS = ("id", "number", "type", "origin", "state", "currency", "subtotal", "discount", "tax",
                   "total", "subscription_ids", "previous_invoice_id", "created_at", "closed_at")
_ACCOUNT_FIELDS = ("id", "code", "email", "first_name", "last_name", "company")
_LINE_FIELDS = ("type", "subscription_id", "original_line_item_invoice_id")


def api_base_allowed(url: str) -> bool:
    """`https://` one of `API_HOSTS` on the default port, nothing but an optional `/` after it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and (parts.hostname or "") in API_HOSTS.values() and port in (None, 443)
            and not parts.username and not parts.password and parts.path in ("", "/")
            and not parts.query and not parts.fragment)


class RecurlySettings(BaseModel):
    """`api_key` (optional): a private API key, to read paid invoices (without it no Sale can be
    built); `region` `us` (default) or `eu`; `api_base`: an explicit API base, only
    `https://v3.recurly.com` or `https://v3.eu.recurly.com` (it wins over `region`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = Field(default=None, min_length=1)
    region: Literal["us", "eu"] = "us"
    api_base: str | None = None

    @field_validator("api_base")
    @classmethod
    def _recurly_only(cls, value: str | None) -> str | None:
        if value is not None and not api_base_allowed(value):
            raise ValueError(f"must be https://{API_HOSTS['us']} or https://{API_HOSTS['eu']}: "
                             "the api_key is sent to Recurly's API hosts only")
        return value

    @property
    def base(self) -> str:
        """The API base the lookups go to."""
        return (self.api_base or f"https://{API_HOSTS[self.region]}").rstrip("/")


class RecurlyProvider(SamplesMixin, Provider):
    """Recurly JSON webhooks: `recurly-signature` = ms timestamp then hex HMAC-SHA256(s) of
    `{timestamp}.{body}`; `account.created` → Lead; with an `api_key`, `charge_invoice.paid` →
    Sale and refund credit invoices → Refund (the invoice read from Recurly's API)."""

    name = "recurly"
    scheme = TimestampedHmac(header="recurly-signature", ts=None, sig=None, signed="{ts}.{body}",
                             separator=",", unit="ms")
    settings_model = RecurlySettings

    def __init__(self) -> None:
        self.transport: httpx.BaseTransport | None = None
        """How the API is reached: None for the network (TLS checked); tests inject Recurly's API."""
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def _http(self) -> httpx.Client:
        """The source's one HTTP client (made on first use), so lookups reuse its connections;
        `httpx.Client` may be shared by the worker threads `fetch` runs in."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(transport=self.transport, timeout=TIMEOUT_S, follow_redirects=False)
            return self._client

    def close(self) -> None:
        """Close the HTTP client and its connections (a later lookup opens a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def configure(self, ctx: SourceContext) -> None:
        super().configure(ctx)
        self.fetches = isinstance(ctx.options, RecurlySettings) and ctx.options.api_key is not None

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["id"] = f"{data.get('id', 'sample')}_{unique}"
        data["event_time"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")

    # -- the invoice lookup (runs in a worker thread, after verify) -------------------------

    def fetch(self, body: bytes, ctx: SourceContext) -> bytes:
        """The body with the invoice a `charge_invoice.paid` or `credit_invoice.created` names
        folded in under `hooktrack_invoice` (what `map` reads of it); other bodies unchanged.
        Raises `VerifierUnavailable` when Recurly's API cannot answer now."""
        try:
            data = json_object(body)
        except PayloadError:
            return body  # parse says what is wrong with it
        kind = f"{text(data.get('object_type'))}.{text(data.get('event_type'))}"
        invoice_id = ident(data.get("id"))
        if kind not in _LOOKED_UP or invoice_id is None:
            return body
        kept = data.get(INVOICE_KEY)
        if isinstance(kept, dict) and kept.get("lookup") != "not_found":
            return body  # a stored delivery being reprocessed: its invoice was read when it came
        invoice = self._invoice(invoice_id, kind, ctx.options)
        # Spliced in as text, so the delivery's own bytes stay as Recurly sent them.
        raw = _without_invoice(body_text(body)).rstrip()
        return (raw[:-1] + f"{_SPLICE}{json.dumps(invoice, default=str)}}}").encode()

    def _invoice(self, invoice_id: str, kind: str, options: RecurlySettings) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        path = f"/invoices/{quote(invoice_id, safe='')}"
        found = self._get(options.base + path, options, f"invoice {invoice_id}", deadline)
        if found is None:
            return {"id": invoice_id, "lookup": "not_found"}
        lines = _line_rows(found.get("line_items"))
        complete = True
        # Only a refund's credit lines are read by `map` (which charge invoice they credit); an
        # invoice lists its first lines only, `has_more_line_items` says there are others.
        if (found.get("has_more_line_items") is True and kind == "credit_invoice.created"
                and text(found.get("origin")) in _REFUND_ORIGINS):
            more, complete = self._more_lines(f"{options.base}{path}/line_items?limit={LINE_PAGE_SIZE}",
                                              invoice_id, options, deadline)
            lines = _unique(lines + more)
        kept = _kept(found, lines)
        if not complete:
            kept["line_items_complete"] = False
        return kept

    def _more_lines(self, url: str, invoice_id: str, options: RecurlySettings,
                    deadline: float) -> tuple[list[Any], bool]:
        """Every line of the invoice from `GET /invoices/{id}/line_items`, following the list's
        `next` while `has_more`; and whether the list was read to its end (not when it went
        past `MAX_LINE_PAGES`, repeated a page, or pointed off Recurly's API)."""
        rows: list[Any] = []
        seen: set[str] = set()
        for _ in range(MAX_LINE_PAGES):
            seen.add(url)
            page = self._get(url, options, f"the line items of invoice {invoice_id}", deadline)
            if page is None:  # no such list: what the invoice itself listed is all there is
                return rows, False
            rows.extend(_line_rows(page.get("data")))
            if page.get("has_more") is not True:
                return rows, True
            following = _next_page(page.get("next"), options.base)
            if following is None or following in seen:
                return rows, False
            url = following
        return rows, False

    def _get(self, url: str, options: RecurlySettings, what: str, deadline: float) -> dict[str, Any] | None:
        """One GET of Recurly's API: the JSON object, None for a 404; `VerifierUnavailable` when
        the API cannot answer now (so Recurly retries the webhook)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise VerifierUnavailable(f"Recurly's API did not answer {what} in time; Recurly will retry")
        try:
            response = self._http().get(url, headers={"Accept": ACCEPT}, auth=(options.api_key or "", ""),
                                        timeout=left)
        except Exception as exc:  # network, TLS, timeout, a URL httpx refuses: nothing to store yet
            raise VerifierUnavailable(f"Recurly's API could not be reached for {what} "
                                      f"({type(exc).__name__}); Recurly will retry") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            hint = " (check the source's api_key and region)" if response.status_code in (401, 403) else ""
            raise VerifierUnavailable(f"Recurly's API answered HTTP {response.status_code} for "
                                      f"{what}{hint}; Recurly will retry")
        try:
            found = json_value(response.content)
        except (ValueError, RecursionError):
            found = None
        if not isinstance(found, dict):
            raise VerifierUnavailable(f"Recurly's API answered {what} with no JSON object")
        return found

    # -- parse and map -------------------------------------------------------------------

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The notification as `{object_type}.{event_type}`, by `id` and `event_time`.

        Raises `PayloadError` without `object_type`, `event_type` or `id` (an XML body too).
        """
        data = self.json_body(body)
        object_type, event_type = text(data.get("object_type")), text(data.get("event_type"))
        object_id = ident(data.get("id"))
        if object_type is None or event_type is None or object_id is None:
            raise PayloadError("Recurly webhook without `object_type`, `event_type` and `id` (a JSON endpoint?)")
        kind = f"{object_type}.{event_type}"
        occurred = iso_time(data.get("event_time"))
        return ProviderEvent(id=f"{kind}:{object_id}", type=kind, livemode=None, data=data,
                             occurred_at=occurred or datetime.now(UTC))

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`account.created` → Lead; `charge_invoice.paid` → Sale and a refund's
        `credit_invoice.created` → Refund, from the invoice `fetch` stored with the event
        (`Ignore("amount_not_in_payload")` when there is none: the source has no `api_key`)."""
        data = event.data
        if event.type == "account.created":
            code = text(data.get("account_code")) or ident(data.get("id"))
            if code is None:
                raise PayloadError("account.created without `account_code`")
            return [Lead(kind="sign_up", provider_customer_id=code,
                         metadata=compact(siteId=text(data.get("site_id")), accountId=ident(data.get("id"))))]
        if event.type not in _LOOKED_UP:
            return []
        invoice = data.get(INVOICE_KEY)
        if not isinstance(invoice, dict):
            raise Ignore("amount_not_in_payload")
        if invoice.get("lookup") == "not_found":
            raise Ignore("invoice_not_found")
        if event.type == "charge_invoice.paid":
            return [_sale(invoice, data)]
        return _refund(invoice)


def _without_invoice(raw: str) -> str:
    """A stored body as Recurly sent it: what `fetch` spliced in (an invoice it could not find,
    being looked up again by `reprocess`) cut off. Recurly's own fields come first and hold no
    `hooktrack_invoice` key, so the first splice mark is the one `fetch` wrote."""
    at = raw.find(_SPLICE)
    return raw if at < 0 else raw[:at] + "}"


def _line_rows(lines: Any) -> list[Any]:
    """An invoice's `line_items` (or a line item page's `data`) as a list."""
    if isinstance(lines, dict):  # API versions before v2021-02-25 wrap the list: {"data": [...]}
        lines = lines.get("data")
    return list(lines) if isinstance(lines, list) else []


def _unique(lines: list[Any]) -> list[Any]:
    """Lines once each by their `id` (the invoice's first lines are on the list's first page too)."""
    seen: set[str] = set()
    out = []
    for line in lines:
        line_id = ident(mapping(line).get("id"))
        if line_id is not None:
            if line_id in seen:
                continue
            seen.add(line_id)
        out.append(line)
    return out


def _next_page(found: Any, base: str) -> str | None:
    """The URL of a list's `next` page: Recurly sends a path (`/invoices/…/line_items?cursor=…`);
    a full URL is followed only to the API base itself (the `api_key` goes nowhere else)."""
    if not isinstance(found, str) or not found:
        return None
    if found.startswith("/") and not found.startswith("//"):
        return base + found
    parts, ours = urlsplit(found), urlsplit(base)
    return found if (parts.scheme, parts.netloc) == (ours.scheme, ours.netloc) else None


def _kept(invoice: dict[str, Any], lines: list[Any]) -> dict[str, Any]:
    """What `map` reads of an API invoice, amounts as exact decimal text (never floats)."""
    kept = {k: _plain(invoice[k]) for k in _INVOICE_FIELDS if invoice.get(k) is not None}
    kept["account"] = {k: _plain(v) for k, v in mapping(invoice.get("account")).items() if k in _ACCOUNT_FIELDS}
    kept["line_items"] = [{k: _plain(v) for k, v in mapping(line).items() if k in _LINE_FIELDS and v is not None}
                          for line in lines]
    return kept


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _money(invoice: dict[str, Any], key: str, currency: str, negative: bool = False) -> int:
    """`invoice[key]` (0 when absent) in minor units; `negative` for a credit invoice's amounts."""
    value = decimal(invoice.get(key, 0))
    amount = major_amount(-value if negative and value is not None else value, currency)
    if amount is None:
        raise PayloadError(f"Recurly invoice `{key}` is not an amount in {currency}: {invoice.get(key)!r}")
    return amount


def _sale(invoice: dict[str, Any], data: dict[str, Any]) -> Sale:
    """The paid charge invoice as a Sale: `total - tax`, creation or renewal from `origin`."""
    currency = text(invoice.get("currency"))
    invoice_id = ident(invoice.get("id"))
    if currency is None or invoice_id is None or "total" not in invoice:
        raise PayloadError("Recurly invoice without `id`, `currency` and `total`")
    total = _money(invoice, "total", currency)
    amount = total - _money(invoice, "tax", currency)
    subscriptions = [s for s in (ident(v) for v in invoice.get("subscription_ids") or []) if s]
    subscription = subscriptions[0] if subscriptions else None
    origin = text(invoice.get("origin"))
    if amount <= 0:  # a trial's $0 purchase: its first renewal is the creation
        raise Ignore("zero_amount", trial_of=subscription if origin == "purchase" else None)
    kind: SaleKind = "subscription" if subscription else "purchase"
    starts: bool | None = None
    if subscription and origin == "immediate_change":
        kind = "subscription_update"
    elif subscription and origin in ("purchase", "renewal"):
        starts = origin == "purchase"
    account = mapping(invoice.get("account"))
    name = " ".join(n for n in (text(account.get("first_name")), text(account.get("last_name"))) if n)
    return Sale(kind=kind, amount=amount, gross_amount=total, currency=currency, invoice_id=invoice_id,
                subscription_id=subscription, starts_subscription=starts,
                provider_customer_id=text(account.get("code")) or text(data.get("account_code")),
                email=text(account.get("email")), name=name or None,
                timestamp=iso_time(invoice.get("closed_at")),
                metadata=compact(invoiceNumber=text(invoice.get("number")), origin=origin,
                                 accountId=ident(account.get("id"))))


def _refund(invoice: dict[str, Any]) -> list[Mapped]:
    """A refund's credit invoice as a Refund of the charge invoice it credits (its total, tax
    included, as a positive amount); other credit invoices (one-off credits, downgrades, gift
    cards, write-offs) are `not_a_refund`."""
    if text(invoice.get("origin")) not in _REFUND_ORIGINS:
        raise Ignore("not_a_refund")
    credited = {found for line in invoice.get("line_items") or []
                if isinstance(line, dict) and (found := ident(line.get("original_line_item_invoice_id")))}
    previous = ident(invoice.get("previous_invoice_id"))
    charged = credited or ({previous} if previous else set())
    if len(charged) != 1:  # none named, or one credit for several invoices: no one Sale to scale
        raise Ignore("refund_invoice_unknown")
    currency = text(invoice.get("currency"))
    refund_id = ident(invoice.get("id"))
    if currency is None or refund_id is None:
        raise PayloadError("Recurly credit invoice without `id` and `currency`")
    amount = _money(invoice, "total", currency, negative=True)
    if amount <= 0:
        raise Ignore("zero_amount")
    return [Refund(reverses=(charged.pop(),), amount=amount, currency=currency, includes_tax=True,
                   refund_id=refund_id, timestamp=iso_time(invoice.get("created_at")))]
