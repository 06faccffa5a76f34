"""Form bodies (`application/x-www-form-urlencoded`) for the providers that post them.

Gumroad, Braintree and Paddle Classic deliver webhooks as HTML-form posts, not JSON. Their
built-in samples are stored as JSON objects of the form's fields (readable, diffable) and turned
into a real form body when a sample is used; `parse_form` reads a delivery back into fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from adapter.errors import PayloadError

__all__ = ["FORM_CONTENT_TYPE", "encode_form", "parse_form", "sample_fields"]

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_MAX_FIELDS = 2000


def parse_form(body: bytes) -> dict[str, str]:
    """The fields of a form body; a repeated name keeps its last value, as Rails and PHP do.

    Raises `PayloadError` for a body that is not UTF-8 form data or has no fields at all.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=_MAX_FIELDS)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise PayloadError(f"body is not form data ({type(exc).__name__})") from None
    fields = dict(pairs)
    if not fields:
        raise PayloadError("body has no form fields")
    return fields


def encode_form(fields: Mapping[str, str]) -> bytes:
    """A form body of `fields` in their order (brackets in names are percent-encoded)."""
    return urlencode(list(fields.items())).encode("ascii")


def sample_fields(raw: bytes) -> dict[str, str]:
    """The fields of a JSON-stored sample (an object of strings)."""
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError("a form sample must be a JSON object of strings")
    return data
