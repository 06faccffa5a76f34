"""Recurly JSON webhooks: `recurly-signature` (ms timestamp, hex HMAC-SHA256 of `timestamp.body`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.testclient import TestClient

from adapter.app import create_app
from adapter.errors import ConfigError, Ignore, PayloadError, SignatureError, StoreUnavailable
from adapter.events import Lead, Refund, Sale
from adapter.ingest import parse_event
from adapter.journal import conversions_of
from adapter.operate import reprocess
from adapter.plugin import build_sources, load_providers
from adapter.receiver import TrackingReceiver
from adapter.samples import post_sample
from adapter.settings import parse_settings
from adapter.testing import ProviderContract, make_source
from providers.recurly import INVOICE_KEY, MAX_LINE_PAGES, RecurlyProvider
from tests.conftest import fixture, wait_for
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


def test_without_an_api_key_a_paid_invoice_is_ignored_for_want_of_an_amount(make_flow: Any) -> None:
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


# -- with an api_key: the invoice read from Recurly's API (served in-process, never our verifier) --

API_KEY = "recurly_private_api_key_0123456789"
INVOICE_ID = "t1ml7zqv4g2e"


class RecurlyAPI:
    """Recurly's API v3 as the tests serve it, behind an injected httpx transport: the invoices it
    knows, every request it got (and on which thread), and `down` (an exception or a status)."""

    def __init__(self) -> None:
        self.invoices: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.threads: list[int] = []
        self.down: Exception | int | None = None
        self.line_pages: dict[str, Any] = {}
        """Per invoice id: the line item list page for a `cursor` (None for the first page)."""
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.threads.append(threading.get_ident())
        if isinstance(self.down, Exception):
            raise self.down
        if self.down is not None:
            return httpx.Response(self.down, json={"error": {"type": "unavailable", "message": "down"}})
        if request.headers.get("authorization") != "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode():
            return httpx.Response(401, json={"error": {"type": "unauthorized", "message": "bad key"}})
        path = unquote(request.url.path.removeprefix("/invoices/"))
        if path.endswith("/line_items"):  # list_invoice_line_items: the page the `cursor` names
            pages = self.line_pages.get(path.removesuffix("/line_items"))
            if pages is None:
                return httpx.Response(404, json={"error": {"type": "not_found", "message": "Couldn't find Invoice"}})
            return httpx.Response(200, json=pages(request.url.params.get("cursor")))
        found = self.invoices.get(path)
        if found is None:
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "Couldn't find Invoice"}})
        return httpx.Response(200, content=json.dumps(found).encode())  # Recurly's JSON numbers, as text

    def serve(self, invoice_id: str = INVOICE_ID, **fields: Any) -> dict[str, Any]:
        """Serve a paid charge invoice (a $49 + $4.90 tax subscription purchase, unless `fields`)."""
        invoice = {
            "id": invoice_id, "object": "invoice", "type": "charge", "origin": "purchase", "state": "paid",
            "account": {"object": "account", "id": "sjt4jqpiw8ms", "code": "user_recurly_42",
                        "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"},
            "subscription_ids": ["sub_recurly_1"], "number": "1042", "currency": "USD",
            "subtotal": 49.0, "discount": 0.0, "tax": 4.9, "total": 53.9, "paid": 53.9, "balance": 0.0,
            "created_at": "2026-04-10T12:34:50Z", "closed_at": "2026-04-10T12:34:55Z",
            "line_items": [{"object": "line_item", "type": "charge", "subscription_id": "sub_recurly_1",
                            "amount": 49.0, "description": "Pro plan"}],
            **fields,
        }
        self.invoices[invoice_id] = invoice
        return invoice


def paid(invoice_id: str = INVOICE_ID) -> bytes:
    body = fixture("recurly", "charge_invoice.paid")
    return json.dumps({**body, "id": invoice_id}).encode()


def recurly_flow(make_flow: Any, api: RecurlyAPI, **settings: Any) -> Any:
    provider = RecurlyProvider()
    provider.transport = api.transport
    return make_flow(provider, [SECRET], lambda b: signed(b), api_key=API_KEY, **settings)


def sent(flow: Any, answer: dict[str, Any]) -> list[dict[str, Any]]:
    """What the Dub destination will send for the event `answer` names."""
    rows = flow.loop.run_until_complete(flow.store.read(lambda tx: conversions_of(tx, answer["eventId"], flow.destination)))
    return [row["payload"] for row in rows]


def test_a_paid_purchase_is_a_subscription_creation_read_from_recurlys_api(make_flow: Any) -> None:
    api = RecurlyAPI()
    api.serve()
    flow = recurly_flow(make_flow, api)
    answer = flow.receive(paid())
    assert answer["status"] == "accepted", answer
    [sale] = flow.stored(answer)
    assert (sale.kind, sale.event_name, sale.external_id, sale.invoice_id) == (
        "sale", "Subscription creation", "user_recurly_42", INVOICE_ID)
    assert sale.email == "ada@example.com" and sale.name == "Ada Lovelace"
    [payload] = sent(flow, answer)
    assert (payload["amount"], payload["currency"]) == (4900, "usd")  # total 53.90 less 4.90 tax
    assert sale.metadata["invoiceNumber"] == "1042"
    [request] = api.requests
    assert str(request.url) == f"https://v3.recurly.com/invoices/{INVOICE_ID}"
    assert request.headers["accept"] == "application/vnd.recurly.v2021-02-25+json"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()


def test_renewals_and_changes_are_named_from_the_invoice_origin(make_flow: Any) -> None:
    api = RecurlyAPI()
    api.serve("inv_renew_unseen", origin="renewal", subscription_ids=["sub_before_install"])
    api.serve("inv_first")
    api.serve("inv_second", origin="renewal")
    api.serve("inv_change", origin="immediate_change", total=12.5, tax=0, subtotal=12.5)
    api.serve("inv_one_off", subscription_ids=[], total=20, tax=0)
    flow = recurly_flow(make_flow, api)
    names = {}
    for invoice_id in ("inv_renew_unseen", "inv_first", "inv_second", "inv_change", "inv_one_off"):
        answer = flow.receive(paid(invoice_id))
        assert answer["status"] == "accepted", (invoice_id, answer)
        [names[invoice_id]] = [s.event_name for s in flow.stored(answer)]
    assert names == {  # a renewal of a subscription hooktrack never saw start stays a renewal
        "inv_renew_unseen": "Subscription renewal", "inv_first": "Subscription creation",
        "inv_second": "Subscription renewal", "inv_change": "Subscription update", "inv_one_off": "Purchase"}


def test_a_free_trial_purchase_is_ignored_and_its_first_paid_renewal_is_the_creation(make_flow: Any) -> None:
    api = RecurlyAPI()
    api.serve("inv_trial", total=0, subtotal=0, tax=0, paid=0)
    api.serve("inv_after_trial", origin="renewal")
    flow = recurly_flow(make_flow, api)
    trial = flow.receive(paid("inv_trial"))
    assert (trial["status"], trial["reason"]) == ("ignored", "zero_amount")
    [sale] = flow.stored(flow.receive(paid("inv_after_trial")))
    assert sale.event_name == "Subscription creation"


def test_amounts_are_exact_in_the_currencys_minor_units() -> None:
    api = RecurlyAPI()
    src = make_source(RecurlyProvider(), [SECRET], name="recurly", api_key=API_KEY)
    src.provider.transport = api.transport  # type: ignore[attr-defined]
    for fields, expected in (({"total": 4999.99, "tax": 0.01}, (499998, "usd")),
                             ({"total": 1200, "tax": 100, "currency": "JPY"}, (1100, "jpy")),
                             ({"total": 10.125, "tax": 0, "currency": "KWD"}, (10125, "kwd"))):
        api.serve(**fields)
        body = src.provider.fetch(paid(), src.ctx)
        sale = one(src, body)
        assert isinstance(sale, Sale) and (sale.amount, sale.currency) == expected, fields
        assert sale.gross_amount == sale.amount + {"usd": 1, "jpy": 100, "kwd": 0}[sale.currency]


def test_recurly_api_down_answers_503_so_recurly_retries_and_the_redelivery_counts(make_flow: Any) -> None:
    api = RecurlyAPI()
    api.serve()
    flow = recurly_flow(make_flow, api)
    for down in (httpx.ConnectError("connection refused"), httpx.ReadTimeout("timed out"), 500, 503, 429, 401):
        api.down = down
        answer = flow.receive(paid())
        assert answer["error"]["code"] == "verifier_unavailable", (down, answer)
        outcome = flow.loop.run_until_complete(flow.ingestor.receive(flow.src, paid(), Headers(signed(paid()))))
        assert outcome.http_status == 503, down
    assert "api_key" in answer["error"]["message"] and API_KEY not in answer["error"]["message"]  # the 401
    assert flow.stored() == []  # nothing stored while the invoice could not be read
    api.down = None
    retried = flow.receive(paid())  # Recurly's retry of the same notification
    assert retried["status"] == "accepted"
    [sale] = flow.stored(retried)
    assert sale.event_name == "Subscription creation"


def test_the_lookup_runs_off_the_event_loop(make_flow: Any) -> None:
    api = RecurlyAPI()
    api.serve()
    flow = recurly_flow(make_flow, api)
    loop_thread: list[int] = []
    flow.loop.call_soon(lambda: loop_thread.append(threading.get_ident()))
    assert flow.receive(paid())["status"] == "accepted"
    assert api.threads and api.threads[0] != loop_thread[0]


def test_an_invoice_recurly_does_not_know_is_ignored_not_retried(make_flow: Any) -> None:
    flow = recurly_flow(make_flow, RecurlyAPI())
    answer = flow.receive(paid("inv_deleted"))
    assert (answer["status"], answer["reason"]) == ("ignored", "invoice_not_found")


def test_the_invoice_is_stored_with_the_delivery_and_reprocess_does_not_call_the_api(
        make_client: Any) -> None:
    api = RecurlyAPI()
    api.serve()
    client = make_client(sources={"recurly": {"provider": "recurly", "secrets": [SECRET], "api_key": API_KEY}})
    src = client.app.state.sources["recurly"]
    src.provider.transport = api.transport
    body = paid()
    answer = client.post("/webhooks/recurly", content=body, headers=signed(body)).json()
    assert answer["status"] == "accepted", answer
    store = client.app.state.store
    [[stored]] = client.portal.call(store.read, lambda tx: tx.all("SELECT body FROM events WHERE id = ?",
                                                                   (answer["eventId"],)))
    kept = json.loads(stored)
    assert {k: kept[k] for k in json.loads(body)} == json.loads(body)  # the delivery as Recurly sent it
    assert (kept["hooktrack_invoice"]["total"], kept["hooktrack_invoice"]["tax"]) == ("53.9", "4.9")

    class Offline(RecurlyProvider):
        def __init__(self) -> None:
            super().__init__()
            self.transport = httpx.MockTransport(lambda r: pytest.fail(f"reprocess called {r.url}"))

    report = reprocess(client.app.state.settings, [answer["eventId"]], registry={"recurly": Offline})
    result = report.results[answer["eventId"]]
    assert (result["status"], result["reason"]) == ("duplicate", "business_key")  # the same Sale, mapped again
    assert len(api.requests) == 1


def _reprocess_with(client: Any, api: RecurlyAPI, event_id: int, **source: Any) -> dict[str, Any]:
    """`hooktrack reprocess event_id` after the source's settings became `source` (the key was set,
    or fixed), with Recurly's API served by `api`."""
    settings = client.app.state.settings.model_copy(update={"sources": parse_settings({
        "store": {"url": "sqlite:///:memory:"}, "tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
        "sources": {"recurly": {"provider": "recurly", "secrets": [SECRET], **source}}}).sources})

    class Served(RecurlyProvider):
        def __init__(self) -> None:
            super().__init__()
            self.transport = api.transport

    return reprocess(settings, [event_id], registry={"recurly": Served}).results[event_id]


