"""Every error hooktrack raises on purpose.

    HooktrackError
     ├── ConfigError          bad hooktrack.toml or environment: startup stops with its message
     ├── SignatureError       webhook failed verification: 400 {"error": {"code": ...}}
     │    ├── CredentialsError  source authenticated by credentials (Basic, URL token): 401
     │    └── VerifierUnavailable  what verification needs cannot be had now (PayPal's cert): 503
     ├── PayloadError         signed but unparseable or not the documented shape: 400 malformed_payload
     ├── Ignore               a tracked event type that must not count (unpaid, zero_amount, ...)
     └── StoreUnavailable     the store cannot commit: 503, the provider retries

Messages never contain secrets or expected signatures.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CredentialsError",
    "HooktrackError",
    "Ignore",
    "PayloadError",
    "SignatureError",
    "StoreUnavailable",
    "VerifierUnavailable",
]


class HooktrackError(Exception):
    """Base of every error hooktrack raises on purpose."""


class ConfigError(HooktrackError):
    """The configuration is unusable; the message names the offending key."""


class SignatureError(HooktrackError):
    """A webhook failed verification.

    `code` is one of `invalid_signature`, `stale_timestamp`, `missing_signature`
    (or `invalid_credentials` for `CredentialsError`); it is what the sender sees. The ingest
    adds `malformed_payload` (verified but unreadable) and `replayed_transmission` (a
    `ProviderEvent.delivery_key` already claimed for another body: PayPal's CRC-only signature).
    """

    status_code = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CredentialsError(SignatureError):
    """A source authenticated by credentials got none or wrong ones (answered 401)."""

    status_code = 401

    def __init__(self, message: str, code: str = "invalid_credentials") -> None:
        super().__init__(code, message)


class VerifierUnavailable(SignatureError):
    """Verification cannot run right now (PayPal's signing certificate cannot be fetched), or
    the lookup a thin webhook needs cannot (`Provider.fetch`: Recurly's invoice): 503, so the
    sender retries; nothing is accepted unverified or stored without what it needs."""

    status_code = 503

    def __init__(self, message: str, code: str = "verifier_unavailable") -> None:
        super().__init__(code, message)


class PayloadError(HooktrackError):
    """The body was authentic but is not a payload the provider documents."""


class Ignore(HooktrackError):
    """A tracked event that must not count; `reason` is shown in the event log.

    `trial_of` names a subscription whose zero-amount first payment this is (a trial): the core
    remembers it, so the subscription's first paid cycle is named its creation (SPEC §8).
    """

    def __init__(self, reason: str, trial_of: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.trial_of = trial_of


class StoreUnavailable(HooktrackError):
    """The store could not commit; webhooks answer 503 so providers retry."""
