"""The `dub` destination's pure steps: check, render, classify (SPEC §1, §7, §10).

Each rule cites the Dub source it mirrors (docs/dub-api.md has the details):
`apps/web/lib/zod/schemas/leads.ts`, `sales.ts`, `apps/web/lib/api/conversions/track-lead.ts`,
`track-sale.ts`, `apps/web/lib/api/errors.ts`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapter.destinations import Answer, Request, load_destinations, parse_reset
from adapter.destinations.dub import DubDestination, dub_amount, utf16_len
from adapter.ingest import checked
from adapter.records import Conversion
from adapter.settings import TrackingSettings

DUB = DubDestination(TrackingSettings(url="http://127.0.0.1:9", api_key="dub_test"))
AT = 1_775_824_496_000  # 2026-04-10T12:34:56.000Z


def sale(**changes: Any) -> Conversion:
    base = Conversion(kind="sale", source="stripe", provider="stripe", event_name="Purchase", occurred_at=AT,
                      customer_external_id="user_42", amount=4900, currency="usd", invoice_id="in_1",
                      provider_event_id="evt_1", provider_event_type="invoice.paid", tax="excluded")
    return base.but(**changes)


def lead(**changes: Any) -> Conversion:
    base = Conversion(kind="lead", source="stripe", provider="stripe", event_name="Sign up", occurred_at=AT,
                      customer_external_id="user_42", click_id="cl_abc", provider_event_id="evt_0")
    return base.but(**changes)


def answer(status: int, body: Any = None, **headers: str) -> Answer:
    raw = json.dumps(body).encode() if body is not None else b""
    return Answer(status, {k.replace("_", "-").lower(): v for k, v in headers.items()}, raw, AT)


def test_dub_is_registered_as_a_destination_entry_point() -> None:
    assert load_destinations()["dub"] is DubDestination


# -- units (sales.ts: "amount in cents ... zero-decimal currency: the full integer") -------------

@pytest.mark.parametrize(("amount", "currency", "expected", "exact"), [
    (15000, "kwd", 1500, None),        # KWD 15.000: three decimals → hundredths
    (7000, "isk", 700000, None),       # ISK 7,000 kr: ISO exponent 0, Dub reads hundredths
    (2000000, "mga", 20000, None),     # MGA 20,000 Ar: Dub's zero-decimal list
    (5000, "jpy", 5000, None),
    (4900, "eur", 4900, None),
    (15005, "kwd", 1500, "15.005"),    # not a multiple of 10: half to even, exact kept
    (15015, "kwd", 1502, "15.015"),
    (1, "bhd", 0, "0.001"),
])
def test_amounts_reach_dub_in_its_unit(amount: int, currency: str, expected: int, exact: str | None) -> None:
    assert dub_amount(amount, currency) == (expected, exact)
    body = DUB.render(sale(amount=amount, currency=currency)).body
    assert body is not None and body["amount"] == expected
    assert body["metadata"].get("exactAmount") == exact


# -- render ---------------------------------------------------------------------------------

def test_sale_body_matches_the_seed() -> None:
    req = DUB.render(sale(click_id="cl_abc", name="Ada Lovelace", email="ada@example.com",
                          subscription_id="sub_1", livemode=True, metadata={"billingReason": "subscription_cycle"}))
    assert (req.method, req.path) == ("POST", "/track/sale")
    assert req.headers["Authorization"] == "Bearer dub_test"
    assert req.headers["Idempotency-Key"] == "sale:stripe:in_1"
    assert req.body == {
        "customerExternalId": "user_42", "amount": 4900, "currency": "usd", "eventName": "Purchase",
        "invoiceId": "in_1", "paymentProcessor": "stripe", "clickId": "cl_abc", "customerName": "Ada Lovelace",
        "customerEmail": "ada@example.com", "timestamp": "2026-04-10T12:34:56.000Z",
        "metadata": {"provider": "stripe", "source": "stripe", "providerEventId": "evt_1",
                     "providerEventType": "invoice.paid", "subscriptionId": "sub_1", "tax": "excluded",
                     "billingReason": "subscription_cycle", "occurredAt": "2026-04-10T12:34:56.000Z",
                     "livemode": True}}


def test_lead_is_sent_with_mode_wait_so_a_sale_right_after_finds_it() -> None:
    req = DUB.render(lead())
    assert req.path == "/track/lead" and req.body is not None
    assert req.body["mode"] == "wait"
    assert req.body["clickId"] == "cl_abc"
    assert req.headers["Idempotency-Key"] == "lead:stripe:user_42:Sign up"


def test_lead_forwarded_without_a_click_sends_an_empty_click_id() -> None:
    body = DUB.render(lead(click_id=None, forward_without_click=True)).body
    assert body is not None and body["clickId"] == ""


@pytest.mark.parametrize(("provider", "processor"), [
    ("stripe", "stripe"), ("shopify", "shopify"), ("polar", "polar"), ("paddle", "paddle"),
    ("paddle_classic", "paddle"), ("revenuecat", "revenuecat"), ("appstore", "apple"),
    ("lemonsqueezy", "custom"), ("razorpay", "custom"), ("generic", "custom"), ("acme_third_party", "custom"),
])
def test_payment_processor_is_one_dub_accepts(provider: str, processor: str) -> None:
    body = DUB.render(sale(provider=provider)).body
    assert body is not None and body["paymentProcessor"] == processor
    assert body["metadata"]["provider"] == provider


def test_a_source_may_choose_its_payment_processor() -> None:
    body = DUB.render(sale(provider="lemonsqueezy", payment_processor="stripe")).body
    assert body is not None and body["paymentProcessor"] == "stripe"
    assert DUB.validate_source("ls", type("S", (), {"payment_processor": "lemonsqueezy"})())


def test_account_scoped_invoice_ids_are_qualified_by_source() -> None:
    req = DUB.render(sale(invoice_id="1042", invoice_unique=False, source="gumroad-eu"))
    assert req.body is not None and req.body["invoiceId"] == "gumroad-eu:1042"
    assert req.headers["Idempotency-Key"] == "sale:gumroad-eu:gumroad-eu:1042"


def test_customer_external_id_is_trimmed() -> None:
    body = DUB.render(sale(customer_external_id="  user_42 ")).body
    assert body is not None and body["customerExternalId"] == "user_42"


# -- check (leads.ts / sales.ts limits, in UTF-16 code units) ---------------------------------

def test_a_valid_sale_has_no_problems() -> None:
    assert DUB.check(sale(email="ada@example.com", name="Ada")) == []


def test_customer_external_id_over_100_utf16_units_is_skipped_naming_the_rule() -> None:
    _, state, reason, detail = checked(DUB, sale(customer_external_id="😀" * 51))  # 102 UTF-16 units
    assert utf16_len("😀" * 51) == 102
    assert (state, reason) == ("skipped", "invalid_for_destination")
    assert detail is not None and "customerExternalId is at most 100 characters" in detail
    assert checked(DUB, sale(customer_external_id="😀" * 50))[1] == "pending"


def test_long_customer_name_is_cut_to_100_units_without_splitting_a_pair() -> None:
    record, state, _, detail = checked(DUB, sale(name="a" + "😀" * 60))
    assert state == "pending" and detail is not None and "customerName" in detail
    assert record.name is not None and utf16_len(record.name) == 99 and record.name.endswith("😀")


@pytest.mark.parametrize("email", ["not-an-email", "a@b", ".ada@example.com", "ada..x@example.com",
                                   "ada@example.c", "x" * 95 + "@ex.com"])
def test_invalid_or_long_email_is_dropped_and_the_sale_still_sent(email: str) -> None:
    record, state, _, detail = checked(DUB, sale(email=email))
    assert state == "pending" and record.email is None
    assert detail is not None and "customerEmail" in detail and "dropped" in detail


def test_metadata_over_10000_characters_is_cut_to_fit() -> None:
    big = {f"k{i}": "é" * 100 for i in range(200)}
    record, state, _, detail = checked(DUB, sale(metadata=big))
    assert state == "pending" and detail is not None and "metadata" in detail
    body = DUB.render(record).body
    assert body is not None
    assert len(json.dumps(body["metadata"], separators=(",", ":"), ensure_ascii=False)) <= 10_000
    assert body["metadata"]["providerEventId"] == "evt_1"  # hooktrack's own keys are kept


def test_event_name_over_255_is_skipped() -> None:
    assert checked(DUB, sale(event_name="x" * 256))[1] == "skipped"


# -- classify (track-lead.ts, track-sale.ts, errors.ts) --------------------------------------

def classify(conv: Conversion, ans: Answer) -> tuple[str, str | None, str | None]:
    v = DUB.classify(conv, DUB.render(conv), ans)
    return v.outcome, v.reason, v.note


def test_sale_counted_is_delivered() -> None:
    assert classify(sale(), answer(200, {"eventName": "Purchase", "customer": {"id": "c"},
                                         "sale": {"amount": 4900}}))[0] == "delivered"


def test_sale_answered_with_sale_null_is_not_counted() -> None:
    assert classify(sale(), answer(200, {"eventName": "Purchase", "customer": None, "sale": None})) == \
        ("not_counted", "customer_not_found", None)


def test_lead_answered_with_link_null_was_already_known_to_the_api() -> None:
    assert classify(lead(), answer(200, {"click": {"id": "cl"}, "link": None, "customer": {}})) == \
        ("delivered", None, "duplicate_at_api")


def _err(status: int, code: str, message: str) -> Answer:
    return answer(status, {"error": {"code": code, "message": message, "doc_url": "https://dub.co/docs"}})


def test_lead_click_not_found_is_unattributed_at_once() -> None:
    assert classify(lead(), _err(404, "not_found", "Click event not found for clickId: cl_abc"))[:2] == \
        ("unattributed", "click_not_found")


def test_sale_lead_not_found_is_retried_within_the_window() -> None:
    assert classify(sale(), _err(404, "not_found", "Lead event not found for externalId: user_42"))[:2] == \
        ("not_counted", "lead_not_found")


def test_lead_without_click_for_an_unknown_customer_is_unattributed() -> None:
    conv = lead(click_id=None, forward_without_click=True)
    assert classify(conv, _err(400, "bad_request", "no customer"))[:2] == ("unattributed", "no_click_id")


@pytest.mark.parametrize(("status", "code", "message"), [
    (401, "unauthorized", "Unauthorized: Invalid API key."),
    (403, "forbidden", "Forbidden: plan"),
    (404, "not_found", "Workspace ID not found. Did you forget to include a `workspaceId` query parameter?"),
])
def test_key_problems_pause_the_destination(status: int, code: str, message: str) -> None:
    assert classify(sale(), _err(status, code, message))[0] == "pause"


@pytest.mark.parametrize(("status", "outcome"), [(408, "retry"), (425, "retry"), (500, "retry"), (503, "retry"),
                                                  (422, "dead"), (400, "dead"), (409, "dead")])
def test_other_statuses(status: int, outcome: str) -> None:
    assert classify(sale(), _err(status, "x", "y"))[0] == outcome


def test_other_404s_are_dead() -> None:
    assert classify(sale(), _err(404, "not_found", "Link not found"))[:2] == ("dead", "http_404")


def test_429_waits_until_the_millisecond_reset() -> None:
    v = DUB.classify(sale(), DUB.render(sale()), answer(429, {"error": {}}, Retry_After=str(AT + 2500),
                                                        X_RateLimit_Reset=str(AT + 2500)))
    assert v.outcome == "rate_limited" and v.after_s == pytest.approx(2.5)


@pytest.mark.parametrize(("value", "expected"), [
    ("30", AT + 30_000), (str(AT + 1500), AT + 1500), (str((AT + 4000) // 1000), AT + 4000),
    ("Fri, 10 Apr 2026 12:35:00 GMT", AT + 4000), ("soon", None), ("", None), ("-3", None),
])
def test_retry_after_forms(value: str, expected: int | None) -> None:
    assert parse_reset(value, AT) == expected


def test_rate_headers_are_read_from_every_answer() -> None:
    info = DUB.rate(answer(200, {}, X_RateLimit_Limit="600", X_RateLimit_Remaining="598",
                           X_RateLimit_Reset=str(AT + 60_000)))
    assert (info.limit, info.remaining, info.reset_at_ms) == (600, 598, AT + 60_000)


def test_render_is_pure_and_repeatable() -> None:
    conv = sale()
    assert DUB.render(conv) == DUB.render(conv)
    assert isinstance(DUB.render(conv), Request)
