"""Reading values out of provider JSON (and form fields): one meaning each, for every provider.

Webhook bodies are untrusted and loosely typed: an id is a string in one payload and an integer
in the next, an amount arrives as `5000` or `"5000"`, an empty object as `[]`. These readers never
raise on a value of the wrong shape; they return None (or `{}`), so a provider decides whether the
field was required and raises `PayloadError` with a message naming it.

- `text`: a non-blank string, stripped. `ident`: the same, or an integer id as its decimal text.
- `object_id`: an id that may arrive expanded (`{"id": ...}`) or as a plain id.
- `integer`: an int, an integral float or Decimal, or a string of ASCII digits; never a bool or a
  fraction. `minor_amount`: the same, and not negative (an amount or a tax in minor units).
- `decimal`: an exact `Decimal` from an int, a Decimal (a JSON number) or a decimal string of
  ASCII digits; never a bool or a float. `major_amount`: a non-negative amount in major units
  (`"49.00"`, `4.99`) as exact minor units of a currency, None where that would need rounding.
- `mapping`: a JSON object, else `{}`. `boolean`: `true`/`false`, as JSON or as form text.
- `iso_time`, `epoch_time`, `any_time`: aware UTC datetimes.
- `compact`: keyword arguments without the None ones (for conversion metadata).
- `json_object`: a request body that must be one JSON object (`PayloadError` otherwise);
  `json_value`: any JSON text (a JSON string inside a field). Both read numbers with a fraction
  or an exponent as exact `Decimal`s from their text (`parse_float=Decimal`), never as floats,
  so `4.99` stays 4.99 and `4999.99` in a field of integer minor units is seen as a fraction.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from adapter.errors import PayloadError
from adapter.money import exponent

__all__ = [
    "any_time",
    "boolean",
    "compact",
    "decimal",
    "epoch_time",
    "ident",
    "integer",
    "iso_time",
    "json_object",
    "json_value",
    "major_amount",
    "mapping",
    "minor_amount",
    "object_id",
    "text",
    "utc",
]

_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_MAX_DIGITS = 40  # far above any amount or time; keeps int() away from huge strings
_MS_THRESHOLD = 10**11  # 10**11 seconds is the year 5138: anything larger is milliseconds


def text(value: Any) -> str | None:
    """A string with surrounding whitespace removed; None for a blank string or a non-string."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def ident(value: Any) -> str | None:
    """An id: a non-blank string (stripped), or an integer as its decimal text (Shopify and Lemon
    Squeezy ids are JSON integers); None for anything else, bools included."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text(value)


def object_id(value: Any) -> str | None:
    """The id of a field that may arrive expanded (Stripe `"customer": {"id": "cus_1", ...}`)
    or as the plain id (`"customer": "cus_1"`)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return ident(value)


def integer(value: Any) -> int | None:
    """An integer: an `int`, a float without a fraction (`5000.0`), or a string of ASCII digits
    with an optional minus sign and surrounding whitespace (Paystack's `"5000"`).

    None for bools, floats with a fraction, NaN and infinities, non-ASCII digits (an Arabic-Indic
    five, `"\\u0665"`), signs other than a leading `-`, and anything else.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, Decimal):  # a JSON number read with parse_float=Decimal: exact
        return int(value) if _sized(value) and value == value.to_integral_value() else None
    if isinstance(value, str):
        digits = value.strip()
        if len(digits) <= _MAX_DIGITS and _INTEGER.fullmatch(digits):
            return int(digits)
    return None


def minor_amount(value: Any) -> int | None:
    """An amount (or a tax) in integer minor units: `integer`, and not negative. None for a
    negative amount, which is never a payment (a negative tax would inflate the net amount)."""
    number = integer(value)
    return number if number is not None and number >= 0 else None


def decimal(value: Any) -> Decimal | None:
    """An exact decimal: an `int`, a finite `Decimal` (a JSON number read by `json_object`), or a
    string of ASCII digits with an optional `-` and one `.` (`"49.00"`, Shopify and FastSpring
    prices). None for bools, floats (already rounded: money is never a float), NaN and
    infinities, exponents, non-ASCII digits and anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value if _sized(value) else None
    if isinstance(value, str):
        digits = value.strip()
        if len(digits) <= _MAX_DIGITS and _DECIMAL.fullmatch(digits):
            return Decimal(digits)
    return None


