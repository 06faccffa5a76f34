"""The plugin author's tests: hooktrack's contract suite plus the mapping."""

from __future__ import annotations

import hashlib
import hmac
import json

from hooktrack_acmepay import AcmePayProvider

from adapter.ingest import map_event
from adapter.testing import ProviderContract, make_source


class TestAcmePayContract(ProviderContract):
    provider_class = AcmePayProvider
    secret = "acme_test_secret"

    def sign(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        """AcmePay's documented recipe, written out here so that the contract does not check the
        declared scheme against itself (with a real processor: its SDK's signer or docs' example)."""
        mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Acme-Signature": f"t={timestamp},v1={mac}"}


def test_paid_payment_is_a_sale_without_tax() -> None:
    provider = AcmePayProvider()
    src = make_source(provider, ["acme_test_secret"])
    body = provider.sample("payment.paid", unique="1", now=1775824496)
    # map_event is what hooktrack runs: the provider's map, then the source's id keys applied.
    [sale] = map_event(src, provider.parse(body, {}))
    assert (sale.amount, sale.currency, sale.invoice_id) == (4410, "eur", "pay_1")
    assert (sale.external_id, sale.click_id) == ("user_42", "cl_acme")
    assert json.loads(body)["id"] == "evt_1"
