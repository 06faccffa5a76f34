"""Every installed provider as a configured source, discovered at collection time.

Providers are added as plugins all the time, so the reliability suites never list them: they
iterate `load_providers()` and configure each as a source the way a user who runs `hooktrack
providers NAME --test-secrets` does: the provider's own `test_source()` settings (its secret's
shape, HTTP Basic credentials, ...), plus, for the settings it cannot make up (a notification
URL, rules, a seller id), the suite's values (`_extra_settings`), as a user fills in the
printed placeholders. A provider whose `test_source()` raises `NotImplementedError` (it cannot
sign its samples) gets one dummy secret and the extras; one whose required settings we cannot
guess is skipped with the validation message. What a provider's scheme covers — a signed
timestamp, a signed body — is found out by signing, not declared. Deliveries are signed with
the source's own first secret.

`CASES` counts the generated cases that ran, per suite and provider, for the closing note
(printed by the terminal summary hook in `conftest.py`).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, settings
from starlette.datastructures import Headers as StarletteHeaders
from starlette.testclient import TestClient

from adapter.app import create_app
from adapter.errors import ConfigError
from adapter.plugin import Provider, Source, build_sources, load_providers
from adapter.samples import SamplesMixin
from adapter.settings import parse_settings

# `whsec_` + base64 of 32 bytes: valid for Standard Webhooks / Svix and usable as a plain
# HMAC key by every other scheme; the secret of a provider without `test_source()` settings.
SECRET = "whsec_" + base64.b64encode(b"hooktrack-reliability-secret-32b").decode()
BASIC_AUTH = "hooktrack:reliability-password"

FUZZ = settings(
    database=None,  # no example database on disk; a failure prints its reproduction blob
    deadline=None,  # a request includes a durable SQLite commit: timing varies on CI
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
"""Base Hypothesis settings of the suites; tests set `max_examples` on top."""

EXAMPLES = int(os.environ.get("HOOKTRACK_FUZZ_EXAMPLES", settings.default.max_examples))
"""Hypothesis examples per provider and property: the profile's (tests/conftest.py: 50 by
default, 500 with `HYPOTHESIS_PROFILE=thorough`) unless `HOOKTRACK_FUZZ_EXAMPLES` says."""

CASES: Counter[tuple[str, str]] = Counter()
"""(suite, provider) -> number of generated cases that ran."""
NOTES: list[str] = []
"""Figures the suites report at the end of the run (crash cycles, repeats)."""


# Dodo Payments' rules (the README's Standard Webhooks section), matching the built-in samples.
_DODO_SALE = {"event_type": "payment.succeeded", "kind": "sale", "amount": "data.total_amount", "tax": "data.tax",
              "currency": "data.currency", "invoice_id": "data.payment_id", "email": "data.customer.email",
              "provider_customer_id": "data.customer.customer_id",
              "metadata_paths": ["data.metadata", "data.customer.metadata"]}
_DODO_RULES = [
    {**_DODO_SALE, "condition": "data.subscription_id == null"},
    {**_DODO_SALE, "condition": "data.subscription_id != null", "sale_kind": "subscription",
     "subscription_id": "data.subscription_id"},
]


def _generic_settings() -> dict[str, Any]:
    """The README's worked Checkout.com config for the generic provider (less provider/secrets)."""
    import tomllib

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("### Any other processor: the generic provider", 1)[1].split("```toml\n", 1)[1]
    source = tomllib.loads(block.split("```", 1)[0])["sources"]["checkout"]
    return {k: v for k, v in source.items() if k not in ("provider", "secrets")}


def _extra_settings(name: str) -> dict[str, Any]:
    """Provider settings (SPEC §8) that a provider's `test_source()` cannot make up."""
    extras: dict[str, dict[str, Any]] = {
        "standardwebhooks": {"rules": _DODO_RULES},
        "square": {"notification_url": "https://hooks.example.com/webhooks/square"},
        "chargebee": {"basic_auth": [BASIC_AUTH]},
        "gumroad": {"seller_id": "u9Lx3nP2qW7tYb4kZr1Fcg=="},  # the seller of the built-in samples
        "braintree": {"merchant_id": "reliability_merchant", "public_key": "reliability_public",
                      "private_key": "reliability_private", "environment": "sandbox"},
    }
    if name == "generic":
        return _generic_settings()
    return extras.get(name, {})


@dataclass(frozen=True)
class Candidate:
    """One installed provider and the source config that serves it (or why it cannot)."""

    name: str
    source_config: dict[str, Any]
    skip: str | None = None


def _test_source(cls: type[Provider]) -> dict[str, Any] | None:
    """What `hooktrack providers NAME --test-secrets` prints (less `provider`); None when the
    provider has no samples or cannot sign them (`NotImplementedError`)."""
    provider = cls()
    if not isinstance(provider, SamplesMixin):
        return None
    try:
        return provider.test_source()
    except NotImplementedError:
        return None


