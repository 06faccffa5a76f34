"""The `dub` destination's refunds (SPEC §9): find the Sale's commission, then change it.

Dub's sources (docs/dub-api.md has the commits): `apps/web/lib/zod/schemas/commissions.ts`
(getCommissionsQuerySchema, updateCommissionSchema), `apps/web/app/(ee)/api/commissions/route.ts`
(GET by invoiceId: a JSON array), `apps/web/lib/api/commissions/update-partner-commission.ts`
(400 for a paid commission or one in a locked payout, 400 for the same status again),
`apps/web/lib/api/programs/get-default-program-id-or-throw.ts` (404 "Program not found").

The first half judges real `Answer`s with the pure steps; the second runs refunds against the
stand-in receiver over loopback HTTP, with a clock the tests move (the commission appears
`commission_delay_s` after its sale), stepping through find → change as the forwarder does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from adapter.destinations import Answer, Request, Verdict
from adapter.destinations.dub import DubDestination
from adapter.receiver import TrackingReceiver, run_in_thread
from adapter.records import Conversion
from adapter.settings import TrackingSettings

DUB = DubDestination(TrackingSettings(url="http://127.0.0.1:9", api_key="dub_test"))
AT = 1_775_824_496_000  # 2026-04-10T12:34:56.000Z


def sale(**changes: Any) -> Conversion:
    base = Conversion(kind="sale", source="stripe", provider="stripe", event_name="Purchase", occurred_at=AT,
                      customer_external_id="user_42", click_id="cl_partner", amount=4900, currency="usd",
                      invoice_id="in_1", provider_event_id="evt_1", provider_event_type="invoice.paid")
    return base.but(**changes)


def refund(refunded: int = 4900, **changes: Any) -> Conversion:
    """A refund of `sale()`: `refunded` in all once it applies, this one's amount the difference."""
    base = sale().but(kind="refund", event_name="Refund", provider_event_id="evt_r", amount=refunded,
                      provider_event_type="charge.refunded", reverses=1, sale_amount=4900, refunded=refunded,
                      refund_id="re_1")
    return base.but(**changes)


def answer(status: int, body: Any = None, **headers: str) -> Answer:
    raw = json.dumps(body).encode() if body is not None else b""
    return Answer(status, {k.replace("_", "-").lower(): v for k, v in headers.items()}, raw, AT)


def dub_error(status: int, code: str, message: str) -> Answer:
    """Dub's error shape (apps/web/lib/api/errors.ts)."""
    return answer(status, {"error": {"code": code, "message": message,
                                     "doc_url": f"https://dub.co/docs/api-reference/errors#{code}"}})


def commission(status: str = "pending", amount: int = 4900, cid: str = "cm_1") -> dict[str, Any]:
    """One row of `GET /commissions` as CommissionEnrichedSchema has it."""
    return {"id": cid, "type": "sale", "amount": amount, "earnings": amount // 10, "currency": "usd",
            "status": status, "invoiceId": "in_1", "description": None, "quantity": 1, "userId": None,
            "metadata": None, "createdAt": "2026-04-10T12:34:58.000Z", "updatedAt": "2026-04-10T12:34:58.000Z",
            "paidAt": None, "partner": {"id": "pn_1", "name": "P", "email": "p@example.com", "image": None,
                                        "payoutsEnabledAt": None, "country": None, "groupId": None},
            "customer": None}


def found(c: Conversion, *rows: dict[str, Any]) -> Verdict:
    return DUB.classify(c, DUB.render(c), answer(200, list(rows)))


def patched(c: Conversion, status: int, body: Any = None) -> Verdict:
    verdict = found(c, commission())
    assert verdict.next is not None
    return DUB.classify(c, verdict.next, answer(status, body) if not isinstance(body, Answer) else body)


# ---- check and render ------------------------------------------------------------------------

def test_a_refund_needs_only_the_sales_invoice_id() -> None:
    assert DUB.check(refund()) == []
    assert DUB.check(refund(customer_external_id=None, event_name="")) == []  # nothing else is sent
    [problem] = DUB.check(refund(invoice_id=None))
    assert (problem.field, problem.action) == ("invoice_id", "skip")


def test_render_reads_the_commission_by_the_invoice_id_the_sale_sent() -> None:
    request = DUB.render(refund())
    assert (request.method, request.path, request.body, request.step) == (
        "GET", "/commissions?invoiceId=in_1", None, "find_commission")
    assert request.headers["Authorization"] == "Bearer dub_test"
    qualified = sale(source="shop", provider="shopify", invoice_id="1001", invoice_unique=False)
    assert DUB.render(qualified).body["invoiceId"] == "shop:1001"  # type: ignore[index]
    assert DUB.render(refund(source="shop", provider="shopify", invoice_id="1001", invoice_unique=False)).path == \
        "/commissions?invoiceId=shop%3A1001"


