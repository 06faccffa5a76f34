"""Where click ids and customer ids hide in merchant-controlled metadata (SPEC §2).

Providers call these from `map` to turn metadata into hints; the keys come from the source's
settings, so a merchant who stores `ref` instead of `clickId` configures it once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_CLICK_ID_KEYS",
    "DEFAULT_CUSTOMER_ID_KEYS",
    "first_key",
    "from_client_reference",
]

DEFAULT_CLICK_ID_KEYS = ("clickId", "click_id", "dubClickId", "dub_click_id", "dub_id")
DEFAULT_CUSTOMER_ID_KEYS = (
    "customerExternalId",
    "customer_external_id",
    "dubCustomerExternalId",
    "dubCustomerId",
    "externalId",
    "external_id",
    "userId",
    "user_id",
)


def first_key(keys: Sequence[str], *sources: Mapping[str, Any] | None) -> str | None:
    """First non-empty value of `keys` (in key order) across `sources` (in source order).

    Keys match exactly. Non-mapping sources (Razorpay sends an empty `notes` as `[]`) and
    values that are not strings or integers are skipped.
    """
    mappings = [s for s in sources if isinstance(s, Mapping)]
    for key in keys:
        for mapping in mappings:
            value = mapping.get(key)
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                return str(value)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def from_client_reference(value: object, prefix: str) -> str | None:
    """The click id in a reference like `dub_id_<id>`; None when absent or without the prefix."""
    if not isinstance(value, str) or not prefix or not value.startswith(prefix):
        return None
    return value[len(prefix):].strip() or None
