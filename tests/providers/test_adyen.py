"""Adyen: items signed by Adyen's own library (`Adyen.util`) and its published vector, Basic
credentials, one item failing refuses the delivery, per-item dedup, mapping, `[accepted]`."""

from __future__ import annotations

import base64
import copy
import json
import time
from typing import Any

import pytest
from Adyen.util import generate_notification_sig, is_valid_hmac_notification
from starlette.datastructures import Headers

from adapter.errors import CredentialsError, Ignore, PayloadError, SignatureError
from adapter.events import Refund, Sale
from adapter.ingest import parse_events
from adapter.samples import post_sample
from adapter.testing import make_source
from providers.adyen import AdyenProvider
from tests.conftest import fixture, wait_for
from tests.providers.flow import mapped, one

# The key and item of adyen-python-api-library test/UtilTest.py (test_notification_request_item_hmac).
VECTOR_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
VECTOR_ITEM: dict[str, Any] = {
    "pspReference": "7914073381342284", "merchantReference": "TestPayment-1407325143704",
    "merchantAccountCode": "TestMerchant", "amount": {"currency": "EUR", "value": 1130},
    "eventCode": "AUTHORISATION", "success": "true", "eventDate": "2019-05-06T17:15:34.121+02:00",
    "operations": ["CANCEL", "CAPTURE", "REFUND"], "paymentMethod": "visa",
}
VECTOR_SIGNATURE = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="
KEY = "9F1C2B3A4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F8"
OTHER_KEY = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"
PAIR = "adyen_ws:Str0ng-n0tif-p4ss"
SETTINGS: dict[str, Any] = {"basic_auth": [PAIR]}


def basic(pair: str = PAIR) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def signed(delivery: dict[str, Any], key: str = KEY) -> bytes:
    """The delivery with every item's hmacSignature made by Adyen's library."""
    out = copy.deepcopy(delivery)
    for entry in out["notificationItems"]:
        item = entry["NotificationRequestItem"]
        unsigned = {k: v for k, v in item.items() if k != "additionalData"}
        item.setdefault("additionalData", {})["hmacSignature"] = generate_notification_sig(unsigned, key).decode()
    return json.dumps(out).encode()


def delivery(*items: dict[str, Any], live: str = "false") -> dict[str, Any]:
    return {"live": live, "notificationItems": [{"NotificationRequestItem": i} for i in items]}


def item(name: str = "AUTHORISATION", index: int = 0, **changes: Any) -> dict[str, Any]:
    found: dict[str, Any] = fixture("adyen", name)["notificationItems"][index]["NotificationRequestItem"]
    found.update(changes)
    return found


def source(**settings: Any) -> Any:
    return make_source(AdyenProvider(), [KEY], name="adyen", **{**SETTINGS, **settings})


def verify(body: bytes, headers: dict[str, str] | None = None, keys: list[str] | None = None) -> None:
    src = make_source(AdyenProvider(), keys or [KEY], name="adyen", **SETTINGS)
    src.provider.verify(body, Headers(basic() if headers is None else headers), src.secrets, src.ctx)


def refused(body: bytes, headers: dict[str, str] | None = None, keys: list[str] | None = None) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(body, headers, keys)
    return caught.value


# -- signatures and credentials -------------------------------------------------------------------


def test_adyens_published_vector_verifies() -> None:
    item_ = {**VECTOR_ITEM, "additionalData": {"hmacSignature": VECTOR_SIGNATURE}}
    verify(json.dumps(delivery(item_)).encode(), keys=[VECTOR_KEY])
    tampered = {**item_, "amount": {"currency": "EUR", "value": 1131}}
    assert refused(json.dumps(delivery(tampered)).encode(), keys=[VECTOR_KEY]).code == "invalid_signature"


def test_items_signed_by_adyens_library_verify_and_ours_pass_its_verifier() -> None:
    body = signed(fixture("adyen", "AUTHORISATION+batch"))
    verify(body)
    ours = json.loads(AdyenProvider().sign_sample(json.dumps(fixture("adyen", "AUTHORISATION+batch")).encode(), KEY))
    for entry in ours["notificationItems"]:
        assert is_valid_hmac_notification(entry["NotificationRequestItem"], KEY)
        assert not is_valid_hmac_notification(entry["NotificationRequestItem"], OTHER_KEY)