def test_a_sale_received_before_the_api_key_was_set_is_counted_by_reprocess(make_client: Any) -> None:
    """Without `api_key` a paid invoice is ignored; once the key is in the config, reprocessing
    the stored event reads the invoice and the Sale goes out as if it had been read on arrival."""
    client = make_client(sources={"recurly": {"provider": "recurly", "secrets": [SECRET]}})
    body = paid()
    answer = client.post("/webhooks/recurly", content=body, headers=signed(body)).json()
    assert (answer["status"], answer["reason"]) == ("ignored", "amount_not_in_payload")
    api = RecurlyAPI()
    api.serve()
    api.down = 503
    result = _reprocess_with(client, api, answer["eventId"], api_key=API_KEY)
    assert result["status"] == "skipped" and "run reprocess again" in result["message"], result
    assert API_KEY not in result["message"]
    api.down = None
    result = _reprocess_with(client, api, answer["eventId"], api_key=API_KEY)
    assert result["status"] == "accepted", result
    store, destination = client.app.state.store, client.app.state.destination
    [row] = client.portal.call(store.read, lambda tx: conversions_of(tx, result["eventId"], destination))
    [[kept]] = client.portal.call(store.read, lambda tx: tx.all("SELECT body FROM events WHERE id = ?",
                                                                 (result["eventId"],)))
    sale = row["payload"]
    assert (sale["invoiceId"], sale["amount"], sale["eventName"]) == (INVOICE_ID, 4900, "Subscription creation")
    assert json.loads(kept)[INVOICE_KEY]["total"] == "53.9"
    again = _reprocess_with(client, api, answer["eventId"], api_key=API_KEY)
    assert (again["status"], again["reason"]) == ("duplicate", "business_key")  # counted once
    assert len(api.requests) == 3  # down, read, read again for the repeat: never more than one a run