def major_amount(value: Any, currency: str) -> int | None:
    """A non-negative amount in major units (`"49.00"`, a JSON `4.99`, `5`) as exact ISO 4217
    minor units of `currency` (499 for USD 4.99, 5 for JPY 5). None for what `decimal` refuses,
    a negative amount, or more decimals than the currency has (`"4.999"` USD): those would need
    guessing. Raises `ValueError` for a currency that is not an ISO 4217 code."""
    scale = exponent(currency)
    number = decimal(value)
    if number is None or number < 0:
        return None
    minor = number.scaleb(scale)
    return int(minor) if minor == minor.to_integral_value() else None


def _sized(value: Decimal) -> bool:
    """Finite and of a sane size: `1e999999999` is valid JSON, but as an int it would take the
    process's memory; nothing a webhook counts has 40 digits."""
    return value.is_finite() and value.adjusted() < _MAX_DIGITS


def mapping(value: Any) -> dict[str, Any]:
    """A JSON object as a dict; `{}` for anything else (an empty object sent as `[]`, null, text)."""
    return value if isinstance(value, dict) else {}


def boolean(value: Any) -> bool | None:
    """A JSON bool, or the text `true` / `false` (any case, as form posts send it); else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def utc(value: datetime) -> datetime:
    """Return `value` as an aware UTC datetime; naive datetimes are taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_time(value: Any) -> datetime | None:
    """An ISO 8601 string (`2026-04-10T12:34:56Z`, `...+02:00`; no offset means UTC) as aware
    UTC; None for anything else, so a provider can fall back to its next time field."""
    if not isinstance(value, str):
        return None
    try:
        return utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        return None


def epoch_time(value: Any, unit: Literal["s", "ms"] = "s") -> datetime | None:
    """A Unix time in seconds (or milliseconds) as aware UTC: a number or an integer string;
    None for anything else and for times out of range."""
    number: float | int | None = integer(value)
    if number is None and isinstance(value, float) and math.isfinite(value):
        number = value
    if number is None and isinstance(value, Decimal) and value.is_finite():
        number = float(value)  # a time with a fraction of a second (`1712345678.5`): not money
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number / 1000 if unit == "ms" else number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def any_time(value: Any) -> datetime | None:
    """An event time given either way: ISO 8601 text, or a Unix time as a number in seconds or
    milliseconds (told apart by size: Clerk and Svix bodies use milliseconds). None otherwise."""
    if isinstance(value, str):
        return iso_time(value)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    size = abs(float(value))  # only to tell seconds from milliseconds
    return epoch_time(value, "ms" if size >= _MS_THRESHOLD else "s")


def compact(**values: Any) -> dict[str, Any]:
    """The keyword arguments whose value is not None, in order (conversion metadata). A JSON
    number read as a `Decimal` becomes an int when it is integral and its exact text otherwise
    (`"4.99"`), so the metadata serializes as JSON without ever passing through a float."""
    return {k: _plain(v) for k, v in values.items() if v is not None}


def _plain(value: Any) -> Any:
    """`value` with every Decimal in it made JSON-serializable exactly (see `compact`)."""
    if isinstance(value, Decimal):
        if _sized(value) and value == value.to_integral_value():
            return int(value)
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def json_value(text: str | bytes) -> Any:
    """Any JSON text, numbers with a fraction or an exponent (and NaN, Infinity) as exact
    `Decimal`s; raises `ValueError` (or `RecursionError` for absurd nesting) when it is not JSON.
    For a JSON document inside a field (Paystack's `metadata` string, Paddle's `passthrough`)."""
    return json.loads(text, parse_float=Decimal, parse_constant=Decimal)


def json_object(body: bytes) -> dict[str, Any]:
    """Parse a body that must be one JSON object (numbers as in `json_value`); raises
    `PayloadError` otherwise."""
    try:
        data = json_value(body)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"body is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise PayloadError("body is not a JSON object")
    return data
