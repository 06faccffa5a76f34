"""Shared base for processors that sign only the raw body with the webhook secret.

One header carries the HMAC of the body, hex or base64; nothing else is signed, so there is no
timestamp to check: delivery dedup is what keeps a replayed delivery from counting twice.
Lemon Squeezy, Shopify, Razorpay, Paystack and Creem differ only in the header, the hash and
the encoding, so they state those three and inherit `verify` and `sign` from here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import ClassVar, Literal

from adapter.errors import SignatureError
from adapter.plugin import Headers, Provider, SourceContext

__all__ = ["BodyHmacProvider"]

_HEX = re.compile(r"[0-9a-fA-F]+")


class BodyHmacProvider(Provider):
    """`signature_header` = HMAC-`digest` of the raw body, `encoding` hex or base64.

    Subclasses set the three class attributes and implement `parse` and `map`.
    """

    signature_header: ClassVar[str]
    digest: ClassVar[Literal["sha256", "sha512", "sha1"]] = "sha256"
    encoding: ClassVar[Literal["hex", "base64"]] = "hex"

    def _mac(self, body: bytes, secret: str) -> bytes:
        return hmac.new(secret.encode(), body, getattr(hashlib, self.digest)).digest()

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        """Compare the header with the body's HMAC under every secret, in constant time.

        Raises `SignatureError`: `missing_signature` (no header), `invalid_signature` (not
        valid hex/base64, or no secret matches).
        """
        name = self.signature_header
        raw = (headers.get(name) or "").strip()
        if not raw:
            raise SignatureError("missing_signature", f"No {name} header")
        try:
            if self.encoding == "hex":
                if not _HEX.fullmatch(raw):
                    raise ValueError("not hex")
                given = bytes.fromhex(raw)
            else:
                given = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("invalid_signature", f"{name} is not a {self.encoding} digest") from None
        matched = False
        for secret in secrets:  # every secret, so the time taken does not tell which one matched
            matched |= hmac.compare_digest(self._mac(body, secret), given)
        if not matched:
            raise SignatureError("invalid_signature", f"{name} does not match the payload")

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: SourceContext) -> dict[str, str]:
        """The header the processor would send (`timestamp` is not signed)."""
        mac = self._mac(body, secret)
        return {self.signature_header: mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode()}
