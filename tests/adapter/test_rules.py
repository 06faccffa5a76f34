"""The rules engine: config validation at startup, exact amounts, conditions, hints."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from adapter.attribution import apply_identity_keys
from adapter.errors import ConfigError, Ignore, PayloadError
from adapter.events import Lead, Sale
from adapter.plugin import SourceContext, build_sources, load_providers
from adapter.rules import Condition, Rule, apply_rules, resolve
from adapter.settings import SourceSettings, parse_settings

SALE: dict[str, Any] = {
    "event_type": "order.paid", "kind": "sale",
    "amount": "data.total", "currency": "data.currency", "invoice_id": "data.id",
}
LEAD: dict[str, Any] = {"event_type": "user.created", "kind": "lead", "email": "data.email"}


def ctx(**settings: Any) -> SourceContext:
    return SourceContext(source="shop", provider="generic", settings=SourceSettings(provider="generic", **settings))


def keyed(conv: Lead | Sale, context: SourceContext) -> Lead | Sale:
    """What the core does after `map`: the source's key lists applied."""
    return apply_identity_keys(conv, context.settings, context.options)


def rules(*tables: dict[str, Any]) -> list[Rule]:
    return [Rule.model_validate(t) for t in tables]


def order(**data: Any) -> dict[str, Any]:
    return {"type": "order.paid", "data": {"id": "ord_1", "total": 4900, "currency": "USD", **data}}


def build(*tables: dict[str, Any], **extra: Any) -> Any:
    raw = {"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
           "sources": {"dodo": {"provider": "standardwebhooks", "secrets": ["whsec_AAAA"],
                                "rules": list(tables), **extra}}}
    return build_sources(parse_settings(raw), load_providers())


# -- configuration --------------------------------------------------------------------------------


