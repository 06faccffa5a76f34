"""The local stand-in answers as Dub's API does, case by case, over real loopback HTTP.

Each test names the Dub source it mirrors (docs/dub-api.md gives the commits). The receiver's
clock is a fake the tests move, so lead visibility, commission delay, the 7-day invoice dedup and
the sliding window are tested without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from adapter.dubsim import PAYMENT_PROCESSORS, js_len, js_stringify
from adapter.receiver import Received, TrackingReceiver, run_in_thread

WEEK = 7 * 24 * 3600


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Api:
    receiver: TrackingReceiver
    client: httpx.Client
    clock: Clock

    def lead(self, **fields: Any) -> httpx.Response:
        body = {"clickId": "cl_1", "eventName": "Sign up", "customerExternalId": "user_1", "mode": "wait", **fields}
        return self.client.post("/track/lead", json={k: v for k, v in body.items() if v is not ...})

    def sale(self, **fields: Any) -> httpx.Response:
        body = {"customerExternalId": "user_1", "amount": 4900, "currency": "usd", "paymentProcessor": "stripe",
                "invoiceId": "in_1", **fields}
        return self.client.post("/track/sale", json={k: v for k, v in body.items() if v is not ...})


@pytest.fixture
def api() -> Iterator[Api]:
    clock = Clock()
    receiver = TrackingReceiver(api_key="dub_test", clock=clock)
    with run_in_thread(receiver.app()) as url, \
            httpx.Client(base_url=url, headers={"Authorization": "Bearer dub_test"}, timeout=10) as client:
        yield Api(receiver, client, clock)


def error(response: httpx.Response, status: int, code: str) -> str:
    """The API's error shape (apps/web/lib/api/errors.ts); returns the message."""
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["code"] == code
    assert err["doc_url"] == "https://dub.co/docs/api-reference/errors#" + code.replace("_", "-", 1)
    return str(err["message"])


def issue(response: httpx.Response) -> str:
    """A zod issue as zod-error renders it for a 422: `code: path: message`."""
    return error(response, 422, "unprocessable_entity")


# ---- request schemas: apps/web/lib/zod/schemas/leads.ts, sales.ts ----------------------------

def test_unknown_keys_are_dropped_and_timestamp_is_not_in_the_schema(api: Api) -> None:
    """z.object strips unknown keys: `timestamp` (SPEC §1) is accepted and ignored."""
    assert api.lead(timestamp="2026-04-10T12:34:56.000Z", somethingElse=1).status_code == 200
    assert api.sale(timestamp="2026-04-10T12:34:56.000Z", tax=0).status_code == 200
    assert len(api.receiver.counted_sales()) == 1


@pytest.mark.parametrize("kind", ["lead", "sale"])
def test_customer_external_id_is_1_to_100_utf16_units_after_trim(api: Api, kind: str) -> None:
    """customerExternalId: z.string().trim().min(1).max(100) — JavaScript lengths (UTF-16)."""
    post = api.lead if kind == "lead" else api.sale
    assert post(customerExternalId="😀" * 50, clickId="cl_1", invoiceId="in_a").status_code in (200,)
    assert issue(post(customerExternalId="😀" * 50 + "x")).startswith("too_big: customerExternalId")
    assert issue(post(customerExternalId="x" * 101)).startswith("too_big: customerExternalId")
    assert issue(post(customerExternalId=" \u00a0\ufeff ")).startswith("too_small: customerExternalId")
    assert issue(post(customerExternalId=...)).startswith("invalid_type: customerExternalId: Required")
    assert issue(post(customerExternalId=42)).startswith("invalid_type: customerExternalId: Expected string")


def test_external_id_is_trimmed_so_lead_and_sale_are_one_customer(api: Api) -> None:
    """Both schemas trim customerExternalId (leads.ts; sales.ts commit 02704f0)."""
    assert api.lead(customerExternalId="  user_1\t").json()["customer"]["externalId"] == "user_1"
    answer = api.sale(customerExternalId="user_1 ").json()
    assert answer["customer"]["externalId"] == "user_1"
    assert [s.external_id for s in api.receiver.counted_sales()] == ["user_1"]


def test_lead_event_name_is_required_trimmed_and_at_most_255(api: Api) -> None:
    """leads.ts (newest): eventName .trim().min(1, "eventName is required").max(255) — not 50."""
    assert api.lead(eventName="e" * 255).status_code == 200
    assert issue(api.lead(eventName="e" * 256)).startswith("too_big: eventName")
    assert issue(api.lead(eventName="   ")) == "too_small: eventName: eventName is required"
    assert issue(api.lead(eventName=...)) == "invalid_type: eventName: Required"


