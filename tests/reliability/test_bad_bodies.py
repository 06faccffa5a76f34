"""Bodies no provider sends, for every installed provider: empty, truncated, non-UTF-8,
UTF-16, NUL bytes, JSON nested 100,000 deep, a 50,000-digit number, a 900 KB string.

Unsigned, each is refused (4xx) and leaves nothing; signed with the source's own secret (so it
reaches `parse`), each is a 400 `malformed_payload` or a 200, never a 5xx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from adapter.receiver import TrackingReceiver
from tests.conftest import fixture, post_stripe
from tests.reliability.sources import (
    Candidate,
    Delivery,
    assert_nothing_kept,
    assert_refused,
    provider_params,
    signed_headers,
    source_of,
)


def _extreme_bodies(genuine: bytes) -> dict[str, bytes]:
    depth = 100_000
    return {
        "empty": b"",
        "whitespace": b" \r\n\t ",
        "truncated": genuine[: len(genuine) // 2],
        "non_utf8": genuine.replace(b'"', b'"\xff\xfe', 1),
        "latin1": genuine.decode().replace("e", "\xe9").encode("latin-1", "replace"),
        "utf16": genuine.decode().encode("utf-16"),
        "nul_bytes": genuine.replace(b",", b",\x00", 3),
        "list_bomb": b"[" * depth + b"]" * depth,
        "object_bomb": b'{"a":' * depth + b"1" + b"}" * depth,
        "mixed_bomb": b'[{"a":' * (depth // 2) + b"0" + b"}]" * (depth // 2),
        "huge_number": b'{"id": 1' + b"0" * 50_000 + b"}",
        "long_string": b'{"id": "' + b"x" * 900_000 + b'"}',
    }


@pytest.mark.parametrize("hooktrack", provider_params(), indirect=True)
def test_truncated_non_utf8_and_bomb_bodies_are_4xx_signed_or_not(
        hooktrack: tuple[TestClient, Candidate], tmp_path: Path, receiver: TrackingReceiver) -> None:
    client, candidate = hooktrack
    delivery = Delivery(source_of(client, candidate))
    sample, genuine = delivery.body() if delivery.samples else ("", b'{"id": "evt_1", "type": "x"}')
    bodies = _extreme_bodies(genuine)
    for label, body in bodies.items():
        if delivery.verifies(body, {}):
            continue  # still carries its own genuine signature (Braintree's is in the body)
        response = client.post(f"/webhooks/{candidate.name}", content=body,
                               headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (label, response.status_code, response.text)
        assert_refused(response)
    assert_nothing_kept(client, tmp_path / "hooktrack.db", receiver)
    if not delivery.can_sign():
        return
    for label, body in bodies.items():
        headers = signed_headers(delivery, sample, body)
        response = client.post(delivery.path(), content=body, headers=headers)
        if not delivery.verifies(body, headers, delivery.query()):  # the signature was in the body
            assert_refused(response)
            continue
        assert response.status_code in (200, 400), (label, response.status_code, response.text)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "malformed_payload", label
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(("fixture_name", "path", "value"), [
    ("checkout.session.completed", ("created",), 10**20),  # datetime.fromtimestamp: OverflowError
    ("checkout.session.completed", ("created",), 10**17),  # datetime.fromtimestamp: OSError (EOVERFLOW)
    ("checkout.session.completed", ("data", "object", "amount_total"), float("inf")),  # int(inf)
    ("invoice.paid", ("data", "object", "status_transitions", "paid_at"), 2**63),
])
def test_signed_event_with_out_of_range_numbers_is_400_not_500(
        make_client: Any, fixture_name: str, path: tuple[str, ...], value: Any) -> None:
    """Found by `test_signed_mangled_payloads_are_answered_without_5xx`: an OverflowError or
    OSError (both documented for `datetime.fromtimestamp`) in a provider's parse or map was not
    a `PayloadError`, so the answer was a 500."""
    client = make_client()
    event = fixture("stripe", fixture_name)
    parent = event
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    r = post_stripe(client, event)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_payload"
