"""The SPEC §2 rule for where click ids and customer ids hide in merchant-controlled metadata.

A provider's `map` only says *where* identity lives (`metadata_sources`, `client_reference`,
`click_reference`, its own `external_id` / `click_id` fields); `apply_identity_keys` applies the
source's key lists, the client-reference prefix and the precedence, the same way for every
provider. The core calls it on every conversion `map` returns, before the ingest transaction
(which resolves the rest with identity memory).

Precedence, for each of the two ids:

- click id: the provider's own `click_id` field, then the first of `click_id_keys` (in key order)
  across `metadata_sources` then `click_sources` (in source order), then a `client_reference` /
  `click_reference` of the form `<prefix><id>`;
- customerExternalId: the provider's own `external_id` field, then the first of
  `customer_id_keys` across `metadata_sources`, then a `client_reference` without the prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from adapter.settings import DEFAULT_CLICK_ID_KEYS, DEFAULT_CUSTOMER_ID_KEYS, SourceSettings

if TYPE_CHECKING:
    from adapter.events import Lead, Sale

__all__ = [
    "DEFAULT_CLICK_ID_KEYS",
    "DEFAULT_CLIENT_REFERENCE_PREFIX",
    "DEFAULT_CUSTOMER_ID_KEYS",
    "ClientReferenceSettings",
    "apply_identity_keys",
    "first_key",
    "from_client_reference",
]

DEFAULT_CLIENT_REFERENCE_PREFIX = "dub_id_"

C = TypeVar("C", bound="Lead | Sale")


class ClientReferenceSettings(BaseModel):
    """Source setting of providers with a client reference: `client_reference_prefix`.

    A provider's `settings_model` subclasses this to let `[sources.X]` change the prefix (Stripe
    `client_reference_id = "dub_id_<click id>"`); sources of other providers use the default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_reference_prefix: str = DEFAULT_CLIENT_REFERENCE_PREFIX


def apply_identity_keys(conv: C, settings: SourceSettings, options: object = None) -> C:
    """`conv` with `click_id` and `external_id` filled from where its provider said identity lives,
    with the source's key lists (`settings`) and the prefix of the provider's `options` (its
    `settings_model` instance; the default prefix unless that is a `ClientReferenceSettings`).

    Pure; a conversion whose provider fields already give both ids comes back unchanged (the
    same object). Raises pydantic's `ValidationError` when a value found is not a valid id (an
    empty string), which the core reports as a malformed payload; the length of an id is the
    destination's rule (`Destination.check`), not a reason to refuse the webhook.
    """
    prefix = (options.client_reference_prefix if isinstance(options, ClientReferenceSettings)
              else DEFAULT_CLIENT_REFERENCE_PREFIX)
    sources = conv.metadata_sources
    reference_click = from_client_reference(conv.client_reference, prefix)
    click = (conv.click_id or first_key(settings.click_id_keys, *sources, *conv.click_sources)
             or reference_click or from_client_reference(conv.click_reference, prefix))
    external = conv.external_id or first_key(settings.customer_id_keys, *sources)
    if external is None and reference_click is None and conv.client_reference:
        external = conv.client_reference.strip() or None  # a plain reference is the merchant's user id
    if click == conv.click_id and external == conv.external_id:
        return conv
    if all(value is None or (isinstance(value, str) and value) for value in (click, external)):
        # Valid `Text` ids already (found values are stripped and non-empty): copy without
        # validating the whole model again, which cost more than the rest of the mapping.
        return cast("C", conv.model_copy(update={"click_id": click, "external_id": external}))
    return cast("C", type(conv).model_validate({**dict(conv), "click_id": click, "external_id": external}))


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