def test_sale_event_name_defaults_to_purchase_but_null_is_refused(api: Api) -> None:
    """sales.ts: eventName .max(255).optional().default("Purchase"): default for a missing key only."""
    assert api.sale(eventName=...).json()["eventName"] == "Purchase"
    assert issue(api.sale(eventName=None, invoiceId="in_2")).startswith("invalid_type: eventName")
    assert issue(api.sale(eventName="e" * 256, invoiceId="in_3")).startswith("too_big: eventName")


@pytest.mark.parametrize(("amount", "expected"), [
    (49.0, "ok"),  # a JavaScript number: 49.0 is the integer 49
    (1e2, "ok"),
    (0, "ok"),
    (49.5, "invalid_type: amount: Expected integer, received float"),
    (-1, "too_small: amount: amount cannot be negative"),
    ("4900", "invalid_type: amount: Expected number, received string"),
    (True, "invalid_type: amount: Expected number, received boolean"),
    (None, "invalid_type: amount: Expected number, received null"),
    (..., "invalid_type: amount: amount is required"),
    (2**53, "too_big: amount"),
])
def test_amount_is_a_non_negative_safe_integer(api: Api, amount: Any, expected: str) -> None:
    """sales.ts: z.number({required_error}).int().min(0, "amount cannot be negative")."""
    response = api.sale(amount=amount)
    if expected == "ok":
        assert response.status_code == 200
    else:
        assert issue(response).startswith(expected)


def test_an_integral_float_is_counted_as_an_integer(api: Api) -> None:
    """sales.ts .int(): JSON.parse gives the number 49 for `49.0`; the sale counts 49."""
    api.lead()
    assert api.sale(amount=49.0).json()["sale"]["amount"] == 49
    assert api.receiver.counted_sales()[0].amount == 49
    assert isinstance(api.receiver.counted_sales()[0].amount, int)


def test_a_long_integer_is_read_as_javascript_reads_it(api: Api) -> None:
    """JSON.parse reads 9007199254740993 as the double 9007199254740992, over the safe range."""
    api.lead()
    raw = b'{"customerExternalId": "user_1", "amount": 9007199254740993}'
    assert issue(api.client.post("/track/sale", content=raw)).startswith("too_big: amount")


def test_currency_is_lowercased_and_defaults_to_usd(api: Api) -> None:
    """sales.ts: currency .default("usd").transform(toLowerCase)."""
    api.lead()
    assert api.sale(currency="EUR").json()["sale"]["currency"] == "eur"
    assert api.sale(currency=..., invoiceId="in_2").json()["sale"]["currency"] == "usd"
    assert issue(api.sale(currency=None, invoiceId="in_3")).startswith("invalid_type: currency")


def test_payment_processor_is_an_enum_with_default_custom(api: Api) -> None:
    """sales.ts / track-sale API reference: enum, default "custom"; SPEC's eight values pass."""
    api.lead()
    for n, processor in enumerate(("stripe", "shopify", "polar", "paddle", "apple", "revenuecat", "dub", "custom")):
        assert api.sale(paymentProcessor=processor, invoiceId=f"in_{n}").status_code == 200
    assert set(PAYMENT_PROCESSORS) >= {"lemonsqueezy"}
    assert api.sale(paymentProcessor=..., invoiceId="in_d").json()["sale"]["paymentProcessor"] == "custom"
    assert issue(api.sale(paymentProcessor="paypal", invoiceId="in_x")).startswith(
        "invalid_enum_value: paymentProcessor: Invalid enum value. Expected 'stripe' | 'shopify'")
    assert issue(api.sale(paymentProcessor="Stripe", invoiceId="in_y")).startswith("invalid_enum_value")


def test_customer_name_is_at_most_100_and_not_trimmed(api: Api) -> None:
    """leads.ts: customerName z.string().max(100).nullish() — no trim, so spaces count."""
    assert api.lead(customerName="n" * 100).status_code == 200
    assert issue(api.lead(customerName=" " + "n" * 100, customerExternalId="user_2")).startswith(
        "too_big: customerName")
    assert api.lead(customerName=None, customerExternalId="user_3").status_code == 200


@pytest.mark.parametrize("email", [
    "ada@example.com", "a.b+tag@sub.example.co", "o'neil@example.org", "x_y-z@a-b.example.io", "A@EXAMPLE.COM",
])
def test_valid_emails_pass_zods_pattern(api: Api, email: str) -> None:
    """leads.ts customerEmail z.string().email(): the API reference's pattern accepts these."""
    assert api.lead(customerEmail=email).status_code == 200


