"""Reading provider JSON: one meaning for text, ids, integers, objects, flags and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from adapter import events
from adapter.errors import PayloadError
from adapter.payload import (
    any_time,
    boolean,
    compact,
    epoch_time,
    ident,
    integer,
    iso_time,
    json_object,
    mapping,
    object_id,
    text,
)


@pytest.mark.parametrize(("value", "expected"), [
    ("cus_1", "cus_1"), ("  padded \n", "padded"), ("", None), ("   ", None),
    (None, None), (42, None), (True, None), (["a"], None), ({"id": "x"}, None),
])
def test_text_is_a_stripped_non_blank_string(value: Any, expected: str | None) -> None:
    assert text(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (820982911946154508, "820982911946154508"), (0, "0"), (" ord_1 ", "ord_1"),
    (True, None), (False, None), (1.5, None), ("", None), (None, None),
])
def test_ident_takes_integer_ids_as_text_but_never_bools(value: Any, expected: str | None) -> None:
    assert ident(value) == expected


def test_object_id_reads_expanded_and_plain_ids() -> None:
    assert object_id({"id": "cus_1", "email": "a@b.co"}) == "cus_1"
    assert object_id("cus_1") == "cus_1"
    assert object_id({"object": "customer"}) is None
    assert object_id(None) is None


@pytest.mark.parametrize(("value", "expected"), [
    (5000, 5000), (-12, -12), (0, 0), ("5000", 5000), (" 5000 ", 5000), ("-7", -7), ("007", 7),
    (5000.0, 5000),
])
def test_integer_accepts_ints_integer_strings_and_whole_floats(value: Any, expected: int) -> None:
    out = integer(value)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value", [
    True, False, 49.5, "49.5", float("nan"), float("inf"), "", " ", "+5", "5e3", "4 900", "0x10",
    "\u0665\u0660\u0660\u0660",  # Arabic-Indic digits: str.isdigit() says yes, we say no
    "\uff15",  # a fullwidth 5
    "9" * 41, None, [5], {"amount": 5},
])
def test_integer_refuses_bools_fractions_and_foreign_digits(value: Any) -> None:
    assert integer(value) is None


def test_mapping_is_an_object_or_empty() -> None:
    notes = {"userId": "u"}
    assert mapping(notes) is notes
    for value in ([], None, "", 0, "{}", [("a", 1)]):
        assert mapping(value) == {}


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), ("true", True), (" TRUE ", True), ("false", False),
    ("1", None), ("yes", None), (1, None), (None, None),
])
def test_boolean_from_json_or_form_text(value: Any, expected: bool | None) -> None:
    assert boolean(value) is expected


def test_iso_time_is_aware_utc() -> None:
    assert iso_time("2026-04-10T12:34:56Z") == datetime(2026, 4, 10, 12, 34, 56, tzinfo=UTC)
    shifted = iso_time("2026-04-10T14:34:56+02:00")
    assert shifted == datetime(2026, 4, 10, 12, 34, 56, tzinfo=UTC) and shifted.tzinfo is UTC
    assert iso_time(" 2026-04-10T12:34:56.123456 ") == datetime(2026, 4, 10, 12, 34, 56, 123456, tzinfo=UTC)
    for bad in ("yesterday", "", "2026-13-01T00:00:00Z", 1775824496, None):
        assert iso_time(bad) is None


def test_parse_time_stays_importable_from_events() -> None:
    assert events.parse_time is iso_time
    assert events.utc(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == datetime(
        2025, 12, 31, 23, tzinfo=UTC)


def test_epoch_time_in_seconds_or_milliseconds() -> None:
    moment = datetime(2026, 4, 10, 12, 34, 56, tzinfo=UTC)
    assert epoch_time(1775824496) == moment
    assert epoch_time("1775824496") == moment
    assert epoch_time(1775824496000, "ms") == moment
    assert epoch_time(1775824496.5) == moment + timedelta(milliseconds=500)
    for bad in (True, "soon", None, 10**20, float("nan")):
        assert epoch_time(bad) is None


def test_any_time_tells_seconds_from_milliseconds_and_reads_iso() -> None:
    moment = datetime(2026, 4, 10, 12, 34, 56, tzinfo=UTC)
    assert any_time(1775824496) == moment
    assert any_time(1775824496000) == moment  # Clerk and Svix bodies: milliseconds
    assert any_time("2026-04-10T12:34:56Z") == moment
    assert any_time("1775824496") is None  # text is ISO 8601 only
    assert any_time(True) is None


def test_compact_drops_only_none() -> None:
    assert compact(a=1, b=None, c=0, d="", e=False) == {"a": 1, "c": 0, "d": "", "e": False}


def test_json_object() -> None:
    assert json_object(b'{"id": "evt_1"}') == {"id": "evt_1"}
    for body in (b"[]", b"not json", b'"text"', b"[" * 100_000):
        with pytest.raises(PayloadError):
            json_object(body)
