"""Braintree: form posts of `bt_signature` and `bt_payload`, checked by Braintree's own SDK.

`bt_payload` is base64 XML; `bt_signature` is `public_key|hex HMAC-SHA1` keyed by the SHA-1 of
the private key (several `&`-joined pairs when the account has several API keys). Verification
is the official `braintree` SDK's `webhook_notification.parse` with a gateway built from the
source settings `merchant_id`, `public_key`, `private_key` and `environment` (`sandbox` or
`production`); its `InvalidSignatureError` is our `invalid_signature`. The SDK is a runtime
dependency of this plugin only: without it, this provider fails to load and the others run.
The scheme has no timestamp to check; delivery dedup stops a replay from counting twice.

Dedup key: `{kind}:{timestamp}:{subject id}` — a notification has no id of its own, and a
retry repeats all three. Sale: `subscription_charged_successfully`, which Braintree also sends
for the first charge and for billing cycles that charge nothing (a trial, a 100% discount):
the Sale is the subscription's newest transaction — `invoiceId` its id, the amount its
`amount` less its `tax_amount` (Braintree computes no tax; a merchant who sends the Level 2
`tax_amount` includes it in `amount`) — and a cycle without a paid transaction is
`zero_amount`. The core names the first Sale of a subscription creation, later ones renewals.
Click and user ids come from the transaction's custom fields (`click_id`, `user_id`: Braintree
custom field names are lower-case with underscores). `livemode` follows `environment`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal

import braintree  # type: ignore[import-untyped]
from braintree.exceptions.invalid_signature_error import InvalidSignatureError  # type: ignore[import-untyped]
from braintree.util.crypto import Crypto  # type: ignore[import-untyped]
from braintree.util.xml_util import XmlUtil  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Mapped, ProviderEvent, Refund, Sale
from adapter.money import to_minor
from adapter.payload import compact, ident, iso_time, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import any_pair_equal
from providers.forms import encode_form, parse_form

__all__ = ["BraintreeProvider", "BraintreeSettings"]

_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+=/\n]")  # the SDK's own check, done before it is called
_UNPAID = frozenset({"failed", "gateway_rejected", "processor_declined", "settlement_declined", "voided"})
_ENVIRONMENTS = {"sandbox": braintree.Environment.Sandbox, "production": braintree.Environment.Production}


class BraintreeSettings(BaseModel):
    """The API keys of the Braintree account the webhooks come from (Settings → API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    merchant_id: str = Field(min_length=1)
    public_key: str = Field(min_length=1)
    private_key: str = Field(min_length=1, repr=False)
    environment: Literal["sandbox", "production"]


def gateway(settings: BraintreeSettings) -> Any:
    """A Braintree gateway for `settings` (building one makes no network call)."""
    return braintree.BraintreeGateway(braintree.Configuration(
        environment=_ENVIRONMENTS[settings.environment], merchant_id=settings.merchant_id,
        public_key=settings.public_key, private_key=settings.private_key))


def _plain(value: Any) -> Any:
    """The SDK's parsed XML with dates as ISO strings, so event data is plain JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


class BraintreeProvider(SamplesMixin, Provider):
    """Braintree: `bt_signature` / `bt_payload` form fields, verified by the `braintree` SDK."""

    name = "braintree"
    invoice_ids = "account"  # transaction ids are short per-merchant codes (`f6rnpm`), not globally unique
    requires_secrets = False
    settings_model = BraintreeSettings
    _gateway: Any = None

    def configure(self, ctx: SourceContext) -> None:
        super().configure(ctx)
        self._gateway = gateway(ctx.options)

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Check `bt_signature` over `bt_payload` with the SDK. Raises `SignatureError`:
        `missing_signature` (a field is absent), `invalid_signature` (the SDK refused it)."""
        try:
            fields = parse_form(body)
        except PayloadError:
            raise SignatureError("missing_signature", "Body is not a form with bt_signature and bt_payload") from None
        signature, payload = fields.get("bt_signature"), fields.get("bt_payload")
        if not signature or not payload:
            raise SignatureError("missing_signature", "No bt_signature and bt_payload form fields")
        if not payload.isascii() or _NOT_BASE64.search(payload):
            raise SignatureError("invalid_signature", "bt_payload is not base64")
        cached = self.ctx is not None and ctx.options is self.ctx.options and self._gateway is not None
        sdk = self._gateway if cached else gateway(ctx.options)
        try:
            sdk.webhook_notification.parse(signature, payload)
        except InvalidSignatureError as exc:
            raise SignatureError("invalid_signature", f"Braintree refused the signature: {exc}") from None
        except Exception:
            # The SDK checks the signature before it reads the XML, so this is usually bad XML
            # (parse's PayloadError) — but never let an SDK error pass unchecked: fail closed.
            if not _signature_matches(signature, payload, ctx.options):
                raise SignatureError("invalid_signature", "Braintree could not check the signature") from None

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """No headers: the signature is the body's `bt_signature`, which `sample()` computes with
        the source's own API keys as Braintree's SDK does. NotImplementedError without keys."""
        if not isinstance(ctx.options, BraintreeSettings):
            raise NotImplementedError(
                "Braintree samples are signed with the source's API keys: configure merchant_id, "
                "public_key, private_key (sandbox keys) and environment")
        return {}

    def samples(self) -> dict[str, bytes]:
        """Samples as unsigned form bodies (stored as JSON: the notification XML, line by line)."""
        return {name: encode_form({"bt_payload": _encode(_xml(raw))}) for name, raw in super().samples().items()}

    def sample(self, name: str, *, unique: str, now: int) -> bytes:
        """Sample `name` at `now` with a fresh transaction id, signed with the source's keys the
        way `braintree.WebhookTesting` signs (unsigned when the provider is not configured)."""
        xml = _xml(super().samples()[name])
        moment = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        xml = re.sub(r'(<timestamp type="datetime">)[^<]*(</timestamp>)', rf"\g<1>{moment}\g<2>", xml, count=1)
        xml = re.sub(r"(<transaction>\s*<id>)[^<]*(</id>)", rf"\g<1>{unique[:8]}\g<2>", xml, count=1)
        payload = _encode(xml)
        if self.ctx is None:
            return encode_form({"bt_payload": payload})
        settings: BraintreeSettings = self.ctx.options
        mac = Crypto.sha1_hmac_hash(settings.private_key, payload)
        return encode_form({"bt_signature": f"{settings.public_key}|{mac}", "bt_payload": payload})

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded"}

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The notification keyed `{kind}:{timestamp}:{subject id}`, parsed by the SDK's XML reader."""
        payload = parse_form(body).get("bt_payload")
        if not payload:
            raise PayloadError("Braintree webhook without `bt_payload`")
        try:
            tree = XmlUtil.dict_from_xml(base64.decodebytes(payload.encode("ascii")))
        except (binascii.Error, UnicodeError, ValueError):
            raise PayloadError("bt_payload is not base64 XML") from None
        except Exception as exc:  # minidom raises its own types for bad XML
            raise PayloadError(f"bt_payload is not Braintree XML ({type(exc).__name__})") from None
        note = mapping(mapping(tree).get("notification"))
        kind, moment = text(note.get("kind")), note.get("timestamp")
        if kind is None or not isinstance(moment, datetime):
            raise PayloadError("Braintree notification without `kind` and `timestamp`")
        subject = _plain(mapping(note.get("subject")))
        inner = next((v for v in subject.values() if isinstance(v, dict)), {})
        subject_id = text(inner.get("id")) or "-"
        occurred = moment.replace(tzinfo=UTC)
        environment = self.ctx.options.environment if self.ctx is not None else None
        return ProviderEvent(
            id=f"{kind}:{_plain(moment)}:{subject_id}",
            type=kind,
            occurred_at=occurred,
            livemode=None if environment is None else environment == "production",
            data={"kind": kind, "timestamp": _plain(moment), "subject": subject},
        )

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Mapped]:
        """`subscription_charged_successfully` → Sale of its newest transaction, `dispute_lost`
        → chargeback Refund of the disputed transaction; `[]` for other kinds (Braintree sends no
        notification for a refund). Raises `Ignore`: `zero_amount` (a cycle that charged
        nothing), `unpaid`."""
        if event.type == "dispute_lost":
            return [_dispute_lost(mapping(event.data["subject"].get("dispute")))]
        if event.type != "subscription_charged_successfully":
            return []
        subscription = mapping(event.data["subject"].get("subscription"))
        transactions = [t for t in subscription.get("transactions") or [] if isinstance(t, dict)]
        if not transactions:
            raise Ignore("zero_amount")
        # Braintree lists the newest first; created_at says so explicitly where present.
        txn = max(transactions, key=lambda t: str(t.get("created_at") or ""))
        if txn.get("status") in _UNPAID:
            raise Ignore("unpaid")
        currency = text(txn.get("currency_iso_code"))
        if currency is None:
            raise PayloadError("Braintree transaction without `currency_iso_code`")
        amount = to_minor(str(txn.get("amount") or "0"), currency)
        tax = to_minor(text(txn.get("tax_amount")) or "0", currency)
        if amount < 0 or tax < 0:  # a negative tax would inflate the amount (issue 12)
            raise PayloadError(f"Braintree transaction with a negative amount or tax_amount ({amount}, {tax})")
        if amount - tax <= 0:
            raise Ignore("zero_amount")
        customer = mapping(txn.get("customer"))
        names = [text(customer.get("first_name")), text(customer.get("last_name"))]
        custom = mapping(txn.get("custom_fields"))
        paid_at = text(txn.get("created_at"))
        subscription_id = text(subscription.get("id")) or text(txn.get("subscription_id"))
        return [Sale(
            kind="subscription",
            amount=amount - tax,
            currency=currency,
            invoice_id=str(txn["id"]),
            gross_amount=amount,
            subscription_id=subscription_id,
            provider_customer_id=text(customer.get("id")),
            email=text(customer.get("email")),
            name=" ".join(n for n in names if n) or None,
            metadata_sources=(custom,),
            timestamp=iso_time(paid_at),
            metadata=compact(subscriptionId=subscription_id, taxAmount=tax, planId=text(subscription.get("plan_id")),
                              billingCycle=subscription.get("current_billing_cycle")),
        )]


