"""Exact money in ISO 4217 minor units."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapter.money import exponent, normalize_currency, rescale, to_minor


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [("49.00", "USD", 4900), ("0.1", "usd", 10), ("1000", "jpy", 1000), ("12.345", "KWD", 12345),
     ("19.99", "eur", 1999), ("1000.0", "jpy", 1000), (Decimal("0.30"), "usd", 30), (7, "usd", 700),
     ("1.2345", "clf", 12345)],
)
def test_decimal_amounts_convert_exactly(value: str, currency: str, minor: int) -> None:
    assert to_minor(value, currency) == minor


def test_float_like_sums_do_not_drift() -> None:
    assert sum(to_minor("0.10", "usd") for _ in range(3)) == to_minor("0.30", "usd")


@pytest.mark.parametrize(("value", "currency"), [("49.001", "usd"), ("1.5", "jpy"), ("abc", "usd"), ("NaN", "usd"),
                                                  ("Infinity", "usd")])
def test_inexact_or_invalid_amounts_raise(value: str, currency: str) -> None:
    with pytest.raises(ValueError):
        to_minor(value, currency)


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError):
        to_minor(49.0, "usd")  # type: ignore[arg-type]


def test_exponents() -> None:
    assert [exponent(c) for c in ("usd", "JPY", "kwd", "bhd", "krw", "eur", "clf")] == [2, 0, 3, 3, 0, 2, 4]


def test_rescale_between_provider_and_iso_units() -> None:
    assert rescale(5000, 0, "mga") == 500000  # Stripe counts MGA in whole ariary
    assert rescale(990000, 2, "isk") == 9900  # and ISK in hundredths
    with pytest.raises(ValueError):
        rescale(990050, 2, "isk")


@pytest.mark.parametrize("code", ["us", "usdd", "u$d", "", "€€€"])
def test_currency_codes_are_validated(code: str) -> None:
    with pytest.raises(ValueError):
        normalize_currency(code)