def test_an_invoice_not_found_under_another_sites_key_is_looked_up_again_by_reprocess(make_client: Any) -> None:
    api = RecurlyAPI()  # the wrong site: it knows no such invoice
    client = make_client(sources={"recurly": {"provider": "recurly", "secrets": [SECRET], "api_key": API_KEY}})
    client.app.state.sources["recurly"].provider.transport = api.transport
    body = paid()
    answer = client.post("/webhooks/recurly", content=body, headers=signed(body)).json()
    assert (answer["status"], answer["reason"]) == ("ignored", "invoice_not_found")
    right = RecurlyAPI()
    right.serve()
    result = _reprocess_with(client, right, answer["eventId"], api_key=API_KEY)
    assert result["status"] == "accepted", result
    store = client.app.state.store
    [[kept]] = client.portal.call(store.read, lambda tx: tx.all("SELECT body FROM events WHERE id = ?",
                                                                 (result["eventId"],)))
    assert kept.count(INVOICE_KEY) == 1 and json.loads(kept)[INVOICE_KEY]["total"] == "53.9"
    assert {k: json.loads(kept)[k] for k in json.loads(body)} == json.loads(body)


@pytest.mark.parametrize("base", ["https://evil.example", "http://v3.recurly.com", "https://v3.recurly.com.evil.example",
                                  "https://v3.recurly.com:8443", "https://user@v3.recurly.com",
                                  "https://v3.recurly.com/invoices", "https://127.0.0.1"])
