"""Clerk: Svix-delivered webhooks (`svix-id`, `svix-timestamp`, `svix-signature`), `whsec_` secret.

Svix is Standard Webhooks under other header names, so the scheme is `adapter.signing`'s
`StandardWebhooks` reading `svix-*` headers (and `webhook-*` ones, as svix's own Python
wrapper does: it delegates to the `standardwebhooks` library).

Lead: `user.created` → `Sign up`. Email: the address whose id is `primary_email_address_id`;
name: `first_name last_name`; the Clerk user id (`user_...`) is the provider customer id;
`external_id` (the merchant's own user id, set through Clerk's API) is the explicit id, else
the core reads the source's `customer_id_keys` / `click_id_keys` in `public_metadata` then
`unsafe_metadata`; the phone is the primary phone number. Every other event type maps to nothing.
The delivery id is `svix-id`; the event time the body's `timestamp` (Unix milliseconds).
Development and production instances are separate endpoints with separate secrets, and payloads
carry no live/test flag, so `livemode` is None.
"""

from __future__ import annotations

from typing import Any

from adapter.errors import PayloadError
from adapter.events import Lead, ProviderEvent, Sale
from adapter.payload import any_time, epoch_time, mapping, text
from adapter.plugin import Headers, Provider, SourceContext
from adapter.samples import SamplesMixin
from adapter.signing import StandardWebhooks, message_id

__all__ = ["ClerkProvider"]

_SVIX = {"webhook-id": "svix-id", "webhook-timestamp": "svix-timestamp", "webhook-signature": "svix-signature"}


def _standard(headers: Headers) -> dict[str, str]:
    """The Standard Webhooks view of Svix headers (as svix's wrapper builds it)."""
    return {std: headers.get(svix) or headers.get(std) or "" for std, svix in _SVIX.items()}


class ClerkProvider(SamplesMixin, Provider):
    """Clerk via Svix: `svix-signature: v1,<base64>` over `svix-id.svix-timestamp.body`."""

    name = "clerk"
    scheme = StandardWebhooks(prefixes=("svix", "webhook"))

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        # The svix-id is derived from the body, so a new `timestamp` is a new message.
        data["timestamp"] = now * 1000

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        """The `svix-id` `sign` uses, so a sample parses on its own (tests, tooling)."""
        return {"svix-id": message_id(body)}

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        """The event by its `svix-id`, timed by the body's `timestamp` (ms), else the header.

        Raises `PayloadError` without an id header, a string `type` or a `data` object.
        """
        data = self.json_body(body)
        msg_id = text(_standard(headers)["webhook-id"])
        event_type = text(data.get("type"))
        if msg_id is None:
            raise PayloadError("Clerk webhook without an svix-id header")
        if event_type is None or not isinstance(data.get("data"), dict):
            raise PayloadError("Clerk event without a string `type` and a `data` object")
        occurred = any_time(data.get("timestamp")) or epoch_time(_standard(headers)["webhook-timestamp"])
        if occurred is None:
            raise PayloadError("Clerk event without a `timestamp`")
        return ProviderEvent(id=msg_id, type=event_type, occurred_at=occurred, livemode=None, data=data)

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale]:
        """`user.created` → Lead `sign_up`; `[]` for every other type.

        Raises `PayloadError` for a user without an `id`.
        """
        if event.type != "user.created":
            return []
        user: dict[str, Any] = event.data["data"]
        user_id = text(user.get("id"))
        if user_id is None:
            raise PayloadError("user.created without a user `id`")
        # public_metadata is written by the merchant's server, unsafe_metadata by the browser:
        # the server's value wins when both carry a key.
        metadata = (mapping(user.get("public_metadata")), mapping(user.get("unsafe_metadata")))
        name = " ".join(n for n in (text(user.get("first_name")), text(user.get("last_name"))) if n)
        return [Lead(
            kind="sign_up",
            provider_customer_id=user_id,
            external_id=text(user.get("external_id")),
            metadata_sources=metadata,
            email=_primary(user, "email_addresses", "primary_email_address_id", "email_address"),
            phone=_primary(user, "phone_numbers", "primary_phone_number_id", "phone_number"),
            name=name or None,
        )]


def _primary(user: dict[str, Any], items: str, primary_id: str, field: str) -> str | None:
    """The primary email address (or phone number), else the first one (a primary id can lag
    behind the list)."""
    entries = [a for a in user.get(items) or [] if isinstance(a, dict)]
    primary = user.get(primary_id)
    for entry in entries:
        if primary and entry.get("id") == primary:
            return text(entry.get(field))
    return text(entries[0].get(field)) if entries else None