@pytest.mark.parametrize("email", [
    "ada@example", ".ada@example.com", "ada.@example.com", "a..b@example.com", "ada@example.c",
    "ada@-example.com", "ada@[192.168.0.1]", "\"ada\"@example.com", "adé@example.com", "ada@exämple.com",
    "ada@example.com\n", "ada example@x.com", "ada@example..com",
])
def test_invalid_emails_are_refused_with_zods_pattern(api: Api, email: str) -> None:
    """z.string().email(): the pattern the API reference publishes for customerEmail."""
    assert issue(api.lead(customerEmail=email)) == "invalid_string: customerEmail: Invalid email"
    assert issue(api.sale(customerEmail=email)) == "invalid_string: customerEmail: Invalid email"


def test_email_is_at_most_100(api: Api) -> None:
    """leads.ts / sales.ts: customerEmail .email().max(100)."""
    email = "a" * 88 + "@example.com"
    assert len(email) == 100 and api.lead(customerEmail=email).status_code == 200
    assert issue(api.lead(customerEmail="a" + email)).startswith("too_big: customerEmail")


def _metadata_of_length(n: int, filler: str = "x") -> dict[str, Any]:
    base = {"k": "", "f": 1.0}  # JSON.stringify writes 1.0 as 1
    pad = n - js_len(js_stringify(base))
    assert pad % js_len(filler) == 0
    return {"k": filler * (pad // js_len(filler)), "f": 1.0}


@pytest.mark.parametrize("filler", ["x", "é", "😀"])
def test_metadata_limit_counts_javascripts_json_stringify(api: Api, filler: str) -> None:
    """.refine(JSON.stringify(val).length <= 10000): compact JSON, raw non-ASCII, UTF-16 units."""
    api.lead()
    assert api.sale(metadata=_metadata_of_length(10000, filler)).status_code == 200
    assert issue(api.lead(metadata=_metadata_of_length(10002, filler), eventName="x")) == \
        "custom: metadata: Metadata must be less than 10,000 characters when stringified"
    assert issue(api.sale(metadata=_metadata_of_length(10002, filler), invoiceId="in_2")).startswith("custom: metadata")


def test_js_stringify_matches_javascript() -> None:
    """The metadata refine counts JSON.stringify: JavaScript's number and string forms."""
    assert js_stringify({"a": [1.0, 0.5, 1e21, 1e-7, 0.000001, 123456789012345680000, -0.0, None, True]}) == \
        '{"a":[1,0.5,1e+21,1e-7,0.000001,123456789012345680000,0,null,true]}'
    assert js_stringify({"é": "\n\"\\\u2028"}) == '{"é":"\\n\\"\\\\\u2028"}'
    assert js_len("😀") == 2


def test_metadata_must_be_an_object(api: Api) -> None:
    """leads.ts metadata z.record(z.unknown()).nullish(): an object or null, not an array."""
    assert issue(api.lead(metadata=[1, 2])) == "invalid_type: metadata: Expected object, received array"
    assert api.lead(metadata=None).status_code == 200


def test_invalid_json_is_400_and_a_non_object_is_422(api: Api) -> None:
    """parseRequestBody (apps/web/lib/api/utils.ts) → 400; z.object on an array → 422."""
    for raw in (b"{", b"", b'{"amount": NaN}', b"{'a': 1}"):
        assert error(api.client.post("/track/sale", content=raw), 400, "bad_request").startswith(
            "Invalid JSON format in request body")
    assert issue(api.client.post("/track/lead", content=b"[]")) == "invalid_type: Expected object, received array"
    assert api.receiver.counted_leads() == [] and api.receiver.counted_sales() == []


# ---- authentication and plan: apps/web/lib/auth/workspace.ts ---------------------------------

def test_missing_wrong_and_misconfigured_keys(api: Api) -> None:
    """apps/web/lib/auth/workspace.ts: missing key 401, unknown key 401, no 'Bearer ' 400."""
    body = {"clickId": "cl_1", "eventName": "Sign up", "customerExternalId": "u"}
    url = str(api.client.base_url) + "/track/lead"
    assert error(httpx.post(url, json=body), 401, "unauthorized") == "Missing Authorization header."
    assert error(httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}), 401,
                 "unauthorized") == "Unauthorized: Invalid API key."
    assert error(httpx.post(url, json=body, headers={"Authorization": "dub_test"}), 400,
                 "bad_request").startswith("Misconfigured authorization header")
    assert api.receiver.counted_leads() == []
    assert [r.status for r in api.receiver.requests] == [401, 401, 400]


def test_a_personal_key_is_answered_workspace_id_not_found(api: Api) -> None:
    """workspace.ts: not a workspace key and no workspaceId → 404."""
    api.receiver.personal_keys.add("personal_1")
    response = api.client.post("/track/lead", headers={"Authorization": "Bearer personal_1"},
                               json={"clickId": "cl_1", "eventName": "Sign up", "customerExternalId": "u"})
    assert error(response, 404, "not_found").startswith("Workspace ID not found.")


