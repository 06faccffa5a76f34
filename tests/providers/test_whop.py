"""Whop: Standard Webhooks keyed by the secret's own bytes (signed with the official
`standardwebhooks` package the way Whop's SDK is fed), mapping and one flow through the app."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Lead, Refund, Sale
from adapter.testing import ProviderContract, make_source
from providers.whop import WhopProvider
from tests.conftest import fixture, sent_once
from tests.providers.flow import mapped, one

SECRET = "ws_4f7c2e9a1b6d3f8e0c5a7b2d9e1f4c6a8b0d3e5f"
OTHER = "ws_someone_elses_secret_00000000000000000"


def signed(body: bytes, secret: str = SECRET, timestamp: int | None = None, msg_id: str | None = None) -> dict[str, str]:
    """What Whop sends, made by `standardwebhooks` given `btoa(secret)` as Whop's docs configure it."""
    ts = int(time.time()) if timestamp is None else timestamp
    msg = msg_id or "msg_" + hashlib.sha256(body).hexdigest()[:24]
    hook = standardwebhooks.Webhook(base64.b64encode(secret.encode()).decode())
    return {"webhook-id": msg, "webhook-timestamp": str(ts),
            "webhook-signature": hook.sign(msg, datetime.fromtimestamp(ts, UTC), body.decode())}


class TestWhopContract(ProviderContract):
    provider_class = WhopProvider
    secret = SECRET
    other_secret = OTHER

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return signed(body, secret, timestamp)


def source() -> Any:
    return make_source(WhopProvider(), [SECRET], name="whop")


def event(name: str, **changes: Any) -> dict[str, Any]:
    data = fixture("whop", name)
    data["data"].update(changes)
    return data


def conv(data: dict[str, Any]) -> Any:
    return one(source(), data, {"webhook-id": "msg_1"})


def test_a_plain_standard_webhooks_key_is_not_whops() -> None:
    body = json.dumps(event("payment.succeeded")).encode()
    plain = standardwebhooks.Webhook("whsec_" + base64.b64encode(b"0" * 24).decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time())),
               "webhook-signature": plain.sign("msg_1", datetime.now(UTC), body.decode())}
    src = source()
    with pytest.raises(SignatureError):
        src.provider.verify(body, headers, src.secrets, src.ctx)


def test_payment_is_a_sale_net_of_tax_read_exactly() -> None:
    sale = conv(event("payment.succeeded"))
    assert isinstance(sale, Sale)
    assert (sale.amount, sale.gross_amount, sale.currency, sale.invoice_id) == (4900, 5400, "usd", "pay_8Hn2Kq4Vd1Xy")
    assert (sale.kind, sale.starts_subscription, sale.subscription_id) == ("subscription", True, "mem_Ab12Cd34Ef")
    assert sale.click_id == "cl_whop_click" and sale.provider_customer_id == "user_Wh0p42"
    odd = conv(event("payment.succeeded", total=0.29, tax_amount=0))
    assert odd.amount == 29  # not 28.999999999999996


@pytest.mark.parametrize(("reason", "kind", "starts"), [
    ("subscription_cycle", "subscription", False), ("one_time", "purchase", None),
    ("subscription_update", "subscription_update", None)])
def test_billing_reason_names_the_sale(reason: str, kind: str, starts: bool | None) -> None:
    sale = conv(event("payment.succeeded", billing_reason=reason))
    assert (sale.kind, sale.starts_subscription) == (kind, starts)


def test_zero_and_malformed_payments() -> None:
    with pytest.raises(Ignore) as caught:
        conv(event("payment.succeeded", total=5.0, tax_amount=5.0))
    assert caught.value.reason == "zero_amount"
    for bad in ("ten", True, 1.234):
        with pytest.raises(PayloadError):
            conv(event("payment.succeeded", total=bad))


def test_trialing_membership_is_a_started_trial_lead() -> None:
    lead = conv(event("membership.activated"))
    assert isinstance(lead, Lead) and lead.kind == "started_trial"
    assert lead.metadata["subscriptionId"] == "mem_Ab12Cd34Ef"
    assert mapped(source(), event("membership.activated", status="active"), {"webhook-id": "m"}) == []


def test_succeeded_refund_reverses_its_payment() -> None:
    [refund] = mapped(source(), event("refund.updated"), {"webhook-id": "m"})
    assert isinstance(refund, Refund)
    assert (refund.reverses, refund.amount, refund.currency, refund.refund_id) == (
        ("pay_8Hn2Kq4Vd1Xy",), 2700, "usd", "rfnd_Qq1Rr2")
    with pytest.raises(Ignore) as caught:
        mapped(source(), event("refund.updated", status="pending"), {"webhook-id": "m"})
    assert caught.value.reason == "refund_not_succeeded"


def test_a_payment_reaches_the_tracking_api_end_to_end(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"whop": {"provider": "whop", "secrets": [SECRET]}})
    body = json.dumps(event("payment.succeeded")).encode()
    r = client.post("/webhooks/whop", content=body, headers={**signed(body), "Content-Type": "application/json"})
    assert r.json()["status"] == "accepted", r.text
    sale = sent_once(receiver)
    assert sale.body["invoiceId"] == "pay_8Hn2Kq4Vd1Xy" and sale.body["amount"] == 4900
    assert sale.body["paymentProcessor"] == "custom" and sale.body["clickId"] == "cl_whop_click"