def _signature_matches(signature: str, payload: str, settings: BraintreeSettings) -> bool:
    """The SDK's own comparison (its Crypto helper), for when its parse failed for another reason."""
    try:
        macs = [Crypto.sha1_hmac_hash(settings.private_key, p) for p in (payload, payload + "\n")]
    except (UnicodeError, ValueError, TypeError):
        return False
    given = [mac.encode() for public_key, bar, mac in (pair.partition("|") for pair in signature.split("&"))
             if bar and public_key == settings.public_key]
    return any_pair_equal([m.encode() for m in macs], given)


def _xml(raw: bytes) -> str:
    """The notification XML of a stored sample (`{"bt_payload_xml": [line, ...]}`)."""
    data = json.loads(raw)
    lines = data.get("bt_payload_xml") if isinstance(data, dict) else None
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ValueError('a Braintree sample is {"bt_payload_xml": ["<?xml ...", ...]}')
    return "\n".join(lines) + "\n"


def _encode(xml: str) -> str:
    # Braintree's payloads are base64 with a newline every 76 characters (encodebytes).
    return base64.encodebytes(xml.encode("utf-8")).decode("ascii")


def _dispute_lost(dispute: dict[str, Any]) -> Refund:
    """A lost dispute: `amount_disputed` (of the transaction's amount, tax included)."""
    txn = mapping(dispute.get("transaction"))
    txn_id = ident(txn.get("id"))
    currency = text(dispute.get("currency_iso_code")) or text(txn.get("currency_iso_code"))
    if txn_id is None or currency is None:
        raise PayloadError("Braintree dispute without `transaction.id` and `currency_iso_code`")
    disputed = text(str(dispute.get("amount_disputed") or "")) or text(str(txn.get("amount") or ""))
    return Refund(reverses=(txn_id,), amount=to_minor(disputed, currency) if disputed else None,
                  currency=currency, includes_tax=True, chargeback=True, refund_id=text(dispute.get("id")),
                  metadata=compact(reason=text(dispute.get("reason"))))
