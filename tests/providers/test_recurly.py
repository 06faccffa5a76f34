"""Recurly JSON webhooks: `recurly-signature` (ms timestamp, hex HMAC-SHA256 of `timestamp.body`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Lead
from adapter.ingest import parse_event
from adapter.samples import post_sample
from adapter.testing import ProviderContract, make_source
from providers.recurly import RecurlyProvider
from tests.conftest import fixture
from tests.providers.flow import mapped, one

SECRET = "recurly_endpoint_key_0123456789abcdef"
OTHER = "recurly_endpoint_key_rotated_fedcba98"


def signed(body: bytes, *secrets: str, ms: int | None = None) -> dict[str, str]:
    """Recurly's documented recipe, written out: `<ms>,<hex>[,<hex>...]` over `{ms}.{body}`."""
    stamp = str(int(time.time() * 1000) if ms is None else ms)
    sigs = [hmac.new(s.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest() for s in secrets or (SECRET,)]
    return {"recurly-signature": ",".join([stamp, *sigs])}


class TestRecurlyContract(ProviderContract):
    provider_class = RecurlyProvider
    secret = SECRET
    other_secret = OTHER

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return signed(body, secret, ms=timestamp * 1000)


def source() -> Any:
    return make_source(RecurlyProvider(), [SECRET], name="recurly")


def verify(body: bytes, headers: dict[str, str], secrets: list[str] | None = None) -> None:
    src = make_source(RecurlyProvider(), secrets or [SECRET], name="recurly")
    src.provider.verify(body, Headers(headers), src.secrets, src.ctx)


BODY = json.dumps(fixture("recurly", "account.created")).encode()


def test_a_header_with_two_signatures_during_rotation_verifies() -> None:
    verify(BODY, signed(BODY, OTHER, SECRET))
    verify(BODY, signed(BODY, OTHER), secrets=[SECRET, OTHER])


def test_the_timestamp_is_milliseconds_and_checked() -> None:
    seconds = int(time.time())
    with pytest.raises(SignatureError) as caught:  # a seconds timestamp read as ms is 1970
        verify(BODY, signed(BODY, ms=seconds))
    assert caught.value.code == "stale_timestamp"
    with pytest.raises(SignatureError) as caught:
        verify(BODY, signed(BODY, ms=(seconds - 600) * 1000))
    assert caught.value.code == "stale_timestamp"


def test_forged_and_tampered_are_refused() -> None:
    for body, headers in ((BODY, signed(BODY, OTHER)), (BODY.replace(b"42", b"43"), signed(BODY))):
        with pytest.raises(SignatureError) as caught:
            verify(body, headers)
        assert caught.value.code == "invalid_signature"


def test_account_created_is_a_sign_up_by_account_code(make_flow: Any) -> None:
    lead = one(source(), BODY)
    assert isinstance(lead, Lead) and lead.kind == "sign_up"
    assert lead.provider_customer_id == "user_recurly_42"
    event = parse_event(source(), BODY, Headers({}))
    assert (event.id, event.type, event.livemode) == ("account.created:sjt4jqpiw8ms", "account.created", None)
    assert event.occurred_at.isoformat() == "2026-04-10T12:30:02+00:00"
    flow = make_flow(RecurlyProvider(), [SECRET], lambda body: signed(body))
    [stored] = flow.stored(flow.receive(BODY))
    assert (stored.kind, stored.event_name, stored.external_id) == ("lead", "Sign up", "user_recurly_42")


def test_paid_charge_invoice_is_ignored_because_the_json_body_has_no_amount(make_flow: Any) -> None:
    body = json.dumps(fixture("recurly", "charge_invoice.paid")).encode()
    with pytest.raises(Ignore) as caught:
        mapped(source(), body)
    assert caught.value.reason == "amount_not_in_payload"
    flow = make_flow(RecurlyProvider(), [SECRET], lambda b: signed(b))
    answer = flow.receive(body)
    assert (answer["status"], answer["reason"]) == ("ignored", "amount_not_in_payload")


def test_other_events_are_untracked_and_an_xml_body_is_malformed() -> None:
    event = fixture("recurly", "account.created")
    event["event_type"] = "updated"
    assert mapped(source(), event) == []
    with pytest.raises(PayloadError):
        mapped(source(), b"<new_account_notification/>")


def test_a_signed_sample_is_accepted_through_the_app_and_a_forged_one_refused(make_client: Any) -> None:
    """Recurly gives no click id, so its Sign up is recorded for identity (not forwarded)."""
    client = make_client(sources={"recurly": {"provider": "recurly", "secrets": [SECRET]}})
    src = client.app.state.sources["recurly"]
    r = post_sample(src, "account.created", "", client=client)
    assert r.status_code == 200 and r.json()["status"] in ("accepted", "ignored"), r.text
    again = post_sample(src, "charge_invoice.paid", "", client=client)
    assert again.json()["reason"] == "amount_not_in_payload"
    forged = client.post("/webhooks/recurly", content=BODY, headers=signed(BODY, OTHER))
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_signature"
