"""Test kit for provider plugins: subclass `ProviderContract` in your plugin's tests.

    from adapter.testing import ProviderContract
    from hooktrack_acme import AcmeProvider

    class TestAcmeContract(ProviderContract):
        provider_class = AcmeProvider
        secret = "acme_secret"

It checks, for every built-in sample of the provider (or `sample_bodies`): a genuine signature
verifies, and a forged, tampered, stale (if the scheme has a timestamp) or missing one is
refused with `SignatureError`; every configured secret is tried; `parse` turns garbage into
`PayloadError`, never another exception; `map` is deterministic and returns valid Leads and
Sales, or `[]`, or raises `Ignore`. Override `sign` when `Provider.sign` is not available
(sign with the provider's SDK or your own helper, never by stubbing `verify`).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, ClassVar

import pytest
from starlette.datastructures import Headers as StarletteHeaders

from adapter.errors import Ignore, PayloadError, SignatureError
from adapter.events import Lead, ProviderEvent, Sale
from adapter.ingest import map_event, parse_event
from adapter.plugin import Provider, Source, SourceContext
from adapter.samples import SamplesMixin, samples_of
from adapter.settings import SourceSettings

__all__ = ["ProviderContract", "make_source"]


def make_source(provider: Provider, secrets: list[str], name: str = "test", **settings: Any) -> Source:
    """A `Source` for `provider` outside a config file (for tests)."""
    conf = SourceSettings(provider=provider.name, secrets=secrets, **settings)
    extras = dict(conf.model_extra or {})
    options = provider.settings_model.model_validate(extras) if provider.settings_model else None
    ctx = SourceContext(source=name, provider=provider.name, settings=conf, options=options)
    provider.configure(ctx)
    return Source(name=name, provider=provider, ctx=ctx, secrets=tuple(secrets))


class ProviderContract:
    """Behaviour every provider plugin must have. Set `provider_class` and `secret`."""

    provider_class: ClassVar[type[Provider]]
    secret: ClassVar[str] = "contract_secret_0123456789"
    other_secret: ClassVar[str] = "contract_other_secret_9876543210"
    source_settings: ClassVar[dict[str, Any]] = {}
    has_timestamp: ClassVar[bool] = True
    """False for schemes that sign only the body (no freshness check possible)."""
    sample_bodies: ClassVar[dict[str, bytes] | None] = None

    # -- hooks a subclass may override ---------------------------------------------------

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        """Headers of a genuine delivery; defaults to `Provider.sign`."""
        return self.provider.sign(body, secret, timestamp, self.source().ctx)

    def extra_headers(self, name: str, body: bytes) -> dict[str, str]:
        provider = self.provider
        return provider.sample_headers(name, body) if isinstance(provider, SamplesMixin) else {}

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

    # -- the contract --------------------------------------------------------------------

    def test_name_is_an_entry_point_name(self) -> None:
        assert self.provider_class.name and self.provider_class.name.replace("_", "").isalnum()
        assert self.provider_class.name == self.provider_class.name.lower()

    def test_genuine_signature_verifies(self) -> None:
        for name, body in self.bodies().items():
            self.verify(body, self.headers(name, body))

    def test_forged_signature_is_rejected(self) -> None:
        for name, body in self.bodies().items():
            with pytest.raises(SignatureError):
                self.verify(body, self.headers(name, body, secret=self.other_secret))

    def test_tampered_body_is_rejected(self) -> None:
        for name, body in self.bodies().items():
            headers = self.headers(name, body)
            tampered = body.replace(b"0", b"1", 1) if b"0" in body else body + b" "
            with pytest.raises(SignatureError):
                self.verify(tampered, headers)

    def test_stale_timestamp_is_rejected(self) -> None:
        if not self.has_timestamp:
            pytest.skip("this scheme signs no timestamp")
        for name, body in self.bodies().items():
            with pytest.raises(SignatureError) as caught:
                self.verify(body, self.headers(name, body, timestamp=int(time.time()) - 86_400))
            assert caught.value.code == "stale_timestamp"

    def test_missing_signature_is_rejected(self) -> None:
        for name, body in self.bodies().items():
            with pytest.raises(SignatureError):
                self.verify(body, StarletteHeaders(self.extra_headers(name, body)))

    def test_every_configured_secret_is_tried(self) -> None:
        for name, body in self.bodies().items():
            self.verify(body, self.headers(name, body), secrets=[self.other_secret, self.secret])

    def test_error_messages_never_contain_the_secret(self) -> None:
        for name, body in self.bodies().items():
            try:
                self.verify(body + b" ", self.headers(name, body))
            except SignatureError as exc:
                assert self.secret not in str(exc)

    def test_garbage_is_a_payload_error(self) -> None:
        src = self.source()
        for garbage in (b"", b"not json", b"[]", b'{"unexpected": true}', b"\xff\xfe\x00", b"{" * 5000):
            with pytest.raises(PayloadError):
                map_event(src, parse_event(src, garbage, StarletteHeaders({})))

    def test_map_is_deterministic_and_returns_conversions(self) -> None:
        src = self.source()
        for name, body in self.bodies().items():
            event = parse_event(src, body, StarletteHeaders(self.extra_headers(name, body)))
            assert isinstance(event, ProviderEvent)
            first, second = self._outcome(src, event), self._outcome(src, event)
            assert first == second, f"{name}: map gave different answers for the same event"
            if isinstance(first, list):
                assert all(isinstance(c, Lead | Sale) for c in first)

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
                    map_event(src, parse_event(src, mangled, headers))

    @staticmethod
    def _outcome(src: Source, event: ProviderEvent) -> list[Lead | Sale] | str:
        try:
            return map_event(src, event)
        except Ignore as exc:
            return f"ignored:{exc.reason}"
