"""Mollie next-gen webhooks: signatures made with Mollie's own recipe (mollie-api-php
`SignatureValidator::createSignature`: `hash_hmac('sha256', $payload, $secret)`, header
`sha256=<hex>`), mapping of full-payload events and one flow through the app."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Sale
from adapter.testing import ProviderContract, make_source
from providers.mollie import MollieProvider
from tests.conftest import fixture, wait_for
from tests.providers.flow import mapped, one

SECRET = "whsec_mollie_Jm5Qk3r8TzW2yXv9cL4aN7bF1dH6sG0e"
OTHER = "whsec_mollie_someone_else_0000000000000000"


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Mollie-Signature": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


class TestMollieContract(ProviderContract):
    provider_class = MollieProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return signed(body, secret)


def source() -> Any:
    return make_source(MollieProvider(), [SECRET], name="mollie")


def event(name: str, **changes: Any) -> dict[str, Any]:
    data = fixture("mollie", name)
    data["_embedded"]["entity"].update(changes)
    return data


def test_rotation_header_with_two_signatures_verifies_and_bare_hex_does_not() -> None:
    body = json.dumps(event("payment-link.paid")).encode()
    src = source()
    both = {"X-Mollie-Signature": signed(body, OTHER)["X-Mollie-Signature"] + ", " + signed(body)["X-Mollie-Signature"]}
    src.provider.verify(body, both, src.secrets, src.ctx)
    bare = {"X-Mollie-Signature": signed(body)["X-Mollie-Signature"].removeprefix("sha256=")}
    with pytest.raises(SignatureError):
        src.provider.verify(body, bare, src.secrets, src.ctx)


def test_paid_payment_link_is_a_purchase_in_exact_minor_units() -> None:
    sale = one(source(), event("payment-link.paid"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.currency, sale.invoice_id) == ("purchase", 2495, "eur", "pl_4Y0eZitmBnQ6IDoMqZQKh")
    parsed = source().provider.parse(json.dumps(event("payment-link.paid", mode="test")).encode(), {})
    assert parsed.livemode is False and parsed.id == "event_GvJ8WHrp5isUdRub9CJyH"


def test_a_reusable_link_is_one_sale_per_payment_event() -> None:
    sale = one(source(), event("payment-link.paid", reusable=True))
    assert sale.invoice_id == "pl_4Y0eZitmBnQ6IDoMqZQKh:event_GvJ8WHrp5isUdRub9CJyH"


def test_paid_sales_invoice_excludes_vat() -> None:
    sale = one(source(), fixture("mollie", "sales-invoice.paid"))
    assert isinstance(sale, Sale)
    assert (sale.amount, sale.gross_amount, sale.email, sale.name) == (8900, 10769, "ada@example.com", "Ada Lovelace")


def test_malformed_simple_and_untracked_events() -> None:
    for bad in ({"value": "24.955", "currency": "EUR"}, {"value": 24.95, "currency": "EUR"}, "24.95"):
        with pytest.raises(PayloadError):
            mapped(source(), event("payment-link.paid", amount=bad))
    simple = fixture("mollie", "payment-link.paid")
    del simple["_embedded"]
    with pytest.raises(Ignore):
        mapped(source(), simple)
    other = fixture("mollie", "payment-link.paid")
    other["type"] = "balance-transaction.created"
    assert mapped(source(), other) == []


def test_a_paid_invoice_reaches_the_tracking_api_end_to_end(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"mollie": {"provider": "mollie", "secrets": [SECRET]}})
    body = json.dumps(fixture("mollie", "sales-invoice.paid")).encode()
    r = client.post("/webhooks/mollie", content=body, headers={**signed(body), "Content-Type": "application/json"})
    assert r.json()["status"] == "accepted", r.text
    [sale] = wait_for(receiver.delivered)
    assert sale.body["amount"] == 8900 and sale.body["currency"] == "eur"
    assert sale.body["customerEmail"] == "ada@example.com"


def test_a_payment_link_names_no_customer_so_it_is_not_counted(make_client: Any) -> None:
    # Mollie's payment link object has no customer, email or metadata: nothing to attribute.
    client = make_client(sources={"mollie": {"provider": "mollie", "secrets": [SECRET]}})
    body = json.dumps(event("payment-link.paid")).encode()
    r = client.post("/webhooks/mollie", content=body, headers={**signed(body), "Content-Type": "application/json"})
    assert (r.json()["status"], r.json()["reason"]) == ("ignored", "no_identifier")
