"""Bad input for every installed provider: generated bodies, headers and signature strings.

Whatever arrives, the answer is a 4xx or a 200, never a 5xx; what does not verify is refused
(4xx, never `malformed_payload`, which would mean it got past verification), leaves no body,
event or conversion in the store and reaches no tracking API; the process keeps serving.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from adapter.receiver import TrackingReceiver
from tests.reliability.sources import (
    CASES,
    EXAMPLES,
    FUZZ,
    KEY_LOCATORS,
    Candidate,
    Delivery,
    assert_nothing_kept,
    assert_refused,
    provider_params,
    signature_tokens,
    signed_headers,
    source_of,
    store_counts,
)

_HEADER_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
_HEADER_VALUE = st.text(_HEADER_CHARS, max_size=120)
_COMMON_NAMES = ["Content-Type", "Authorization", "X-Signature", "Webhook-Signature", "Webhook-Id",
                 "Webhook-Timestamp", "Svix-Signature", "Stripe-Signature", "X-Hub-Signature-256"]

_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**20, 253402300800]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=24),
    st.sampled_from(["", "0", "-1", "1e999", "NaN", "usd", "JPY", "xxx", "null", "2026-13-45T99:00:00Z",
                     "x" * 600]),
)
JSON_VALUE = st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
# Values that break naive code: out-of-range times and amounts, non-finite floats, wrong types.
EXTREME: st.SearchStrategy[Any] = st.sampled_from([
    10**20, 2**63, -(2**63) - 1, -1, 0, 1.5, float("inf"), float("-inf"), float("nan"),
    "", "1e999", "-0", None, True, [], {}, "x" * 600,
])


def _post(client: TestClient, path: str, body: bytes, headers: list[tuple[str, str]]) -> Any:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return client.post(path, content=body, headers=raw)


def _header_names(delivery: Delivery) -> list[str]:
    names = set(_COMMON_NAMES)
    if delivery.can_sign():
        sample, body = delivery.body()
        names |= set(delivery.headers(sample, body))
    return sorted(names)


@pytest.mark.parametrize("hooktrack", provider_params(), indirect=True)
def test_unsigned_generated_requests_are_refused_and_leave_nothing(
        hooktrack: tuple[TestClient, Candidate], tmp_path: Path, receiver: TrackingReceiver) -> None:
    client, candidate = hooktrack
    delivery = Delivery(source_of(client, candidate))
    names = _header_names(delivery)
    # Genuine-looking sample bodies, unless they carry their own signature (Braintree's do).
    genuine = [b for b in (delivery.body()[1] for _ in range(3)) if not delivery.verifies(b, {})] or [b"{}"]
    bodies = st.one_of(st.binary(max_size=600), st.sampled_from(genuine),
                       JSON_VALUE.map(lambda v: json.dumps(v).encode()))
    headers = st.lists(st.tuples(st.sampled_from(names), _HEADER_VALUE), max_size=6)

    @hsettings(FUZZ, max_examples=EXAMPLES)
    @given(body=bodies, headers=headers)
    def case(body: bytes, headers: list[tuple[str, str]]) -> None:
        CASES["unsigned", candidate.name] += 1
        assert_refused(_post(client, f"/webhooks/{candidate.name}", body, headers))

    case()
    assert_nothing_kept(client, tmp_path / "hooktrack.db", receiver)


def _mutated(value: str) -> st.SearchStrategy[str]:
    """A header value garbled the ways senders and attackers garble them."""
    n = len(value)
    return st.one_of(
        _HEADER_VALUE,
        st.integers(0, n).map(lambda i: value[:i]),
        st.tuples(st.integers(0, n), st.integers(0, n)).map(lambda ij: value[:min(ij)] + value[max(ij):]),
        st.tuples(st.integers(0, max(n - 1, 0)), _HEADER_CHARS).map(
            lambda ic: value[:ic[0]] + ic[1] + value[ic[0] + 1:]),
        st.tuples(st.integers(0, n), _HEADER_VALUE).map(lambda it: value[:it[0]] + it[1] + value[it[0]:]),
        st.sampled_from([value.upper(), value.lower(), value + "," + value, " " + value + " ",
                         value.replace("=", ""), value.replace(",", ";")]),
    )


@pytest.mark.parametrize("hooktrack", provider_params(), indirect=True)
def test_garbled_signature_strings_are_refused(
        hooktrack: tuple[TestClient, Candidate], tmp_path: Path, receiver: TrackingReceiver) -> None:
    """Genuine body and headers, one signed header garbled (or duplicated with a garbled copy).
    Without the original signature material it must be refused; with it, the provider's own
    `verify` says which it is and the answer must agree (duplicated headers included)."""
    client, candidate = hooktrack
    delivery = Delivery(source_of(client, candidate))
    if not delivery.can_sign():
        pytest.skip(f"{candidate.name} has no samples or cannot sign them")
    verified = 0
    garbled_beyond_repair: list[str] = []

    if not delivery.sign(delivery.body()[1], int(time.time())) and not delivery.query():
        pytest.skip(f"{candidate.name} signs inside the body: garbling it is the signed-mangled test's job")

    @hsettings(FUZZ, max_examples=EXAMPLES)
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        nonlocal verified
        sample, body = delivery.body()
        signed, query = delivery.sign(body, int(time.time())), delivery.query()
        # A header that only locates the key (KEY_LOCATORS) is no credential: PayPal's tests
        # refuse a cert URL off the allow-list; here it would only dilute the draws.
        locators = KEY_LOCATORS.get(candidate.name, set())
        where, name = data.draw(st.sampled_from([("header", k) for k in sorted(signed) if k not in locators]
                                                + [("query", k) for k in sorted(query)]), label="credential")
        original = (signed if where == "header" else query)[name]
        garbled = data.draw(_mutated(original), label="value")
        copies = data.draw(st.sampled_from(["only", "garbled-first", "garbled-last"]), label="copies")
        values = {"only": [garbled], "garbled-first": [garbled, original], "garbled-last": [original, garbled]}[copies]
        base = {"Content-Type": "application/json", **delivery.provider.sample_headers(sample, body), **signed}
        headers = [(k, v) for k, v in base.items() if (where, k) != ("header", name)]
        params = [(k, v) for k, v in query.items() if (where, k) != ("query", name)]
        (headers if where == "header" else params).extend((name, v) for v in values)
        CASES["garbled-signature", candidate.name] += 1
        response = _post(client, delivery.path(params), body, headers)
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        genuine = delivery.verifies(body, raw, params)
        tokens = signature_tokens(original)
        # Hex digests are case-insensitive, so the material is looked for regardless of case.
        if tokens and not any(t.lower() in v.lower() for t in tokens for v in values):
            garbled_beyond_repair.append(name)
            assert not genuine, f"{candidate.name} verified a signature with none of its material: {values}"
        if genuine:
            assert response.status_code in (200, 400), response.text
            # one stored event per event of the delivery (an Adyen batch holds several)
            verified += len(delivery.outcome(response).get("events", [None])) if response.status_code == 200 else 1
        else:
            assert_refused(response)

    case()
    # A meaningful run garbles some signature beyond repair; with the default profile's few
    # examples per provider (a third of them may draw a header that is no signature) at least one.
    needed = EXAMPLES // 10 if EXAMPLES >= 150 else 1
    assert len(garbled_beyond_repair) >= needed, "too few cases lost all signature material to be meaningful"
    assert client.get("/healthz").status_code == 200
    time.sleep(0.3)
    counts = store_counts(tmp_path / "hooktrack.db")
    # Every stored event (accepted, ignored, duplicate or malformed) is of a verified delivery.
    assert counts["events_not_rejected"] + counts["rejected_with_body"] == verified, counts


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield (*prefix, i)
            yield from _paths(child, (*prefix, i))


def _apply(data: Any, path: tuple[Any, ...], new: Any, delete: bool) -> None:
    parent = data
    for step in path[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed this branch
    if not isinstance(parent, dict | list):
        return
    try:
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    except (KeyError, IndexError, TypeError):
        return


def _replace_every(value: Any, kind: type, new: Any) -> Any:
    if isinstance(value, dict):
        return {k: _replace_every(v, kind, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_every(v, kind, new) for v in value]
    return new if type(value) is kind else value


def _decode(body: bytes) -> tuple[str, dict[str, Any]] | None:
    """A sample body as a JSON object or as form fields (`None` for anything else)."""
    try:
        data = json.loads(body)
    except ValueError:
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return None
        return ("form", dict(pairs)) if pairs else None
    return ("json", data) if isinstance(data, dict) else None


def _encode(kind: str, data: dict[str, Any]) -> bytes:
    if kind == "json":
        return json.dumps(data).encode()
    return urlencode([(k, v if isinstance(v, str) else json.dumps(v)) for k, v in data.items()]).encode()


@pytest.mark.parametrize("hooktrack", provider_params(), indirect=True)
def test_signed_mangled_payloads_are_answered_without_5xx(
        hooktrack: tuple[TestClient, Candidate], receiver: TrackingReceiver) -> None:
    """Genuinely signed samples (JSON or form) with fields replaced by generated values (wrong
    types, huge numbers, NaN/Infinity, missing keys): a delivery that still verifies is a 200
    or a 400 `malformed_payload`; one that no longer does (its signature was inside the body) is
    refused; never a 5xx."""
    client, candidate = hooktrack
    delivery = Delivery(source_of(client, candidate))
    if not delivery.can_sign():
        pytest.skip(f"{candidate.name} has no samples or cannot sign them")
    parsed = {name: found for name in delivery.samples if (found := _decode(delivery.body(name)[1]))}
    if not parsed:
        pytest.skip(f"{candidate.name}'s samples are neither JSON objects nor forms")
    paths = {name: sorted(set(_paths(data)), key=repr) for name, (_, data) in parsed.items()}

    @hsettings(FUZZ, max_examples=EXAMPLES)
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        sample = data.draw(st.sampled_from(sorted(parsed)), label="sample")
        kind, body = _decode(delivery.body(sample)[1]) or parsed[sample]
        for _ in range(data.draw(st.integers(1, 3), label="mutations")):
            op = data.draw(st.sampled_from(["replace", "delete", "every"]), label="op")
            # A copy: the generated value may be drawn again and nested into itself, and a body
            # that refers to itself is no JSON a sender could have signed.
            value = copy.deepcopy(data.draw(EXTREME | JSON_VALUE, label="value"))
            if op == "every":  # every number (or every string) at once: times, amounts, ids
                body = _replace_every(body, data.draw(st.sampled_from([int, float, str]), label="type"), value)
            elif paths[sample]:
                _apply(body, data.draw(st.sampled_from(paths[sample]), label="path"), value, op == "delete")
        raw = _encode(kind, body)
        CASES["signed-mangled", candidate.name] += 1
        headers = signed_headers(delivery, sample, raw)
        response = client.post(delivery.path(), content=raw, headers=[(k.encode(), v.encode())
                                                                       for k, v in headers.items()])
        if delivery.verifies(raw, headers, delivery.query()):
            assert response.status_code in (200, 400), (response.status_code, response.text, raw[:2000])
            if response.status_code == 400:
                assert response.json()["error"]["code"] == "malformed_payload"
        else:
            assert_refused(response)

    case()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
