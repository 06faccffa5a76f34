"""Stripe: signatures (signed by Stripe's own SDK), mapping, and the flows through the core."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import stripe
from starlette.datastructures import Headers

from adapter.errors import Ignore, SignatureError
from adapter.events import Lead, Sale
from adapter.ingest import parse_event
from adapter.testing import ProviderContract, make_source
from providers.stripe import StripeProvider
from tests.conftest import STRIPE_SECRET, fixture, post_stripe, sent_once
from tests.providers.flow import mapped, one


class TestStripeContract(ProviderContract):
    provider_class = StripeProvider
    secret = STRIPE_SECRET
    other_secret = "whsec_someone_elses_secret_000000"

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp)
        return {"Stripe-Signature": header}


def verify(body: bytes, header: str | None, secrets: list[str] | None = None) -> None:
    src = make_source(StripeProvider(), secrets or [STRIPE_SECRET], name="stripe")
    headers = Headers({"Stripe-Signature": header} if header is not None else {})
    src.provider.verify(body, headers, src.secrets, src.ctx)


def signature(body: bytes, secret: str = STRIPE_SECRET, timestamp: int | None = None) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp))


BODY = json.dumps(fixture("stripe", "checkout.session.completed")).encode()


def test_valid_signature_is_accepted() -> None:
    verify(BODY, signature(BODY))


def test_our_signer_and_stripes_verifier_agree() -> None:
    src = make_source(StripeProvider(), [STRIPE_SECRET], name="stripe")
    header = StripeProvider().sign(BODY, STRIPE_SECRET, int(time.time()), src.ctx)["Stripe-Signature"]
    stripe.WebhookSignature.verify_header(BODY.decode(), header, STRIPE_SECRET, tolerance=300)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("t=123", "missing_signature"),
        ("v1=abc", "invalid_signature"),
        ("garbage", "invalid_signature"),
    ],
)
def test_malformed_signature_headers_have_clear_codes(header: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, header)
    assert caught.value.code == code


def test_forged_signature_is_rejected() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, signature(BODY, secret="whsec_forged"))
    assert caught.value.code == "invalid_signature"
    assert "whsec" not in caught.value.message


def test_tampered_body_is_rejected() -> None:
    header = signature(BODY)
    with pytest.raises(SignatureError) as caught:
        verify(BODY.replace(b"5390", b"1"), header)
    assert caught.value.code == "invalid_signature"


def test_stale_timestamp_is_rejected_after_the_signature_check() -> None:
    old = int(time.time()) - 301
    with pytest.raises(SignatureError) as caught:
        verify(BODY, signature(BODY, timestamp=old))
    assert caught.value.code == "stale_timestamp"
    with pytest.raises(SignatureError) as forged:
        verify(BODY, signature(BODY, secret="whsec_forged", timestamp=old))
    assert forged.value.code == "invalid_signature"


def test_timestamp_from_the_future_is_rejected() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(BODY, signature(BODY, timestamp=int(time.time()) + 3600))
    assert caught.value.code == "stale_timestamp"


def test_rotated_secrets_any_configured_secret_passes() -> None:
    verify(BODY, signature(BODY, secret="whsec_new"), secrets=["whsec_old", "whsec_new"])
    verify(BODY, signature(BODY, secret="whsec_old"), secrets=["whsec_old", "whsec_new"])


def test_several_v1_signatures_one_valid_passes() -> None:
    ts = int(time.time())
    good = signature(BODY, timestamp=ts).split("v1=")[1]
    verify(BODY, f"t={ts},v1={'0' * 64},v1={good},v0=legacy")


# -- through the HTTP interface -------------------------------------------------------------


def test_missing_header_is_a_400_with_code(client: Any) -> None:
    r = client.post("/webhooks/stripe", content=BODY)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "missing_signature"


def test_unknown_source_is_404(client: Any) -> None:
    assert post_stripe(client, fixture("stripe", "customer.created"), source="nope").status_code == 404


def test_oversized_body_is_413(make_client: Any) -> None:
    client = make_client(server={"max_body_bytes": 1000})
    event = fixture("stripe", "checkout.session.completed")
    event["data"]["object"]["metadata"]["padding"] = "x" * 2000
    assert post_stripe(client, event).status_code == 413


def test_malformed_json_with_a_valid_signature_is_400(client: Any) -> None:
    body = b'{"id": "evt_1", "type": '
    r = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": signature(body)})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_payload"


def test_signed_event_with_missing_fields_is_400_not_500(client: Any) -> None:
    event = fixture("stripe", "invoice.paid")
    del event["data"]["object"]["total"]
    r = post_stripe(client, event)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_payload"


def test_forged_webhook_is_not_stored_or_forwarded(client: Any, receiver: Any) -> None:
    r = post_stripe(client, fixture("stripe", "checkout.session.completed"), secret="whsec_forged")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_signature"
    time.sleep(0.3)
    assert receiver.requests == []


# -- one flow end to end: the app, the forwarder and a real loopback receiver ---------------------


def test_one_time_checkout_reaches_the_tracking_api_end_to_end(client: Any, receiver: Any) -> None:
    r = post_stripe(client, fixture("stripe", "checkout.session.completed"))
    assert r.json()["status"] == "accepted"
    sale = sent_once(receiver)
    assert sale.kind == "sale"
    assert sale.headers["idempotency-key"] == "sale:stripe:pi_3PaymentIntent01"
    assert sale.headers["authorization"] == "Bearer test_key"
    body = sale.body
    assert body["eventName"] == "Purchase"
    assert body["invoiceId"] == "pi_3PaymentIntent01"
    assert body["customerExternalId"] == "user_42"
    assert body["clickId"] == "cl_click_pay"


def test_later_event_fills_a_retrying_sales_missing_click_id(make_client: Any, receiver: Any) -> None:
    receiver.script.extend([(503, {})] * 2)  # keep the first Sale pending a moment
    client = make_client(forwarder={"base_delay_s": 0.3, "max_delay_s": 0.3})
    invoice = fixture("stripe", "invoice.paid")
    assert post_stripe(client, invoice).json()["status"] == "accepted"
    checkout = fixture("stripe", "checkout.session.completed+subscription")
    assert post_stripe(client, checkout).json()["reason"] == "business_key"
    sale = sent_once(receiver)
    assert sale.body["clickId"] == "cl_click_sub"


# -- mapping: parse + map, and the ingest transaction without HTTP --------------------------------


def source(**settings: Any) -> Any:
    return make_source(StripeProvider(), [STRIPE_SECRET], name="stripe", **settings)


def stripe_flow(make_flow: Any, **settings: Any) -> Any:
    return make_flow(StripeProvider(), [STRIPE_SECRET], lambda body: {"Stripe-Signature": signature(body)},
                     **settings)


def test_one_time_checkout_is_a_purchase_excluding_tax() -> None:
    sale = one(source(), fixture("stripe", "checkout.session.completed"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.currency) == ("purchase", 4900, "usd")
    assert sale.invoice_id == "pi_3PaymentIntent01"
    assert (sale.external_id, sale.click_id) == ("user_42", "cl_click_pay")
    assert (sale.email, sale.name) == ("ada@example.com", "Ada Lovelace")
    assert sale.metadata["taxAmount"] == 490
    event = parse_event(source(), BODY, Headers({}))
    assert (event.id, event.livemode) == ("evt_1CheckoutPayment", False)
    assert event.occurred_at.isoformat() == "2026-04-10T12:34:56+00:00"


def test_redelivery_is_a_duplicate_and_stores_one_sale(make_flow: Any) -> None:
    flow = stripe_flow(make_flow)
    event = fixture("stripe", "checkout.session.completed")
    first, second = flow.receive(event), flow.receive(event)
    assert first["status"] == "accepted"
    assert second == {"status": "duplicate", "eventId": first["eventId"]}
    assert [s.state for s in flow.stored()] == ["pending"]


@pytest.mark.parametrize("order", ["checkout_first", "invoice_first"])
def test_subscription_checkout_and_first_invoice_are_one_sale(make_flow: Any, order: str) -> None:
    flow = stripe_flow(make_flow)
    checkout = fixture("stripe", "checkout.session.completed+subscription")
    invoice = fixture("stripe", "invoice.paid")
    events = [checkout, invoice] if order == "checkout_first" else [invoice, checkout]
    first, second = (flow.receive(e) for e in events)
    assert first["status"] == "accepted"
    assert (second["status"], second["reason"]) == ("duplicate", "business_key")
    [sale] = flow.stored()
    assert sale.invoice_id == "in_1SUBFIRST"
    assert sale.event_name == "Subscription creation"
    assert sale.click_id == "cl_click_sub"  # the invoice lacks it; the checkout supplies it
    assert sale.external_id == "user_43"
    assert all(isinstance(c, Sale) and c.amount == 2900 for e in events for c in mapped(source(), e))


def test_renewal_is_a_second_sale(make_flow: Any) -> None:
    flow = stripe_flow(make_flow)
    flow.receive(fixture("stripe", "invoice.paid"))
    renewal = fixture("stripe", "invoice.paid")
    renewal["id"] = "evt_renewal"
    renewal["data"]["object"].update(id="in_1SUBSECOND", billing_reason="subscription_cycle")
    assert flow.receive(renewal)["status"] == "accepted"
    names = {s.invoice_id: s.event_name for s in flow.stored()}
    assert names == {"in_1SUBFIRST": "Subscription creation", "in_1SUBSECOND": "Subscription renewal"}


def test_legacy_invoice_shape_reads_subscription_and_its_metadata() -> None:
    sale = one(source(), fixture("stripe", "invoice.paid+legacy"))
    assert isinstance(sale, Sale)
    assert sale.amount == 5000  # 5500 total − 500 tax
    assert sale.subscription_id == sale.metadata["subscriptionId"] == "sub_1LEGACY"
    assert (sale.external_id, sale.click_id) == ("user_legacy", "cl_legacy")


def test_subscription_update_invoice_is_named_update(make_flow: Any) -> None:
    event = fixture("stripe", "invoice.paid")
    event["data"]["object"]["billing_reason"] = "subscription_update"
    sale = one(source(), event)
    assert isinstance(sale, Sale) and sale.kind == "subscription_update"
    flow = stripe_flow(make_flow)
    [stored] = flow.stored(flow.receive(event))
    assert stored.event_name == "Subscription update"


def test_credit_reduced_invoice_amount_excludes_tax() -> None:
    event = fixture("stripe", "invoice.paid")
    # $50 + $5 tax due, a $20 credit paid part: $35 charged, of which $5 is tax.
    event["data"]["object"].update(total=5500, total_excluding_tax=5000, amount_paid=3500, amount_due=3500)
    sale = one(source(), event)
    assert isinstance(sale, Sale) and sale.amount == 3000 and sale.metadata["taxAmount"] == 500


def test_non_subscription_invoice_is_a_purchase(make_flow: Any) -> None:
    event = fixture("stripe", "invoice.paid")
    event["data"]["object"].update(parent=None, billing_reason="manual")
    sale = one(source(), event)
    assert isinstance(sale, Sale) and sale.kind == "purchase" and sale.subscription_id is None
    flow = stripe_flow(make_flow)
    [stored] = flow.stored(flow.receive(event))
    assert stored.event_name == "Purchase"


@pytest.mark.parametrize(
    ("name", "change", "reason"),
    [
        ("checkout.session.completed", {"payment_status": "unpaid"}, "unpaid"),
        ("checkout.session.completed+setup", {}, "setup_mode"),
        ("checkout.session.completed", {"amount_total": 490}, "zero_amount"),
        ("invoice.paid", {"total": 0, "total_excluding_tax": 0, "amount_paid": 0}, "zero_amount"),
    ],
)
def test_uncountable_events_are_ignored_with_reasons(make_flow: Any, name: str, change: dict[str, Any],
                                                     reason: str) -> None:
    event = fixture("stripe", name)
    event["data"]["object"].update(change)
    with pytest.raises(Ignore) as caught:
        mapped(source(), event)
    assert caught.value.reason == reason
    flow = stripe_flow(make_flow)
    answer = flow.receive(event)
    assert (answer["status"], answer["reason"]) == ("ignored", reason) and flow.stored(answer) == []


def test_untracked_event_type_is_ignored(make_flow: Any) -> None:
    event = fixture("stripe", "customer.created")
    event["type"] = "customer.updated"
    assert mapped(source(), event) == []
    assert stripe_flow(make_flow).receive(event)["reason"] == "event_type_not_tracked"


def test_async_payment_succeeded_is_a_sale() -> None:
    sale = one(source(), fixture("stripe", "checkout.session.async_payment_succeeded"))
    assert isinstance(sale, Sale)
    assert (sale.amount, sale.currency, sale.invoice_id) == (10000, "eur", "pi_3AsyncBankDebit")


@pytest.mark.parametrize(
    ("currency", "total", "tax", "expected"),
    [("jpy", 5500, 500, 5000), ("kwd", 12340, 1230, 11110), ("mga", 5000, 0, 500000), ("isk", 990000, 0, 9900)],
)
def test_amounts_are_exact_in_iso_minor_units(currency: str, total: int, tax: int, expected: int) -> None:
    event = fixture("stripe", "checkout.session.completed")
    event["data"]["object"].update(currency=currency, amount_total=total)
    event["data"]["object"]["total_details"]["amount_tax"] = tax
    sale = one(source(), event)
    assert isinstance(sale, Sale) and (sale.amount, sale.currency) == (expected, currency)


def test_lead_then_invoice_share_the_customer_external_id(make_flow: Any) -> None:
    flow = stripe_flow(make_flow)
    assert flow.receive(fixture("stripe", "customer.created"))["status"] == "accepted"
    flow.receive(fixture("stripe", "invoice.paid"))  # carries only customer: cus_SUB01
    lead, sale = flow.stored()
    assert (lead.kind, sale.kind) == ("lead", "sale")
    assert lead.external_id == sale.external_id == "user_43"
    assert lead.event_name == "Sign up"
    assert sale.click_id == "cl_click_lead"  # from identity memory


def test_trialing_subscription_is_a_started_trial_lead(make_flow: Any) -> None:
    lead = one(source(), fixture("stripe", "customer.subscription.created"))
    assert isinstance(lead, Lead) and lead.kind == "started_trial" and lead.external_id == "user_trial"
    flow = stripe_flow(make_flow)
    [stored] = flow.stored(flow.receive(fixture("stripe", "customer.subscription.created")))
    assert (stored.event_name, stored.external_id) == ("Started Trial", "user_trial")
    active = fixture("stripe", "customer.subscription.created")
    active["id"] = "evt_active"
    active["data"]["object"]["status"] = "active"
    assert flow.receive(active)["reason"] == "not_trialing"


def test_lead_without_click_id_is_recorded_not_forwarded(make_flow: Any) -> None:
    lead = fixture("stripe", "customer.created")
    del lead["data"]["object"]["metadata"]["dubClickId"]
    flow = stripe_flow(make_flow)
    answer = flow.receive(lead)
    assert (answer["status"], answer["reason"]) == ("ignored", "no_click_id")
    [stored] = flow.stored(answer)
    assert (stored.state, stored.reason) == ("skipped", "no_click_id")


def test_sale_without_any_identifier_is_not_forwarded(make_flow: Any) -> None:
    event = fixture("stripe", "checkout.session.completed")
    obj = event["data"]["object"]
    obj.update(customer=None, metadata={}, client_reference_id=None)
    obj["customer_details"]["email"] = None
    flow = stripe_flow(make_flow)
    answer = flow.receive(event)
    assert answer == {"status": "ignored", "eventId": answer["eventId"], "reason": "no_identifier"}
    [stored] = flow.stored(answer)
    assert (stored.state, stored.reason) == ("skipped", "no_identifier")


@pytest.mark.parametrize(("mode", "forwarded"), [("live", False), ("test", True), ("any", True)])
def test_livemode_filter(make_flow: Any, mode: str, forwarded: bool) -> None:
    answer = stripe_flow(make_flow, livemode=mode).receive(fixture("stripe", "checkout.session.completed"))
    assert (answer["status"] == "accepted") is forwarded  # a test-mode event
    if not forwarded:
        assert answer["reason"] == "livemode_mismatch"


def test_event_names_are_configurable_per_source(make_flow: Any) -> None:
    flow = stripe_flow(make_flow, event_names={"purchase": "Order"})
    [sale] = flow.stored(flow.receive(fixture("stripe", "checkout.session.completed")))
    assert sale.event_name == "Order"


def test_plain_client_reference_id_is_the_customer_external_id() -> None:
    event = copy.deepcopy(fixture("stripe", "checkout.session.completed"))
    event["data"]["object"].update(client_reference_id="app_user_9", metadata={"clickId": "cl_meta"})
    sale = one(source(), event)
    assert (sale.external_id, sale.click_id) == ("app_user_9", "cl_meta")


def test_client_reference_prefix_is_a_stripe_source_setting() -> None:
    event = copy.deepcopy(fixture("stripe", "checkout.session.completed"))
    event["data"]["object"].update(client_reference_id="ref_cl_9", metadata={"userId": "user_9"})
    assert one(source(client_reference_prefix="ref_"), event).click_id == "cl_9"
    assert one(source(), event).click_id is None and one(source(), event).external_id == "user_9"


def _invoice(event_id: str, invoice_id: str, reason: str, subscription: str = "sub_demo_grace") -> dict[str, Any]:
    event = fixture("stripe", "invoice.paid")
    event["id"] = event_id
    invoice = event["data"]["object"]
    invoice.update(id=invoice_id, billing_reason=reason)
    invoice["parent"]["subscription_details"]["subscription"] = subscription
    return event


def test_a_renewal_of_a_subscription_started_before_install_is_a_renewal(make_flow: Any) -> None:
    """SPEC §8: `subscription_cycle` of a subscription hooktrack never saw start is not a new
    subscription, and neither is its next cycle."""
    flow = stripe_flow(make_flow)
    for n in (1, 2):
        assert flow.receive(_invoice(f"evt_cycle_{n}", f"in_cycle_{n}", "subscription_cycle"))["status"] == "accepted"
    assert {s.invoice_id: s.event_name for s in flow.stored()} == {
        "in_cycle_1": "Subscription renewal", "in_cycle_2": "Subscription renewal"}


def test_a_trials_first_paid_cycle_is_the_subscriptions_creation(make_flow: Any) -> None:
    """A trialing subscription's first paid invoice says `subscription_cycle`; hooktrack saw the
    trial start, so that invoice is the creation and the next one a renewal."""
    flow = stripe_flow(make_flow)
    trial = fixture("stripe", "customer.subscription.created+trial")
    subscription = trial["data"]["object"]["id"]
    flow.receive(trial)
    for n in (1, 2):
        flow.receive(_invoice(f"evt_trial_{n}", f"in_trial_{n}", "subscription_cycle", subscription))
    names = {s.invoice_id: s.event_name for s in flow.stored() if s.kind == "sale"}
    assert names == {"in_trial_1": "Subscription creation", "in_trial_2": "Subscription renewal"}


def test_billing_reason_is_passed_on_as_the_providers_signal() -> None:
    src = make_source(StripeProvider(), [STRIPE_SECRET])
    signals = {reason: one(src, _invoice("evt_r", "in_r", reason)) for reason in
               ("subscription_create", "subscription_cycle", "manual")}
    assert {r: s.starts_subscription for r, s in signals.items() if isinstance(s, Sale)} == {
        "subscription_create": True, "subscription_cycle": False, "manual": None}


def test_a_zero_amount_first_invoice_marks_a_trial(make_flow: Any) -> None:
    """A trial's first invoice (`subscription_create`, nothing paid) is ignored but remembered:
    the first paid cycle is then the creation."""
    flow = stripe_flow(make_flow)
    start = _invoice("evt_zero", "in_zero", "subscription_create", "sub_zero_trial")
    start["data"]["object"].update(total=0, total_excluding_tax=0, amount_paid=0, amount_due=0)
    assert flow.receive(start)["reason"] == "zero_amount"
    flow.receive(_invoice("evt_paid", "in_paid", "subscription_cycle", "sub_zero_trial"))
    assert [s.event_name for s in flow.stored() if s.kind == "sale"] == ["Subscription creation"]


def test_customers_sharing_an_email_stay_two_customers(make_flow: Any) -> None:
    """SPEC §2: an email match never overrides a different provider customer id."""
    flow = stripe_flow(make_flow)
    for n, customer in enumerate(("cus_first", "cus_second")):
        event = fixture("stripe", "invoice.paid")
        event["id"] = f"evt_shared_{n}"
        event["data"]["object"].update(id=f"in_shared_{n}", customer=customer, customer_email="customer@email.com",
                                       metadata={"userId": "user_first"} if n == 0 else {})
        event["data"]["object"]["parent"]["subscription_details"].update(metadata={}, subscription=f"sub_{n}")
        flow.receive(event)
    assert {s.invoice_id: s.external_id for s in flow.stored()} == {
        "in_shared_0": "user_first", "in_shared_1": "cus_second"}
