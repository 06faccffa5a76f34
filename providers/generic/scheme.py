"""The core signature scheme a generic source describes (`adapter.signing`), built from its settings."""

from __future__ import annotations

from adapter.signing import BodyHmac, TimestampedHmac, timestamp_seconds
from providers.generic.settings import GenericSettings

__all__ = ["build", "seconds"]


def build(options: GenericSettings) -> BodyHmac | TimestampedHmac:
    """`BodyHmac` for a signed body alone; `TimestampedHmac` with the timestamp in its own header
    (seconds, milliseconds or ISO 8601) when `signed_payload` has a `{timestamp}`. Base64
    signatures may come unpadded or URL-safe: a described sender may send either."""
    if options.timestamp_header is None:
        return BodyHmac(header=options.signature_header, digest=options.algorithm, encoding=options.encoding,
                        prefix=options.prefix, separator=options.signature_separator,
                        key_encoding=options.secret_encoding, signed=options.signed_payload, lenient=True)
    return TimestampedHmac(header=options.signature_header, ts_header=options.timestamp_header, unit="any",
                           signed=options.signed_payload, separator=options.signature_separator,
                           digest=options.algorithm, encoding=options.encoding, prefix=options.prefix,
                           key_encoding=options.secret_encoding, lenient=True)


def seconds(text: str) -> float | None:
    """A timestamp header as Unix seconds (sent as seconds, milliseconds or ISO 8601)."""
    return timestamp_seconds(text, "any")
