"""App Store Server Notifications V2: Apple's own verifier, unpatched, against a chain built here."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from starlette.datastructures import Headers

from adapter.cli import main
from adapter.errors import ConfigError, Ignore, PayloadError, SignatureError
from adapter.events import Lead, Refund, Sale
from adapter.plugin import Source
from adapter.samples import post_sample
from adapter.testing import make_source
from providers.appstore import AppStoreProvider
from providers.appstore_chain import Chain
from tests.conftest import fixture, sent_once, wait_for
from tests.providers.flow import mapped, one
from tests.reliability.sources import tamper

CHAIN = Chain.build()
SETTINGS = {"root_certificates": [CHAIN.root_pem()], "bundle_id": "com.example.app", "environment": "Sandbox"}


def source(**changes: Any) -> Any:
    return make_source(AppStoreProvider(), [], name="appstore", **{**SETTINGS, **changes})


def verify(body: bytes, **changes: Any) -> None:
    src = source(**changes)
    src.provider.verify(body, Headers({}), src.secrets, src.ctx)


def refused(body: bytes, **changes: Any) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(body, **changes)
    return caught.value


def notification(name: str = "SUBSCRIBED", **txn: Any) -> dict[str, Any]:
    event = fixture("appstore", name)
    event["data"]["transactionInfo"].update(txn)
    return event


# -- verification ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SUBSCRIBED", "DID_RENEW", "ONE_TIME_CHARGE"])
def test_genuine_notifications_verify(name: str) -> None:
    verify(CHAIN.body(fixture("appstore", name)))


def test_a_root_given_as_a_der_or_pem_file_path_verifies(tmp_path: Path) -> None:
    der, pem = tmp_path / "AppleRootCA-G3.cer", tmp_path / "root.pem"
    der.write_bytes(CHAIN.root.public_bytes(serialization.Encoding.DER))
    pem.write_text(CHAIN.root_pem())
    for path in (der, pem):
        verify(CHAIN.body(notification()), root_certificates=[str(path)])


def test_a_chain_from_another_root_is_refused() -> None:
    other = Chain.build("Other")
    err = refused(other.body(notification()))
    assert err.code == "invalid_signature"
    # with both roots configured (a rotation), both verify
    verify(other.body(notification()), root_certificates=[CHAIN.root_pem(), other.root_pem()])


def test_a_forged_body_is_refused() -> None:
    """A genuine header and signature around another payload (an amount changed, say)."""
    body = json.loads(CHAIN.body(notification()))
    header, _payload, signature = body["signedPayload"].split(".")
    other_payload = CHAIN.jws({**fixture("appstore", "DID_RENEW"), "data": {}}).split(".")[1]
    tampered = json.dumps({"signedPayload": f"{header}.{other_payload}.{signature}"}).encode()
    assert refused(tampered).code == "invalid_signature"


def test_a_forged_nested_transaction_is_refused() -> None:
    """The outer JWS is genuine but its signedTransactionInfo is signed by a key of another chain."""
    other = Chain.build("Other")
    event = notification()
    event["data"]["signedTransactionInfo"] = other.jws(event["data"].pop("transactionInfo"))
    assert refused(CHAIN.body(event)).code == "invalid_signature"


def test_a_leaf_without_apples_oid_is_refused() -> None:
    plain = Chain.build("NoOid", leaf_oid=False)
    assert refused(plain.body(notification()), root_certificates=[plain.root_pem()]).code == "invalid_signature"


def test_other_bundle_or_environment_is_refused() -> None:
    body = CHAIN.body(notification())
    assert refused(body, bundle_id="com.example.other").code == "invalid_signature"
    assert refused(body, environment="Production", app_apple_id=1234567890).code == "invalid_signature"


def test_no_signed_payload_is_a_missing_signature() -> None:
    assert refused(b'{"hello": 1}').code == "missing_signature"
    assert refused(b"not json").code == "missing_signature"


def test_production_needs_app_apple_id_and_verification_skipping_environments_are_refused(make_client: Any) -> None:
    with pytest.raises(ConfigError, match="app_apple_id"):
        make_client(sources={"appstore": {"provider": "appstore", **SETTINGS, "environment": "Production"}})
    with pytest.raises(ConfigError, match="environment"):
        make_client(sources={"appstore": {"provider": "appstore", **SETTINGS, "environment": "Xcode"}})
    with pytest.raises(ConfigError, match="root_certificates"):
        make_client(sources={"appstore": {"provider": "appstore", **SETTINGS, "root_certificates": ["/nope.cer"]}})


# -- mapping ------------------------------------------------------------------------------------


def conv(event: dict[str, Any]) -> Any:
    return one(source(), CHAIN.body(event))


def test_paid_subscribed_is_a_subscription_creation_in_exact_minor_units() -> None:
    sale = conv(notification())
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.amount, sale.gross_amount, sale.currency) == ("subscription", 499, 499, "usd")
    assert sale.starts_subscription is True
    assert (sale.invoice_id, sale.subscription_id) == ("2000000812345678", "2000000812345678")
    assert sale.external_id == "7f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f"


@pytest.mark.parametrize(("price", "currency", "minor"), [(4990, "USD", 499), (120000, "JPY", 120),
                                                          (1234, "KWD", 1234), (990, "EUR", 99)])
def test_milli_units_become_the_currencys_minor_units(price: int, currency: str, minor: int) -> None:
    sale = conv(notification("ONE_TIME_CHARGE", price=price, currency=currency))
    assert isinstance(sale, Sale) and (sale.kind, sale.amount) == ("purchase", minor)


def test_a_price_that_is_not_whole_minor_units_is_malformed() -> None:
    with pytest.raises(PayloadError):
        conv(notification("ONE_TIME_CHARGE", price=4995))


def test_renewal_names_and_payment_refs() -> None:
    sale = conv(fixture("appstore", "DID_RENEW"))
    assert isinstance(sale, Sale) and sale.starts_subscription is False
    assert sale.invoice_id == "2000000823456789" and sale.payment_refs == ("2000000812345678",)


def test_free_trial_is_a_started_trial_lead_and_its_first_renewal_the_creation(make_flow: Any) -> None:
    trial = notification(price=0, offerType=1, offerDiscountType="FREE_TRIAL")
    lead = conv(trial)
    assert isinstance(lead, Lead) and lead.kind == "started_trial"
    flow = make_flow(AppStoreProvider(), [], lambda body: {}, **SETTINGS)
    flow.receive(CHAIN.body(trial), {})
    flow.receive(CHAIN.body(fixture("appstore", "DID_RENEW")), {})
    names = [s.event_name for s in flow.stored()]
    assert names[-1] == "Subscription creation", names


def test_refund_reverses_the_transaction() -> None:
    event = notification(revocationDate=1775900000000, revocationReason=0)
    event["notificationType"] = "REFUND"
    [refund] = mapped(source(), CHAIN.body(event))
    assert isinstance(refund, Refund) and refund.reverses == ("2000000812345678",) and refund.amount is None
    event["data"]["transactionInfo"]["revocationPercentage"] = 50000
    [half] = mapped(source(), CHAIN.body(event))
    assert isinstance(half, Refund) and (half.amount, half.currency, half.includes_tax) == (249, "usd", True)


def test_untracked_types_and_zero_renewals() -> None:
    event = notification()
    event["notificationType"] = "DID_CHANGE_RENEWAL_STATUS"
    assert mapped(source(), CHAIN.body(event)) == []
    renewal = fixture("appstore", "DID_RENEW")
    renewal["data"]["transactionInfo"]["price"] = 0
    with pytest.raises(Ignore):
        conv(renewal)


# -- end to end -----------------------------------------------------------------------------------


def test_a_subscription_reaches_dub_as_apple_end_to_end(make_client: Any, receiver: Any) -> None:
    client = make_client(sources={"appstore": {"provider": "appstore", **SETTINGS}})
    r = client.post("/webhooks/appstore", content=CHAIN.body(notification()),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    sale = sent_once(receiver)
    assert sale.body["paymentProcessor"] == "apple" and sale.body["invoiceId"] == "2000000812345678"
    assert (sale.body["amount"], sale.body["currency"]) == (499, "usd")
    assert sale.body["eventName"] == "Subscription creation"
    forged = client.post("/webhooks/appstore", content=Chain.build("X").body(notification()))
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_signature"


# -- signed samples (`hooktrack providers appstore --test-secrets`, `hooktrack send`) --------------

USER = "7f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f"  # the samples' appAccountToken


def throwaway_source() -> dict[str, Any]:
    """The `[sources.appstore]` table `hooktrack providers appstore --test-secrets` prints."""
    result = CliRunner().invoke(main, ["providers", "appstore", "--test-secrets"])
    assert result.exit_code == 0 and "# note:" not in result.output, result.output
    table: dict[str, Any] = tomllib.loads(result.output)["sources"]["appstore"]
    return table


def served(make_client: Any, **sources: dict[str, Any]) -> tuple[Any, dict[str, Source]]:
    client = make_client(sources=sources)
    return client, client.app.state.sources


def test_test_secrets_make_every_sample_a_counted_sale_or_trial_lead(make_client: Any, receiver: Any) -> None:
    table = throwaway_source()
    assert table["environment"] == "Sandbox" and "secrets" not in table
    client, sources = served(make_client, appstore=table)
    receiver.track_lead(receiver.workspace(receiver.api_key),  # the app tracked its user's sign-up
                        {"clickId": "cl_app", "eventName": "Sign up", "customerExternalId": USER, "mode": "wait"})
    src = sources["appstore"]
    names = sorted(src.provider.samples())
    assert names == ["DID_RENEW", "ONE_TIME_CHARGE", "SUBSCRIBED", "SUBSCRIBED+trial"]
    for name in names:
        answer = post_sample(src, name, "http://testserver", client=client)
        assert answer.status_code == 200, (name, answer.text)
        if name == "SUBSCRIBED+trial":  # a Started Trial lead; Dub tracks a lead only with a click id
            [lead] = mapped(src, src.provider.sample(name, unique="probe", now=int(time.time())))
            assert isinstance(lead, Lead) and lead.kind == "started_trial" and lead.external_id == USER
            assert answer.json() == {**answer.json(), "status": "ignored", "reason": "no_click_id"}
        else:
            assert answer.json()["status"] == "accepted", (name, answer.text)
    wait_for(lambda: len(receiver.counted_sales()) == 3, timeout=10)
    sales = receiver.counted_sales()
    assert {s.payment_processor for s in sales} == {"apple"}
    assert sorted(s.amount for s in sales) == [199, 499, 499]
    assert [(r.kind, r.status) for r in receiver.requests if r.status >= 400] == []


def test_a_signed_sample_is_apples_shape_and_fresh_every_send() -> None:
    src = source(**{k: v for k, v in throwaway_source().items() if k != "provider"})
    bodies = [src.provider.sample("SUBSCRIBED", unique=u, now=int(time.time())) for u in ("a1b2c3", "d4e5f6")]
    decoded = [src.provider.parse(body, Headers({})) for body in bodies]
    for body in bodies:
        verify(body, **{k: v for k, v in src.ctx.settings.model_extra.items() if k != "provider"})
        assert list(json.loads(body)) == ["signedPayload"]
    first, second = decoded
    assert first.id != second.id
    assert first.data["transaction"]["transactionId"] != second.data["transaction"]["transactionId"]
    assert abs(first.occurred_at.timestamp() - time.time()) < 5
    signed = first.data["notification"]["data"]
    assert signed["signedTransactionInfo"].count(".") == 2 and signed["signedRenewalInfo"].count(".") == 2
    assert "transactionInfo" not in signed


def test_a_sample_signed_by_another_chain_or_tampered_is_refused(make_client: Any, receiver: Any) -> None:
    mine, other = throwaway_source(), throwaway_source()
    client, sources = served(make_client, appstore=mine, other=other)
    forged = sources["other"].provider.sample("SUBSCRIBED", unique="feed01", now=int(time.time()))
    answer = client.post("/webhooks/appstore", content=forged, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_signature", answer.text
    genuine = sources["appstore"].provider.sample("ONE_TIME_CHARGE", unique="feed02", now=int(time.time()))
    answer = client.post("/webhooks/appstore", content=tamper(genuine), headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_signature", answer.text
    answer = client.post("/webhooks/appstore", content=genuine, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text


def test_without_a_sample_signing_key_send_says_what_to_do_instead(make_client: Any) -> None:
    _client, sources = served(make_client, appstore={"provider": "appstore", **SETTINGS})
    with pytest.raises(ConfigError, match=r"cannot sign App Store samples.*--test-secrets"):
        post_sample(sources["appstore"], "SUBSCRIBED", "http://testserver")


def signing_refused(make_client: Any, key: str, **changes: Any) -> str:
    conf = {"provider": "appstore", **SETTINGS, "sample_signing_key": key, **changes}
    with pytest.raises(ConfigError, match="sample_signing_key") as caught:
        make_client(sources={"appstore": conf})
    return str(caught.value)


def test_a_sample_signing_key_that_could_only_produce_400s_stops_the_start(make_client: Any) -> None:
    """Refused at startup: not a key and two certificates, a key not the leaf's, a chain under
    another root (every send would be a 400), a leaf without Apple's OID, a Production source."""
    other, plain = Chain.build("Other"), Chain.build("NoOid", leaf_oid=False)
    assert "two certificates" in signing_refused(make_client, "not a pem")
    assert "two certificates" in signing_refused(make_client, CHAIN.root_pem())
    wrong_key = other.signing_pem().split("-----BEGIN CERTIFICATE-----")[0] + CHAIN.signing_pem().split(
        "-----END PRIVATE KEY-----\n")[1]
    assert "not the first certificate's" in signing_refused(make_client, wrong_key)
    assert "not issued by any of root_certificates" in signing_refused(make_client, other.signing_pem())
    assert "VERIFICATION_FAILURE" in signing_refused(make_client, plain.signing_pem(),
                                                     root_certificates=[plain.root_pem()])
    assert "Sandbox" in signing_refused(make_client, CHAIN.signing_pem(), environment="Production",
                                        app_apple_id=1234567890)
    expired = Chain.build("Old", days_back=30, days_ahead=-1)
    assert "VERIFICATION_FAILURE" in signing_refused(make_client, expired.signing_pem(),
                                                     root_certificates=[expired.root_pem()])


def test_the_sample_signing_key_signs_for_the_sources_bundle_id(make_client: Any) -> None:
    conf = {"provider": "appstore", **SETTINGS, "bundle_id": "com.acme.other", "sample_signing_key": CHAIN.signing_pem()}
    client, sources = served(make_client, appstore=conf)
    answer = post_sample(sources["appstore"], "DID_RENEW", "http://testserver", client=client)
    assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
