"""SPEC §2 in the core: `map` says where identity lives, `apply_identity_keys` reads it."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from adapter.attribution import (
    DEFAULT_CLICK_ID_KEYS,
    DEFAULT_CUSTOMER_ID_KEYS,
    apply_identity_keys,
    first_key,
    from_client_reference,
)
from adapter.destinations.dub import MAX_ID, DubDestination
from adapter.events import Lead, Sale
from adapter.plugin import SourceContext, build_sources, load_providers
from adapter.records import Conversion
from adapter.settings import SourceSettings, TrackingSettings, parse_settings
from providers.stripe import StripeSettings

C = TypeVar("C", Lead, Sale)


def ctx(options: Any = None, **settings: Any) -> SourceContext:
    return SourceContext(source="shop", provider="acme", settings=SourceSettings(provider="acme", **settings),
                         options=options)


def keyed(conv: C, context: SourceContext) -> C:
    """What the core does after `map`: the source's key lists and prefix applied."""
    return apply_identity_keys(conv, context.settings, context.options)


def sale(**hints: Any) -> Sale:
    return Sale(amount=4900, currency="usd", invoice_id="in_1", **hints)


def ids(conv: Lead | Sale, context: SourceContext | None = None) -> tuple[str | None, str | None]:
    out = keyed(conv, context or ctx())
    return out.external_id, out.click_id


# -- key lists --------------------------------------------------------------------------------------


def test_the_first_key_in_key_order_wins_over_source_order() -> None:
    # `clickId` comes before `dub_id` in the key list, so the second object's clickId wins over
    # the first object's dub_id; for the customer id, `customerExternalId` beats `userId`.
    first = {"dub_id": "cl_late", "userId": "user_late"}
    second = {"clickId": "cl_first", "customerExternalId": "user_first"}
    assert ids(sale(metadata_sources=(first, second))) == ("user_first", "cl_first")


def test_within_one_key_the_earlier_source_wins() -> None:
    assert ids(sale(metadata_sources=({"userId": "user_a"}, {"userId": "user_b"}))) == ("user_a", None)


@pytest.mark.parametrize("key", DEFAULT_CLICK_ID_KEYS)
def test_every_default_click_key_in_camel_and_snake_case(key: str) -> None:
    assert ids(Lead(metadata_sources=({key: "cl_1"},))) == (None, "cl_1")


@pytest.mark.parametrize("key", DEFAULT_CUSTOMER_ID_KEYS)
def test_every_default_customer_key_in_camel_and_snake_case(key: str) -> None:
    assert ids(Lead(metadata_sources=({key: "user_1"},))) == ("user_1", None)


def test_keys_match_exactly() -> None:
    near_misses = {"ClickId": "x", "click-id": "x", "clickid": "x", "USER_ID": "x", "userid": "x"}
    assert ids(sale(metadata_sources=(near_misses,))) == (None, None)


def test_values_are_stripped_and_integers_kept_but_blanks_bools_and_objects_skipped() -> None:
    meta = {"clickId": "  ", "click_id": True, "dubClickId": {"id": "x"}, "dub_click_id": " cl_9 ", "userId": 42}
    assert ids(sale(metadata_sources=(meta,))) == ("42", "cl_9")


def test_key_lists_come_from_the_source() -> None:
    meta = {"ref": "cl_custom", "member": "m_7", "clickId": "cl_default", "userId": "user_default"}
    conv = sale(metadata_sources=(meta,))
    assert ids(conv, ctx(click_id_keys=["ref"], customer_id_keys=["member"])) == ("m_7", "cl_custom")
    assert ids(conv) == ("user_default", "cl_default")


def test_two_sources_of_one_provider_read_their_own_keys() -> None:
    raw = {"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
           "sources": {"eu": {"provider": "stripe", "secrets": ["whsec_a"], "click_id_keys": ["via"]},
                       "us": {"provider": "stripe", "secrets": ["whsec_b"]}}}
    sources = build_sources(parse_settings(raw), load_providers())
    conv = sale(metadata_sources=({"via": "cl_via", "clickId": "cl_std"},))
    assert keyed(conv, sources["eu"].ctx).click_id == "cl_via"
    assert keyed(conv, sources["us"].ctx).click_id == "cl_std"


# -- precedence ---------------------------------------------------------------------------------


def test_the_providers_own_fields_win_over_metadata_keys() -> None:
    meta = {"userId": "user_meta", "clickId": "cl_meta"}
    conv = sale(external_id="user_own", click_id="cl_own", metadata_sources=(meta,))
    assert ids(conv) == ("user_own", "cl_own")
    assert keyed(conv, ctx()) is conv  # nothing to fill: the same object back


