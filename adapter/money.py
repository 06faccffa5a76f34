"""Exact money: ISO 4217 minor units, never floats.

Every Sale carries `amount` as an int of the currency's ISO 4217 minor unit (cents for USD,
yen for JPY, fils for KWD). Providers send amounts as ints in *their* minor unit or as decimal
strings; these helpers convert both exactly and raise `ValueError` when a conversion would
have to round (a malformed amount, reported as a 400 by the core).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["EXPONENTS", "exponent", "normalize_currency", "rescale", "to_minor"]

# A decimal amount as text: ASCII digits only (`Decimal()` also reads "\u0664\u0669", "1e3", "NaN").
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

_MAX_DIGITS = 40

# ISO 4217 currencies whose minor unit is not 1/100. Every other code has exponent 2.
EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        ["bif", "clp", "djf", "gnf", "isk", "jpy", "kmf", "krw", "pyg", "rwf", "ugx",
         "uyi", "vnd", "vuv", "xaf", "xof", "xpf"],
        0,
    ),
    **dict.fromkeys(["bhd", "iqd", "jod", "kwd", "lyd", "omr", "tnd"], 3),
    **dict.fromkeys(["clf", "uyw"], 4),
}


def normalize_currency(code: str) -> str:
    """Lowercase a three-letter ISO 4217 code; raise `ValueError` for anything else."""
    cur = code.strip().lower()
    if len(cur) != 3 or not cur.isascii() or not cur.isalpha():
        raise ValueError(f"not an ISO 4217 currency code: {code!r}")
    return cur


def exponent(currency: str) -> int:
    """Number of decimal places of the currency's ISO 4217 minor unit."""
    return EXPONENTS.get(normalize_currency(currency), 2)


def to_minor(value: str | int | Decimal, currency: str) -> int:
    """Convert a decimal amount in major units ("49.00", "1000", "1.234") to minor units.

    Raises `ValueError` for a non-number (text other than ASCII digits with an optional sign
    and one `.`, a bool) or more decimals than the currency has. The sign is the caller's to check.
    """
    if isinstance(value, float):
        raise TypeError("money is never a float; pass the provider's decimal string")
    if isinstance(value, bool) or (isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value.strip())):
        raise ValueError(f"not a decimal amount: {value!r}")
    try:
        dec = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal amount: {value!r}") from exc
    if not dec.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    if dec.adjusted() >= _MAX_DIGITS:  # no payment has 40 digits; int() of 10**999999 would hang
        raise ValueError(f"not a plausible amount: {str(value)[:50]!r}")
    minor = dec.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{value!r} has more decimals than {currency.upper()} allows")
    return int(minor)


def rescale(amount: int, from_exponent: int, currency: str) -> int:
    """Convert an int in a provider's own minor unit (10**-from_exponent) to the ISO one.

    Stripe, for one, counts MGA in whole ariary and ISK in hundredths; this makes them ISO.
    """
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError(f"amount must be an integer, got {amount!r}")
    shift = exponent(currency) - from_exponent
    factor = int(10 ** abs(shift))
    if shift >= 0:
        return amount * factor
    if amount % factor:
        raise ValueError(f"{amount} is not a whole number of {currency.upper()} minor units")
    return amount // factor