def test_every_retry_starts_by_reading_again() -> None:
    """render never returns the PATCH: a timed-out change is read again before it is written."""
    memo = {"commission_id": "cm_1", "commission_sale_amount": 4900}
    assert DUB.render(refund(1000, memo=memo)).step == "find_commission"


# ---- classify: GET /commissions?invoiceId= ---------------------------------------------------

def test_no_commission_yet_is_tried_again_within_the_window() -> None:
    """track-sale.ts creates the commission in waitUntil, seconds after it answered the sale."""
    assert found(refund()) == Verdict.not_counted("no_commission")


def test_no_program_is_unattributed_at_once() -> None:
    verdict = DUB.classify(refund(), DUB.render(refund()), dub_error(404, "not_found", "Program not found"))
    assert verdict == Verdict.unattributed("no_program")


def test_a_paid_commission_is_shown_as_commission_paid() -> None:
    verdict = found(refund(), commission("paid"))
    assert (verdict.outcome, verdict.reason) == ("unattributed", "commission_paid")


def test_an_already_refunded_commission_is_delivered() -> None:
    verdict = found(refund(), commission("refunded"))
    assert (verdict.outcome, verdict.note) == ("delivered", "already_refunded")


@pytest.mark.parametrize("status", ["duplicate", "fraud", "canceled"])
def test_a_commission_that_earns_nothing_already_is_left_as_the_owner_marked_it(status: str) -> None:
    verdict = found(refund(), commission(status))
    assert (verdict.outcome, verdict.note, verdict.next) == ("delivered", f"commission_{status}", None)


@pytest.mark.parametrize("status", ["pending", "processed"])
def test_a_whole_refund_marks_the_commission_refunded(status: str) -> None:
    verdict = found(refund(4900), commission(status))
    assert verdict.outcome == "follow" and verdict.next is not None
    assert (verdict.next.method, verdict.next.path, verdict.next.body, verdict.next.step) == (
        "PATCH", "/commissions/cm_1", {"status": "refunded"}, "update_commission")
    assert verdict.next.headers["Authorization"] == "Bearer dub_test"
    assert verdict.next.headers["Content-Type"] == "application/json"
    assert verdict.memo == {"commission_id": "cm_1", "commission_sale_amount": 4900}


def test_a_chargeback_marks_the_commission_refunded_whatever_its_amount() -> None:
    verdict = found(refund(1000, chargeback=True), commission())
    assert verdict.next is not None and verdict.next.body == {"status": "refunded"}


def test_a_partial_refund_sets_an_absolute_sale_amount_never_a_relative_one() -> None:
    verdict = found(refund(1000), commission(amount=4900))
    assert verdict.next is not None and verdict.next.body == {"saleAmount": 3900, "currency": "usd"}


def test_the_sale_amount_is_scaled_from_the_first_read_not_the_current_one() -> None:
    """The second partial refund (2500 of 4900 in all): 2400 of the first 4900, not of 3900."""
    memo = {"commission_id": "cm_1", "commission_sale_amount": 4900}
    verdict = found(refund(2500, memo=memo), commission(amount=3900))
    assert verdict.next is not None and verdict.next.body == {"saleAmount": 2400, "currency": "usd"}
    assert verdict.memo is not None and verdict.memo["commission_sale_amount"] == 3900  # kept: first write wins


def test_a_commission_in_another_currency_is_scaled_by_what_remains_of_the_sale() -> None:
    """EUR 49.00 → USD 53.90 commission; 10.00 EUR refunded leaves 39/49 of it."""
    verdict = found(refund(1000, currency="eur"), commission(amount=5390))
    assert verdict.next is not None and verdict.next.body == {"saleAmount": 4290, "currency": "usd"}


@pytest.mark.parametrize(("first", "expected"), [(5, 2), (7, 4), (3, 2)])
def test_scaling_rounds_half_to_even(first: int, expected: int) -> None:
    half = refund(1, sale_amount=2)  # half the sale remains
    verdict = found(half, commission(amount=first))
    assert verdict.next is not None and verdict.next.body == {"saleAmount": expected, "currency": "usd"}


def test_a_remainder_that_rounds_to_nothing_refunds() -> None:
    verdict = found(refund(4899), commission(amount=1))
    assert verdict.next is not None and verdict.next.body == {"status": "refunded"}