def test_metadata_keys_win_over_the_client_reference() -> None:
    conv = sale(metadata_sources=({"clickId": "cl_meta", "userId": "user_meta"},), client_reference="dub_id_cl_ref")
    assert ids(conv) == ("user_meta", "cl_meta")
    plain = sale(metadata_sources=({"userId": "user_meta"},), client_reference="user_ref")
    assert ids(plain) == ("user_meta", None)


def test_landing_query_gives_a_click_id_but_never_a_customer_id() -> None:
    conv = sale(metadata_sources=({"dub_id": "cl_note"},), click_sources=({"clickId": "cl_url", "userId": "evil"},))
    assert ids(conv) == (None, "cl_url")  # key order across both kinds of source, as before
    assert ids(sale(click_sources=({"user_id": "someone_else"},))) == (None, None)


# -- client reference and its prefix ------------------------------------------------------------


def test_a_prefixed_client_reference_is_a_click_id_and_a_plain_one_the_user_id() -> None:
    assert ids(sale(client_reference="dub_id_cl_42")) == (None, "cl_42")
    assert ids(sale(client_reference="user_42")) == ("user_42", None)
    assert ids(sale(client_reference="dub_id_")) == ("dub_id_", None)  # nothing after the prefix


def test_a_click_reference_gives_only_a_click_id() -> None:
    assert ids(sale(click_reference="dub_id_cl_7")) == (None, "cl_7")
    assert ids(sale(click_reference="ORDER-1234")) == (None, None)


def test_the_prefix_is_a_setting_of_the_providers_with_a_client_reference() -> None:
    custom = ctx(StripeSettings(client_reference_prefix="ref_"))
    assert ids(sale(client_reference="ref_cl_1"), custom) == (None, "cl_1")
    assert ids(sale(client_reference="dub_id_cl_1"), custom) == ("dub_id_cl_1", None)
    assert ids(sale(client_reference="dub_id_cl_1"), ctx()) == (None, "cl_1")  # the default elsewhere


def test_client_reference_prefix_is_a_stripe_setting_not_every_sources() -> None:
    def build(provider: str, **extra: Any) -> Any:
        raw = {"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
               "sources": {"s": {"provider": provider, "secrets": ["whsec_a"], **extra}}}
        return build_sources(parse_settings(raw), load_providers())["s"]

    stripe = build("stripe", client_reference_prefix="ref_")
    assert ids(sale(client_reference="ref_cl_2"), stripe.ctx) == (None, "cl_2")
    from adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="client_reference_prefix"):
        build("paddle", client_reference_prefix="ref_")


# -- shapes -------------------------------------------------------------------------------------


def test_non_mapping_metadata_is_dropped() -> None:
    # Razorpay sends empty notes as `[]`; other providers send null or a string.
    conv = sale(metadata_sources=([], None, "userId=x", {"userId": "user_1"}))  # type: ignore[arg-type]
    assert conv.metadata_sources == ({"userId": "user_1"},)
    assert ids(conv) == ("user_1", None)
    assert sale(metadata_sources=[]).metadata_sources == ()  # type: ignore[arg-type]


def test_a_long_id_is_kept_for_the_destination_to_judge() -> None:
    """A verified Sale is never refused for a long buyer string: the destination's check
    decides (Dub skips a customerExternalId over its limit with the rule as the reason)."""
    long_id = "u" * 601
    assert keyed(sale(metadata_sources=({"userId": long_id},)), ctx()).external_id == long_id
    dub = DubDestination(TrackingSettings(url="http://127.0.0.1:9", api_key="dub_test"))
    record = Conversion(kind="sale", source="s", provider="stripe", event_name="Purchase", occurred_at=0,
                        customer_external_id=long_id, amount=100, currency="usd", invoice_id="in_1")
    [problem] = dub.check(record)
    assert problem.action == "skip" and str(MAX_ID) in problem.rule


def test_everything_else_on_the_conversion_is_kept() -> None:
    conv = Sale(amount=12, currency="JPY", invoice_id="in_9", kind="subscription", subscription_id="sub_1",
                email="a@b.co", phone="+15550100", name="Ada", provider_customer_id="cus_1",
                metadata={"taxAmount": 1}, metadata_sources=({"userId": "user_1"},))
    out = keyed(conv, ctx())
    assert out.model_dump(exclude={"external_id"}) == conv.model_dump(exclude={"external_id"})
    assert out.external_id == "user_1"


def test_first_key_and_from_client_reference() -> None:
    assert first_key(["a", "b"], None, [], {"b": "2"}, {"a": "1"}) == "1"  # type: ignore[arg-type]
    assert first_key(["a"], {"a": ""}) is None
    assert from_client_reference("dub_id_x ", "dub_id_") == "x"
    assert from_client_reference("x", "") is None
    assert from_client_reference(7, "dub_id_") is None
