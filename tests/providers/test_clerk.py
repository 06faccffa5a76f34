"""Clerk: Svix signatures made by the official `svix` package (and Svix's published vector),
`user.created` Leads, click ids and user ids from metadata, flows through the core."""

from __future__ import annotations

import base64
import copy
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.datastructures import Headers
from svix.webhooks import Webhook

from adapter.errors import PayloadError, SignatureError
from adapter.events import Lead
from adapter.ingest import map_event
from adapter.testing import ProviderContract, Vector, make_source
from providers.clerk import ClerkProvider
from providers.standardwebhooks import message_id
from tests.conftest import fixture, wait_for

SECRET = "whsec_" + base64.b64encode(b"hooktrack clerk svix signing secret!").decode()
OTHER = "whsec_" + base64.b64encode(b"another clerk instance's svix secret").decode()
USER = "user_2vQm8PaLk9ZsXd4Fg6Hj2Kl0Mn1"


def svix_headers(body: bytes, secret: str = SECRET, timestamp: int | None = None,
                 msg_id: str | None = None) -> dict[str, str]:
    """Headers signed by the official `svix` package."""
    ts = int(time.time()) if timestamp is None else timestamp
    msg_id = msg_id or message_id(body)
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {"svix-id": msg_id, "svix-timestamp": str(ts), "svix-signature": signature}


class TestClerkContract(ProviderContract):
    provider_class = ClerkProvider
    secret = SECRET
    other_secret = OTHER

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return svix_headers(body, secret, timestamp)

    def vectors(self) -> list[Vector]:
        return [Vector(VECTOR_BODY, VECTOR, VECTOR_SECRET, where="svix-webhooks python/tests/test_webhooks.py")]


def verify(body: bytes, headers: dict[str, str], secrets: list[str] | None = None, **settings: Any) -> None:
    src = make_source(ClerkProvider(), secrets or [SECRET], name="clerk", **settings)
    src.provider.verify(body, Headers(headers), src.secrets, src.ctx)


def lead_of(event: dict[str, Any], **settings: Any) -> Lead:
    src = make_source(ClerkProvider(), [SECRET], name="clerk", **settings)
    body = json.dumps(event).encode()
    [lead] = map_event(src, src.provider.parse(body, Headers({"svix-id": "msg_1"})))
    assert isinstance(lead, Lead)
    return lead


def post(client: Any, event: dict[str, Any], *, secret: str = SECRET, msg_id: str | None = None,
         timestamp: int | None = None) -> Any:
    body = json.dumps(event).encode()
    return client.post("/webhooks/clerk", content=body,
                       headers={**svix_headers(body, secret, timestamp, msg_id), "Content-Type": "application/json"})