def candidates() -> list[Candidate]:
    """Every installed provider, configured as a source named after it."""
    found = []
    for name, cls in load_providers().items():
        own = _test_source(cls)
        conf: dict[str, Any] = {"provider": name, **_extra_settings(name),
                                **(own if own is not None else {"secrets": [SECRET]})}
        skip = None
        try:
            build_sources(parse_settings({"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
                                          "sources": {name: conf}}), {name: cls})
        except ConfigError as exc:
            skip = f"cannot configure provider {name!r} without settings this suite does not know: {exc}"
        found.append(Candidate(name, conf, skip))
    return found


def provider_params() -> list[Any]:
    """`pytest.param`s over `candidates()`, skipped with the reason where unconfigurable."""
    return [pytest.param(c, id=c.name, marks=[pytest.mark.skip(reason=c.skip)] if c.skip else [])
            for c in candidates()]


def settings_for(tmp_path: Path, tracking_url: str, candidate: Candidate, **overrides: Any) -> Any:
    """Settings of a hooktrack serving only `candidate`'s source, on SQLite in `tmp_path`."""
    raw: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp_path / 'hooktrack.db'}"},
        "tracking": {"url": tracking_url, "api_key": "test_key", "timeout_s": 2},
        "forwarder": {"base_delay_s": 0.05, "max_delay_s": 0.2, "poll_interval_s": 0.05, "fill_window_s": 0},
        "sources": {candidate.name: candidate.source_config},
    }
    for key, value in overrides.items():
        raw.setdefault(key, {}).update(value)
    return parse_settings(raw)


def start_client(tmp_path: Path, tracking_url: str, candidate: Candidate, **overrides: Any) -> TestClient:
    """A running hooktrack (forwarder included) for `candidate`; exceptions become 500s, as on
    a real server, so a test sees what a provider would see. Close it with `__exit__`."""
    app = create_app(settings_for(tmp_path, tracking_url, candidate, **overrides), registry=load_providers())
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    return client


def source_of(client: TestClient, candidate: Candidate) -> Source:
    source: Source = client.app.state.sources[candidate.name]  # type: ignore[attr-defined]
    return source


