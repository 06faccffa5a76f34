"""The signature schemes, written once: body HMAC, timestamped HMAC, Standard Webhooks.

A provider declares how its sender signs, and the `Provider` base class's `verify`, `sign` and
`check_secrets` delegate to the declaration:

    class PaddleProvider(Provider):
        scheme = TimestampedHmac(header="Paddle-Signature", ts="ts", sig="h1", signed="{ts}:{body}",
                                 separator=";")

Every scheme keeps the `Scheme` contract: it reads the raw body bytes, before anything is
parsed; it derives the HMAC key(s) of every configured secret and compares each expected MAC
with each signature the request carries using `hmac.compare_digest` — every pair, so the time
taken does not tell which one matched (several secrets during a rotation, several signatures
during the sender's own); it refuses a signed timestamp further than `tolerance_s` from now in
either direction; and it raises `SignatureError` with one of three codes:

    missing_signature   the header (or the part of it) carrying a signature or timestamp is absent
    invalid_signature   present but malformed, or no (secret, signature) pair matches
    stale_timestamp     authentic, but signed too long ago or too far in the future

Messages name the check that failed, as stripe-python's do ("No signatures found matching the
expected signature for payload"); they never contain a secret or an expected signature.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from adapter.errors import CredentialsError, SignatureError

__all__ = [
    "BasicAuthPairs",
    "BodyHmac",
    "Digest",
    "Encoding",
    "KeyEncoding",
    "Scheme",
    "StandardWebhooks",
    "TimestampedHmac",
    "any_pair_equal",
    "basic_credentials",
    "check_freshness",
    "mac",
    "mac_matches",
    "message_id",
    "secret_in",
    "secret_keys",
    "timestamp_seconds",
]

Digest = Literal["sha1", "sha256", "sha512"]
Encoding = Literal["hex", "base64"]
KeyEncoding = Literal["utf8", "base64", "hex", "whsec", "utf8+whsec"]
"""How a configured secret becomes the HMAC key (see `secret_keys`)."""
Unit = Literal["s", "ms", "any"]

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_DIGITS = re.compile(r"[0-9]{1,16}")  # 16 digits: milliseconds until the year 318857
_NO_MATCH = "No signatures found matching the expected signature for payload"
_SHOWN = {"utf8": "text", "base64": "base64", "hex": "hex", "whsec": "whsec_<base64>", "utf8+whsec": "text"}


def secret_keys(secret: str, encoding: KeyEncoding = "utf8") -> list[bytes]:
    """The HMAC keys a configured secret stands for; `[]` when it does not decode.

    `utf8`: the secret's own bytes. `base64`, `hex`: decoded. `whsec`: Standard Webhooks'
    `whsec_<base64>` (prefix and padding optional). `utf8+whsec`: the secret's own bytes and,
    for a `whsec_<base64>` secret, also the decoded ones (Polar's SDK accepts both).
    """
    if encoding == "utf8":
        return [secret.encode()]
    if encoding == "utf8+whsec":
        decoded = _b64(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else b""
        return [secret.encode(), decoded] if decoded else [secret.encode()]
    if encoding == "hex":
        return [bytes.fromhex(secret)] if _HEX.fullmatch(secret) else []
    key = _b64(secret.strip().removeprefix("whsec_") if encoding == "whsec" else secret)
    return [key] if key else []


def any_pair_equal(expected: Iterable[bytes], given: Sequence[bytes]) -> bool:
    """Whether some expected MAC equals some given signature; compares every pair in constant time."""
    matched = False
    for want in expected:
        for got in given:
            matched |= hmac.compare_digest(want, got)
    return matched


def secret_in(given: str | bytes, secrets: Iterable[str | bytes]) -> bool:
    """Whether `given` is one of `secrets` (a URL token, a Basic password): compared as SHA-256
    digests, all of equal length, so the time taken tells nothing about any secret."""
    return any_pair_equal([_sha256(s) for s in secrets], [_sha256(given)])


def timestamp_seconds(text: str, unit: Unit = "s") -> float | None:
    """A signed timestamp as Unix seconds; None when it is not one.

    `s`: integer seconds; `ms`: integer milliseconds (Recurly); `any`: either (a number of
    10**11 or more is milliseconds) or ISO 8601 text (naive means UTC).
    """
    text = text.strip()
    if _DIGITS.fullmatch(text):
        number = int(text)
        return number / 1000 if unit == "ms" or (unit == "any" and number >= 10**11) else float(number)
    if unit != "any":
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def check_freshness(when: float, tolerance_s: int) -> None:
    """Raise `stale_timestamp` when `when` is further than `tolerance_s` from now, either way."""
    age = time.time() - when
    if age > tolerance_s:
        raise SignatureError("stale_timestamp", f"Timestamp outside the tolerance zone: too old "
                                                f"(signed more than {tolerance_s}s ago)")
    if age < -tolerance_s:
        raise SignatureError("stale_timestamp", f"Timestamp outside the tolerance zone: too new "
                                                f"(signed more than {tolerance_s}s ahead of this clock)")


def message_id(body: bytes) -> str:
    """A message id for a body hooktrack signs itself (samples): derived from the body, so a
    redelivery of the same bytes is a duplicate and a refreshed sample is a new message."""
    return "msg_" + base64.b32encode(hashlib.sha256(body).digest()[:15]).decode().lower()


class Scheme:
    """How a sender signs its webhooks; providers declare one (`scheme = BodyHmac(...)`).

    - `verify(body, headers, secrets, tolerance_s)` returns None when `headers` carry a valid
      signature of the raw `body` under one of `secrets` (and, where the scheme signs a time,
      one within `tolerance_s` seconds of now, either way). Otherwise it raises
      `SignatureError`: `missing_signature`, `invalid_signature` or `stale_timestamp`, with a
      message that names the failed check and never contains a secret or an expected MAC. It
      compares every (secret, signature) pair with `hmac.compare_digest`. `headers` are looked
      up by name; pass a case-insensitive mapping (starlette's `Headers`).
    - `sign(body, secret, timestamp)` returns the headers the sender would put on `body` at
      Unix time `timestamp` (ignored by schemes that sign no time); `ValueError` for a secret
      the scheme cannot use.
    - `check_secrets(secrets)` raises `ValueError` naming the first secret that can never verify.

    Schemes are frozen dataclasses: one declaration serves every source of the provider.
    """

    key_encoding: KeyEncoding = "utf8"

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str], tolerance_s: int) -> None:
        raise NotImplementedError

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        raise NotImplementedError

    def check_secrets(self, secrets: Sequence[str]) -> None:
        for n, secret in enumerate(secrets):
            if not secret_keys(secret, self.key_encoding):
                raise ValueError(f"secret {n} is not {_SHOWN[self.key_encoding]}")

    def _key(self, secret: str) -> bytes:
        keys = secret_keys(secret, self.key_encoding)
        if not keys:
            raise ValueError(f"the secret is not {_SHOWN[self.key_encoding]}")
        return keys[0]

    def _match(self, secrets: Sequence[str], message: bytes, given: Sequence[bytes], digest: Digest,
               hint: str = "") -> None:
        expected = (_mac(key, message, digest) for s in secrets for key in secret_keys(s, self.key_encoding))
        if not any_pair_equal(expected, given):
            raise SignatureError("invalid_signature", _NO_MATCH + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class BodyHmac(Scheme):
    """One header holding the HMAC of the raw body: Lemon Squeezy, Shopify, Razorpay, GitHub, ...

    `prefix` is text before each signature (`sha256=`); entries without it never match.
    `separator` splits a header listing several signatures (" ": any whitespace; None: one).
    `signed` is what is signed, `{body}` with literal text around it (Square: URL + body).
    `hint` is added to the no-match message (where to look when a genuine delivery fails).
    `lenient` also accepts base64 signatures unpadded or URL-safe.
    Nothing here is dated: delivery dedup is what keeps a replay from counting twice.
    """

    header: str
    digest: Digest = "sha256"
    encoding: Encoding = "hex"
    prefix: str = ""
    separator: str | None = None
    key_encoding: KeyEncoding = "utf8"
    signed: str = "{body}"
    hint: str = ""
    lenient: bool = False

    def __post_init__(self) -> None:
        _template(self.signed, False)

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str], tolerance_s: int = 0) -> None:
        entries = _split(headers.get(self.header) or "", self.separator)
        if not entries:
            raise SignatureError("missing_signature", f"No {self.header} header")
        given = _signatures(entries, self.prefix, self.encoding, self.header, self.lenient)
        self._match(secrets, _render(self.signed, False, body, ""), given, self.digest, self.hint)

    def sign(self, body: bytes, secret: str, timestamp: int = 0) -> dict[str, str]:
        mac = _mac(self._key(secret), _render(self.signed, False, body, ""), self.digest)
        return {self.header: self.prefix + _encode(mac, self.encoding)}


@dataclass(frozen=True)
class TimestampedHmac(Scheme):
    """An HMAC over a signed string holding a timestamp and the raw body.

    Where the timestamp is, by header shape:
    - keyed items (`t=..,v1=..` Stripe; `ts=..;h1=..` Paddle with `separator=";"`): `ts` and
      `sig` name the items; several `sig` items may be listed;
    - positional (`ts=None`: `<ms>,<sig>,<sig>` Recurly with `unit="ms"`): the first item;
    - its own header (`ts_header`): the signature header then lists only signatures, split on
      `separator` (None: one signature).
    `signed` is a template of `{ts}` (the timestamp text as sent; `{timestamp}` is the same)
    and `{body}`. `unit` is `s`, `ms` or `any` (see `timestamp_seconds`); `lenient` as in
    `BodyHmac`. The signature is
    checked first, then freshness (stale_timestamp only for a genuine signature, like Stripe).
    """

    header: str
    ts: str | None = "t"
    sig: str | None = "v1"
    signed: str = "{ts}.{body}"
    separator: str | None = ","
    ts_header: str | None = None
    unit: Unit = "s"
    digest: Digest = "sha256"
    encoding: Encoding = "hex"
    prefix: str = ""
    key_encoding: KeyEncoding = "utf8"
    lenient: bool = False

    def __post_init__(self) -> None:
        _template(self.signed, True)
        if self.ts_header is None and not self.separator:
            raise ValueError("a timestamp inside the signature header needs a separator between its items")
        if self.ts_header is None and self.ts is not None and self.sig is None:
            raise ValueError("keyed items need `sig`, the key of each signature (v1, h1, ...)")

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str], tolerance_s: int) -> None:
        stamp, when, entries = self._read(headers)
        given = _signatures(entries, self.prefix, self.encoding, self.header, self.lenient)
        self._match(secrets, _render(self.signed, True, body, stamp), given, self.digest)
        check_freshness(when, tolerance_s)

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        stamp = str(timestamp * 1000 if self.unit == "ms" else timestamp)
        raw = _mac(self._key(secret), _render(self.signed, True, body, stamp), self.digest)
        mac = self.prefix + _encode(raw, self.encoding)
        if self.ts_header is not None:
            return {self.header: mac, self.ts_header: stamp}
        sep = self.separator or ","
        if self.ts is None:
            return {self.header: f"{stamp}{sep}{mac}"}
        return {self.header: f"{self.ts}={stamp}{sep}{self.sig}={mac}"}

    def _read(self, headers: Mapping[str, str]) -> tuple[str, float, list[str]]:
        """(timestamp as sent, as Unix seconds, signature entries) or SignatureError."""
        items = _split(headers.get(self.header) or "", self.separator)
        if not items:
            raise SignatureError("missing_signature", f"No {self.header} header")
        where = self.header
        if self.ts_header is not None:
            stamp, entries, where = (headers.get(self.ts_header) or "").strip(), items, self.ts_header
            if not stamp:
                raise SignatureError("missing_signature", f"No {self.ts_header} header")
        elif self.ts is None:
            stamp, entries = items[0], items[1:]
        else:
            pairs = [(k.strip(), v.strip()) for k, _, v in (item.partition("=") for item in items)]
            stamp = next((v for k, v in pairs if k == self.ts), "")
            entries = [v for k, v in pairs if k == self.sig and v]
        when = timestamp_seconds(stamp, self.unit)
        if when is None:
            raise SignatureError("invalid_signature", f"Unable to extract timestamp from {where}")
        if not entries:
            what = f"{self.sig} signatures" if self.sig and self.ts_header is None else "signatures"
            raise SignatureError("missing_signature", f"No {what} in {self.header} header")
        return stamp, when, entries


@dataclass(frozen=True)
class StandardWebhooks(Scheme):
    """Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp` (Unix
    seconds), `webhook-signature` (space-separated `v1,<base64>`), HMAC-SHA256 over
    `{id}.{timestamp}.{body}`, keyed by the `whsec_<base64>` secret decoded.

    `key_encoding="utf8"` keys by the secret's own bytes (Whop), `"utf8+whsec"` by those and
    a `whsec_` secret's decoded bytes (Polar). `prefixes` are the header-name prefixes tried in
    order, per header (`("svix", "webhook")` for Svix senders such as Clerk); `sign` uses the
    first. Freshness is checked before the signatures, as the reference libraries do.
    """

    key_encoding: KeyEncoding = "whsec"
    prefixes: tuple[str, ...] = ("webhook",)

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str], tolerance_s: int) -> None:
        msg_id, stamp, header = (self._get(headers, part) for part in ("id", "timestamp", "signature"))
        for part, value in (("id", msg_id), ("timestamp", stamp), ("signature", header)):
            if not value.strip():
                raise SignatureError("missing_signature", f"No {self.prefixes[0]}-{part} header")
        when = timestamp_seconds(stamp, "s")
        if when is None:
            raise SignatureError("invalid_signature", f"{self.prefixes[0]}-timestamp is not a Unix time in seconds")
        check_freshness(when, tolerance_s)
        given = [_decode(value, "base64") for version, _, value in (e.partition(",") for e in header.split())
                 if version == "v1" and value]  # other versions (v1a: asymmetric) are not ours to check
        if not given:
            raise SignatureError("missing_signature", f"No v1 signatures in {self.prefixes[0]}-signature header")
        self._match(secrets, f"{msg_id}.{stamp.strip()}.".encode() + body, given, "sha256")

    def sign(self, body: bytes, secret: str, timestamp: int, *, msg_id: str | None = None) -> dict[str, str]:
        """The three headers; the id is `msg_id`, or else derived from the body (`message_id`)."""
        msg_id, prefix = msg_id or message_id(body), self.prefixes[0]
        mac = _mac(self._key(secret), f"{msg_id}.{timestamp}.".encode() + body, "sha256")
        return {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(timestamp),
                f"{prefix}-signature": "v1," + _encode(mac, "base64")}

    def _get(self, headers: Mapping[str, str], part: str) -> str:
        return next((v for v in (headers.get(f"{p}-{part}") for p in self.prefixes) if v and v.strip()), "")


def _mac(key: bytes, message: bytes, digest: Digest) -> bytes:
    return hmac.new(key, message, digest).digest()


def mac(key: bytes, message: bytes, digest: Digest = "sha256") -> bytes:
    """The HMAC of `message` under `key`, for a scheme that signs fields inside the payload
    (Adyen's notification items) and so cannot be declared as a header scheme."""
    return _mac(key, message, digest)


def mac_matches(keys: Iterable[bytes], message: bytes, given: Sequence[bytes], digest: Digest = "sha256") -> bool:
    """Whether any of `given` is the HMAC of `message` under any of `keys`: every pair compared
    in constant time (rotation: every configured key is tried)."""
    return any_pair_equal([_mac(key, message, digest) for key in keys], given)


def _sha256(value: str | bytes) -> bytes:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).digest()


def _b64(text: str) -> bytes:
    """Standard base64 with or without padding; `b""` when it is not base64."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _decode(text: str, encoding: Encoding, lenient: bool = False) -> bytes:
    """A signature's bytes; `b""` (which never matches) when it is not valid hex/base64.

    Base64 is the padded standard alphabet, as the senders' own libraries compare it;
    `lenient` also takes it unpadded or URL-safe.
    """
    if encoding == "hex":
        return bytes.fromhex(text) if _HEX.fullmatch(text) else b""
    altchars = b"-_" if lenient and ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4) if lenient else text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _encode(mac: bytes, encoding: Encoding) -> str:
    return mac.hex() if encoding == "hex" else base64.b64encode(mac).decode()


def _split(raw: str, separator: str | None) -> list[str]:
    items = [raw] if separator is None else raw.split() if not separator.strip() else raw.split(separator)
    return [item.strip() for item in items if item.strip()]


def _signatures(entries: Sequence[str], prefix: str, encoding: Encoding, header: str,
                lenient: bool = False) -> list[bytes]:
    """The decoded signatures among `entries`; `invalid_signature` when none is one."""
    bare = [entry[len(prefix):] for entry in entries if entry.startswith(prefix)]
    if not bare:
        raise SignatureError("invalid_signature", f"No signature in {header} starts with {prefix!r}")
    decoded = [_decode(entry, encoding, lenient) for entry in bare]
    if not any(decoded):
        raise SignatureError("invalid_signature", f"{header} is not a {encoding} digest")
    return decoded


@functools.cache
def _template(template: str, timestamped: bool) -> tuple[tuple[str, str | None], ...]:
    """(literal, placeholder) pairs of a `signed` template; ValueError naming what is wrong."""
    allowed = ("body", "ts", "timestamp") if timestamped else ("body",)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # a lone brace; literal braces are written {{ and }}
        raise ValueError(f"signed template {template!r}: {exc}") from None
    parts: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (field not in allowed or spec or conversion):
            raise ValueError(f"{{{field}}} is not a placeholder of a signed template: use {{body}} and {{ts}}")
        parts.append((literal, field))
    fields = [field for _, field in parts]
    if fields.count("body") != 1:
        raise ValueError(f"signed template {template!r} must contain {{body}} exactly once")
    if timestamped and not {"ts", "timestamp"} & set(fields):
        raise ValueError(f"signed template {template!r} has no {{ts}}: an unsigned timestamp proves nothing")
    return tuple(parts)


def _render(template: str, timestamped: bool, body: bytes, stamp: str) -> bytes:
    """The bytes signed: the template's literal text, the raw body and the timestamp as sent."""
    out = bytearray()
    for literal, field in _template(template, timestamped):
        out += literal.encode()
        out += body if field == "body" else stamp.encode() if field else b""
    return bytes(out)


def basic_credentials(header: str | None) -> bytes:
    """The `user:password` bytes of an `Authorization: Basic ...` header, or CredentialsError."""
    if not header:
        raise CredentialsError("No HTTP Basic credentials (Authorization: Basic ...)")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise CredentialsError("Authorization is not HTTP Basic credentials")
    try:
        return base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsError("HTTP Basic credentials are not valid base64") from None


def _basic_auth_pairs(pairs: list[str]) -> list[str]:
    for index, pair in enumerate(pairs):
        user, colon, password = pair.partition(":")
        if not colon or not user or not password:  # never echo the value: it is a password
            raise ValueError(f'basic_auth[{index}] must be "user:password" with both parts non-empty')
    return pairs


BasicAuthPairs = Annotated[list[str], Field(min_length=1, repr=False), AfterValidator(_basic_auth_pairs)]
"""A source's `basic_auth = ["user:password", ...]` (several while rotating), each with both parts."""