def test_an_api_base_off_recurlys_hosts_stops_startup(base: str) -> None:
    settings = parse_settings({"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
                               "sources": {"recurly": {"provider": "recurly", "secrets": [SECRET],
                                                       "api_key": API_KEY, "api_base": base}}})
    with pytest.raises(ConfigError) as caught:
        build_sources(settings, {"recurly": RecurlyProvider})
    assert "sources.recurly: api_base" in str(caught.value) and API_KEY not in str(caught.value)


def test_the_eu_region_and_an_explicit_recurly_base_are_where_the_key_goes() -> None:
    for settings, host in (({"region": "eu"}, "v3.eu.recurly.com"),
                           ({"api_base": "https://v3.eu.recurly.com/"}, "v3.eu.recurly.com"),
                           ({}, "v3.recurly.com")):
        api = RecurlyAPI()
        api.serve()
        src = make_source(RecurlyProvider(), [SECRET], name="recurly", api_key=API_KEY, **settings)
        src.provider.transport = api.transport  # type: ignore[attr-defined]
        src.provider.fetch(paid(), src.ctx)
        assert [r.url.host for r in api.requests] == [host], settings


def test_a_refund_credit_invoice_reverses_the_charge_invoice_it_credits(make_flow: Any) -> None:
    api = RecurlyAPI()
    api.serve()
    api.serve("inv_credit", type="credit", origin="line_item_refund", subscription_ids=["sub_recurly_1"],
              subtotal=-20.0, tax=-2.0, total=-22.0, state="closed",
              line_items=[{"type": "credit", "original_line_item_invoice_id": INVOICE_ID, "amount": -22.0}])
    api.serve("inv_goodwill", type="credit", origin="credit", total=-5.0, tax=0, line_items=[])
    flow = recurly_flow(make_flow, api)
    assert flow.receive(paid())["status"] == "accepted"
    credit = {"id": "inv_credit", "object_type": "credit_invoice", "site_id": "o2vojlpfvzzb",
              "event_type": "created", "event_time": "2026-04-12T09:00:00Z", "uuid": "6a1e4b2c7d9f40b1a3c5e7f9b2d4a6c9"}
    src = flow.src
    for total in (-22.0, -22, "-22.00"):  # a JSON number with or without a fraction, or decimal text
        api.invoices["inv_credit"]["total"] = total
        [refund] = mapped(src, src.provider.fetch(json.dumps(credit).encode(), src.ctx))
        assert isinstance(refund, Refund)
        assert (refund.reverses, refund.amount, refund.currency, refund.includes_tax, refund.refund_id) == (
            (INVOICE_ID,), 2200, "usd", True, "inv_credit"), total
    answer = flow.receive(credit)
    assert answer["status"] == "accepted" and [c["kind"] for c in answer["conversions"]] == ["refund"], answer
    assert [(s.kind, s.state, s.reason) for s in flow.stored()] == [("sale", "pending", None),
                                                                    ("refund", "pending", None)]
    goodwill = flow.receive({**credit, "id": "inv_goodwill"})
    assert (goodwill["status"], goodwill["reason"]) == ("ignored", "not_a_refund")


