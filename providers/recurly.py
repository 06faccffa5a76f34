"""Recurly: JSON webhooks signed with `recurly-signature: <ms timestamp>,<hex>[,<hex>...]`.

Recurly signs `{timestamp}.{body}` with HMAC-SHA256 under the endpoint's secret key (Webhook
Endpoints page), hex; during a key rotation the header lists one signature per key. The
timestamp is Unix *milliseconds* and is checked against the source's `tolerance_s` (Recurly's
client libraries default to five minutes). Only JSON endpoints are signed; XML endpoints are not
(docs.recurly.com, "Signature verification"), so point hooktrack at a JSON endpoint.

Recurly's JSON webhooks are thin by design ("JSON payloads include only event type, object
context, and identifiers — full resource data must be fetched via the API", docs.recurly.com,
"Webhook payloads: JSON vs. XML"): `object_type`, `event_type`, `id`, `site_id`, `event_time`,
`account_code` and the object's ids. What can be mapped without an API call, and is:

- `account.created` → `Sign up` Lead; the customer is Recurly's `account_code`, the merchant's own
  code for the account (usually its user id).
- `charge_invoice.paid` is tracked but raises `Ignore("amount_not_in_payload")`: the JSON body has
  no amount, currency or origin, so no Sale (and no creation/renewal name) can be built from it.
  Counting Recurly sales needs an API lookup (`GET /invoices/{id}`), which `map` may not do (SPEC §8).

The delivery id is `{object_type}.{event_type}:{id}`: Recurly's `id` names the object, so the
event type keeps `account.created` and a later `account.updated` of one account apart, while a
redelivery of one notification is a duplicate. Invoice numbers are account-scoped
(`invoice_ids = "account"`, like Gumroad's); Recurly sites have a sandbox mode but the JSON body
carries no live/test flag, so `livemode` is None (use one source per site).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, ProviderEvent
from adapter.payload import compact, ident, iso_time, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import TimestampedHmac

__all__ = ["RecurlyProvider"]


class RecurlyProvider(SamplesMixin, Provider):
    """Recurly JSON webhooks: `recurly-signature` = ms timestamp then hex HMAC-SHA256(s) of
    `{timestamp}.{body}`; `account.created` → Lead, `charge_invoice.paid` ignored (ids only)."""

    name = "recurly"
    scheme = TimestampedHmac(header="recurly-signature", ts=None, sig=None, signed="{ts}.{body}",
                             separator=",", unit="ms")
    invoice_ids: ClassVar[str] = "account"
    """Recurly invoice numbers count per site and are shown per account: not globally unique."""

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        data["id"] = f"{data.get('id', 'sample')}_{unique}"
        data["event_time"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")

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

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead]:
        """`account.created` → Lead; `charge_invoice.paid` → `Ignore("amount_not_in_payload")`."""
        data = event.data
        if event.type == "account.created":
            code = text(data.get("account_code")) or ident(data.get("id"))
            if code is None:
                raise PayloadError("account.created without `account_code`")
            return [Lead(kind="sign_up", provider_customer_id=code,
                         metadata=compact(siteId=text(data.get("site_id")), accountId=ident(data.get("id"))))]
        if event.type == "charge_invoice.paid":
            raise Ignore("amount_not_in_payload")
        return []
