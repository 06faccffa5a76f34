"""Paystack: HMAC-SHA512 body signatures, charge.success Sales, metadata in all its shapes."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Refund, Sale
from adapter.ingest import parse_event
from adapter.testing import ProviderContract, Vector, make_source
from providers.paystack import PaystackProvider
from tests.conftest import fixture, sent_once
from tests.providers.flow import mapped, one

SECRET = "sk_test_6b1c0f3d2e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
OTHER = "sk_test_00000000000000000000someone0else0000"


class TestPaystackContract(ProviderContract):
    provider_class = PaystackProvider
    secret = SECRET
    other_secret = OTHER
    has_timestamp = False

    def vectors(self) -> list[Vector]:  # Paystack publishes the recipe but no signed example
        return [Vector(b"what do ya want for nothing?", {"x-paystack-signature": RFC4231_SHA512}, "Jefe", timestamp=0,
                       where="RFC 4231 test case 2 (HMAC-SHA512)")]


def signature(body: bytes, secret: str = SECRET) -> str:
    src = make_source(PaystackProvider(), [secret], name="paystack")
    return PaystackProvider().sign(body, secret, 0, src.ctx)["x-paystack-signature"]


def verify(body: bytes, value: str | None, secrets: list[str] | None = None) -> None:
    src = make_source(PaystackProvider(), secrets or [SECRET], name="paystack")
    headers = Headers({"x-paystack-signature": value} if value is not None else {})
    src.provider.verify(body, headers, src.secrets, src.ctx)


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET) -> Any:
    body = json.dumps(event).encode()
    return client.post("/webhooks/paystack", content=body,
                       headers={"x-paystack-signature": signature(body, secret), "Content-Type": "application/json"})


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"paystack": {"provider": "paystack", "secrets": [SECRET]}})


def charge(name: str = "charge.success", **changes: Any) -> dict[str, Any]:
    event = fixture("paystack", name)
    event["data"].update(changes)
    return event


BODY = json.dumps(fixture("paystack", "charge.success")).encode()

# -- signatures ---------------------------------------------------------------------------------

# Paystack publishes no signed test vector; RFC 4231 test case 2 pins the algorithm (HMAC-SHA512,
# hex): key "Jefe", data "what do ya want for nothing?".
RFC4231_SHA512 = ("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                  "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")


def test_rfc_4231_hmac_sha512_vector_verifies() -> None:
    verify(b"what do ya want for nothing?", RFC4231_SHA512, ["Jefe"])
    assert signature(b"what do ya want for nothing?", "Jefe") == RFC4231_SHA512


def test_signature_is_hmac_sha512_hex_of_the_raw_body() -> None:
    assert signature(BODY) == hmac.new(SECRET.encode(), BODY, hashlib.sha512).hexdigest()
    verify(BODY, signature(BODY))


@pytest.mark.parametrize(("value", "code"), [
    (None, "missing_signature"), ("", "missing_signature"), ("0" * 128, "invalid_signature"),
    ("sha512=abc", "invalid_signature"),
    # a SHA-256 HMAC of the right body is the wrong scheme
    (hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest(), "invalid_signature"),
])
def test_bad_signature_headers_have_clear_codes(value: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, value)
    assert caught.value.code == code


def test_forged_and_tampered_bodies_are_rejected() -> None:
    for body, value in [(BODY, signature(BODY, OTHER)), (BODY.replace(b"4500000", b"4500", 1), signature(BODY))]:
        with pytest.raises(SignatureError) as caught:
            verify(body, value)
        assert caught.value.code == "invalid_signature" and SECRET not in caught.value.message


def test_test_and_live_secret_keys_can_share_a_source() -> None:
    verify(BODY, signature(BODY, "sk_live_abc"), secrets=[SECRET, "sk_live_abc"])


def test_forged_and_unsigned_webhooks_are_400s_and_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("paystack", "charge.success"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    r = client.post("/webhooks/paystack", content=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"
    time.sleep(0.2)
    assert receiver.requests == []


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_successful_charge_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    r = post(client, fixture("paystack", "charge.success"))
    assert r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.headers["idempotency-key"] == "sale:paystack:re4lyvq3s3"
    assert sale.body["eventName"] == "Purchase" and sale.body["invoiceId"] == "re4lyvq3s3"
    assert sale.body["customerExternalId"] == "user_42" and sale.body["clickId"] == "cl_paystack_demo"


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------


def source(**settings: Any) -> Any:
    return make_source(PaystackProvider(), [SECRET], name="paystack", **settings)


def paystack_flow(make_flow: Any, **settings: Any) -> Any:
    return make_flow(PaystackProvider(), [SECRET], lambda body: {"x-paystack-signature": signature(body)}, **settings)


def sale_of(event: dict[str, Any]) -> Sale:
    sale = one(source(), event)
    assert isinstance(sale, Sale)
    return sale


def test_successful_charge_is_a_purchase() -> None:
    sale = sale_of(fixture("paystack", "charge.success"))
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 4500000, "ngn")  # ₦45,000.00 in kobo; fees in
    assert sale.invoice_id == "re4lyvq3s3"
    assert sale.external_id == "user_42"
    assert sale.click_id == "cl_paystack_demo"  # from metadata.custom_fields[].variable_name
    assert (sale.email, sale.name, sale.provider_customer_id) == ("ada.obi@example.com", "Ada Obi", "CUS_1rkzaqsv4rrhqo6")
    assert sale.timestamp is not None and sale.timestamp.isoformat() == "2026-05-03T16:20:59+00:00"  # paid_at
    assert sale.metadata["reference"] == "re4lyvq3s3" and sale.metadata["transactionId"] == "4099260516"
    event = parse_event(source(), BODY, Headers({}))
    assert (event.id, event.livemode) == ("charge.success:re4lyvq3s3", False)


@pytest.mark.parametrize(("metadata", "external", "click"), [
    ('{"user_id": "user_9", "clickId": "cl_str"}', "user_9", "cl_str"),  # a JSON string
    ({"custom_fields": [{"display_name": "userId", "variable_name": "uid", "value": "user_5"}]}, "user_5", None),
    ("", "CUS_1rkzaqsv4rrhqo6", None),
    (0, "CUS_1rkzaqsv4rrhqo6", None),  # Paystack's own samples send `"metadata": 0`
    (None, "CUS_1rkzaqsv4rrhqo6", None),
    ("not json", "CUS_1rkzaqsv4rrhqo6", None),
])
def test_metadata_in_every_shape_paystack_sends(make_flow: Any, metadata: Any, external: str,
                                                click: str | None) -> None:
    flow = paystack_flow(make_flow)
    answer = flow.receive(charge(metadata=metadata))
    assert answer["status"] == "accepted"
    [sale] = flow.stored(answer)
    assert (sale.external_id, sale.click_id) == (external, click)


def test_customer_metadata_is_read_after_the_transactions() -> None:
    event = charge(metadata="")
    event["data"]["customer"]["metadata"] = {"externalId": "user_from_customer", "dub_id": "cl_cust"}
    sale = sale_of(event)
    assert (sale.external_id, sale.click_id) == ("user_from_customer", "cl_cust")


@pytest.mark.parametrize(("currency", "amount", "expected"), [("GHS", 12345, 12345), ("ZAR", 9900, 9900),
                                                              ("KES", 150000, 150000), ("XOF", 250000, 2500)])
def test_amounts_are_converted_to_iso_minor_units(currency: str, amount: int, expected: int) -> None:
    sale = sale_of(charge(currency=currency, amount=amount, requested_amount=amount))
    assert (sale.amount, sale.currency) == (expected, currency.lower())


def test_an_amount_sent_as_an_integer_string_is_that_integer() -> None:
    # Paystack Terminal sends amounts as strings ("5000"); SPEC §8: integer strings are integers.
    sale = sale_of(charge(currency="GHS", amount="5000", requested_amount="5000"))
    assert (sale.amount, sale.currency) == (5000, "ghs")


def test_a_fraction_of_a_franc_is_a_400_not_a_guess(client: Any) -> None:
    with pytest.raises(PayloadError):
        sale_of(charge(currency="XOF", amount=250050, requested_amount=250050))
    r = post(client, charge(currency="XOF", amount=250050, requested_amount=250050))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_charges_the_customer_paid_on_top_are_not_revenue() -> None:
    sale = sale_of(charge(amount=4577500, requested_amount=4500000))
    assert sale.amount == 4500000 and sale.metadata["chargedAmount"] == 4577500


@pytest.mark.parametrize(("changes", "expected"), [
    # Paystack's Terminal sample: "amount": "5000", requested_amount 200, no fees -> the 5000 paid
    ({"amount": "5000", "requested_amount": 200, "fees": None}, 5000),
    ({"amount": 4577500, "requested_amount": 4500000, "fees": 1000}, 4577500),  # gap above the fees
    ({"amount": 4577500, "requested_amount": 4500000, "fees": None}, 4577500),  # no fees to explain it
    ({"amount": 4500000, "requested_amount": 4577500, "fees": 77500}, 4500000),  # requested above amount
    ({"amount": "4577500", "requested_amount": "4500000", "fees": "77500"}, 4500000),  # strings alike
])
def test_requested_amount_is_the_sale_only_when_the_fees_explain_the_gap(changes: dict[str, Any],
                                                                         expected: int) -> None:
    assert sale_of(charge(**changes)).amount == expected


@pytest.mark.parametrize(("changes", "reason"), [({"status": "failed"}, "unpaid"),
                                                 ({"status": "abandoned"}, "unpaid"),
                                                 ({"amount": 0, "requested_amount": 0}, "zero_amount")])
def test_uncountable_charges_are_ignored_with_reasons(make_flow: Any, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        sale_of(charge(**changes))
    assert caught.value.reason == reason
    flow = paystack_flow(make_flow)
    answer = flow.receive(charge(**changes))
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


@pytest.mark.parametrize("event_name", ["charge.dispute.create", "transfer.success", "subscription.create",
                                        "invoice.update", "refund.pending", "refund.failed"])
def test_untracked_events_are_ignored(event_name: str) -> None:
    event = fixture("paystack", "charge.success")
    event["event"] = event_name
    assert mapped(source(), event) == []


def test_amount_that_is_not_an_integer_is_a_400(client: Any) -> None:
    for amount in ("45000.00", 45000.5, True, "\u0664\u0665"):
        with pytest.raises(PayloadError):
            sale_of(charge(amount=amount))
    r = post(client, charge(amount="45000.00"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


def test_redelivery_of_a_reference_is_a_duplicate(make_flow: Any) -> None:
    flow = paystack_flow(make_flow)
    event = fixture("paystack", "charge.success")
    first = flow.receive(event)
    assert flow.receive(event) == {"status": "duplicate", "eventId": first["eventId"]}
    event["data"]["log"] = {"attempts": 2}  # a resend whose body differs: still the same reference
    assert flow.receive(event)["status"] == "duplicate"
    assert [s.state for s in flow.stored()] == ["pending"]


@pytest.mark.parametrize(("mode", "status"), [("live", "ignored"), ("test", "accepted"), ("any", "accepted")])
def test_domain_is_the_livemode(make_flow: Any, mode: str, status: str) -> None:
    answer = paystack_flow(make_flow, livemode=mode).receive(fixture("paystack", "charge.success"))  # domain test
    assert answer["status"] == status
    if status == "ignored":
        assert answer["reason"] == "livemode_mismatch"


def test_plan_charges_are_subscription_creation_then_renewal(make_flow: Any) -> None:
    renewal = charge("charge.success+subscription", reference="sub_charge_9kq2m4n8", id=4101000001,
                     paid_at="2026-06-04T09:00:09.000Z", metadata=None)
    for event in (fixture("paystack", "charge.success+subscription"), renewal):
        sale = sale_of(event)
        assert (sale.kind, sale.amount, sale.currency) == ("subscription", 500000, "ghs")
        assert sale.metadata["planCode"] == "PLN_gx2wn530m0i3w3m"
    flow = paystack_flow(make_flow)
    assert flow.receive(fixture("paystack", "charge.success+subscription"))["status"] == "accepted"
    assert flow.receive(renewal)["status"] == "accepted"
    sales = flow.stored()
    assert {s.invoice_id: s.event_name for s in sales} == {"sub_charge_8bvfx2k1": "Subscription creation",
                                                          "sub_charge_9kq2m4n8": "Subscription renewal"}
    # the renewal has no metadata: identity memory keyed by the customer code fills it
    assert {s.external_id for s in sales} == {"user_88"}
    assert {s.click_id for s in sales} == {"cl_paystack_sub"}


def test_references_are_sent_as_is_and_tax_is_included(make_flow: Any) -> None:
    # references are unique per integration and sent unqualified (EXPECTED.tsv); Paystack reports no tax
    flow = paystack_flow(make_flow)
    [stored] = flow.stored(flow.receive(fixture("paystack", "charge.success")))
    assert stored.invoice_id == "re4lyvq3s3" and stored.metadata["tax"] == "included"


# --- refunds (SPEC §9) ---------------------------------------------------------------------------


def refund_of(event: dict[str, Any]) -> Refund:
    refund = one(source(), event)
    assert isinstance(refund, Refund)
    return refund


def test_a_processed_refund_reverses_the_charge_by_its_reference() -> None:
    refund = refund_of(fixture("paystack", "refund.processed"))
    assert refund.reverses == ("re4lyvq3s3",)
    assert (refund.amount, refund.currency) == (250000, "ngn")  # "250000" kobo, of a 4500000 charge
    assert (refund.cumulative, refund.includes_tax, refund.chargeback) == (False, False, False)
    assert refund.refund_id == "132013318360"  # refund_reference: the docs' sample has no id


def test_a_full_refund_naming_its_transaction_and_id() -> None:
    event = fixture("paystack", "refund.processed")
    event["data"].update(amount=4500000, id=3018284, transaction=4099260516)
    refund = refund_of(event)
    assert refund.amount == 4500000
    assert refund.reverses == ("re4lyvq3s3", "4099260516")
    assert refund.refund_id == "3018284"
    sale = sale_of(fixture("paystack", "charge.success"))
    assert (sale.invoice_id, sale.payment_refs) == ("re4lyvq3s3", ("4099260516",))


def test_a_refund_without_a_time_is_dated_at_receipt_and_keyed_by_its_body() -> None:
    body = json.dumps(fixture("paystack", "refund.processed")).encode()
    first, again = (parse_event(source(), body, Headers({})) for _ in range(2))
    assert first.id == again.id and first.id.startswith("refund.processed:")
    assert abs(first.occurred_at.timestamp() - time.time()) < 5


def test_a_refund_in_another_state_does_not_count() -> None:
    event = fixture("paystack", "refund.processed")
    event["data"]["status"] = "pending"
    with pytest.raises(Ignore, match="refund_not_processed"):
        mapped(source(), event)