def test_a_plan_without_conversion_tracking_is_403(api: Api) -> None:
    """workspace.ts plan check; the track routes require business and above."""
    api.receiver.forbidden_keys.add("dub_pro")
    response = api.client.post("/track/sale", headers={"Authorization": "Bearer dub_pro"},
                               json={"customerExternalId": "u", "amount": 1})
    assert error(response, 403, "forbidden") == "Unauthorized: Need higher plan."


def test_each_workspace_key_has_its_own_state(api: Api) -> None:
    """Customers, lead dedup and invoice dedup are per workspace (keys include the workspace id)."""
    api.receiver.workspace_keys.add("dub_other")
    other = {"Authorization": "Bearer dub_other"}
    api.lead()
    assert api.client.post("/track/sale", headers=other, json={"customerExternalId": "user_1", "amount": 5,
                                                               "invoiceId": "in_1"}).json()["sale"] is None
    assert api.client.post("/track/lead", headers=other, json={"clickId": "cl_1", "eventName": "Sign up",
                                                               "customerExternalId": "user_1"}).json()["link"]
    assert len(api.receiver.counted_leads()) == 1 and len(api.receiver.counted_leads("dub_other")) == 1


# ---- rate limit: workspace.ts + apps/web/lib/upstash/ratelimit.ts (slidingWindow) -------------

def test_no_rate_limit_headers_by_default(api: Api) -> None:
    """The stand-in's departure: no limiter unless `rate_limit` is set (see its docstring)."""
    assert "x-ratelimit-limit" not in api.lead().headers