def test_a_recurly_sale_is_counted_by_dub_end_to_end(tmp_path: Path, receiver: TrackingReceiver) -> None:
    """Issue 15: through the app, the forwarder and the strict Dub stand-in, a paid Recurly invoice
    of a customer Dub knows (the app tracked its sign-up) is a counted sale of its amount."""
    api = RecurlyAPI()
    api.serve()
    settings = parse_settings({
        "store": {"url": f"sqlite:///{tmp_path / 'hooktrack.db'}"},
        "tracking": {"url": receiver.url, "api_key": receiver.api_key, "timeout_s": 2},  # type: ignore[attr-defined]
        "forwarder": {"base_delay_s": 0.05, "max_delay_s": 0.2, "poll_interval_s": 0.05, "fill_window_s": 0},
        "sources": {"recurly": {"provider": "recurly", "secrets": [SECRET], "api_key": API_KEY}},
    })
    ws = receiver.workspace(receiver.api_key)
    receiver.track_lead(ws, {"clickId": "cl_recurly_signup", "eventName": "Sign up",
                             "customerExternalId": "user_recurly_42", "mode": "wait"})
    with TestClient(create_app(settings, registry=load_providers())) as client:
        client.app.state.sources["recurly"].provider.transport = api.transport  # type: ignore[attr-defined]
        body = paid()
        answer = client.post("/webhooks/recurly", content=body, headers=signed(body))
        assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
        wait_for(lambda: len(receiver.counted_sales()) == 1, timeout=10)
    [sale] = receiver.counted_sales()
    assert (sale.amount, sale.currency, sale.invoice_id) == (4900, "usd", INVOICE_ID), sale