def test_a_sale_amount_already_set_by_an_earlier_attempt_is_delivered_without_writing() -> None:
    memo = {"commission_id": "cm_1", "commission_sale_amount": 4900}
    verdict = found(refund(1000, memo=memo), commission(amount=3900))
    assert (verdict.outcome, verdict.note, verdict.next) == ("delivered", "already_applied", None)


def test_a_refund_without_its_sales_totals_is_not_guessed() -> None:
    verdict = found(refund(1000, sale_amount=None), commission())
    assert (verdict.outcome, verdict.reason) == ("dead", "refund_without_totals")
    whole = found(refund().but(amount=None, sale_amount=None, refunded=None), commission())
    assert whole.next is not None and whole.next.body == {"status": "refunded"}


def test_an_answer_that_is_not_a_list_is_not_mistaken_for_no_commission() -> None:
    verdict = DUB.classify(refund(), DUB.render(refund()), answer(200, {"commissions": []}))
    assert verdict.outcome == "dead"


# ---- classify: PATCH /commissions/{id} -------------------------------------------------------

def test_a_changed_commission_is_delivered() -> None:
    assert patched(refund(), 200, commission("refunded")) == Verdict.delivered()


@pytest.mark.parametrize("message", [
    "Cannot update commission: Commission cm_1 has already been paid.",
    "Cannot update commission: Its payout is already processing.",
    "Cannot update commission: Its payout is already completed.",
])
def test_a_commission_paid_or_locked_in_a_payout_is_commission_paid(message: str) -> None:
    verdict = patched(refund(), 400, dub_error(400, "bad_request", message))
    assert verdict == Verdict.unattributed("commission_paid")


def test_a_commission_refunded_between_read_and_write_is_delivered() -> None:
    verdict = patched(refund(), 400, dub_error(400, "bad_request", "This commission is already in the refunded status."))
    assert (verdict.outcome, verdict.note) == ("delivered", "already_refunded")


def test_a_commission_gone_between_read_and_write_is_read_again() -> None:
    verdict = patched(refund(), 404, dub_error(404, "not_found", "Commission cm_1 not found."))
    assert verdict == Verdict.not_counted("no_commission")


@pytest.mark.parametrize("step", ["find", "patch"])
def test_keys_rate_limits_and_failures_are_judged_as_for_sales(step: str) -> None:
    c = refund()
    request = DUB.render(c) if step == "find" else found(c, commission()).next
    assert isinstance(request, Request)

    def judge(a: Answer) -> Verdict:
        return DUB.classify(c, request, a)

    assert judge(dub_error(401, "unauthorized", "Unauthorized: Invalid API key.")).outcome == "pause"
    assert judge(dub_error(403, "forbidden", "Unauthorized: Need higher plan.")).outcome == "pause"
    assert judge(dub_error(404, "not_found", "Workspace ID not found. Did you forget ...")).outcome == "pause"
    limited = judge(answer(429, {"error": {"code": "rate_limit_exceeded", "message": "Too many requests."}},
                           retry_after=str(AT + 30_000)))
    assert (limited.outcome, limited.after_s) == ("rate_limited", 30.0)
    assert judge(answer(503)) == Verdict.retry("http_503")
    assert judge(dub_error(422, "unprocessable_entity", "invalid_type: saleAmount: ...")).outcome == "dead"


# ---- against the stand-in over loopback HTTP -------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Dub:
    receiver: TrackingReceiver
    client: httpx.Client
    clock: Clock
    memo: dict[str, Any]

    def send(self, request: Request) -> Answer:
        response = self.client.request(request.method, request.path, headers=dict(request.headers),
                                       content=json.dumps(request.body) if request.body is not None else None)
        return Answer(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)

    def deliver(self, c: Conversion) -> Verdict:
        """One delivery attempt as the forwarder makes it: render, then follow each step; memos are
        kept first write wins and handed back to every later attempt."""
        c = c.but(memo=dict(self.memo))
        request = DUB.render(c)
        for _ in range(4):
            verdict = DUB.classify(c, request, self.send(request))
            for key, value in (verdict.memo or {}).items():
                self.memo.setdefault(key, value)
            if verdict.outcome != "follow" or verdict.next is None:
                return verdict
            request = verdict.next
        raise AssertionError("too many steps")

    def track(self, s: Conversion) -> None:
        answer = self.send(DUB.render(s))
        assert DUB.classify(s, DUB.render(s), answer).outcome == "delivered", answer.body

    def the_commission(self) -> Any:
        [c] = self.receiver.commissions()
        return c