class Delivery:
    """Builds genuine deliveries of a source's samples, as `hooktrack send` does.

    A delivery's credentials are the headers `Provider.sign` returns plus, for sources
    authenticated by a URL token, the query a provider's optional `sample_query(secret)`
    returns; some schemes carry the signature inside the body: the one `sample()` builds
    (Braintree), or one `sign_sample(body, secret)` adds (Adyen's item HMAC). The secret is the
    source's first. `outcome(response)` is hooktrack's answer to a delivery, also for a provider
    that answers in its own format (Adyen's `[accepted]`).
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.provider: Provider = source.provider
        self.samples = sorted(self.provider.samples())
        self.secret = source.secrets[0] if source.secrets else ""
        self._n = 0
        self._answers: list[dict[str, Any]] = []
        own_answer = self.provider.answer

        def recorded(outcome: Mapping[str, Any]) -> Any:  # observed, then answered as the provider does
            self._answers.append(dict(outcome))
            return own_answer(outcome)

        self.provider.answer = recorded  # type: ignore[method-assign]

    def outcome(self, response: Any) -> dict[str, Any]:
        """hooktrack's JSON answer to the delivery `response` answers: its body, or, where the
        provider answers in its own format, the answer it was given to turn into that."""
        if response.headers.get("content-type", "").startswith("application/json"):
            answer: dict[str, Any] = response.json()
            return answer
        assert self._answers, f"{self.source.name} answered {response.text!r} for no outcome"
        return self._answers[-1]

    def body(self, sample: str | None = None, now: int | None = None) -> tuple[str, bytes]:
        """A fresh (unique id, current time) body of `sample`, or of the next sample in turn."""
        self._n += 1
        name = sample or self.samples[self._n % len(self.samples)]
        # A hex token, as `hooktrack send` passes (some providers build numeric ids from it).
        body = self.provider.sample(name, unique=secrets.token_hex(8), now=now or int(time.time()))
        sign_sample = getattr(self.provider, "sign_sample", None)
        return name, sign_sample(body, self.secret) if callable(sign_sample) else body

    def sign(self, body: bytes, timestamp: int, secret: str | None = None) -> dict[str, str]:
        return self.provider.sign(body, self.secret if secret is None else secret, timestamp, self.source.ctx)

    def query(self, secret: str | None = None) -> dict[str, str]:
        """The URL query a genuine delivery carries (a URL token), usually none."""
        sample_query = getattr(self.provider, "sample_query", None)
        return dict(sample_query(self.secret if secret is None else secret)) if callable(sample_query) else {}

    def path(self, query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None) -> str:
        """`/webhooks/{source}`, with `query` (default: a genuine delivery's) when it has one."""
        query = self.query() if query is None else query
        return f"/webhooks/{self.source.name}" + (f"?{urlencode(query)}" if query else "")

    def headers(self, sample: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Signature headers, the sample's extra headers and a JSON content type."""
        signed = self.sign(body, int(time.time()) if timestamp is None else timestamp)
        return {"Content-Type": "application/json", **self.provider.sample_headers(sample, body), **signed}

    def can_sign(self) -> bool:
        """Samples exist and this source can sign them (some need keys we do not have)."""
        if not self.samples:
            return False
        try:
            self.headers(*self.body())
        except Exception:  # NotImplementedError, or a provider missing settings to sign with
            return False
        return True

    def signs_timestamp(self) -> bool:
        """The scheme carries a timestamp: an old signing time shows up in the headers."""
        old = int(time.time()) - 123_457
        return any(str(old) in v for v in self.sign(self.body(now=old)[1], old).values())

    def signs_body(self) -> bool:
        """A genuine delivery with one character of its body changed no longer verifies (as
        opposed to credentials that authenticate the sender only: a URL token, HTTP Basic)."""
        name, body = self.body()
        return not self.verifies(tamper(body), self.headers(name, body), self.query())

    def verifies(self, body: bytes, headers: Mapping[str, str] | Sequence[tuple[bytes, bytes]],
                 query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None) -> bool:
        """Whether the provider itself accepts this delivery: the oracle for garbled ones.
        Raw header pairs keep duplicates, as on the wire; a repeated query name keeps its last
        value, as the app's `request.query_params` does."""
        from adapter.errors import SignatureError

        # A mapping is sent as UTF-8 bytes (a sample header can carry a mangled body's text,
        # Lemon Squeezy's X-Event-Name), which the app reads back as Latin-1: do the same here.
        pairs = list(headers) if not isinstance(headers, Mapping) else [
            (k.lower().encode(), v.encode()) for k, v in headers.items()]
        wire = StarletteHeaders(raw=pairs)
        ctx = replace(self.source.ctx, query=dict(query or {}))
        try:
            self.provider.verify(body, wire, self.source.secrets, ctx)
        except SignatureError:
            return False
        return True


def signed_headers(delivery: Delivery, sample: str, body: bytes) -> dict[str, str]:
    """`delivery.headers`, or only the sample's own headers where the provider cannot sign
    this body (a Braintree body whose in-body signature field was mangled away)."""
    try:
        return delivery.headers(sample, body)
    except Exception:
        return {"Content-Type": "application/json", **delivery.provider.sample_headers(sample, body)}


def tamper(body: bytes) -> bytes:
    """`body` with the letter or digit nearest its middle changed (an amount, an id, a byte of
    a base64 payload)."""
    middle = len(body) // 2
    for i in sorted(range(len(body)), key=lambda i: abs(i - middle)):
        char = chr(body[i])
        if char.isascii() and char.isalnum():
            swapped = {"0": "1", "z": "y", "Z": "Y", "9": "8"}.get(char, chr(body[i] + 1))
            return body[:i] + swapped.encode() + body[i + 1:]
    return body + b" "


KEY_LOCATORS = {"paypal": {"PAYPAL-CERT-URL"}}
"""Headers that say where the verification key is, not what was signed: with the pinned
certificate `--test-secrets` gives, any URL on PayPal's allow-list finds the same key, so a
garbled one that stays on the allow-list still verifies (one off it is refused: test_paypal)."""


def signature_tokens(value: str) -> list[str]:
    """The long tokens (hex, base64) of a header value: its signature material."""
    return [t for t in re.split(r"[^A-Za-z0-9+/=_-]+", value) if len(t) >= 16]


def store_counts(db: Path) -> dict[str, int]:
    """What the SQLite store holds that only verified input may produce."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {
            "events_with_body": conn.execute("SELECT COUNT(*) FROM events WHERE body IS NOT NULL").fetchone()[0],
            "events_not_rejected": conn.execute(
                "SELECT COUNT(*) FROM events WHERE status != 'rejected'").fetchone()[0],
            "conversions": conn.execute("SELECT COUNT(*) FROM conversions").fetchone()[0],
            "rejected": conn.execute("SELECT COUNT(*) FROM events WHERE status = 'rejected'").fetchone()[0],
            "rejected_with_body": conn.execute(
                "SELECT COUNT(*) FROM events WHERE status = 'rejected' AND body IS NOT NULL").fetchone()[0],
        }
    finally:
        conn.close()


REFUSED = {"missing_signature", "invalid_signature", "stale_timestamp", "invalid_credentials", "body_too_large"}
"""Error codes of input refused before it was trusted (`malformed_payload` means it verified)."""


def assert_refused(response: Any) -> None:
    """A 4xx that says the input was not trusted."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if response.headers.get("content-type", "").startswith("application/json"):
        code = response.json().get("error", {}).get("code")
        assert code in REFUSED, f"unverified input got past verification: {code}"


def assert_nothing_kept(client: TestClient, db: Path, receiver: Any) -> None:
    """The process is up; no body, event or conversion was stored and nothing was forwarded."""
    assert client.get("/healthz").status_code == 200
    time.sleep(0.3)  # a conversion, had one been stored, would be forwarded by now
    counts = store_counts(db)
    assert counts["events_with_body"] == counts["events_not_rejected"] == counts["conversions"] == 0, counts
    assert receiver.requests == []