def user_created(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(fixture("clerk", "user.created"))
    event["data"].update(changes)
    return event


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(sources={"clerk": {"provider": "clerk", "secrets": [SECRET]}})


BODY = json.dumps(fixture("clerk", "user.created")).encode()

# -- signatures ---------------------------------------------------------------------------------

# Published vector from Svix's Python library, python/tests/test_webhooks.py
# (github.com/svix/svix-webhooks: `test_sign_function`, and the near-miss of
# `test_invalid_signature_raises_error`); the same bytes the Standard Webhooks libraries use.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR = {"svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "svix-timestamp": "1614265330",
          "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
VECTOR_BODY = b'{"test": 2432232314}'


def test_svix_test_vector_verifies_and_its_near_miss_does_not() -> None:
    verify(VECTOR_BODY, VECTOR, [VECTOR_SECRET], tolerance_s=10**10)
    near_miss = {**VECTOR, "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}
    with pytest.raises(SignatureError) as caught:
        verify(VECTOR_BODY, near_miss, [VECTOR_SECRET], tolerance_s=10**10)
    assert caught.value.code == "invalid_signature"
    with pytest.raises(SignatureError) as caught:
        verify(VECTOR_BODY, VECTOR, [VECTOR_SECRET])
    assert caught.value.code == "stale_timestamp"


def test_our_signer_matches_the_svix_package() -> None:
    src = make_source(ClerkProvider(), [VECTOR_SECRET])
    ours = src.provider.sign(VECTOR_BODY, VECTOR_SECRET, 1614265330, src.ctx)
    assert ours["svix-signature"] == Webhook(VECTOR_SECRET).sign(
        ours["svix-id"], datetime.fromtimestamp(1614265330, UTC), VECTOR_BODY.decode())


def test_webhook_header_names_are_accepted_as_svix_does() -> None:
    headers = svix_headers(BODY)
    verify(BODY, {k.replace("svix-", "webhook-"): v for k, v in headers.items()})


@pytest.mark.parametrize(
    ("change", "code"),
    [({"svix-id": None}, "missing_signature"), ({"svix-signature": None}, "missing_signature"),
     ({"svix-timestamp": "soon"}, "invalid_signature"), ({"svix-id": "msg_other"}, "invalid_signature"),
     ({"svix-timestamp": str(int(time.time()) + 3600)}, "stale_timestamp")],
)
def test_bad_svix_headers_have_clear_codes(change: dict[str, str | None], code: str) -> None:
    headers = {k: v for k, v in {**svix_headers(BODY), **change}.items() if v is not None}
    with pytest.raises(SignatureError) as caught:
        verify(BODY, headers)
    assert caught.value.code == code


def test_forged_webhook_is_a_400_and_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, fixture("clerk", "user.created"), secret=OTHER)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    time.sleep(0.2)
    assert receiver.requests == []


# -- mapping ------------------------------------------------------------------------------------


def test_user_created_is_a_sign_up_lead_with_the_primary_email() -> None:
    lead = lead_of(fixture("clerk", "user.created"))
    assert lead.kind == "sign_up"
    assert lead.email == "ada@example.com"  # the primary address, not the first listed
    assert (lead.name, lead.provider_customer_id) == ("Ada Lovelace", USER)
    assert (lead.click_id, lead.external_id) == ("cl_clerk_42", None)


def test_parse_takes_the_svix_id_and_the_millisecond_timestamp() -> None:
    event = ClerkProvider().parse(BODY, Headers({"svix-id": "msg_abc", "svix-timestamp": "1"}))
    assert (event.id, event.type, event.livemode) == ("msg_abc", "user.created", None)
    assert event.occurred_at == datetime(2026, 4, 10, 12, 34, 56, 318000, tzinfo=UTC)
    with pytest.raises(PayloadError):
        ClerkProvider().parse(BODY, Headers({}))


def test_external_id_then_metadata_keys_give_the_explicit_id() -> None:
    assert lead_of(user_created(external_id="567772")).external_id == "567772"
    from_public = user_created(public_metadata={"userId": "user_42"}, unsafe_metadata={"userId": "spoofed"})
    assert lead_of(from_public).external_id == "user_42"  # the server-written metadata wins
    assert lead_of(user_created(unsafe_metadata={"customerExternalId": "u_9"})).external_id == "u_9"
    assert lead_of(user_created(external_id="567772", public_metadata={"userId": "user_42"})).external_id == "567772"


def test_click_id_keys_come_from_the_source_settings() -> None:
    event = user_created(unsafe_metadata={"ref": "cl_custom"}, public_metadata={"dub_id": "cl_public"})
    assert lead_of(event).click_id == "cl_public"
    assert lead_of(event, click_id_keys=["ref"]).click_id == "cl_custom"


def test_sparse_users_still_make_a_lead() -> None:
    lead = lead_of(user_created(first_name=None, last_name="", email_addresses=[], primary_email_address_id=None,
                                unsafe_metadata={}, public_metadata=None))
    assert (lead.email, lead.name, lead.click_id, lead.provider_customer_id) == (None, None, None, USER)
    stale_primary = lead_of(user_created(primary_email_address_id="idn_gone"))
    assert stale_primary.email == "ada.work@example.com"


def test_a_user_without_an_id_is_a_payload_error() -> None:
    with pytest.raises(PayloadError):
        lead_of(user_created(id=None))


# -- through the core ---------------------------------------------------------------------------


def test_sign_up_with_click_id_is_forwarded_as_a_lead(client: Any, receiver: Any) -> None:
    r = post(client, user_created(public_metadata={"userId": "user_42"}))
    assert r.json()["status"] == "accepted"
    [lead] = wait_for(receiver.delivered)
    assert lead.kind == "lead" and lead.headers["idempotency-key"] == "lead:clerk:user_42:Sign up"
    body = lead.body
    assert (body["eventName"], body["clickId"], body["customerExternalId"]) == ("Sign up", "cl_clerk_42", "user_42")
    assert (body["customerEmail"], body["customerName"]) == ("ada@example.com", "Ada Lovelace")
    assert body["timestamp"] == "2026-04-10T12:34:56.318Z"
    assert body["metadata"]["providerCustomerId"] == USER
    assert body["metadata"]["providerEventType"] == "user.created"


def test_without_external_id_the_clerk_user_id_is_the_customer(client: Any, receiver: Any) -> None:
    post(client, fixture("clerk", "user.created"))
    [lead] = wait_for(receiver.delivered)
    assert lead.body["customerExternalId"] == USER


def test_a_lead_without_click_id_is_recorded_not_forwarded(client: Any, receiver: Any) -> None:
    r = post(client, user_created(unsafe_metadata={}))
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "no_click_id"
    time.sleep(0.3)
    assert receiver.requests == []


def test_forward_leads_without_click_id_sends_it_anyway(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"clerk": {"provider": "clerk", "secrets": [SECRET],
                                            "forward_leads_without_click_id": True}})
    assert post(client, user_created(unsafe_metadata={})).json()["status"] == "accepted"
    [lead] = wait_for(lambda: receiver.requests)
    # `clickId: ""` asks Dub for the click it knows of this customer; it knows none here, so it
    # answers 400 (track-lead.ts) and the lead ends unattributed, not dead.
    assert lead.body["clickId"] == "" and lead.body["customerExternalId"] == USER
    assert lead.status == 400


def test_a_redelivered_message_is_a_duplicate(client: Any, receiver: Any) -> None:
    event = fixture("clerk", "user.created")
    first = post(client, event, msg_id="msg_2vQm9AbCdEf")
    again = post(client, event, msg_id="msg_2vQm9AbCdEf", timestamp=int(time.time()) + 3)
    assert again.json() == {"status": "duplicate", "eventId": first.json()["eventId"]}
    wait_for(receiver.delivered)
    time.sleep(0.3)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("event_type", ["user.updated", "user.deleted", "session.created", "organization.created"])
def test_other_clerk_events_are_not_tracked(client: Any, event_type: str) -> None:
    event = fixture("clerk", "user.created")
    event["type"] = event_type
    r = post(client, event)
    assert r.json()["status"] == "ignored" and r.json()["reason"] == "event_type_not_tracked"


def test_a_body_without_data_is_a_400(client: Any) -> None:
    r = post(client, {"type": "user.created", "object": "event", "timestamp": 1775824496318})
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_payload"