@pytest.fixture
def dub() -> Iterator[Dub]:
    clock = Clock()
    receiver = TrackingReceiver(api_key="dub_test", clock=clock, program=True, commission_delay_s=2.0)
    with run_in_thread(receiver.app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield Dub(receiver, client, clock, {})


def test_a_refund_right_behind_its_sale_finds_the_commission_once_it_exists(dub: Dub) -> None:
    dub.track(sale())
    assert dub.deliver(refund()) == Verdict.not_counted("no_commission")  # Dub has not created it yet
    dub.clock.advance(2.0)
    assert dub.deliver(refund()) == Verdict.delivered()
    assert (dub.the_commission().status, dub.the_commission().amount) == ("refunded", 4900)
    steps = [(r.kind, r.status) for r in dub.receiver.requests]
    assert steps == [("sale", 200), ("commissions", 200), ("commissions", 200), ("commission", 200)]
    assert dub.deliver(refund()).note == "already_refunded"  # a redelivered refund changes nothing


def test_two_partial_refunds_leave_absolute_sale_amounts(dub: Dub) -> None:
    """SPEC §9 / issue 13: 1000, then 2500 in all, of 4900 → 2400, even when a PATCH is retried."""
    dub.track(sale())
    dub.clock.advance(2.0)
    assert dub.deliver(refund(1000)) == Verdict.delivered()
    assert dub.the_commission().amount == 3900
    second = refund(2500, refund_id="re_2")
    patch = found(second.but(memo=dict(dub.memo)), commission(amount=3900, cid=dub.the_commission().id)).next
    assert patch is not None
    for _ in range(2):  # a timed-out PATCH that did arrive, sent again
        assert dub.send(patch).status == 200
        assert dub.the_commission().amount == 2400
    verdict = dub.deliver(second)  # the retry reads again: already at 2400
    assert (verdict.outcome, verdict.note) == ("delivered", "already_applied")
    assert (dub.the_commission().amount, dub.the_commission().status) == (2400, "pending")
    assert dub.the_commission().earnings == 240
    assert not [r for r in dub.receiver.requests if "modifySaleAmount" in r.body]


def test_partial_refunds_of_a_converted_sale_scale_the_first_read(dub: Dub) -> None:
    """A EUR sale's commission is in USD (5390): each refund scales that first read."""
    dub.receiver.usd_rates = {"eur": 1.1}
    dub.track(sale(currency="eur"))
    dub.clock.advance(2.0)
    assert dub.deliver(refund(1000, currency="eur")) == Verdict.delivered()
    assert dub.the_commission().amount == 4290
    assert dub.deliver(refund(2500, currency="eur", refund_id="re_2")) == Verdict.delivered()
    assert dub.the_commission().amount == 2640  # 5390 x 24/49, not 4290 x 24/49
    assert dub.deliver(refund(4900, currency="eur", refund_id="re_3")) == Verdict.delivered()
    assert dub.the_commission().status == "refunded"


def test_a_source_qualified_invoice_finds_its_commission(dub: Dub) -> None:
    shop = {"source": "shop", "provider": "shopify", "invoice_id": "1001", "invoice_unique": False}
    dub.track(sale(**shop))
    dub.clock.advance(2.0)
    assert dub.deliver(refund(**shop)) == Verdict.delivered()
    assert dub.the_commission().invoice_id == "shop:1001" and dub.the_commission().status == "refunded"


def test_a_paid_commission_is_commission_paid_and_unchanged(dub: Dub) -> None:
    dub.track(sale())
    dub.clock.advance(2.0)
    dub.the_commission().status = "paid"
    assert dub.deliver(refund(1000)) == Verdict("unattributed", reason="commission_paid",
                                                memo={"commission_id": dub.the_commission().id,
                                                      "commission_sale_amount": 4900})
    assert dub.the_commission().amount == 4900
    assert [r.kind for r in dub.receiver.requests] == ["sale", "commissions"]


def test_a_commission_in_a_payout_being_paid_is_commission_paid(dub: Dub) -> None:
    """Listed as `processed` (the answer shows no payout): only the PATCH's 400 tells."""
    dub.track(sale())
    dub.clock.advance(2.0)
    held = dub.the_commission()
    held.status, held.payout_id, held.payout_status = "processed", "po_1", "processing"
    assert dub.deliver(refund()) == Verdict.unattributed("commission_paid")
    assert held.status == "processed"


def test_no_program_is_no_program(dub: Dub) -> None:
    dub.receiver.program = False
    dub.track(sale())
    dub.clock.advance(60)
    assert dub.deliver(refund()) == Verdict.unattributed("no_program")


def test_a_sale_without_a_partner_never_gets_a_commission(dub: Dub) -> None:
    dub.receiver.partner_clicks = {"cl_other"}
    dub.track(sale())
    dub.clock.advance(60)
    assert dub.deliver(refund()) == Verdict.not_counted("no_commission")  # unattributed once the window ends
