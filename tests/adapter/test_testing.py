"""The contract kit can fail: `ProviderContract` run against deliberately broken providers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from adapter.errors import SignatureError
from adapter.events import Lead, ProviderEvent, Sale
from adapter.plugin import Headers, Provider, SourceContext
from adapter.signing import BodyHmac
from adapter.testing import ProviderContract, Vector

BODY = b'{"id": "evt_1", "type": "payment.paid", "amount": 4900}'


class Sound(Provider):
    """A correct provider: body HMAC, hex, `X-Signature`."""

    name = "sound"
    scheme = BodyHmac(header="X-Signature")

    def parse(self, body: bytes, headers: Headers) -> ProviderEvent:
        raise NotImplementedError

    def map(self, event: ProviderEvent, ctx: SourceContext) -> list[Lead | Sale]:
        return []


class AcceptsAnything(Sound):
    name = "acceptsanything"

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        return None


class OneCodeForAll(Sound):
    name = "onecodeforall"

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        try:
            super().verify(body, headers, secrets, ctx)
        except SignatureError:
            raise SignatureError("stale_timestamp", "something went wrong") from None


class ShowsTheExpectedSignature(Sound):
    name = "showstheexpectedsignature"

    def verify(self, body: bytes, headers: Headers, secrets: Sequence[str], ctx: SourceContext) -> None:
        try:
            super().verify(body, headers, secrets, ctx)
        except SignatureError as exc:
            expected = self.scheme.sign(body, secrets[0]) if self.scheme else {}
            raise SignatureError(exc.code, f"{exc.message}; expected {expected['X-Signature']}") from None


def kit(provider: type[Provider], **attributes: Any) -> ProviderContract:
    contract = type("Kit", (ProviderContract,), {"provider_class": provider, "sample_bodies": {"paid": BODY},
                                                 "has_timestamp": False, **attributes})
    return contract()  # type: ignore[no-any-return]


def test_a_sound_provider_passes_the_signature_checks() -> None:
    contract = kit(Sound)
    contract.test_forged_signature_is_rejected()
    contract.test_missing_signature_is_rejected()
    contract.test_error_messages_never_contain_the_secret_or_the_expected_signature()


def test_the_secret_in_message_check_fails_when_verification_accepts() -> None:
    with pytest.raises(pytest.fail.Exception):
        kit(AcceptsAnything).test_error_messages_never_contain_the_secret_or_the_expected_signature()


@pytest.mark.parametrize("check", ["test_forged_signature_is_rejected", "test_tampered_body_is_rejected",
                                   "test_missing_signature_is_rejected"])
def test_refusals_with_the_wrong_code_fail_the_contract(check: str) -> None:
    with pytest.raises(AssertionError, match="stale_timestamp"):
        getattr(kit(OneCodeForAll), check)()


def test_a_message_showing_the_expected_signature_fails_the_contract() -> None:
    with pytest.raises(AssertionError, match="the message shows"):
        kit(ShowsTheExpectedSignature).test_error_messages_never_contain_the_secret_or_the_expected_signature()


def test_a_published_vector_our_scheme_disagrees_with_fails_the_contract() -> None:
    # RFC 4231 test case 2 is HMAC-SHA256; a provider declaring SHA-512 must not pass it.
    vector = Vector(b"what do ya want for nothing?", {"X-Signature": "5bdcc146bf60754e6a042426089575c75a003f089d2739"
                                                                      "839dec58b964ec3843"}, "Jefe", timestamp=0)
    kit(Sound, vectors=lambda self: [vector]).test_published_vectors_verify_and_our_signer_reproduces_them()

    class Sha512(Sound):
        name = "sha512"
        scheme = BodyHmac(header="X-Signature", digest="sha512")

    with pytest.raises(SignatureError):
        kit(Sha512, vectors=lambda self: [vector]).test_published_vectors_verify_and_our_signer_reproduces_them()


def test_a_contract_with_only_our_own_signer_says_so() -> None:
    with pytest.raises(pytest.skip.Exception, match="only checked against its own verify"):
        kit(Sound).test_signing_is_checked_independently()
