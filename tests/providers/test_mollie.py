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
from adapter.events import Refund, Sale
from adapter.testing import ProviderContract, make_source
from providers.mollie import MollieProvider
from tests.conftest import fixture, sent_once, wait_for
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
    sale = sent_once(receiver)
    assert sale.body["amount"] == 8900 and sale.body["currency"] == "eur"
    assert sale.body["customerEmail"] == "ada@example.com"


def post(client: Any, data: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(data).encode()
    answer: dict[str, Any] = client.post("/webhooks/mollie", content=body,
                                         headers={**signed(body), "Content-Type": "application/json"}).json()
    return answer


def test_a_payment_link_is_counted_by_what_the_merchant_set_when_creating_it(make_client: Any,
                                                                           receiver: Any) -> None:
    # A payment link has no `metadata` (mollie-api-typescript PaymentLinkResponse): what a merchant
    # can give it is a billing address (or a customer), and its own redirect URL's query.
    client = make_client(sources={"mollie": {"provider": "mollie", "secrets": [SECRET]}})
    assert post(client, fixture("mollie", "payment-link.paid"))["status"] == "accepted"
    sale = sent_once(receiver)
    assert (sale.body["amount"], sale.body["clickId"], sale.body["customerEmail"], sale.body["customerName"]) == (
        2495, "cl_mollie_link", "grace@example.com", "Grace Hopper")
    assert [s.invoice_id for s in receiver.counted_sales()] == ["pl_4Y0eZitmBnQ6IDoMqZQKh"]


def test_a_redirect_url_gives_a_click_id_never_a_customer_id() -> None:
    sale = one(source(), event("payment-link.paid", redirectUrl="https://shop.example.org/thanks?userId=u_1&dub_id=cl_2"))
    assert (sale.click_id, sale.external_id) == ("cl_2", None)  # the userId in the URL is not taken


def test_a_payment_link_without_customer_address_or_click_id_is_not_counted(make_client: Any) -> None:
    client = make_client(sources={"mollie": {"provider": "mollie", "secrets": [SECRET]}})
    anonymous = fixture("mollie", "payment-link.paid")
    del anonymous["_embedded"]["entity"]["billingAddress"]
    anonymous["_embedded"]["entity"]["redirectUrl"] = "https://shop.example.org/thanks"
    answer = post(client, anonymous)
    assert (answer["status"], answer["reason"]) == ("ignored", "no_identifier")


def test_a_paid_payment_excludes_the_vat_of_its_lines_and_names_the_merchant_metadata() -> None:
    sale = one(source(), fixture("mollie", "payment.paid"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.gross_amount, sale.currency) == ("purchase", 10000, 12100, "eur")
    assert (sale.invoice_id, sale.provider_customer_id, sale.email) == ("tr_5B8cwPMGnU6qLbRvo7qEZo", "cst_8wmqcHMN4U",
                                                                        "ada@example.com")
    assert (sale.click_id, sale.external_id) == ("cl_mollie_payment", "user_mollie_7")
    # no lines: the amount is all there is (tax included, no breakdown)
    bare = one(source(), event("payment.paid", lines=None))
    assert (bare.amount, bare.gross_amount) == (12100, 12100)


def test_payment_metadata_sent_as_a_json_string_still_gives_the_click_id() -> None:
    # Mollie's metadata is any JSON; its own webhook example sends a JSON object in a string.
    sale = one(source(), event("payment.paid", metadata=json.dumps({"dub_click_id": "cl_in_a_string"})))
    assert sale.click_id == "cl_in_a_string"
    assert one(source(), event("payment.paid", metadata="order 12345")).click_id is None


def test_a_subscription_payment_is_a_renewal_and_an_unpaid_snapshot_is_not_a_sale() -> None:
    sale = one(source(), event("payment.paid", sequenceType="recurring", subscriptionId="sub_rGYLh4bqKz"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.subscription_id, sale.starts_subscription) == ("subscription", "sub_rGYLh4bqKz", False)
    with pytest.raises(Ignore) as caught:
        mapped(source(), event("payment.paid", status="open"))
    assert caught.value.reason == "unpaid"


def test_a_refunded_refund_reverses_its_payment_tax_included() -> None:
    [refund] = mapped(source(), fixture("mollie", "refund.refunded"))
    assert isinstance(refund, Refund)
    assert refund.reverses == ("tr_5B8cwPMGnU6qLbRvo7qEZo",)
    assert (refund.amount, refund.currency, refund.includes_tax, refund.refund_id) == (6050, "eur", True, "re_4qqhO89gsT")
    with pytest.raises(Ignore) as caught:
        mapped(source(), event("refund.refunded", status="failed"))
    assert caught.value.reason == "not_refunded"
    queued = fixture("mollie", "refund.refunded")
    queued["type"] = "refund.queued"
    assert mapped(source(), queued) == []


def test_a_refund_halves_the_partner_commission_of_its_payment(make_client: Any, receiver: Any) -> None:
    receiver.program = True
    client = make_client(sources={"mollie": {"provider": "mollie", "secrets": [SECRET]}})
    assert post(client, fixture("mollie", "payment.paid"))["status"] == "accepted"
    wait_for(receiver.commissions, timeout=15)
    [first] = receiver.commissions()
    sold = first.amount
    assert post(client, fixture("mollie", "refund.refunded"))["status"] == "accepted"
    # 60.50 of the 121.00 gross refunded: half of the Sale's net remains
    wait_for(lambda: receiver.commissions()[0].amount == sold // 2, timeout=15)
    assert post(client, fixture("mollie", "refund.refunded"))["status"] == "duplicate"