def test_one_forged_item_refuses_the_whole_delivery() -> None:
    good = json.loads(signed(fixture("adyen", "AUTHORISATION+batch")))
    forged = json.loads(signed(fixture("adyen", "AUTHORISATION+batch"), OTHER_KEY))
    good["notificationItems"][1] = forged["notificationItems"][1]
    refusal = refused(json.dumps(good).encode())
    assert refusal.code == "invalid_signature" and "item 1" in refusal.message
    assert KEY not in refusal.message


def test_a_signed_field_tampered_is_refused_but_additional_data_is_not_signed() -> None:
    data = json.loads(signed(fixture("adyen", "AUTHORISATION")))
    entry = data["notificationItems"][0]["NotificationRequestItem"]
    entry["additionalData"]["shopperReference"] = "someone_else"
    verify(json.dumps(data).encode())  # why the source needs Basic credentials too
    entry["amount"]["value"] = 1
    assert refused(json.dumps(data).encode()).code == "invalid_signature"


@pytest.mark.parametrize("headers", [{}, basic("adyen_ws:wrong"), {"Authorization": "Bearer x"}])
def test_without_the_basic_credentials_even_a_signed_delivery_is_401(headers: dict[str, str]) -> None:
    with pytest.raises(CredentialsError):
        verify(signed(fixture("adyen", "AUTHORISATION")), headers)


def test_missing_or_malformed_signatures_have_clear_codes() -> None:
    unsigned = json.dumps(fixture("adyen", "AUTHORISATION")).encode()
    assert refused(unsigned).code == "missing_signature"
    assert refused(b"not json").code == "missing_signature"
    data = fixture("adyen", "AUTHORISATION")
    data["notificationItems"][0]["NotificationRequestItem"]["additionalData"]["hmacSignature"] = "not base64!"
    assert refused(json.dumps(data).encode()).code == "invalid_signature"


def test_every_configured_key_is_tried() -> None:
    verify(signed(fixture("adyen", "AUTHORISATION"), OTHER_KEY), keys=[KEY, OTHER_KEY])


def test_a_key_that_is_not_hex_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="hexadecimal"):
        AdyenProvider().check_secrets(["not-hex"], source().ctx)


# -- mapping --------------------------------------------------------------------------------------


def test_authorisation_is_the_sale_when_the_merchant_captures_automatically() -> None:
    sale = one(source(), delivery(item()))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.currency, sale.gross_amount) == ("purchase", 4900, "eur", 4900)
    assert sale.invoice_id == "order-4711" and sale.payment_refs == ("7914073381342284", "order-4711")
    assert (sale.external_id, sale.email, sale.name) == ("user_adyen_42", "ada@example.com", "Ada Lovelace")
    assert sale.click_id == "cl_adyen_click"  # additionalData `metadata.dub_id`
    [event] = parse_events(source(), json.dumps(delivery(item())).encode(), Headers({}))
    assert (event.id, event.type, event.livemode) == ("7914073381342284:AUTHORISATION:true", "AUTHORISATION", False)
    assert event.occurred_at.isoformat() == "2026-04-10T10:34:56+00:00"


def test_with_manual_capture_the_capture_is_the_sale() -> None:
    capture = item(eventCode="CAPTURE", pspReference="8835073381342290", originalReference="7914073381342284")
    with pytest.raises(Ignore) as caught:
        mapped(source(capture="manual"), delivery(item()))
    assert caught.value.reason == "awaiting_capture"
    sale = one(source(capture="manual"), delivery(capture))
    assert isinstance(sale, Sale) and sale.invoice_id == "order-4711"
    assert sale.payment_refs == ("7914073381342284", "8835073381342290", "order-4711")
    with pytest.raises(Ignore) as caught:
        mapped(source(), delivery(capture))
    assert caught.value.reason == "counted_at_authorisation"


@pytest.mark.parametrize(("changes", "reason"), [({"success": "false"}, "unpaid"),
                                                 ({"amount": {"currency": "EUR", "value": 0}}, "zero_amount")])