def test_valid_rules_load_from_the_config_with_parsed_conditions() -> None:
    sources = build({**SALE, "condition": 'data.status == "paid"', "tax": "data.tax",
                     "metadata_paths": ["data.metadata"]},
                    {**LEAD, "lead_kind": "started_trial", "condition": ["data.trial != null", "data.n == 2"]})
    first, second = sources["dodo"].ctx.options.rules
    assert first.condition == (Condition(path="data.status", op="==", value="paid"),)
    assert first.sale_kind == "purchase" and first.amount_format == "minor"
    assert second.condition == (Condition(path="data.trial", op="!=", value=None),
                                Condition(path="data.n", op="==", value=2))
    assert second.lead_kind == "started_trial"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({**SALE, "ammount": "data.total"}, "rules.0.ammount"),
        ({**SALE, "kind": "refund"}, "rules.0.kind"),
        ({**SALE, "sale_kind": "renewal"}, "rules.0.sale_kind"),
        ({**SALE, "amount_format": "cents"}, "rules.0.amount_format"),
        ({**SALE, "amount": "data..total"}, "rules.0.amount"),
        ({**SALE, "currency": "data currency"}, "rules.0.currency"),
        ({**SALE, "metadata_paths": ["data.metadata", ""]}, "rules.0.metadata_paths.1"),
        ({**SALE, "event_type": ""}, "rules.0.event_type"),
        ({**SALE, "condition": "data.status = paid"}, "rules.0.condition"),
        ({**SALE, "condition": "data.status == paid"}, "rules.0.condition"),
        ({**SALE, "condition": 'data.status == {"a": 1}'}, "rules.0.condition"),
        ({**SALE, "condition": ['data.status == "paid"', "data.n >= 2"]}, "rules.0.condition"),
        ({**SALE, "condition": 3}, "rules.0.condition"),
    ],
)
def test_each_invalid_rule_fails_at_startup_naming_its_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(table)
    assert "sources.dodo" in str(caught.value) and key in str(caught.value)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({k: v for k, v in SALE.items() if k != "invoice_id"}, ["rules.0", "invoice_id"]),
        ({k: v for k, v in SALE.items() if k not in ("amount", "currency")}, ["rules.0", "amount, currency"]),
        ({**SALE, "sale_kind": "subscription"}, ["rules.0", "subscription_id"]),
        ({**LEAD, "amount": "data.total"}, ["rules.0", "amount", "kind = \"lead\""]),
        ({**LEAD, "sale_kind": "purchase"}, ["rules.0", "sale_kind"]),
        ({**SALE, "lead_kind": "sign_up"}, ["rules.0", "lead_kind"]),
    ],
)
def test_rules_that_do_not_fit_their_kind_fail_naming_the_key(table: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        build(SALE, table)
    message = str(caught.value).replace("rules.1", "rules.0")
    assert all(w in message for w in words), message


def test_a_source_without_rules_fails_at_startup() -> None:
    with pytest.raises(ConfigError, match=r"sources\.dodo: rules"):
        build()
    raw = {"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
           "sources": {"dodo": {"provider": "standardwebhooks", "secrets": ["whsec_AAAA"]}}}
    with pytest.raises(ConfigError, match=r"sources\.dodo: rules"):
        build_sources(parse_settings(raw), load_providers())


def test_rules_are_read_from_toml_arrays_of_tables(tmp_path: Any) -> None:
    from adapter.settings import load_settings

    path = tmp_path / "hooktrack.toml"
    path.write_text(
        '[tracking]\nurl = "http://127.0.0.1:9"\napi_key = "k"\n'
        '[sources.dodo]\nprovider = "standardwebhooks"\nsecrets = ["whsec_AAAA"]\n'
        '[[sources.dodo.rules]]\nevent_type = "payment.succeeded"\nkind = "sale"\n'
        "condition = 'data.subscription_id == null'\n"
        'amount = "data.total_amount"\ncurrency = "data.currency"\ninvoice_id = "data.payment_id"\n'
        '[[sources.dodo.rules]]\nevent_type = "customer.created"\nkind = "lead"\nemail = "data.email"\n'
    )
    sources = build_sources(load_settings(path), load_providers())
    assert [r.kind for r in sources["dodo"].ctx.options.rules] == ["sale", "lead"]


# -- amounts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "total", "currency", "expected"),
    [
        ("minor", 4900, "USD", 4900),
        ("minor", "4900", "usd", 4900),
        ("minor", 5000, "JPY", 5000),
        ("decimal", "49.00", "USD", 4900),
        ("decimal", "49.99", "usd", 4999),
        ("decimal", Decimal("49.99"), "usd", 4999),  # a JSON number, read exactly (json_object)
        ("decimal", 49, "usd", 4900),
        ("decimal", "5000", "JPY", 5000),
        ("decimal", "1.234", "KWD", 1234),
        ("decimal", "0.1", "usd", 10),
    ],
)
def test_minor_and_decimal_amounts_are_exact(fmt: str, total: Any, currency: str, expected: int) -> None:
    [sale] = apply_rules(rules({**SALE, "amount_format": fmt}), "order.paid", order(total=total, currency=currency))
    assert isinstance(sale, Sale)
    assert (sale.amount, sale.currency) == (expected, currency.lower())


@pytest.mark.parametrize(
    ("fmt", "total", "currency"),
    [
        ("minor", "49.00", "usd"),   # decimal text where minor units were promised
        ("minor", "4900.0", "usd"),
        ("minor", True, "usd"),
        ("decimal", "49.999", "usd"),  # would have to round
        ("decimal", "12.5", "jpy"),
        ("decimal", "forty-nine", "usd"),
        ("decimal", {"value": 49}, "usd"),
        ("minor", -100, "usd"),
        ("minor", Decimal("4999.99"), "usd"),  # a fraction of a minor unit
        ("decimal", 49.99, "usd"),  # a float has already been rounded: never money
        ("decimal", "\u0664\u0669", "usd"),  # Arabic-Indic digits
        ("decimal", False, "usd"),
        ("decimal", "-49.00", "usd"),
    ],
)
def test_amounts_that_cannot_be_exact_are_payload_errors(fmt: str, total: Any, currency: str) -> None:
    with pytest.raises(PayloadError):
        apply_rules(rules({**SALE, "amount_format": fmt}), "order.paid", order(total=total, currency=currency))