def test_sliding_window_headers_and_429(api: Api) -> None:
    """Retry-After and X-RateLimit-Reset are both upstash's `reset`: the next window, Unix ms."""
    api.receiver.rate_limit, api.receiver.window_s = 3, 60
    api.clock.t = 1_800_000_000.0  # a window boundary
    reset = str(int(api.clock.t * 1000) + 60_000)
    answers = [api.lead(customerExternalId=f"u{i}") for i in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit"] == "3" for r in answers)
    assert all(r.headers["retry-after"] == r.headers["x-ratelimit-reset"] == reset for r in answers)
    assert error(answers[3], 429, "rate_limit_exceeded") == "Too many requests."
    assert len(api.receiver.counted_leads()) == 3


def test_quota_comes_back_gradually_not_all_at_the_reset(api: Api) -> None:
    """slidingWindow weighs the previous window by how much of it still overlaps."""
    api.receiver.rate_limit, api.receiver.window_s = 4, 60
    api.clock.t = 1_800_000_000.0
    assert all(api.lead(customerExternalId=f"a{i}").status_code == 200 for i in range(4))
    api.clock.advance(60 + 15)  # a quarter into the next window: 3 of the 4 still count
    assert api.lead(customerExternalId="b0").status_code == 200
    assert api.lead(customerExternalId="b1").status_code == 429
    api.clock.advance(30)  # three quarters in: 1 of the 4 counts, plus b0
    assert [api.lead(customerExternalId=f"c{i}").status_code for i in range(3)] == [200, 200, 429]


def test_the_window_is_per_key(api: Api) -> None:
    """ratelimit(...).limit(apiKey): each key has its own window."""
    api.receiver.rate_limit = 1
    api.receiver.workspace_keys.add("dub_other")
    assert api.lead().status_code == 200 and api.lead(customerExternalId="u2").status_code == 429
    other = api.client.post("/track/lead", headers={"Authorization": "Bearer dub_other"},
                            json={"clickId": "cl_1", "eventName": "Sign up", "customerExternalId": "u3"})
    assert other.status_code == 200 and other.headers["x-ratelimit-remaining"] == "0"


def test_unknown_keys_get_no_rate_limit_headers(api: Api) -> None:
    """workspace.ts: the limiter runs after the key is found; a 401 has no headers."""
    api.receiver.rate_limit = 10
    response = httpx.post(str(api.client.base_url) + "/track/lead", json={},
                          headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and "retry-after" not in response.headers


# ---- leads: apps/web/lib/api/conversions/track-lead.ts -------------------------------------

def test_lead_answer_shape(api: Api) -> None:
    """track-lead.ts (newest) / track-lead API reference: {click, link, customer}."""
    answer = api.lead(customerName="Ada", customerEmail="ada@example.com").json()
    assert answer["click"] == {"id": "cl_1"}
    assert set(answer["link"]) == {"id", "domain", "key", "shortLink", "url", "partnerId", "programId", "tenantId",
                                   "externalId"}
    assert answer["customer"] == {"name": "Ada", "email": "ada@example.com", "avatar": None, "externalId": "user_1"}


def test_wait_mode_makes_the_lead_visible_to_a_sale_at_once(api: Api) -> None:
    """track-lead.ts: mode wait caches the lead (leadCache) before answering."""
    api.lead(mode="wait")
    assert api.sale().json()["sale"]["amount"] == 4900


def test_async_mode_lead_is_not_found_by_a_sale_right_after(api: Api) -> None:
    """async: the lead event is written in the background; the sale answers 404 until it lands."""
    api.lead(mode=...)  # async is the default
    message = error(api.sale(), 404, "not_found")
    assert message == "Lead event not found for externalId: user_1 and leadEventName: null"
    assert api.receiver.counted_sales() == []
    api.clock.advance(api.receiver.lead_visibility_delay_s)
    assert api.sale().json()["sale"] is not None


def test_same_customer_and_event_name_is_deduplicated_for_7_days(api: Api) -> None:
    """trackLead:{workspace}:{externalId}:{eventName lowercased, spaces→-}, SET NX, 7 days."""
    assert api.lead(eventName="Sign up").json()["link"] is not None
    assert api.lead(eventName="sign-up").json()["link"] is None
    assert api.lead(eventName="Started Trial").json()["link"] is not None
    assert [lead.event_name for lead in api.receiver.counted_leads()] == ["Sign up", "Started Trial"]
    api.clock.advance(WEEK + 1)
    assert api.lead(eventName="Sign up").json()["link"] is not None


def test_unknown_click_is_404_and_its_retry_records_nothing(api: Api) -> None:
    """The dedup key is set before the click lookup: the retry is a duplicate, `link: null`."""
    api.receiver.known_clicks = {"cl_known"}
    assert error(api.lead(clickId="cl_gone"), 404, "not_found") == "Click event not found for clickId: cl_gone"
    retry = api.lead(clickId="cl_gone")
    assert retry.status_code == 200 and retry.json()["link"] is None
    assert api.receiver.counted_leads() == []
    assert api.lead(clickId="cl_known", customerExternalId="user_2").json()["link"] is not None


def test_lead_click_id_is_a_required_string_and_mode_an_enum(api: Api) -> None:
    """Track-lead API reference: clickId required (type string, not nullable); mode async|wait|deferred."""
    assert issue(api.lead(clickId=...)) == "invalid_type: clickId: Required"
    assert issue(api.lead(clickId=None)) == "invalid_type: clickId: Expected string, received null"
    assert issue(api.lead(mode="sync")).startswith("invalid_enum_value: mode")
    assert api.lead(customerAvatar="https://example.com/" + "a" * 500).status_code == 200  # no limit any more


def test_empty_click_id_uses_the_customers_click_or_is_400(api: Api) -> None:
    """clickId "" = deferred lead tracking: the customer's click, else 400."""
    assert error(api.lead(clickId=""), 400, "bad_request").startswith("The `clickId` property was not provided")
    api.lead(clickId="cl_7", eventName="Sign up")
    answer = api.lead(clickId=" ", eventName="Started Trial").json()  # trimmed to ""
    assert answer["click"] == {"id": "cl_7"}
    assert [lead.click_id for lead in api.receiver.counted_leads()] == ["cl_7", "cl_7"]


def test_deferred_mode_creates_the_customer_only(api: Api) -> None:
    """track-lead.ts: deferred upserts the customer, records no lead, sets no dedup key."""
    api.lead(mode="deferred", clickId="cl_9")
    assert api.receiver.counted_leads() == []
    assert error(api.sale(), 404, "not_found").startswith("Lead event not found")
    api.lead(clickId="", mode="wait")
    assert api.receiver.counted_leads()[0].click_id == "cl_9"
    assert api.sale().json()["sale"] is not None


# ---- sales: apps/web/lib/api/conversions/track-sale.ts -------------------------------------

def test_sale_answer_shape(api: Api) -> None:
    """sales.ts trackSaleResponseSchema: {eventName, customer, sale}."""
    api.lead(customerName="Ada")
    answer = api.sale(metadata={"provider": "stripe"}).json()
    assert set(answer) == {"eventName", "customer", "sale"}
    assert set(answer["customer"]) == {"id", "name", "email", "avatar", "externalId"}
    assert answer["sale"] == {"amount": 4900, "currency": "usd", "paymentProcessor": "stripe", "invoiceId": "in_1",
                              "metadata": {"provider": "stripe"}}


def test_unknown_customer_without_click_is_200_with_nothing_counted_or_cached(api: Api) -> None:
    """track-sale.ts: no customer, no clickId → 200 sale null, not cached."""
    answer = api.sale(customerExternalId="stranger")
    assert answer.status_code == 200
    assert answer.json() == {"eventName": "Purchase", "customer": None, "sale": None}
    assert api.receiver.counted_sales() == []
    api.lead(customerExternalId="stranger")  # the lead arrives later: the same invoice now counts
    assert api.sale(customerExternalId="stranger").json()["sale"] is not None


def test_direct_sale_tracking_creates_customer_and_lead(api: Api) -> None:
    """track-sale.ts direct sale tracking: a clickId creates customer and lead."""
    api.receiver.known_clicks = {"cl_direct"}
    answer = api.sale(customerExternalId="walk_in", clickId="cl_direct", customerEmail="w@example.com").json()
    assert answer["customer"]["externalId"] == "walk_in" and answer["customer"]["name"] == "w@example.com"
    assert [(lead.event_name, lead.click_id) for lead in api.receiver.counted_leads()] == [("Sign up", "cl_direct")]
    assert api.receiver.counted_sales()[0].direct
    assert error(api.sale(customerExternalId="other", clickId="cl_nope", invoiceId="in_2"), 404,
                 "not_found") == "Click event not found for clickId: cl_nope"


def test_direct_sale_lead_takes_lead_event_name(api: Api) -> None:
    """track-sale.ts: the direct-sale lead is named `leadEventName ?? "Sign up"`."""
    api.sale(customerExternalId="walk_in", clickId="cl_1", leadEventName="Demo booked")
    assert api.receiver.counted_leads()[0].event_name == "Demo booked"


def test_zero_amount_counts_nothing_and_caches_nothing(api: Api) -> None:
    """track-sale.ts _trackSale: amount <= 0 → sale null, before the cache is set."""
    api.lead()
    assert api.sale(amount=0).json() == {"eventName": "Purchase", "customer": None, "sale": None}
    assert api.receiver.counted_sales() == []
    assert api.sale(amount=100).json()["sale"]["amount"] == 100


def test_invoice_dedup_returns_the_cached_answer_for_7_days(api: Api) -> None:
    """track-sale.ts: trackSale:{workspace}:invoiceId:{id} caches the answer a week."""
    api.lead()
    first = api.sale(amount=4900).json()
    again = api.sale(amount=1, eventName="Other", metadata={"x": 1})
    assert again.status_code == 200 and again.json() == first
    assert len(api.receiver.counted_sales()) == 1
    api.clock.advance(WEEK + 1)
    assert api.sale(amount=1).json()["sale"]["amount"] == 1
    assert len(api.receiver.counted_sales()) == 2


def test_sale_without_invoice_is_never_deduplicated(api: Api) -> None:
    """track-sale.ts: the invoice cache is used only when invoiceId is set."""
    api.lead()
    api.sale(invoiceId=None)
    api.sale(invoiceId=...)
    assert len(api.receiver.counted_sales()) == 2


def test_lead_event_name_picks_the_lead(api: Api) -> None:
    """track-sale.ts: getLeadEvent({customerId, eventName: leadEventName})."""
    api.lead(eventName="Sign up")
    assert error(api.sale(leadEventName="Started Trial"), 404, "not_found") == \
        "Lead event not found for externalId: user_1 and leadEventName: Started Trial"
    assert api.sale(leadEventName="Sign up").json()["sale"] is not None


def test_other_currencies_are_converted_to_usd_when_a_rate_is_set(api: Api) -> None:
    """track-sale.ts: non-USD sales are converted to USD (Math.round)."""
    api.receiver.usd_rates = {"jpy": 0.67}
    api.lead()
    assert api.sale(amount=1437, currency="JPY").json()["sale"] == {
        "amount": 963, "currency": "usd", "paymentProcessor": "stripe", "invoiceId": "in_1", "metadata": None}


# ---- commissions: apps/web/app/(ee)/api/commissions, update-partner-commission.ts ------------

def _counted_sale_with_commission(api: Api, invoice: str = "in_1", amount: int = 10_000) -> dict[str, Any]:
    api.receiver.program = True
    api.lead(customerExternalId=f"c_{invoice}")
    api.sale(customerExternalId=f"c_{invoice}", invoiceId=invoice, amount=amount)
    assert api.client.get("/commissions", params={"invoiceId": invoice}).json() == []  # created seconds later
    api.clock.advance(api.receiver.commission_delay_s)
    [commission] = api.client.get("/commissions", params={"invoiceId": invoice}).json()
    return dict(commission)


def test_no_program_is_404_program_not_found(api: Api) -> None:
    """get-default-program-id-or-throw.ts: no default program → 404."""
    assert error(api.client.get("/commissions", params={"invoiceId": "in_1"}), 404, "not_found") == \
        "Program not found"
    assert error(api.client.patch("/commissions/cm_1", json={"status": "refunded"}), 404, "not_found") == \
        "Program not found"


def test_commission_appears_after_the_sale_and_is_found_by_invoice(api: Api) -> None:
    """commissions/route.ts ?invoiceId; created after the answer (waitUntil)."""
    commission = _counted_sale_with_commission(api, amount=10_000)
    assert commission["status"] == "pending" and commission["type"] == "sale"
    assert (commission["amount"], commission["earnings"], commission["currency"]) == (10_000, 1_000, "usd")
    assert commission["invoiceId"] == "in_1" and "payoutId" not in commission
    assert commission["customer"]["externalId"] == "c_in_1"
    assert api.client.get("/commissions", params={"invoiceId": "in_other"}).json() == []


def test_a_sale_on_a_non_partner_link_has_no_commission(api: Api) -> None:
    """track-sale.ts: a commission only for a link with program and partner."""
    api.receiver.program, api.receiver.partner_clicks = True, {"cl_partner"}
    api.lead(clickId="cl_plain")
    api.sale()
    api.clock.advance(60)
    assert api.client.get("/commissions", params={"invoiceId": "in_1"}).json() == []


def test_refund_status_then_again_is_400(api: Api) -> None:
    """update-partner-commission.ts: the same status again is 400."""
    c = _counted_sale_with_commission(api)
    updated = api.client.patch(f"/commissions/{c['id']}", json={"status": "refunded"}).json()
    assert updated["status"] == "refunded" and updated["amount"] == 10_000
    again = api.client.patch(f"/commissions/{c['id']}", json={"status": "refunded"})
    assert error(again, 400, "bad_request") == "This commission is already in the refunded status."


def test_a_paid_commission_cannot_be_changed(api: Api) -> None:
    """update-partner-commission.ts: a paid commission is 400."""
    c = _counted_sale_with_commission(api)
    api.receiver.commissions()[0].status = "paid"
    listed = api.client.get("/commissions", params={"invoiceId": "in_1"}).json()[0]
    assert listed["status"] == "paid" and listed["paidAt"]
    response = api.client.patch(f"/commissions/{c['id']}", json={"saleAmount": 5000})
    assert error(response, 400, "bad_request") == \
        f"Cannot update commission: Commission {c['id']} has already been paid."


def test_sale_amount_is_absolute_and_modify_sale_amount_relative(api: Api) -> None:
    """update-partner-commission.ts: saleAmount absolute, modifySaleAmount relative."""
    c = _counted_sale_with_commission(api, amount=10_000)
    path = f"/commissions/{c['id']}"
    for _ in range(2):  # absolute: a retried request changes nothing more
        assert api.client.patch(path, json={"saleAmount": 6_000}).json()["amount"] == 6_000
    assert api.client.get("/commissions", params={"invoiceId": "in_1"}).json()[0]["earnings"] == 600
    assert api.client.patch(path, json={"modifySaleAmount": -1_000}).json()["amount"] == 5_000
    assert api.client.patch(path, json={"modifySaleAmount": -1_000}).json()["amount"] == 4_000  # applied twice
    refunded = api.client.patch(path, json={"modifySaleAmount": -4_000}).json()
    assert (refunded["status"], refunded["amount"]) == ("refunded", 4_000)


def test_a_sale_amount_of_zero_refunds(api: Api) -> None:
    """update-partner-commission.ts (079dda7): `saleAmount !== undefined`, so 0 counts and refunds."""
    c = _counted_sale_with_commission(api, amount=10_000)
    refunded = api.client.patch(f"/commissions/{c['id']}", json={"saleAmount": 0}).json()
    assert (refunded["status"], refunded["amount"], refunded["earnings"]) == ("refunded", 10_000, 1_000)


def test_a_commission_in_a_locked_payout_cannot_be_changed(api: Api) -> None:
    """update-partner-commission.ts (079dda7): a payout not in MUTABLE_PAYOUT_STATUSES is 400."""
    c = _counted_sale_with_commission(api)
    held = api.receiver.commissions()[0]
    held.status, held.payout_id, held.payout_status = "processed", "po_1", "processing"
    response = api.client.patch(f"/commissions/{c['id']}", json={"status": "refunded"})
    assert error(response, 400, "bad_request") == "Cannot update commission: Its payout is already processing."
    held.payout_status = "pending"  # a payout not yet paid out: the commission leaves it
    assert api.client.patch(f"/commissions/{c['id']}", json={"status": "refunded"}).json()["status"] == "refunded"
    assert held.payout_id is None


def test_earnings_override_the_computed_earnings(api: Api) -> None:
    """update-partner-commission.ts (079dda7): `earnings` overrides what the sale amount gives."""
    c = _counted_sale_with_commission(api, amount=10_000)
    updated = api.client.patch(f"/commissions/{c['id']}", json={"saleAmount": 8_000, "earnings": 500}).json()
    assert (updated["amount"], updated["earnings"], updated["status"]) == (8_000, 500, "pending")


def test_patch_validates_its_body_and_the_id(api: Api) -> None:
    """commissions.ts updateCommissionSchema; unknown id → 404."""
    c = _counted_sale_with_commission(api)
    assert issue(api.client.patch(f"/commissions/{c['id']}", json={"status": "paid"})).startswith(
        "invalid_enum_value: status")
    assert issue(api.client.patch(f"/commissions/{c['id']}", json={"saleAmount": -1})).startswith(
        "too_small: saleAmount")
    assert error(api.client.patch("/commissions/cm_nope", json={"status": "refunded"}), 404,
                 "not_found") == "Commission cm_nope not found."


def test_patch_drops_unknown_keys_and_refuses_wrong_types(api: Api) -> None:
    """[commissionId]/route.ts: updateCommissionSchema.parse — z.object strips unknown keys (a
    misspelt field changes nothing and is answered 200), a wrong type is 422."""
    c = _counted_sale_with_commission(api, amount=10_000)
    path = f"/commissions/{c['id']}"
    unchanged = api.client.patch(path, json={"saleAmnt": 5_000, "statuss": "refunded"}).json()
    assert (unchanged["amount"], unchanged["status"]) == (10_000, "pending")
    assert issue(api.client.patch(path, json={"saleAmount": "5000"})).startswith("invalid_type: saleAmount")
    assert issue(api.client.patch(path, json={"status": None})).startswith("invalid_type: status")
    assert issue(api.client.patch(path, json=[{"status": "refunded"}])).startswith("invalid_type")
    assert api.receiver.commissions()[0].amount == 10_000


def test_commission_list_filters_and_validates_status(api: Api) -> None:
    """commissions.ts getCommissionsQuerySchema: status is a CommissionStatus."""
    _counted_sale_with_commission(api, "in_1")
    _counted_sale_with_commission(api, "in_2")
    api.receiver.commissions()[0].status = "processed"
    assert [c["invoiceId"] for c in api.client.get("/commissions", params={"status": "pending"}).json()] == ["in_2"]
    assert len(api.client.get("/commissions").json()) == 2
    assert issue(api.client.get("/commissions", params={"status": "bogus"})).startswith("invalid_enum_value: status")


# ---- fault injection and records -----------------------------------------------------------

def test_scripted_failure_counts_nothing_then_the_real_answer(api: Api) -> None:
    """Fault injection (not Dub's): a scripted error changes nothing."""
    api.receiver.script.append((503, {"Retry-After": "1"}))
    first = api.lead()
    assert first.status_code == 503 and first.headers["retry-after"] == "1"
    assert first.json()["error"]["message"] == "scripted 503"
    assert api.receiver.counted_leads() == []
    assert api.lead().json()["link"] is not None and len(api.receiver.counted_leads()) == 1


def test_respond_hook_sees_kind_and_body_and_a_2xx_is_the_real_answer(api: Api) -> None:
    """Fault injection (not Dub's): `respond` picks answers."""
    seen: list[tuple[str, str]] = []

    def respond(kind: str, body: dict[str, Any]) -> tuple[int, dict[str, str]] | None:
        seen.append((kind, body.get("eventName", "")))
        return (422, {}) if body.get("eventName") == "Refuse me" else (200, {"X-Seen": "yes"})

    api.receiver.respond = respond
    assert issue(api.lead(eventName="Refuse me")) == "scripted 422"
    ok = api.lead()
    assert ok.headers["x-seen"] == "yes" and ok.json()["link"] is not None
    assert seen == [("lead", "Refuse me"), ("lead", "Sign up")]


def test_requests_are_recorded_apart_from_what_was_counted(api: Api) -> None:
    """What was received (`requests`) is not what was counted."""
    api.lead(customerExternalId="x" * 101)
    api.lead(headers_marker=1)
    api.lead()
    assert [(r.kind, r.status) for r in api.receiver.requests] == [("lead", 422), ("lead", 200), ("lead", 200)]
    assert len(api.receiver.delivered()) == 2 and len(api.receiver.counted_leads()) == 1
    assert isinstance(api.receiver.requests[0], Received) and api.receiver.requests[0].body["customerExternalId"]


def test_by_key_groups_answered_requests_by_idempotency_key(api: Api) -> None:
    """Dub ignores Idempotency-Key; the receiver groups by it for tests."""
    body = json.dumps({"clickId": "cl_1", "eventName": "Sign up", "customerExternalId": "u"})
    for _ in range(2):
        api.client.post("/track/lead", content=body, headers={"Idempotency-Key": "lead:stripe:u:Sign up"})
    assert {k: len(v) for k, v in api.receiver.by_key().items()} == {"lead:stripe:u:Sign up": 2}


def test_old_constructor_arguments_still_work() -> None:
    """Existing tests and the demo construct the receiver with these keywords."""
    receiver = TrackingReceiver(api_key="k", respond=lambda kind, body: None, delay_s=0.0)
    assert receiver.requests == [] and not receiver.script and receiver.known_clicks is None
