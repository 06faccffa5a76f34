"""Square: URL+body signatures (checked against Square's own SDK), payment Sales, customer Leads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from square.utils.webhooks_helper import verify_signature as square_verify_signature
from starlette.datastructures import Headers

from adapter.errors import ConfigError, Ignore, PayloadError, SignatureError
from adapter.events import Lead, Refund, Sale
from adapter.ingest import parse_event
from adapter.plugin import build_sources, load_providers
from adapter.testing import ProviderContract, Vector, make_source
from providers.square import SquareProvider
from tests.conftest import config, fixture, fixture_names, fixture_path, sent_once
from tests.providers.flow import mapped, one

SECRET = "Ibxx_5AKakO-3qeNVR61Dw"  # the shape of a Square signature key
OTHER = "MCmhFRxGX82xMwg5FsaoQA"
URL = "https://hooks.example.com/webhooks/square"


class TestSquareContract(ProviderContract):
    provider_class = SquareProvider
    secret = SECRET
    other_secret = OTHER
    source_settings = {"notification_url": URL}
    has_timestamp = False

    def vectors(self) -> list[Vector]:
        return [Vector(VECTOR_BODY, {"x-square-hmacsha256-signature": VECTOR_HEADER}, VECTOR_KEY, timestamp=0,
                       settings={"notification_url": VECTOR_URL},
                       where="square-python-sdk tests/utilities/test_webhooks_helper.py")]

    def reference_verify(self, body: bytes, headers: Mapping[str, str], secret: str) -> bool:
        # Square's SDK verifies but cannot sign.
        return bool(square_verify_signature(request_body=body.decode(), signature_header=headers[
            "x-square-hmacsha256-signature"], signature_key=secret, notification_url=URL))


def signature(body: bytes, secret: str = SECRET, url: str = URL) -> str:
    src = make_source(SquareProvider(), [secret], name="square", notification_url=url)
    return SquareProvider().sign(body, secret, 0, src.ctx)["x-square-hmacsha256-signature"]


def verify(body: bytes, value: str | None, secrets: list[str] | None = None, url: str = URL) -> None:
    src = make_source(SquareProvider(), secrets or [SECRET], name="square", notification_url=url)
    headers = Headers({"x-square-hmacsha256-signature": value} if value is not None else {})
    src.provider.verify(body, headers, src.secrets, src.ctx)


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET, url: str = URL) -> Any:
    body = json.dumps(event).encode()
    return client.post("/webhooks/square", content=body, headers={
        "x-square-hmacsha256-signature": signature(body, secret, url), "Content-Type": "application/json"})


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"square": {"provider": "square", "secrets": [SECRET], "notification_url": URL}})


def payment_event(name: str = "payment.updated", **changes: Any) -> dict[str, Any]:
    event = fixture("square", name)
    event["data"]["object"]["payment"].update(changes)
    return event


BODY = json.dumps(fixture("square", "payment.updated")).encode()

# -- signatures ---------------------------------------------------------------------------------

# Published vector from Square's Python SDK (square/square-python-sdk),
# tests/utilities/test_webhooks_helper.py: this body, key and notification URL give this header;
# another URL, key or body does not.
VECTOR_BODY = (b'{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":'
               b'"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z",'
               b'"data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}')
VECTOR_HEADER = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4="
VECTOR_KEY = "Ibxx_5AKakO-3qeNVR61Dw"
VECTOR_URL = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9"


def test_square_sdk_test_vector_verifies() -> None:
    assert square_verify_signature(request_body=VECTOR_BODY.decode(), signature_header=VECTOR_HEADER,
                                   signature_key=VECTOR_KEY, notification_url=VECTOR_URL)
    verify(VECTOR_BODY, VECTOR_HEADER, [VECTOR_KEY], url=VECTOR_URL)
    assert signature(VECTOR_BODY, VECTOR_KEY, VECTOR_URL) == VECTOR_HEADER
    for body, key, url in [(VECTOR_BODY, VECTOR_KEY, "https://webhook.site/79a4f3a-dcfa-49ee-bac5-9d0edad886b9"),
                           (VECTOR_BODY, "MCmhFRxGX82xMwg5FsaoQA", VECTOR_URL),
                           (VECTOR_BODY.replace(b"2022-07-13", b"2022-06-13"), VECTOR_KEY, VECTOR_URL)]:
        with pytest.raises(SignatureError) as caught:
            verify(body, VECTOR_HEADER, [key], url=url)
        assert caught.value.code == "invalid_signature"


@pytest.mark.parametrize("name", fixture_names("square"))
def test_squares_sdk_accepts_our_signatures(name: str) -> None:
    body = fixture_path("square", name).read_bytes()
    assert square_verify_signature(request_body=body.decode(), signature_header=signature(body),
                                   signature_key=SECRET, notification_url=URL)
    assert not square_verify_signature(request_body=body.decode(), signature_header=signature(body, OTHER),
                                       signature_key=SECRET, notification_url=URL)
    verify(body, signature(body))


@pytest.mark.parametrize(("value", "code"), [(None, "missing_signature"), ("", "missing_signature"),
                                             ("not base64!", "invalid_signature"),
                                             (base64.b64encode(b"\0" * 32).decode(), "invalid_signature")])
def test_bad_signature_headers_have_clear_codes(value: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, value)
    assert caught.value.code == code


def test_forged_and_tampered_bodies_are_rejected() -> None:
    for body, value in [(BODY, signature(BODY, OTHER)), (BODY.replace(b"5400", b"1", 1), signature(BODY))]:
        with pytest.raises(SignatureError) as caught:
            verify(body, value)
        assert caught.value.code == "invalid_signature" and SECRET not in caught.value.message


def test_body_alone_without_the_url_is_not_squares_signature() -> None:
    body_only = base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode()
    with pytest.raises(SignatureError):
        verify(BODY, body_only)


@pytest.mark.parametrize("rewritten", ["http://hooks.example.com/webhooks/square",  # TLS ended at a proxy
                                       "https://hooks.example.com/webhooks/square/",
                                       "https://internal:8000/webhooks/square"])
def test_a_url_rewritten_on_the_way_fails_and_says_where_to_look(rewritten: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, signature(BODY, url=URL), url=rewritten)
    assert caught.value.code == "invalid_signature" and "notification_url" in caught.value.message


def test_rotated_signature_keys_any_configured_key_passes() -> None:
    verify(BODY, signature(BODY, "new-key"), secrets=["old-key", "new-key"])


def test_forged_and_unsigned_webhooks_are_400s_and_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("square", "payment.updated"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    r = client.post("/webhooks/square", content=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_signature"
    time.sleep(0.2)
    assert receiver.requests == []


# -- the notification_url setting ---------------------------------------------------------------


@pytest.mark.parametrize(("settings", "needle"), [({}, "notification_url"),
                                                  ({"notification_url": "/webhooks/square"}, "notification_url"),
                                                  ({"notification_url": URL, "signature_url": URL}, "signature_url")])
def test_notification_url_is_required_and_checked_at_startup(tmp_path: Path, settings: dict[str, Any],
                                                             needle: str) -> None:
    conf = config(tmp_path, "http://127.0.0.1:9", sources={"square": {"provider": "square", "secrets": [SECRET],
                                                                      **settings}})
    with pytest.raises(ConfigError) as caught:
        build_sources(conf, load_providers())
    assert "sources.square" in str(caught.value) and needle in str(caught.value)


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_a_completed_payment_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    assert post(client, fixture("square", "payment.updated")).json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.headers["idempotency-key"] == "sale:square:hYy9pRFVxpDsO1FB05SunFWUe9JZY"
    assert sale.body["eventName"] == "Purchase" and sale.body["invoiceId"] == "hYy9pRFVxpDsO1FB05SunFWUe9JZY"
    assert sale.body["clickId"] == "cl_square_demo" and sale.body["customerExternalId"] == "user_42"


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------


def source(**settings: Any) -> Any:
    return make_source(SquareProvider(), [SECRET], name="square", **{"notification_url": URL, **settings})


def square_flow(make_flow: Any, **settings: Any) -> Any:
    return make_flow(SquareProvider(), [SECRET], lambda body: {"x-square-hmacsha256-signature": signature(body)},
                     **{"notification_url": URL, **settings})


def sale_of(event: dict[str, Any]) -> Sale:
    sale = one(source(), event)
    assert isinstance(sale, Sale)
    return sale


def test_completed_payment_is_a_purchase_whose_amount_includes_tax() -> None:
    sale = sale_of(fixture("square", "payment.updated"))
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 5400, "usd")  # amount_money: tax in, tip out
    assert sale.invoice_id == "hYy9pRFVxpDsO1FB05SunFWUe9JZY"
    assert sale.click_id == "cl_square_demo"  # reference_id "dub_id_cl_square_demo"
    assert sale.external_id == "user_42"  # "userId=user_42" in the payment note
    assert sale.email == "jenny.smith@example.com"
    assert sale.provider_customer_id == "A0AP25A6ZH1YA7QXW4LQS0AXXW"
    assert sale.metadata["amountIncludesTax"] is True and sale.metadata["tipAmount"] == 500
    event = parse_event(source(), BODY, Headers({}))
    assert (event.id, event.livemode) == ("13b867cf-db3d-4b1c-90b6-2f32a9d78124", None)
    assert event.occurred_at.isoformat(timespec="milliseconds") == "2026-05-03T16:20:53.012+00:00"


def test_a_payment_reference_without_the_prefix_is_not_an_identity() -> None:
    sale = sale_of(payment_event(reference_id="ORDER-1042", note=None))
    assert (sale.click_id, sale.external_id) == (None, None)


def test_payment_created_completed_and_its_update_are_one_sale(make_flow: Any) -> None:
    flow = square_flow(make_flow)
    assert flow.receive(fixture("square", "payment.created"))["status"] == "accepted"
    answer = flow.receive(fixture("square", "payment.updated"))
    assert (answer["status"], answer["reason"]) == ("duplicate", "business_key")
    assert len(flow.stored()) == 1


def test_refund_sends_payment_updated_again_and_it_is_still_one_sale(make_flow: Any) -> None:
    flow = square_flow(make_flow)
    assert flow.receive(fixture("square", "payment.updated"))["status"] == "accepted"
    answer = flow.receive(fixture("square", "payment.updated+refunded"))  # still COMPLETED
    assert (answer["status"], answer["reason"]) == ("duplicate", "business_key")
    assert len(flow.stored()) == 1
    assert sale_of(fixture("square", "payment.updated+refunded")).amount == 5400


@pytest.mark.parametrize(("name", "changes", "reason"), [
    ("payment.created+approved", {}, "unpaid"),
    ("payment.updated", {"status": "CANCELED"}, "unpaid"),
    ("payment.updated", {"status": "FAILED"}, "unpaid"),
    ("payment.updated", {"amount_money": {"amount": 0, "currency": "USD"}}, "zero_amount"),
])
def test_uncountable_payments_are_ignored_with_reasons(make_flow: Any, name: str, changes: dict[str, Any],
                                                       reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        mapped(source(), payment_event(name, **changes))
    assert caught.value.reason == reason
    flow = square_flow(make_flow)
    answer = flow.receive(payment_event(name, **changes))
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


@pytest.mark.parametrize(("currency", "amount"), [("JPY", 1500), ("GBP", 1999), ("EUR", 5)])
def test_amounts_are_exact_minor_units(currency: str, amount: int) -> None:
    sale = sale_of(payment_event(amount_money={"amount": amount, "currency": currency}))
    assert (sale.amount, sale.currency) == (amount, currency.lower())


def test_amount_that_is_not_an_integer_is_a_400(client: Any) -> None:
    with pytest.raises(PayloadError):
        mapped(source(), payment_event(amount_money={"amount": "54.00", "currency": "USD"}))
    r = post(client, payment_event(amount_money={"amount": "54.00", "currency": "USD"}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"


@pytest.mark.parametrize("event_type", ["order.updated", "invoice.payment_made", "customer.updated",
                                        "dispute.created"])
def test_untracked_event_types_are_ignored(event_type: str) -> None:
    event = fixture("square", "payment.updated")
    event["type"] = event_type
    assert mapped(source(), event) == []


def test_redelivery_of_an_event_id_is_a_duplicate(make_flow: Any) -> None:
    flow = square_flow(make_flow)
    event = fixture("square", "payment.updated")
    first = flow.receive(event)
    assert flow.receive(event) == {"status": "duplicate", "eventId": first["eventId"]}
    assert [s.state for s in flow.stored()] == ["pending"]


def test_nanosecond_timestamps_parse() -> None:
    event = fixture("square", "payment.updated")
    event["created_at"] = "2022-07-13T20:30:59.037339943Z"
    parsed = parse_event(source(), json.dumps(event).encode(), Headers({}))
    assert parsed.occurred_at.isoformat(timespec="milliseconds") == "2022-07-13T20:30:59.037+00:00"


def test_events_pass_any_livemode_filter() -> None:
    assert len(mapped(source(livemode="live"), fixture("square", "payment.updated"))) == 1


def test_customer_created_is_a_lead_and_its_payments_share_identity(make_flow: Any) -> None:
    lead = one(source(), fixture("square", "customer.created"))
    assert isinstance(lead, Lead) and lead.click_id == "cl_square_lead"  # note "clickId=..."
    assert (lead.external_id, lead.name) == ("user_42", "Jenny Smith")  # the customer's reference_id
    assert lead.phone == "+1-212-555-4240"
    flow = square_flow(make_flow)
    assert flow.receive(fixture("square", "customer.created"))["status"] == "accepted"
    bare = payment_event(note=None, reference_id=None, buyer_email_address=None)  # only customer_id
    assert flow.receive(bare)["status"] == "accepted"
    stored_lead, sale = flow.stored()
    assert (stored_lead.kind, sale.kind) == ("lead", "sale")
    assert stored_lead.event_name == "Sign up"
    assert (sale.external_id, sale.click_id) == ("user_42", "cl_square_lead")
    assert sale.email == "jenny.smith@example.com"


def test_customer_reference_with_the_click_prefix_is_a_click_id(make_flow: Any) -> None:
    event = fixture("square", "customer.created")
    event["data"]["object"]["customer"].update(reference_id="dub_id_cl_from_ref", note=None)
    lead = one(source(), event)
    assert (lead.click_id, lead.external_id) == ("cl_from_ref", None)
    assert one(source(client_reference_prefix="ref_"), event).external_id == "dub_id_cl_from_ref"
    flow = square_flow(make_flow, forward_leads_without_click_id=True)
    [stored] = flow.stored(flow.receive(event))
    assert stored.external_id == "A0AP25A6ZH1YA7QXW4LQS0AXXW"  # no user id: Square's customer id


def test_payment_ids_are_global_and_tax_is_included(make_flow: Any) -> None:
    flow = square_flow(make_flow)
    [stored] = flow.stored(flow.receive(fixture("square", "payment.updated")))
    assert stored.invoice_id == "hYy9pRFVxpDsO1FB05SunFWUe9JZY" and stored.metadata["tax"] == "included"


# --- refunds and lost disputes (SPEC §9) ---------------------------------------------------------

PAYMENT_ID = "hYy9pRFVxpDsO1FB05SunFWUe9JZY"


def refund_of(event: dict[str, Any]) -> Refund:
    refund = one(source(), event)
    assert isinstance(refund, Refund)
    return refund


def test_a_completed_refund_reverses_its_payment_on_the_total_with_tip() -> None:
    refund = refund_of(fixture("square", "refund.updated"))
    assert refund.reverses == (PAYMENT_ID,)
    assert (refund.amount, refund.currency) == (1500, "usd")
    assert refund.includes_tax is True  # on total_money: the core scales it by 5400 / 5900
    assert (refund.cumulative, refund.chargeback) == (False, False)
    assert refund.refund_id == "hYy9pRFVxpDsO1FB05SunFWUe9JZY_KlWP4IC1ixSJdT5WvI7ZkBYr9NStvxWbTtLvE8pqS2"
    sale = sale_of(fixture("square", "payment.updated"))
    assert (sale.invoice_id, sale.amount, sale.gross_amount) == (PAYMENT_ID, 5400, 5900)


def test_a_full_refund_of_the_total_is_the_whole_sale() -> None:
    event = fixture("square", "refund.updated")
    event["data"]["object"]["refund"]["amount_money"]["amount"] = 5900
    assert refund_of(event).amount == 5900  # × 5400/5900 = the Sale's 5400


def test_a_pending_refund_does_not_count_until_it_completes() -> None:
    with pytest.raises(Ignore, match="refund_not_completed"):
        mapped(source(), fixture("square", "refund.created"))
    for status in ("PENDING", "REJECTED", "FAILED"):
        event = fixture("square", "refund.updated")
        event["data"]["object"]["refund"]["status"] = status
        with pytest.raises(Ignore, match="refund_not_completed"):
            mapped(source(), event)


def test_a_lost_dispute_is_a_chargeback_of_the_disputed_payment() -> None:
    refund = refund_of(fixture("square", "dispute.state.changed"))
    assert refund.reverses == (PAYMENT_ID,)
    assert (refund.amount, refund.chargeback, refund.refund_id) == (5400, True, "XDgyFu7yo1E2S5lQGGpYn")
    event = fixture("square", "dispute.state.changed")
    event["data"]["object"]["dispute"]["state"] = "WON"
    with pytest.raises(Ignore, match="dispute_not_lost"):
        mapped(source(), event)