@pytest.mark.parametrize(
    ("fmt", "total", "tax", "expected", "tax_minor"),
    [("minor", 5880, 980, 4900, 980), ("decimal", "58.80", "9.80", 4900, 980), ("minor", 4900, None, 4900, 0)],
)
def test_tax_included_in_the_amount_is_taken_out(fmt: str, total: Any, tax: Any, expected: int,
                                                 tax_minor: int) -> None:
    table = {**SALE, "amount_format": fmt, "tax": "data.tax"}
    [sale] = apply_rules(rules(table), "order.paid", order(total=total, tax=tax))
    assert isinstance(sale, Sale)
    assert (sale.amount, sale.metadata["taxAmount"]) == (expected, tax_minor)


def test_zero_and_impossible_amounts() -> None:
    with pytest.raises(Ignore) as caught:
        apply_rules(rules({**SALE, "tax": "data.tax"}), "order.paid", order(total=500, tax=500))
    assert caught.value.reason == "zero_amount"
    with pytest.raises(PayloadError):
        apply_rules(rules({**SALE, "tax": "data.tax"}), "order.paid", order(total=500, tax=600))


@pytest.mark.parametrize("missing", ["total", "currency", "id"])
def test_a_missing_required_path_is_a_payload_error_naming_it(missing: str) -> None:
    event = order()
    del event["data"][missing]
    with pytest.raises(PayloadError, match=rf"data\.{missing}"):
        apply_rules(rules(SALE), "order.paid", event)


def test_a_subscription_sale_needs_its_subscription_id() -> None:
    table = {**SALE, "sale_kind": "subscription", "subscription_id": "data.subscription"}
    [sale] = apply_rules(rules(table), "order.paid", order(subscription="sub_1"))
    assert isinstance(sale, Sale)
    assert (sale.kind, sale.subscription_id, sale.metadata["subscriptionId"]) == ("subscription", "sub_1", "sub_1")
    with pytest.raises(PayloadError, match=r"data\.subscription"):
        apply_rules(rules(table), "order.paid", order())


# -- conditions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "data", "holds"),
    [
        ('data.status == "paid"', {"status": "paid"}, True),
        ('data.status == "paid"', {"status": "open"}, False),
        ('data.status != "paid"', {"status": "open"}, True),
        ("data.subscription == null", {}, True),  # an absent path compares as null
        ("data.subscription == null", {"subscription": None}, True),
        ("data.subscription != null", {"subscription": "sub_1"}, True),
        ("data.paid == true", {"paid": True}, True),
        ("data.paid == true", {"paid": 1}, False),  # JSON true is not the number 1
        ("data.count == 0", {"count": 0.0}, True),
        ("data.count == 0", {"count": False}, False),
        ('data.items.1.sku == "b"', {"items": [{"sku": "a"}, {"sku": "b"}]}, True),
        ('data.items.5.sku == "b"', {"items": [{"sku": "a"}]}, False),
        ('  data.status=="paid"  ', {"status": "paid"}, True),
    ],
)
def test_conditions_compare_a_path_with_a_json_literal(condition: str, data: dict[str, Any], holds: bool) -> None:
    assert Condition.parse(condition).holds({"data": data}) is holds


def test_a_tracked_type_whose_condition_fails_is_ignored_and_other_types_are_not_tracked() -> None:
    paid_only = rules({**SALE, "condition": 'data.status == "paid"'})
    assert len(apply_rules(paid_only, "order.paid", order(status="paid"))) == 1
    with pytest.raises(Ignore) as caught:
        apply_rules(paid_only, "order.paid", order(status="pending"))
    assert caught.value.reason == "condition_not_met"
    assert apply_rules(paid_only, "order.refunded", order(status="paid")) == []


