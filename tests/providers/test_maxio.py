"""Maxio (Chargify): form bodies signed per Maxio's recipe (hex HMAC-SHA256 of the raw body with
the site's shared key, written out here), one Sale per payment transaction, and one flow."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from adapter.errors import Ignore
from adapter.events import Lead, Refund, Sale
from adapter.testing import ProviderContract, make_source
from providers.forms import sample_fields
from providers.maxio import MaxioProvider, nested
from tests.conftest import SAMPLES, sent_once
from tests.providers.flow import mapped, one

SECRET = "b65ca1b9a6eaea838b7c536ca0ca5fe634214b5d"
OTHER = "0000000000000000000000000000000000000000"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Chargify-Webhook-Signature-Hmac-Sha-256": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


class TestMaxioContract(ProviderContract):
    provider_class = MaxioProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return signed(body, secret)


def fields(name: str, **changes: str) -> dict[str, str]:
    data = sample_fields((SAMPLES / "maxio" / f"{name}.json").read_bytes())
    data.update(changes)
    return data


def body(data: dict[str, str]) -> bytes:
    return urlencode(list(data.items())).encode()


def source() -> Any:
    return make_source(MaxioProvider(), [SECRET], name="maxio")


def test_nested_keys_become_objects() -> None:
    assert nested({"payload[transaction][id]": "1", "event": "x"}) == {"payload": {"transaction": {"id": "1"}}, "event": "x"}


def test_signup_payment_starts_the_subscription() -> None:
    sale = one(source(), body(fields("payment_success")), FORM)
    assert isinstance(sale, Sale)
    assert (sale.amount, sale.currency, sale.invoice_id, sale.starts_subscription) == (6400, "usd", "161537369", True)
    assert sale.external_id == "user_maxio_42" and sale.email == "ada@example.com"
    later = one(source(), body(fields("payment_success", **{"payload[transaction][id]": "161999999"})), FORM)
    assert later.starts_subscription is False


def test_payment_and_renewal_of_one_transaction_are_one_sale(make_flow: Any) -> None:
    flow = make_flow(MaxioProvider(), [SECRET], signed)
    first = flow.receive(body(fields("payment_success")), {**FORM, **signed(body(fields("payment_success")))})
    renewal = body(fields("payment_success", id="141765009", event="renewal_success"))
    second = flow.receive(renewal, {**FORM, **signed(renewal)})
    assert first["status"] == "accepted"
    assert (second["status"], second.get("reason")) == ("duplicate", "business_key")
    assert [s.invoice_id for s in flow.stored()] == ["maxio:161537369"]


def test_renewal_without_payment_is_recorded() -> None:
    data = {k: v for k, v in fields("payment_success", event="renewal_success").items() if "[transaction]" not in k}
    with pytest.raises(Ignore) as caught:
        mapped(source(), body(data), FORM)
    assert caught.value.reason == "renewal_without_payment"


def test_signup_is_a_lead_and_a_trialing_one_a_started_trial() -> None:
    lead = one(source(), body(fields("signup_success")), FORM)
    assert isinstance(lead, Lead) and lead.kind == "sign_up" and lead.external_id == "user_maxio_42"
    trial = one(source(), body(fields("signup_success", **{"payload[subscription][state]": "trialing"})), FORM)
    assert trial.kind == "started_trial" and trial.metadata["subscriptionId"] == "15100141"


def test_refund_success_reverses_the_payment() -> None:
    data = {"id": "141765100", "event": "refund_success", "payload[payment_id]": "161537369",
            "payload[refund_id]": "173982961", "payload[refund_amount_in_cents]": "1600", "payload[memo]": "partial"}
    [refund] = mapped(source(), body(data), FORM)
    assert isinstance(refund, Refund)
    assert (refund.reverses, refund.amount, refund.currency, refund.refund_id) == (("161537369",), 1600, "usd", "173982961")


def test_the_site_currency_setting() -> None:
    src = make_source(MaxioProvider(), [SECRET], name="maxio", currency="EUR")
    sale = one(src, body(fields("payment_success")), FORM)
    assert sale.currency == "eur"


def test_a_payment_reaches_the_tracking_api_end_to_end(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"maxio": {"provider": "maxio", "secrets": [SECRET]}})
    raw = body(fields("payment_success"))
    r = client.post("/webhooks/maxio", content=raw, headers={**FORM, **signed(raw)})
    assert r.json()["status"] == "accepted", r.text
    sale = sent_once(receiver)
    assert sale.body["invoiceId"] == "maxio:161537369" and sale.body["amount"] == 6400
    assert sale.body["customerExternalId"] == "user_maxio_42"
    assert json.loads(json.dumps(sale.body["metadata"]))["tax"] == "included"
