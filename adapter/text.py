"""A webhook body as text, decoded the way its JSON was parsed.

JSON between systems is UTF-8 (RFC 8259), but `json.loads` also reads UTF-16 and UTF-32 (with
or without a BOM) and UTF-8 with a BOM, and the signature covers the raw bytes whatever their
encoding, so such a body verifies and maps. Storing it as UTF-8 would garble it (and
mapping it again from the journal, as SPEC §4 keeps it for, would fail): `body_text` decodes it
as the parser did.
"""

from __future__ import annotations

import json

__all__ = ["body_text"]


def body_text(body: bytes) -> str:
    """`body` decoded by JSON's own encoding detection (a BOM is dropped); bytes that are not
    valid in that encoding become U+FFFD, as with UTF-8 before."""
    try:
        return body.decode(json.detect_encoding(body))
    except UnicodeDecodeError:
        return body.decode("utf-8", "replace")