def test_every_condition_of_a_list_must_hold() -> None:
    both = rules({**SALE, "condition": ['data.status == "paid"', "data.test == false"]})
    assert apply_rules(both, "order.paid", order(status="paid", test=False))
    with pytest.raises(Ignore):
        apply_rules(both, "order.paid", order(status="paid", test=True))


def test_conditions_pick_between_rules_of_one_type_and_several_rules_can_apply() -> None:
    table = rules(
        {**SALE, "condition": "data.subscription == null"},
        {**SALE, "sale_kind": "subscription", "subscription_id": "data.subscription",
         "condition": "data.subscription != null"},
        {"event_type": "order.paid", "kind": "lead", "email": "data.email", "condition": "data.first == true"},
    )
    [one_time] = apply_rules(table, "order.paid", order())
    assert isinstance(one_time, Sale) and one_time.kind == "purchase"
    sale, lead = apply_rules(table, "order.paid", order(subscription="sub_9", first=True, email="a@b.co"))
    assert isinstance(sale, Sale) and sale.kind == "subscription"
    assert isinstance(lead, Lead) and lead.email == "a@b.co" and lead.kind == "sign_up"


# -- identity hints -------------------------------------------------------------------------------


def test_hints_come_from_paths_and_from_metadata_keys() -> None:
    table = {**SALE, "email": "data.customer.email", "name": "data.customer.name",
             "provider_customer_id": "data.customer.id", "metadata_paths": ["data.metadata", "data.customer.metadata"]}
    event = order(customer={"id": "cus_1", "email": " ada@example.com ", "name": "Ada",
                            "metadata": {"userId": "user_42", "clickId": "cl_late"}},
                  metadata={"dub_click_id": "cl_1"})
    [sale] = apply_rules(rules(table), "order.paid", event)
    assert (sale.email, sale.name, sale.provider_customer_id) == ("ada@example.com", "Ada", "cus_1")
    assert (sale.external_id, sale.click_id) == (None, None)  # the rules say where; the core reads the keys
    sale = keyed(sale, ctx())
    assert (sale.external_id, sale.click_id) == ("user_42", "cl_late")  # key order first, then path order


def test_explicit_paths_win_over_metadata_and_keys_follow_the_source_settings() -> None:
    table = {**SALE, "external_id": "data.user", "click_id": "data.ref", "metadata_paths": ["data.metadata"]}
    event = order(user=42, ref="cl_direct", metadata={"userId": "user_meta", "clickId": "cl_meta", "via": "cl_custom"})
    [sale] = apply_rules(rules(table), "order.paid", event)
    assert (keyed(sale, ctx()).external_id, keyed(sale, ctx()).click_id) == ("42", "cl_direct")
    [custom] = apply_rules(rules({**SALE, "metadata_paths": ["data.metadata"]}), "order.paid", event)
    custom = keyed(custom, ctx(click_id_keys=["via"], customer_id_keys=["nobody"]))
    assert (custom.external_id, custom.click_id) == (None, "cl_custom")


def test_absent_optional_hints_are_none_but_wrong_shapes_are_payload_errors() -> None:
    [lead] = apply_rules(rules(LEAD), "user.created", {"data": {}})
    assert isinstance(lead, Lead) and lead.email is None
    with pytest.raises(PayloadError, match=r"data\.email"):
        apply_rules(rules(LEAD), "user.created", {"data": {"email": {"primary": "x@y.z"}}})


def test_resolve_walks_objects_and_lists() -> None:
    data = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert resolve(data, "a.b.1.c") == 2
    assert resolve(data, "a.b.x") is None
    assert resolve(data, "a.z.c") is None
    assert resolve(data, "a.b.1.c.d") is None
