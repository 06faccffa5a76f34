"""Test kit for provider plugins: subclass `ProviderContract` in your plugin's tests.

    from adapter.testing import ProviderContract
    from hooktrack_acme import AcmeProvider

    class TestAcmeContract(ProviderContract):
        provider_class = AcmeProvider
        secret = "acme_secret"

It checks, for every built-in sample of the provider (or `sample_bodies`): a genuine signature
verifies, and a forged or tampered one is refused with `invalid_signature`, a missing one with
`missing_signature`, a stale one (if the scheme has a timestamp) with `stale_timestamp`; every
configured secret is tried; a refusal's message never contains the secret or the expected
signature; `parse` turns garbage into `PayloadError`, never another exception; `map` is
deterministic and returns valid Leads and Sales, or `[]`, or raises `Ignore`.

Our signer checked only against our verifier proves little: both can share one mistake. Where
the sender's SDK or docs give something independent, hand it to the contract —

- override `sign` to sign with the provider's SDK (`stripe.WebhookSignature`, `standardwebhooks`,
  `svix`) or with the recipe its docs give, written out in the test (never by stubbing `verify`);
- override `vectors()` to return published signed examples (`Vector(body, headers, secret,
  timestamp=...)`), which must verify (and `Provider.sign` must reproduce when it can);
- override `reference_verify` with the SDK's verifier when the SDK verifies but cannot sign:
  `Provider.sign`'s headers must pass it.

`test_signing_is_checked_independently` skips, saying so, when none of the three is given.
Sources authenticated by credentials set `forged_code`/`missing_code` to `invalid_credentials`.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from starlette.datastructures import Headers as StarletteHeaders

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Lead, Mapped, PaymentLink, ProviderEvent, Refund, Sale
from adapter.ingest import map_event, parse_events
from adapter.plugin import Provider, Source, SourceContext
from adapter.samples import SamplesMixin, samples_of
from adapter.settings import SourceSettings

__all__ = ["ProviderContract", "Vector", "make_source"]

_FOREVER = 10**10
"""A tolerance for published vectors, signed years ago."""


def make_source(provider: Provider, secrets: list[str], name: str = "test", **settings: Any) -> Source:
    """A `Source` for `provider` outside a config file (for tests)."""
    conf = SourceSettings(provider=provider.name, secrets=secrets, **settings)
    extras = dict(conf.model_extra or {})
    options = provider.settings_model.model_validate(extras) if provider.settings_model else None
    ctx = SourceContext(source=name, provider=provider.name, settings=conf, options=options)
    provider.configure(ctx)
    return Source(name=name, provider=provider, ctx=ctx, secrets=tuple(secrets))


@dataclass(frozen=True)
class Vector:
    """A published signing example: `headers` on `body` are genuine under `secret`.

    `timestamp` is when it was signed (Unix seconds), for schemes that `Provider.sign` can
    reproduce exactly; None when it cannot (a message id the sender chose, decoy signatures).
    `decoys` are other secrets configured beside it (rotation); `settings` are source settings
    the example needs (a `notification_url`, say), over the contract's `source_settings`.
    """

    body: bytes
    headers: Mapping[str, str]
    secret: str
    timestamp: int | None = None
    decoys: Sequence[str] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    where: str = ""
    """Where it is published (for the failure message)."""


class ProviderContract:
    """Behaviour every provider plugin must have. Set `provider_class` and `secret`."""

    provider_class: ClassVar[type[Provider]]
    secret: ClassVar[str] = "contract_secret_0123456789"
    other_secret: ClassVar[str] = "contract_other_secret_9876543210"
    source_settings: ClassVar[dict[str, Any]] = {}
    has_timestamp: ClassVar[bool] = True
    """False for schemes that sign only the body (no freshness check possible)."""
    sample_bodies: ClassVar[dict[str, bytes] | None] = None
    forged_code: ClassVar[str] = "invalid_signature"
    """The code of a forged or tampered delivery (`invalid_credentials` for credential sources)."""
    missing_code: ClassVar[str] = "missing_signature"
    """The code of a delivery without a signature (`invalid_credentials` for credential sources)."""

    # -- hooks a subclass may override ---------------------------------------------------

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        """Headers of a genuine delivery; defaults to `Provider.sign`."""
        return self.provider.sign(body, secret, timestamp, self.source().ctx)

    def extra_headers(self, name: str, body: bytes) -> dict[str, str]:
        provider = self.provider
        return provider.sample_headers(name, body) if isinstance(provider, SamplesMixin) else {}

    def vectors(self) -> Sequence[Vector]:
        """Published signing examples (see `Vector`); none by default."""
        return ()

    def reference_verify(self, body: bytes, headers: Mapping[str, str], secret: str) -> bool:
        """Whether the provider SDK's own verifier accepts `headers` on `body` under `secret`;
        override where the SDK can verify but not sign. NotImplementedError: there is none."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------

    @property
    def provider(self) -> Provider:
        """An instance configured with `source_settings`, as a running source would have it."""
        return self.source().provider

    def source(self, secrets: list[str] | None = None) -> Source:
        return make_source(self.provider_class(), secrets or [self.secret], **self.source_settings)

    def bodies(self) -> dict[str, bytes]:
        found = self.sample_bodies if self.sample_bodies is not None else samples_of(self.provider)
        assert found, f"{self.provider_class.__name__} has no samples to check"
        return found

    def headers(self, name: str, body: bytes, secret: str | None = None,
                timestamp: int | None = None) -> StarletteHeaders:
        ts = int(time.time()) if timestamp is None else timestamp
        signed = self.sign(body, secret or self.secret, ts)
        return StarletteHeaders({**self.extra_headers(name, body), **signed})

    def verify(self, body: bytes, headers: StarletteHeaders, secrets: list[str] | None = None) -> None:
        src = self.source(secrets)
        src.provider.verify(body, headers, src.secrets, src.ctx)

    def refused(self, body: bytes, headers: StarletteHeaders, secrets: list[str] | None = None) -> SignatureError:
        """The `SignatureError` verification raises; fails the test when it accepts instead."""
        with pytest.raises(SignatureError) as caught:
            self.verify(body, headers, secrets)
        return caught.value

    def vector_source(self, vector: Vector) -> Source:
        """A source configured with the vector's secrets and settings, tolerant of its age."""
        settings = {**self.source_settings, **vector.settings, "tolerance_s": _FOREVER}
        return make_source(self.provider_class(), [*vector.decoys, vector.secret], **settings)

    # -- the contract --------------------------------------------------------------------

    def test_name_is_an_entry_point_name(self) -> None:
        assert self.provider_class.name and self.provider_class.name.replace("_", "").isalnum()
        assert self.provider_class.name == self.provider_class.name.lower()

    def test_genuine_signature_verifies(self) -> None:
        for name, body in self.bodies().items():
            self.verify(body, self.headers(name, body))

    def test_forged_signature_is_rejected(self) -> None:
        for name, body in self.bodies().items():
            refusal = self.refused(body, self.headers(name, body, secret=self.other_secret))
            assert refusal.code == self.forged_code, f"{name}: {refusal.code}: {refusal.message}"

    def test_tampered_body_is_rejected(self) -> None:
        for name, body in self.bodies().items():
            headers = self.headers(name, body)
            tampered = body.replace(b"0", b"1", 1) if b"0" in body else body + b" "
            refusal = self.refused(tampered, headers)
            assert refusal.code == self.forged_code, f"{name}: {refusal.code}: {refusal.message}"

    def test_stale_timestamp_is_rejected(self) -> None:
        if not self.has_timestamp:
            pytest.skip("this scheme signs no timestamp")
        for name, body in self.bodies().items():
            with pytest.raises(SignatureError) as caught:
                self.verify(body, self.headers(name, body, timestamp=int(time.time()) - 86_400))
            assert caught.value.code == "stale_timestamp"

    def test_missing_signature_is_rejected(self) -> None:
        for name, body in self.bodies().items():
            refusal = self.refused(body, StarletteHeaders(self.extra_headers(name, body)))
            assert refusal.code == self.missing_code, f"{name}: {refusal.code}: {refusal.message}"

    def test_every_configured_secret_is_tried(self) -> None:
        for name, body in self.bodies().items():
            self.verify(body, self.headers(name, body), secrets=[self.other_secret, self.secret])

    def test_error_messages_never_contain_the_secret_or_the_expected_signature(self) -> None:
        for name, body in self.bodies().items():
            ts = int(time.time())
            refusal = self.refused(body, self.headers(name, body, secret=self.other_secret, timestamp=ts))
            assert self.secret not in str(refusal) and self.secret not in refusal.message
            expected = self.sign(body, self.secret, ts)  # what verification compared against
            for token in (t for value in expected.values() for t in re.split(r"[\s,;=|]+", value)):
                assert len(token) < 16 or token not in refusal.message, f"{name}: the message shows {token!r}"

    def test_published_vectors_verify_and_our_signer_reproduces_them(self) -> None:
        if not self.vectors():
            pytest.skip("no published signing example given (`vectors`)")
        for vector in self.vectors():
            src = self.vector_source(vector)
            headers = StarletteHeaders(dict(vector.headers))
            src.provider.verify(vector.body, headers, src.secrets, src.ctx)
            for body, secrets in ((vector.body + b" ", src.secrets), (vector.body, (self.other_secret,))):
                with pytest.raises(SignatureError) as caught:
                    src.provider.verify(body, headers, secrets, src.ctx)
                assert caught.value.code == self.forged_code, vector.where
            if vector.timestamp is not None:
                signed = src.provider.sign(vector.body, vector.secret, vector.timestamp, src.ctx)
                ours = {k.lower(): v for k, v in signed.items()}
                assert {k.lower(): ours.get(k.lower()) for k in vector.headers} == {
                    k.lower(): v for k, v in vector.headers.items()}, f"our signer differs from {vector.where}"

    def test_our_signatures_pass_the_reference_verifier(self) -> None:
        for name, body in self.bodies().items():
            src, ts = self.source(), int(time.time())
            try:
                accepted = self.reference_verify(body, src.provider.sign(body, self.secret, ts, src.ctx), self.secret)
            except NotImplementedError:
                pytest.skip("no reference verifier given (`reference_verify`)")
            assert accepted, f"{name}: the provider's own verifier refuses our signature"
            forged = src.provider.sign(body, self.other_secret, ts, src.ctx)
            assert not self.reference_verify(body, forged, self.secret), f"{name}: the reference accepts a forgery"

    def test_signing_is_checked_independently(self) -> None:
        """Passes when the contract signs with something other than `Provider.sign`, or has
        published vectors, or a reference verifier; otherwise skips, saying why."""
        own_signer = type(self).sign is ProviderContract.sign
        no_reference = type(self).reference_verify is ProviderContract.reference_verify
        if own_signer and not self.vectors() and no_reference:
            pytest.skip(f"{self.provider_class.__name__}.sign is only checked against its own verify: give the "
                        "contract the SDK's signer (`sign`), a published example (`vectors`) or the SDK's "
                        "verifier (`reference_verify`)")

    def test_garbage_is_a_payload_error(self) -> None:
        src = self.source()
        for garbage in (b"", b"not json", b"[]", b'{"unexpected": true}', b"\xff\xfe\x00", b"{" * 5000):
            with pytest.raises(PayloadError):
                events = parse_events(src, garbage, StarletteHeaders({}))
                for event in events:
                    map_event(src, event)
                assert events, "a delivery of no events is not garbage-proof"

    def test_map_is_deterministic_and_returns_conversions(self) -> None:
        src = self.source()
        for name, body in self.bodies().items():
            for event in parse_events(src, body, StarletteHeaders(self.extra_headers(name, body))):
                assert isinstance(event, ProviderEvent)
                first, second = self._outcome(src, event), self._outcome(src, event)
                assert first == second, f"{name}: map gave different answers for the same event"
                if isinstance(first, list):
                    assert all(isinstance(c, Lead | Sale | Refund | PaymentLink) for c in first)

    def test_mangled_payloads_are_payload_errors_not_crashes(self) -> None:
        src = self.source()
        for name, body in self.bodies().items():
            try:
                data = json.loads(body)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            for key in list(data):
                mangled = json.dumps({k: v for k, v in data.items() if k != key}).encode()
                headers = StarletteHeaders(self.extra_headers(name, mangled))
                with contextlib.suppress(PayloadError, Ignore):
                    for event in parse_events(src, mangled, headers):
                        map_event(src, event)

    @staticmethod
    def _outcome(src: Source, event: ProviderEvent) -> list[Mapped] | str:
        try:
            return map_event(src, event)
        except Ignore as exc:
            return f"ignored:{exc.reason}"