def test_uncountable_authorisations_are_ignored(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(Ignore) as caught:
        mapped(source(), delivery(item(**changes)))
    assert caught.value.reason == reason


def test_a_payment_without_merchant_reference_is_invoiced_by_its_psp_reference() -> None:
    sale = one(source(), delivery(item(merchantReference=None)))
    assert isinstance(sale, Sale) and sale.invoice_id == "7914073381342284"


def test_refund_and_chargeback_reverse_the_payment() -> None:
    [refund] = mapped(source(), delivery(item("REFUND")))
    assert isinstance(refund, Refund)
    assert refund.reverses == ("7914073381342284", "order-4711")
    assert (refund.amount, refund.currency, refund.includes_tax, refund.chargeback) == (1000, "eur", True, False)
    assert refund.refund_id == "8825073381342299"
    dispute = item("REFUND", eventCode="CHARGEBACK", pspReference="9915555555555555")
    [chargeback] = mapped(source(), delivery(dispute))
    assert isinstance(chargeback, Refund) and chargeback.chargeback
    assert (chargeback.reverses, chargeback.refund_id) == (("7914073381342284", "order-4711"), "9915555555555555")
    with pytest.raises(Ignore) as caught:
        mapped(source(), delivery(item("REFUND", success="false")))
    assert caught.value.reason == "refund_failed"


def test_untracked_codes_and_malformed_items() -> None:
    assert mapped(source(), delivery(item(eventCode="REPORT_AVAILABLE"))) == []
    with pytest.raises(PayloadError):
        mapped(source(), delivery(item(amount={"currency": "EUR", "value": "49.00"})))
    with pytest.raises(PayloadError):
        mapped(source(), delivery(item(pspReference=None)))
    with pytest.raises(PayloadError):
        mapped(source(), {"live": "false"})


def test_each_item_is_deduped_on_psp_reference_event_code_and_success(make_flow: Any) -> None:
    flow = make_flow(AdyenProvider(), [KEY], lambda body: basic(), **SETTINGS)
    failed, paid = item(success="false"), item()
    first = flow.receive(signed(delivery(failed, paid)), basic())
    assert [(e["status"], e.get("reason")) for e in first["events"]] == [("ignored", "unpaid"), ("accepted", None)]
    again = flow.receive(signed(delivery(paid)), basic())
    assert again["events"] == [{"id": "7914073381342284:AUTHORISATION:true", "status": "duplicate",
                                "eventId": first["events"][1]["eventId"]}]
    assert [s.invoice_id for s in flow.stored()] == ["adyen:order-4711"]  # account-scoped (invoice_ids = "account")


# -- end to end: the app, the forwarder and a real loopback receiver -------------------------------


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"adyen": {"provider": "adyen", "secrets": [KEY], **SETTINGS}})


def test_a_batch_reaches_the_tracking_api_and_adyen_gets_accepted(client: Any, receiver: Any) -> None:
    body = signed(fixture("adyen", "AUTHORISATION+batch"))
    r = client.post("/webhooks/adyen", content=body, headers={**basic(), "Content-Type": "application/json"})
    assert (r.status_code, r.text) == (200, "[accepted]")
    sales = wait_for(lambda: len(receiver.delivered()) == 2 and receiver.delivered())
    assert sorted(s.body["invoiceId"] for s in sales) == ["adyen:order-4712", "adyen:order-4713"]
    assert {s.body["customerExternalId"] for s in sales} == {"user_adyen_7", "user_adyen_8"}
    again = client.post("/webhooks/adyen", content=body, headers=basic())
    assert (again.status_code, again.text) == (200, "[accepted]")  # retried: duplicates, still accepted
    forged = signed(fixture("adyen", "AUTHORISATION"), OTHER_KEY)
    r = client.post("/webhooks/adyen", content=forged, headers=basic())
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    assert client.post("/webhooks/adyen", content=body).status_code == 401
    time.sleep(0.2)
    assert len(receiver.delivered()) == 2


def test_every_sale_sample_is_accepted_the_way_hooktrack_send_posts_it(client: Any, receiver: Any) -> None:
    src = client.app.state.sources["adyen"]
    for name in ("AUTHORISATION", "AUTHORISATION+batch"):
        r = post_sample(src, name, "", client=client)
        assert (r.status_code, r.text) == (200, "[accepted]"), name
    sales = wait_for(lambda: len(receiver.delivered()) == 3 and receiver.delivered())
    assert len({s.body["invoiceId"] for s in sales}) == 3 and all(s.body["amount"] > 0 for s in sales)