# -- a redelivery costs no lookup; credit lines are paged; one HTTP client per source --------

CREDIT = {"id": "inv_credit", "object_type": "credit_invoice", "site_id": "o2vojlpfvzzb",
          "event_type": "created", "event_time": "2026-04-12T09:00:00Z", "uuid": "6a1e4b2c7d9f40b1a3c5e7f9b2d4a6c9"}


def serve_credit(api: RecurlyAPI, lines: list[dict[str, Any]], **fields: Any) -> None:
    api.serve("inv_credit", type="credit", origin="refund", subscription_ids=["sub_recurly_1"],
              subtotal=-20.0, tax=-2.0, total=-22.0, state="closed", line_items=lines, **fields)


def credit_line(line_id: str, invoice_id: str | None) -> dict[str, Any]:
    return {"id": line_id, "object": "line_item", "type": "credit", "amount": -11.0,
            "original_line_item_invoice_id": invoice_id}


def test_a_redelivered_notification_is_a_duplicate_without_a_second_lookup(make_flow: Any) -> None:
    api = RecurlyAPI()
    api.serve()
    serve_credit(api, [credit_line("line_c1", INVOICE_ID)])
    flow = recurly_flow(make_flow, api)
    assert flow.receive(paid())["status"] == "accepted"
    again = flow.receive(paid())  # Recurly's redelivery of the same notification
    assert again["status"] == "duplicate", again
    assert len(api.requests) == 1
    assert flow.receive(CREDIT)["status"] == "accepted"
    assert flow.receive(CREDIT)["status"] == "duplicate"
    assert len(api.requests) == 2
    assert [(s.kind, s.state) for s in flow.stored()] == [("sale", "pending"), ("refund", "pending")]


def test_when_the_store_cannot_say_whether_it_is_a_redelivery_the_lookup_runs(make_flow: Any) -> None:
    """The read before the lookup is only an optimisation: a store that cannot answer it never
    turns a new notification into a duplicate or an ignored one."""
    api = RecurlyAPI()
    api.serve()
    flow = recurly_flow(make_flow, api)

    async def unreadable(fn: Any) -> Any:
        raise StoreUnavailable("read replica away")

    real_read, flow.store.read = flow.store.read, unreadable
    answer = flow.receive(paid())
    flow.store.read = real_read
    assert answer["status"] == "accepted", answer
    assert len(api.requests) == 1
    [sale] = flow.stored(answer)
    assert sale.event_name == "Subscription creation"


def test_the_credit_lines_past_the_first_are_read_page_by_page(make_flow: Any) -> None:
    """An invoice lists its first lines only (`has_more_line_items`); the rest come from
    `GET /invoices/{id}/line_items`, page by page through `next`: a refund whose credit lines
    name one charge invoice on the second page is a Refund of it, and one whose later lines
    credit a second invoice is no Refund of either."""
    api = RecurlyAPI()
    api.serve()
    serve_credit(api, [credit_line("line_c1", None)], has_more_line_items=True)
    pages = {None: {"object": "list", "has_more": True, "next": "/invoices/inv_credit/line_items?cursor=p2&limit=200",
                    "data": [credit_line("line_c1", None), credit_line("line_c2", None)]},
             "p2": {"object": "list", "has_more": False, "next": None,
                    "data": [credit_line("line_c3", INVOICE_ID)]}}
    api.line_pages["inv_credit"] = lambda cursor: pages[cursor]
    flow = recurly_flow(make_flow, api)
    assert flow.receive(paid())["status"] == "accepted"
    answer = flow.receive(CREDIT)
    assert answer["status"] == "accepted" and [c["kind"] for c in answer["conversions"]] == ["refund"], answer
    assert [str(r.url) for r in api.requests[1:]] == [
        "https://v3.recurly.com/invoices/inv_credit",
        "https://v3.recurly.com/invoices/inv_credit/line_items?limit=200",
        "https://v3.recurly.com/invoices/inv_credit/line_items?cursor=p2&limit=200"]
    assert all(r.headers["authorization"].startswith("Basic ") for r in api.requests)

    pages["p2"]["data"].append(credit_line("line_c4", "inv_someone_else"))
    src = flow.src
    with pytest.raises(Ignore) as caught:
        mapped(src, src.provider.fetch(json.dumps({**CREDIT, "id": "inv_credit"}).encode(), src.ctx))
    assert caught.value.reason == "refund_invoice_unknown"


