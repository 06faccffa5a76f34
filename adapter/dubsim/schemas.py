"""Dub's request schemas with zod's semantics, JavaScript's string and number rules, and its errors.

`parse(schema, body)` is `z.object(schema).parse(body)`: unknown keys dropped, `.default()` only
for a missing key (a JSON null for a non-nullable field is `invalid_type`), checks in zod's
declaration order, the first issue answered 422. Lengths are UTF-16 code units (`js_len`), numbers
are JavaScript numbers (a JSON `49.0` is the integer 49), and the metadata limit counts
`JSON.stringify` (`js_stringify`). Messages follow zod 3 as `zod-error` renders them
(`code: path: message`, apps/web/lib/api/errors.ts); the codes and paths are the contract.

Errors: `DubError(code, message)` — one answer in the API's error shape, status from its code.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = ["COMMISSION_STATUSES", "LEAD", "PAYMENT_PROCESSORS", "SALE", "STATUS", "UPDATE_COMMISSION", "DubError", "F",
           "iso_time", "js_len", "js_round", "js_stringify", "parse", "query_int"]

MAX_SAFE_INT = 2**53 - 1
# apps/web/lib/api/errors.ts: errorCodeToHttpStatus
STATUS = {"bad_request": 400, "unauthorized": 401, "forbidden": 403, "exceeded_limit": 403, "not_found": 404,
          "conflict": 409, "invite_pending": 409, "invite_expired": 410, "unprocessable_entity": 422,
          "rate_limit_exceeded": 429, "internal_server_error": 500}
# newest generated SDK (dubinc/dub-go requestbodypaymentprocessor.md); SPEC's eight are a subset
PAYMENT_PROCESSORS = ("stripe", "shopify", "polar", "paddle", "apple", "revenuecat", "lemonsqueezy", "dub", "custom")
COMMISSION_STATUSES = ("pending", "processed", "paid", "refunded", "duplicate", "fraud", "canceled")
# The API reference's `customerEmail` pattern: zod's email regex (v4; 3.23's is the same with /i).
EMAIL = re.compile(r"(?!\.)(?!.*\.\.)([A-Za-z0-9_'+\-\.]*)[A-Za-z0-9_+-]@([A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}")
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
            "\u2028\u2029\u202f\u205f\u3000\ufeff"


class DubError(Exception):
    """One error answer: `{"error": {"code", "message", "doc_url"}}` with the status of `code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> dict[str, Any]:
        # DubApiError: doc_url replaces only the first "_" (`rate-limit_exceeded`), as Dub does
        url = "https://dub.co/docs/api-reference/errors#" + self.code.replace("_", "-", 1)
        return {"error": {"code": self.code, "message": self.message, "doc_url": url}}


def _invalid(code: str, path: str, message: str) -> DubError:
    return DubError("unprocessable_entity", f"{code}: {path}: {message}" if path else f"{code}: {message}")


# ---- JavaScript semantics ------------------------------------------------------------------

def js_len(s: str) -> int:
    """JavaScript `s.length`: UTF-16 code units."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def _js_number(x: int | float) -> str:
    """ECMAScript Number::toString (shortest round-trip digits, exponent from 1e21 and below 1e-6)."""
    if isinstance(x, int) and abs(x) <= MAX_SAFE_INT:
        return str(x)
    f = _float(x)
    if f == 0 or not math.isfinite(f):
        return "0" if f == 0 else "null"
    t = Decimal(repr(abs(f))).as_tuple()
    s = "".join(map(str, t.digits)).rstrip("0") or "0"
    k, n = len(s), len(t.digits) + int(t.exponent)
    if k <= n <= 21:
        out = s + "0" * (n - k)
    elif 0 < n <= 21:
        out = s[:n] + "." + s[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + s
    else:
        out = s[0] + ("." + s[1:] if k > 1 else "") + f"e{'+' if n > 0 else '-'}{abs(n - 1)}"
    return ("-" if f < 0 else "") + out


def _js_string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", out)  # well-formed JSON.stringify


def js_stringify(v: Any) -> str:
    """JavaScript `JSON.stringify(v)` of a value parsed from JSON (compact, raw non-ASCII)."""
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, int | float):
        return _js_number(v)
    if isinstance(v, str):
        return _js_string(v)
    if isinstance(v, list):
        return "[" + ",".join(js_stringify(x) for x in v) + "]"
    return "{" + ",".join(f"{_js_string(k)}:{js_stringify(x)}" for k, x in v.items()) + "}"


def _js_type(v: Any) -> str:
    if v is None or isinstance(v, bool | str | list | dict):
        return {type(None): "null", bool: "boolean", str: "string", list: "array", dict: "object"}[type(v)]
    return "number"


def _float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def js_round(x: float) -> int:
    return math.floor(x + 0.5)  # Math.round


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- zod schemas ---------------------------------------------------------------------------

_REQUIRED = object()


@dataclass(frozen=True)
class F:
    """One zod field: kind "str" | "num" | "enum" | "rec"; checks in zod's declaration order."""

    kind: str
    default: Any = None  # for a missing key; _REQUIRED = "Required"
    nullable: bool = False
    trim: bool = False
    min: float | None = None
    max: int | None = None
    email: bool = False
    lower: bool = False
    integer: bool = False
    values: tuple[str, ...] = ()
    msg: str = ""  # the schema's own message for `min`
    missing: str = "Required"  # ... and for a missing key (`required_error`)

    def check(self, path: str, v: Any) -> Any:
        kind = {"str": "string", "num": "number", "enum": "string", "rec": "object"}[self.kind]
        if _js_type(v) != kind:
            raise _invalid("invalid_type", path, f"Expected {kind}, received {_js_type(v)}")
        if self.kind == "enum":
            if v not in self.values:
                expected = " | ".join(f"'{x}'" for x in self.values)
                raise _invalid("invalid_enum_value", path, f"Invalid enum value. Expected {expected}, received '{v}'")
            return v
        if self.kind == "rec":  # z.record(...).refine(JSON.stringify(val).length <= 10000)
            if js_len(js_stringify(v)) > 10000:
                raise _invalid("custom", path, "Metadata must be less than 10,000 characters when stringified")
            return v
        if self.kind == "num":
            return self._number(path, v)
        s = v.strip(_JS_SPACE) if self.trim else v
        if self.min is not None and js_len(s) < self.min:
            raise _invalid("too_small", path, self.msg or f"String must contain at least {self.min:g} character(s)")
        if self.email and not EMAIL.fullmatch(s):
            raise _invalid("invalid_string", path, "Invalid email")
        if self.max is not None and js_len(s) > self.max:
            raise _invalid("too_big", path, f"String must contain at most {self.max} character(s)")
        return s.lower() if self.lower else s

    def _number(self, path: str, v: int | float) -> int | float:
        if self.integer and not _float(v).is_integer():  # zod 3: Number.isInteger
            raise _invalid("invalid_type", path, "Expected integer, received float")
        if self.integer and abs(v) > MAX_SAFE_INT:  # zod 4 / the API reference: a safe integer
            raise _invalid("too_big", path, f"Number must be less than or equal to {MAX_SAFE_INT}")
        if self.min is not None and v < self.min:
            raise _invalid("too_small", path, self.msg or f"Number must be greater than or equal to {self.min:g}")
        return int(v) if self.integer else v


def parse(schema: Mapping[str, F], body: Any) -> dict[str, Any]:
    """`z.object(schema).parse(body)`: first issue in schema order → 422; unknown keys dropped."""
    if not isinstance(body, dict):
        raise _invalid("invalid_type", "", f"Expected object, received {_js_type(body)}")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        if name not in body:
            if spec.default is _REQUIRED:
                raise _invalid("invalid_type", name, spec.missing)
            out[name] = spec.default.lower() if spec.lower and isinstance(spec.default, str) else spec.default
        elif body[name] is None and spec.nullable:
            out[name] = None
        else:
            out[name] = spec.check(name, body[name])
    return out


def _str(**kw: Any) -> F:
    return F("str", **kw)


# apps/web/lib/zod/schemas/leads.ts (newest) and the track-lead API reference
LEAD = {
    "clickId": _str(default=_REQUIRED, trim=True),
    "eventName": _str(default=_REQUIRED, trim=True, min=1, max=255, msg="eventName is required"),
    "customerExternalId": _str(default=_REQUIRED, trim=True, min=1, max=100, msg="customerExternalId is required"),
    "customerName": _str(nullable=True, max=100),
    "customerEmail": _str(nullable=True, email=True, max=100),
    "customerAvatar": _str(nullable=True),
    "eventQuantity": F("num", nullable=True),
    "mode": F("enum", default="async", values=("async", "wait", "deferred")),
    "metadata": F("rec", nullable=True),
}
# apps/web/lib/zod/schemas/sales.ts (commit 02704f0) and the track-sale API reference
SALE = {
    "customerExternalId": _str(default=_REQUIRED, trim=True, min=1, max=100),
    "amount": F("num", default=_REQUIRED, integer=True, min=0, msg="amount cannot be negative",
                missing="amount is required"),
    "currency": _str(default="usd", lower=True),
    "eventName": _str(default="Purchase", max=255),
    "paymentProcessor": F("enum", default="custom", values=PAYMENT_PROCESSORS),
    "invoiceId": _str(nullable=True),
    "leadEventName": _str(nullable=True),
    "metadata": F("rec", nullable=True),
    "clickId": _str(nullable=True),
    "customerName": _str(nullable=True, max=100),
    "customerEmail": _str(nullable=True, email=True, max=100),
    "customerAvatar": _str(nullable=True),
}
# apps/web/lib/zod/schemas/commissions.ts: updateCommissionSchema
UPDATE_COMMISSION = {
    "earnings": F("num", min=0), "saleAmount": F("num", min=0), "modifySaleAmount": F("num"),
    "currency": _str(default="usd", lower=True),
    "status": F("enum", values=("pending", "refunded", "duplicate", "canceled", "fraud")),
    "amount": F("num", min=0), "modifyAmount": F("num"),
}


def query_int(query: Mapping[str, str], name: str, default: int, most: int | None) -> int:
    """getPaginationQuerySchema: z.coerce.number().positive() (and .max for pageSize)."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _invalid("invalid_type", name, "Expected number, received nan") from None
    if not value.is_integer() or value <= 0 or (most is not None and value > most):
        raise _invalid("too_big" if value > 0 else "too_small", name, f"{name} out of range")
    return int(value)
