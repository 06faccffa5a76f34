"""The HMAC signature scheme a generic source describes: keys, entries, signed bytes, freshness."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import Any

from adapter.errors import SignatureError
from adapter.plugin import Headers
from providers.generic.settings import GenericSettings, template_fields
from providers.standardwebhooks import moment

__all__ = ["check_time", "decode", "entries", "key", "mac", "seconds", "signed_bytes"]

_HEX = re.compile(r"[0-9a-fA-F]+")


def key(secret: str, encoding: str) -> bytes | None:
    """The HMAC key of a configured secret; None when it does not decode."""
    try:
        if encoding == "base64":
            return base64.b64decode(secret + "=" * (-len(secret) % 4), validate=True) or None
        if encoding == "hex":
            return bytes.fromhex(secret) if _HEX.fullmatch(secret) else None
    except (binascii.Error, ValueError):
        return None
    return secret.encode()


def decode(text: str, encoding: str) -> bytes:
    """A signature entry's bytes; `b""` (never a match) when it is not valid hex/base64."""
    if encoding == "hex":
        return bytes.fromhex(text) if _HEX.fullmatch(text) and len(text) % 2 == 0 else b""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None,
                                validate=True)
    except (binascii.Error, ValueError):
        return b""


def entries(header: str, options: GenericSettings) -> list[str]:
    """The signatures listed in the header: split on `signature_separator` (" " = any whitespace)."""
    sep = options.signature_separator
    raw = header.split() if sep is not None and not sep.strip() else header.split(sep) if sep else [header]
    return [e.strip() for e in raw if e.strip()]


def signed_bytes(options: GenericSettings, body: bytes, timestamp: str) -> bytes:
    """What the sender signs: `signed_payload` with the raw body and the timestamp as sent."""
    out = bytearray()
    for literal, field in template_fields(options.signed_payload):
        out += literal.encode()
        if field == "body":
            out += body
        elif field == "timestamp":
            out += timestamp.encode()
    return bytes(out)


def mac(options: GenericSettings, secret_key: bytes, payload: bytes) -> bytes:
    """The raw HMAC of `payload` with the configured hash."""
    return hmac.new(secret_key, payload, getattr(hashlib, options.algorithm)).digest()


def seconds(text: str) -> float | None:
    """A timestamp header as Unix seconds (sent as seconds, milliseconds or ISO 8601)."""
    value: Any = int(text) if text.isascii() and text.isdigit() and len(text) <= 16 else text
    when = moment(value)
    return None if when is None else when.timestamp()


def check_time(options: GenericSettings, headers: Headers, tolerance_s: int) -> str:
    """The signed timestamp text ('' when the scheme has none); raises `SignatureError`."""
    if options.timestamp_header is None:
        return ""
    stamp = (headers.get(options.timestamp_header) or "").strip()
    if not stamp:
        raise SignatureError("missing_signature", f"Missing {options.timestamp_header} header")
    when = seconds(stamp)
    if when is None:
        raise SignatureError("invalid_signature", f"{options.timestamp_header} is not a timestamp")
    age = time.time() - when
    if abs(age) > tolerance_s:
        word = "old" if age > 0 else "new"
        raise SignatureError("stale_timestamp", f"Timestamp too {word} (tolerance {tolerance_s}s)")
    return stamp
