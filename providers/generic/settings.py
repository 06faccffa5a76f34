"""The generic provider's source settings: signature scheme, where the id/type/time are, rules.

Everything is validated when the config is loaded, so a mistake stops startup with a message
naming its key (`sources.NAME: timestamp_header: ...`). Cross-field checks sit on the later
field of each pair, so that the key named is the one to fix.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adapter.plugin import Headers
from adapter.rules import Condition, JsonPath, RuleSet, resolve

__all__ = ["Algorithm", "Encoding", "GenericSettings", "HeaderName", "Locator", "template_fields"]

Algorithm = Literal["sha256", "sha512", "sha1"]
Encoding = Literal["hex", "base64"]
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_PLACEHOLDERS = ("body", "timestamp")
_BASE64 = string.ascii_letters + string.digits + "+/=-_"


def _header_name(name: str) -> str:
    if not _HEADER_NAME.fullmatch(name.strip()):
        raise ValueError(f"{name!r} is not an HTTP header name")
    return name.strip()


HeaderName = Annotated[str, AfterValidator(_header_name)]
"""A header name (`X-Signature`), checked when the config is loaded; matched case-insensitively."""


class Locator(BaseModel):
    """Where a value is: `{header = "X-Event-Id"}` or `{path = "data.id"}` (a bare string is a path)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    header: HeaderName | None = None
    path: JsonPath | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_path(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"path": value}
        if not isinstance(value, Mapping | Locator):
            raise ValueError('a dotted path ("id"), {path = "data.id"} or {header = "X-Event-Id"}')
        return value

    @model_validator(mode="after")
    def _one(self) -> Locator:
        if (self.header is None) == (self.path is None):
            raise ValueError('give exactly one of header = "X-Name" or path = "dotted.path"')
        return self

    def read(self, data: Mapping[str, Any], headers: Headers) -> Any:
        """The header's text or the value at the path; None when absent."""
        if self.header is not None:
            return headers.get(self.header)
        return resolve(data, str(self.path))

    def describe(self) -> str:
        """`header X-Event-Id` or `path 'id'`, for error messages."""
        return f"header {self.header}" if self.header else f"path {self.path!r}"


def _condition(value: Any) -> Any:
    if value is None or isinstance(value, Condition):
        return value
    if not isinstance(value, str):
        raise ValueError("a condition such as 'livemode == true' or 'environment == \"live\"'")
    return Condition.parse(value)


def template_fields(template: str) -> list[tuple[str, str | None]]:
    """(literal text, placeholder) pairs of a `signed_payload`; raises ValueError naming the problem."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # a lone brace; literal braces are written {{ and }}
        raise ValueError(f"{template!r}: {exc}") from None
    out: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parts:
        if field is not None and (field not in _PLACEHOLDERS or spec or conversion):
            raise ValueError(f"{{{field}}} is not a placeholder: use {{body}} and {{timestamp}}")
        out.append((literal, field))
    return out


class GenericSettings(RuleSet):
    """`[sources.NAME]` keys of `provider = "generic"` (README: the generic provider)."""

    signature_header: HeaderName
    algorithm: Algorithm = "sha256"
    encoding: Encoding = "hex"
    prefix: str = ""
    """Text before each signature (`sha256=`, `v0=`); entries without it do not match."""
    secret_encoding: Literal["utf8", "base64", "hex"] = "utf8"  # noqa: S105 (a format name)
    """How the configured secrets become the HMAC key: their UTF-8 bytes, or decoded."""
    signed_payload: str = "{body}"
    timestamp_header: HeaderName | None = Field(default=None, validate_default=True)
    signature_separator: str | None = Field(default=None, validate_default=True)
    event_id: Locator
    event_type: Locator
    occurred_at: Locator | None = None
    live_when: Annotated[Condition | None, BeforeValidator(_condition)] = None
    """The event is live when this holds, test when not, unknown when its path is absent."""

    @field_validator("signed_payload")
    @classmethod
    def _template(cls, template: str) -> str:
        fields = [f for _, f in template_fields(template) if f]
        if fields.count("body") != 1:
            raise ValueError(f"{template!r} must contain {{body}} exactly once (the raw request body)")
        return template

    @field_validator("timestamp_header")
    @classmethod
    def _timestamp_signed(cls, name: str | None, info: ValidationInfo) -> str | None:
        template = info.data.get("signed_payload")
        signed = template is not None and any(f == "timestamp" for _, f in template_fields(template))
        if name is None and signed:
            raise ValueError("signed_payload uses {timestamp}: name the header that carries it")
        if name is not None and template is not None and not signed:
            raise ValueError("signed_payload has no {timestamp}: an unsigned timestamp proves nothing")
        if name is not None and name.lower() == str(info.data.get("signature_header", "")).lower():
            raise ValueError("the timestamp and the signature cannot share one header")
        return name

    @field_validator("signature_separator")
    @classmethod
    def _separator(cls, sep: str | None, info: ValidationInfo) -> str | None:
        if sep is None:
            return None
        if sep == "":
            raise ValueError('an empty separator splits nothing: use "," or " ", or leave it out')
        alphabet = string.hexdigits if info.data.get("encoding") == "hex" else _BASE64
        bare = sep.strip()
        if any(c in alphabet for c in bare) or (bare and bare in info.data.get("prefix", "")):
            raise ValueError(f"{sep!r} can occur inside a signature or its prefix: pick \",\" or \" \"")
        return sep
