"""Dodo Payments: Standard Webhooks with the `whsec_` secret (signed with the official
`standardwebhooks` package as is), mapping and one flow through the app."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks

from adapter.errors import Ignore, PayloadError
from adapter.events import Refund, Sale
from adapter.testing import ProviderContract, make_source
from providers.dodo import DodoProvider
from tests.conftest import fixture, sent_once
from tests.providers.flow import mapped, one

SECRET = "whsec_" + base64.b64encode(b"dodo test key 0123456789abcdef").decode()
OTHER = "whsec_" + base64.b64encode(b"someone elses key 00000000000").decode()


def signed(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    msg = "msg_" + hashlib.sha256(body).hexdigest()[:24]
    sig = standardwebhooks.Webhook(secret).sign(msg, datetime.fromtimestamp(ts, UTC), body.decode())
    return {"webhook-id": msg, "webhook-timestamp": str(ts), "webhook-signature": sig}


class TestDodoContract(ProviderContract):
    provider_class = DodoProvider
    secret = SECRET
    other_secret = OTHER

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return signed(body, secret, timestamp)


def source() -> Any:
    return make_source(DodoProvider(), [SECRET], name="dodo")


def event(name: str, **changes: Any) -> dict[str, Any]:
    data = fixture("dodo", name)
    data["data"].update(changes)
    return data


def test_payment_is_a_sale_of_total_less_tax() -> None:
    sale = one(source(), event("payment.succeeded"), {"webhook-id": "m"})
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.gross_amount, sale.currency) == ("purchase", 4900, 5390, "usd")
    assert sale.invoice_id == "pay_2IjeQm4hqU6RA4Z4kwDee" and sale.payment_refs == ("inv_0Hk3LmNpQr",)
    assert sale.click_id == "cl_dodo_click" and sale.provider_customer_id == "cus_8vkLq2x3aB"
    sub = one(source(), event("payment.succeeded+subscription"), {"webhook-id": "m"})
    assert (sub.kind, sub.subscription_id, sub.starts_subscription) == ("subscription", "sub_5Tt6Uu7Vv", None)


def test_uncountable_payments() -> None:
    with pytest.raises(Ignore):
        mapped(source(), event("payment.succeeded", total_amount=490), {"webhook-id": "m"})
    for bad in ("53.90", 53.9, None):
        with pytest.raises(PayloadError):
            mapped(source(), event("payment.succeeded", total_amount=bad), {"webhook-id": "m"})


def test_refund_succeeded_reverses_its_payment() -> None:
    [refund] = mapped(source(), event("refund.succeeded"), {"webhook-id": "m"})
    assert isinstance(refund, Refund)
    assert (refund.reverses, refund.amount, refund.currency, refund.refund_id, refund.includes_tax) == (
        ("pay_2IjeQm4hqU6RA4Z4kwDee",), 2695, "usd", "ref_7Mm8Nn9Oo", True)


def test_a_payment_reaches_the_tracking_api_end_to_end(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"dodo": {"provider": "dodo", "secrets": [SECRET]}})
    body = json.dumps(event("payment.succeeded")).encode()
    r = client.post("/webhooks/dodo", content=body, headers={**signed(body), "Content-Type": "application/json"})
    assert r.json()["status"] == "accepted", r.text
    sale = sent_once(receiver)
    assert sale.body["invoiceId"] == "pay_2IjeQm4hqU6RA4Z4kwDee" and sale.body["amount"] == 4900
