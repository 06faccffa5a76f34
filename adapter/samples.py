"""Built-in sample events: what `hooktrack send`, `hooktrack demo` and the contract tests post.

A provider that ships samples inherits `SamplesMixin` beside `Provider`:

    class AcmeProvider(SamplesMixin, Provider):
        name = "acme"

and keeps its sample bodies in `samples/<name>/*.json` next to its module (the one set of
sample payloads: the demo, `send` and the tests all read them). `post_sample` renders one fresh
(a new delivery id and time, so sending it twice is two deliveries), signs it with the source's
secret and POSTs it. Serving webhooks needs none of this: a provider without the mixin simply
has no samples.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any, ClassVar

from adapter.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from adapter.plugin import Source

__all__ = ["SamplesMixin", "post_sample", "samples_of"]


class SamplesMixin:
    """Sample events for a provider: `samples()` by name, `sample()` made fresh, and the unsigned
    headers and query a genuine delivery of one carries."""

    name: ClassVar[str]
    samples_package: ClassVar[str | None] = None
    """Package holding `samples/<name>/*.json`; defaults to the provider class's package."""

    def samples(self) -> dict[str, bytes]:
        """Built-in sample bodies by sample name (usually the event type)."""
        module = type(self).__module__
        package = self.samples_package or module.rpartition(".")[0] or module
        folder = files(package).joinpath("samples", self.name)
        if not folder.is_dir():
            return {}
        return {
            entry.name.removesuffix(".json"): entry.read_bytes()
            for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".json")
        }

    def sample(self, name: str, *, unique: str, now: int) -> bytes:
        """Sample `name` made fresh: `refresh_sample` gives it a new delivery id and time, so
        sending it twice is two deliveries. Raises `KeyError` for an unknown sample."""
        body = self.samples()[name]
        data = json.loads(body)
        self.refresh_sample(data, unique, now)
        return json.dumps(data).encode()

    def refresh_sample(self, data: dict[str, Any], unique: str, now: int) -> None:
        """Give a parsed sample a fresh delivery id and timestamp (in place); no-op by default."""

    def sample_headers(self, sample: str, body: bytes) -> dict[str, str]:
        """Extra unsigned headers a sample needs (a topic header, a form Content-Type, ...);
        none by default (samples are sent as JSON)."""
        return {}

    def sign_sample(self, body: bytes, secret: str) -> bytes:
        """The sample as a genuine delivery carries it, for senders that sign fields inside the
        body (Adyen's item HMAC); the body unchanged by default."""
        return body

    def sample_query(self, secret: str) -> dict[str, str]:
        """Query parameters a genuine delivery's URL carries (a URL token); none by default."""
        return {}

    def test_source(self) -> dict[str, Any]:
        """Throwaway source settings (less `provider`) that the built-in samples are signed
        with, for `hooktrack providers NAME --test-secrets`: by default one fresh `whsec_` +
        base64 secret (a Standard Webhooks secret, and a plain HMAC key for every other scheme).
        Raises `NotImplementedError` (with why) when hooktrack cannot sign this provider's
        webhooks with anything a config can hold."""
        return {"secrets": ["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()]}


def samples_of(provider: object) -> dict[str, bytes]:
    """The provider's built-in samples; `{}` for a provider without `SamplesMixin`."""
    return provider.samples() if isinstance(provider, SamplesMixin) else {}


def post_sample(src: Source, sample: str, base_url: str, *, secret: str | None = None,
                client: httpx.Client | None = None) -> httpx.Response:
    """Render, sign and POST one sample to `{base_url}/webhooks/{source}`; `secret` overrides
    the source's (to forge one). Raises `ConfigError` when the provider has no samples or
    hooktrack cannot sign its webhooks for this source."""
    import httpx

    provider = src.provider
    if not isinstance(provider, SamplesMixin):
        raise ConfigError(f"{src.ctx.provider} has no built-in samples")
    now = int(time.time())
    body = provider.sample(sample, unique=secrets.token_hex(8), now=now)
    key = secret or (src.secrets[0] if src.secrets else "")
    body = provider.sign_sample(body, key)
    try:
        headers = src.provider.sign(body, key, now, src.ctx)
    except NotImplementedError as exc:
        raise ConfigError(str(exc)) from None
    except Exception as exc:  # a provider that needs settings this source lacks (a private key, ...)
        raise ConfigError(f"hooktrack cannot sign {src.ctx.provider} webhooks for {src.name}: {exc}") from None
    headers = {"Content-Type": "application/json", **headers, **provider.sample_headers(sample, body)}
    query = provider.sample_query(key)
    http = client or httpx.Client(timeout=10)
    try:
        return http.post(f"{base_url}/webhooks/{src.name}", content=body, headers=headers, params=query)
    finally:
        if client is None:
            http.close()
