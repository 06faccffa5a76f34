"""The admin API: bearer auth, events and journeys, replay of dead conversions, OpenAPI."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from adapter.admin import BearerGuard
from adapter.demo import refuse_once as demo_refuse_once
from adapter.openapi import OPENAPI
from adapter.receiver import TrackingReceiver
from tests.conftest import fixture, post_stripe, wait_for

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def refuse_once(receiver: TrackingReceiver, event_name: str) -> None:
    """The tracking API answers 422 to the first request for `event_name`, 200 after."""
    receiver.respond = demo_refuse_once(event_name)


@pytest.fixture
def admin(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(admin={"token": TOKEN})


def _dead_purchase(admin: TestClient, receiver: TrackingReceiver) -> dict[str, Any]:
    refuse_once(receiver, "Purchase")
    answer = post_stripe(admin, fixture("stripe", "checkout.session.completed")).json()
    conv_id = answer["conversions"][0]["id"]

    def dead() -> dict[str, Any] | None:
        ev = admin.get(f"/admin/api/events/{answer['eventId']}", headers=AUTH).json()
        conv: dict[str, Any] = ev["conversions"][0]
        return ev if conv["state"] == "dead" else None

    ev = wait_for(dead)
    assert ev["conversions"][0]["id"] == conv_id
    return ev  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", ["/admin", "/admin/", "/admin/api/events", "/admin/api/openapi.json",
                                  "/admin/static/admin.js"])
def test_admin_is_absent_without_a_token(client: TestClient, path: str) -> None:
    assert client.get(path, headers=AUTH, follow_redirects=False).status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789abcdef"},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Bearer {TOKEN}x"}])
def test_api_refuses_a_missing_or_wrong_token(admin: TestClient, headers: dict[str, str]) -> None:
    for path in ("/admin/api/events", "/admin/api/stats", "/admin/api/openapi.json", "/admin/api/nowhere"):
        r = admin.get(path, headers=headers)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert admin.post("/admin/api/replay", json={"dead": True}, headers=headers).status_code == 401


def test_page_and_assets_load_without_the_token_and_hold_no_data(admin: TestClient) -> None:
    assert admin.get("/admin", follow_redirects=False).headers["location"] == "/admin/"
    page = admin.get("/admin/")
    assert page.status_code == 200 and "Admin token" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert TOKEN not in page.text
    assert admin.get("/admin/static/admin.js").status_code == 200
    assert admin.get("/admin/static/admin.css").status_code == 200


def test_events_list_filters_and_journey(admin: TestClient) -> None:
    post_stripe(admin, fixture("stripe", "checkout.session.completed"))
    post_stripe(admin, fixture("stripe", "checkout.session.completed+setup"))
    post_stripe(admin, fixture("stripe", "customer.created"), secret="whsec_forged")
    rows = admin.get("/admin/api/events", headers=AUTH).json()["events"]
    assert [r["status"] for r in rows] == ["rejected", "ignored", "accepted"]
    ignored = admin.get("/admin/api/events?status=ignored&source=stripe&since=1h", headers=AUTH).json()["events"]
    assert [r["reason"] for r in ignored] == ["setup_mode"]
    assert admin.get("/admin/api/events?limit=1", headers=AUTH).json()["events"][0]["status"] == "rejected"
    older = admin.get(f"/admin/api/events?before={rows[0]['id']}", headers=AUTH).json()["events"]
    assert [r["id"] for r in older] == [rows[1]["id"], rows[2]["id"]]
    journey = admin.get(f"/admin/api/events/{ignored[0]['id']}", headers=AUTH).json()
    assert "setup mode" in journey["reason_text"] and journey["body"] and journey["conversions"] == []
    rejected = admin.get(f"/admin/api/events/{rows[0]['id']}", headers=AUTH).json()
    assert rejected["body"] is None and rejected["reason"] == "invalid_signature"
    assert admin.get("/admin/api/events/999999", headers=AUTH).status_code == 404


@pytest.mark.parametrize("query", ["status=lost", "state=gone", "since=yesterday", "limit=0", "limit=x",
                                   "before=-1"])
def test_bad_parameters_are_400_not_500(admin: TestClient, query: str) -> None:
    r = admin.get(f"/admin/api/events?{query}", headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("body", [[1], {"ids": []}, {"ids": ["1"]}, {"ids": [True]}, {"dead": "yes"},
                                  {"dead": True, "since": "soon"}, {"dead": True, "source": 3}])
def test_bad_replay_requests_are_400(admin: TestClient, body: Any) -> None:
    r = admin.post("/admin/api/replay", json=body, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter"


def test_replay_by_id_delivers_a_dead_conversion(admin: TestClient, receiver: TrackingReceiver) -> None:
    ev = _dead_purchase(admin, receiver)
    conv = ev["conversions"][0]
    assert conv["reason"] == "http_422" and conv["attempts_log"][0]["status_code"] == 422
    assert admin.get("/admin/api/events?state=dead", headers=AUTH).json()["events"][0]["id"] == ev["id"]
    r = admin.post("/admin/api/replay", json={"ids": [conv["id"], 424242]}, headers=AUTH).json()
    assert r == {"requeued": [conv["id"]], "not_dead": [424242]}
    wait_for(lambda: [x for x in receiver.delivered() if x.body.get("eventName") == "Purchase"])
    done = wait_for(lambda: (j := admin.get(f"/admin/api/events/{ev['id']}", headers=AUTH).json())
                    ["conversions"][0]["state"] == "delivered" and j)
    assert [a["outcome"] for a in done["conversions"][0]["attempts_log"]] == ["dead", "delivered"]
    keys = {x.headers["idempotency-key"] for x in receiver.requests if x.body.get("eventName") == "Purchase"}
    assert len(keys) == 1  # the replay is the same conversion: same Idempotency-Key


def test_replay_all_dead_of_a_source(admin: TestClient, receiver: TrackingReceiver) -> None:
    ev = _dead_purchase(admin, receiver)
    assert admin.post("/admin/api/replay", json={"dead": True, "source": "other"}, headers=AUTH).json()["requeued"] == []
    r = admin.post("/admin/api/replay", json={"dead": True, "source": "stripe", "since": "1h"}, headers=AUTH).json()
    assert r["requeued"] == [ev["conversions"][0]["id"]]
    wait_for(lambda: admin.get("/admin/api/stats", headers=AUTH).json()["outbox"] == {
        "pending": 0, "dead": 0, "oldest_pending_age_s": None})


def test_stats_and_hourly(admin: TestClient, receiver: TrackingReceiver) -> None:
    _dead_purchase(admin, receiver)
    post_stripe(admin, fixture("stripe", "customer.created"), secret="whsec_forged")
    stats = admin.get("/admin/api/stats?since=24h", headers=AUTH).json()
    assert stats["events"]["accepted"] == 1 and stats["events"]["rejected"] == 1
    assert stats["rejected"] == {"invalid_signature": 1}
    assert stats["outbox"]["dead"] == 1 and stats["sources"]["stripe"]["dead"] == 1
    assert stats["configured_sources"] == {"stripe": "stripe"}
    hours = admin.get("/admin/api/stats/hourly?hours=6", headers=AUTH).json()["hours"]
    assert len(hours) == 6 and hours[-1]["accepted"] == 1 and hours[-1]["failed"] == 2


def _served_api_paths(admin: TestClient) -> set[str]:
    mount = next(r for r in admin.app.routes if isinstance(r, Mount) and r.path == "/admin")  # type: ignore[attr-defined]
    api = next(r for r in mount.routes if isinstance(r, Mount) and r.path == "/api")
    assert isinstance(api.app, BearerGuard)
    routes = api.app.app.router.routes  # type: ignore[attr-defined]
    return {re.sub(r":\w+}", "}", r.path) for r in routes if isinstance(r, Route)}


def test_openapi_describes_exactly_the_served_api(admin: TestClient, receiver: TrackingReceiver) -> None:
    served = admin.get("/admin/api/openapi.json", headers=AUTH).json()
    assert served == OPENAPI and served["openapi"].startswith("3.1")
    assert set(served["paths"]) == _served_api_paths(admin)
    event_id = _dead_purchase(admin, receiver)["id"]
    for path, methods in served["paths"].items():
        url = "/admin/api" + path.replace("{event_id}", str(event_id))
        for method in methods:
            r = admin.request(method, url, headers=AUTH, json={"ids": [1]} if method == "post" else None)
            assert r.status_code == 200, (method, url, r.text)


@pytest.mark.parametrize(("method", "path", "headers"), [
    ("GET", "/admin/api/events", AUTH), ("GET", "/admin/api/events/1", AUTH), ("GET", "/admin/api/stats", AUTH),
    ("GET", "/admin/api/events?limit=x", AUTH), ("GET", "/admin/api/events", {}),
    ("GET", "/admin/api/openapi.json", AUTH), ("POST", "/admin/api/replay", AUTH),
])
def test_every_api_answer_is_no_store(admin: TestClient, method: str, path: str, headers: dict[str, str]) -> None:
    r = admin.request(method, path, headers=headers, json={"ids": [1]} if method == "POST" else None)
    assert r.headers["cache-control"] == "no-store", (r.status_code, r.headers)


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "/admin/api/events/99999999999999999999", None, 404),
    ("GET", "/admin/api/events/9223372036854775808", None, 404),
    ("GET", "/admin/api/events?before=99999999999999999999", None, 400),
    ("GET", "/admin/api/events?since=99999999999999999999", None, 400),
    ("GET", "/admin/api/stats?since=99999999999999999999", None, 400),
    ("GET", "/admin/api/stats/hourly?hours=99999999999999999999", None, 400),
    ("POST", "/admin/api/replay", {"ids": [99999999999999999999]}, 400),
    ("POST", "/admin/api/replay", {"dead": True, "since": 99999999999999999999}, 400),
])
def test_integers_over_2_63_are_a_client_error_not_a_500(admin: TestClient, method: str, path: str,
                                                          body: Any, status: int) -> None:
    r = admin.request(method, path, headers=AUTH, json=body)
    assert r.status_code == status, r.text
    assert admin.get("/admin/api/events/9223372036854775807", headers=AUTH).status_code == 404


def test_stats_say_why_the_destination_is_paused(make_client: Callable[..., TestClient],
                                                  receiver: TrackingReceiver) -> None:
    """A refused key pauses the destination (SPEC §7); the admin API (and so the page) says why."""
    receiver.forbidden_keys.add("test_key")
    admin = make_client(admin={"token": TOKEN}, forwarder={"pause_probe_s": 30})
    post_stripe(admin, fixture("stripe", "checkout.session.completed"))

    def paused() -> list[dict[str, Any]]:
        found = admin.get("/admin/api/stats", headers=AUTH).json()["destinations"]
        return [d for d in found if d["paused_reason"]]

    [dub] = wait_for(paused)
    assert dub["name"] == "dub" and dub["paused_reason"].startswith("http_403")
    assert admin.get("/admin/api/stats", headers=AUTH).json()["outbox"]["dead"] == 0