def test_a_line_item_list_that_never_ends_is_read_to_a_bound(make_flow: Any) -> None:
    """A list that always says `has_more` is read for `MAX_LINE_PAGES` pages and no more; a
    `next` off Recurly's API host is never followed (the key would go with it)."""
    api = RecurlyAPI()
    serve_credit(api, [credit_line("line_c1", INVOICE_ID)], has_more_line_items=True)
    api.line_pages["inv_credit"] = lambda cursor: {
        "object": "list", "has_more": True, "data": [credit_line(f"line_{cursor}", None)],
        "next": f"/invoices/inv_credit/line_items?cursor={int(cursor or 0) + 1}"}
    src = make_source(RecurlyProvider(), [SECRET], name="recurly", api_key=API_KEY)
    src.provider.transport = api.transport  # type: ignore[attr-defined]
    body = json.loads(src.provider.fetch(json.dumps(CREDIT).encode(), src.ctx))
    assert len(api.requests) == 1 + MAX_LINE_PAGES
    assert body[INVOICE_KEY]["line_items_complete"] is False
    [refund] = mapped(src, json.dumps(body).encode())  # what was read still names the charge
    assert isinstance(refund, Refund) and refund.reverses == (INVOICE_ID,)

    api.requests.clear()
    api.line_pages["inv_credit"] = lambda cursor: {
        "object": "list", "has_more": True, "data": [], "next": "https://evil.example/invoices/inv_credit/line_items"}
    src.provider.fetch(json.dumps(CREDIT).encode(), src.ctx)
    assert [r.url.host for r in api.requests] == ["v3.recurly.com", "v3.recurly.com"]


def test_a_paid_invoice_is_not_paged_for_lines_the_sale_does_not_read(make_flow: Any) -> None:
    api = RecurlyAPI()
    api.serve(has_more_line_items=True)
    flow = recurly_flow(make_flow, api)
    assert flow.receive(paid())["status"] == "accepted"
    assert [r.url.path for r in api.requests] == [f"/invoices/{INVOICE_ID}"]


class CountingTransport(httpx.MockTransport):
    """Recurly's API, counting how often a client closed it (once per client made and closed)."""

    def __init__(self, api: RecurlyAPI) -> None:
        super().__init__(api.handle)
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_lookups_share_one_http_client_per_source_until_it_is_closed() -> None:
    api = RecurlyAPI()
    api.serve()
    transport = CountingTransport(api)
    src = make_source(RecurlyProvider(), [SECRET], name="recurly", api_key=API_KEY)
    provider = src.provider
    provider.transport = transport  # type: ignore[attr-defined]
    workers = [threading.Thread(target=provider.fetch, args=(paid(), src.ctx)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    provider.fetch(paid(), src.ctx)
    assert len(api.requests) == 5 and len(set(api.threads)) >= 2
    assert transport.closed == 0  # a client per lookup would have closed its connections 5 times
    provider.close()  # type: ignore[attr-defined]
    assert transport.closed == 1
    provider.fetch(paid(), src.ctx)  # a lookup after close opens a new client
    assert len(api.requests) == 6
