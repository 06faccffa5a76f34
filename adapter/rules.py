"""Config-driven mapping of JSON webhook events to Leads and Sales: the `rules` source setting.

A provider that cannot know in advance which of a sender's events count (Standard Webhooks
senders, the generic provider) lets the merchant say it in `hooktrack.toml`, one table per rule:

    [[sources.dodo.rules]]
    event_type = "payment.succeeded"        # exact event type string
    kind = "sale"                           # "lead" | "sale"
    sale_kind = "purchase"                  # purchase | subscription | subscription_update
    condition = 'data.subscription_id == null'
    amount = "data.total_amount"            # dotted JSON paths from the body's root ...
    amount_format = "minor"                 # "minor": an integer of minor units; "decimal": "49.00"
    tax = "data.tax"                        # ... the tax included in `amount`, taken out of it
    currency = "data.currency"
    invoice_id = "data.payment_id"
    email = "data.customer.email"
    metadata_paths = ["data.metadata"]      # where the core looks for click_id_keys / customer_id_keys

A path is dot-separated keys; a segment of digits indexes a list (`data.items.0.price`).
A condition is `PATH == LITERAL` or `PATH != LITERAL` with a JSON literal (`"paid"`, `0`, `true`,
`null`); a path that is absent compares as `null`. `condition` may be a list: all must hold.
Everything is validated when the config is loaded, so a typo fails at startup naming its key
(`sources.dodo: rules.0.condition: ...`).

`apply_rules(rules, event_type, data)` is the whole runtime: every rule of the event's type
whose condition holds gives one conversion, in rule order. No rule for the type → `[]`
(`event_type_not_tracked`); rules for it but no condition met → `Ignore("condition_not_met")`;
only Sales of 0 → `Ignore("zero_amount")`; a required path missing (a Sale's amount, currency,
invoice id, a subscription Sale's subscription id) or a value of the wrong shape → `PayloadError`.
A provider's `settings_model` subclasses `RuleSet` to get the validated `rules` setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from adapter.errors import Ignore, PayloadError
from adapter.events import Lead, LeadKind, Sale, SaleKind
from adapter.money import normalize_currency, to_minor
from adapter.payload import decimal, integer, json_value

__all__ = ["Condition", "JsonPath", "Rule", "RuleSet", "apply_rules", "resolve"]

_PATH = re.compile(r"[^.\s]+(?:\.[^.\s]+)*")
_CONDITION = re.compile(r"\s*(?P<path>[^\s=!]+)\s*(?P<op>==|!=)\s*(?P<literal>.+?)\s*")
_SALE_ONLY = ("sale_kind", "amount", "amount_format", "tax", "currency", "invoice_id", "subscription_id")
Scalar = str | int | Decimal | bool | None


def _check_path(path: str) -> str:
    if not _PATH.fullmatch(path):
        raise ValueError(f"{path!r} is not a dotted JSON path like 'data.total_amount'")
    return path


JsonPath = Annotated[str, AfterValidator(_check_path)]
"""A dotted path into the JSON body, checked when the config is loaded."""

_MISSING: Any = object()


def resolve(data: Any, path: str) -> Any:
    """The value at dotted `path` in `data`, or None when any segment is absent."""
    value = data
    for key in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(key, _MISSING)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
        if value is _MISSING:
            return None
    return value


def _same(left: Any, right: Scalar) -> bool:
    """JSON equality: `true` is not `1`, `1` is `1.0`."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


class Condition(BaseModel):
    """`PATH == LITERAL` or `PATH != LITERAL`, parsed once from the config text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: JsonPath
    op: Literal["==", "!="]
    value: Scalar

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Parse `'data.status == "paid"'`; raises `ValueError` naming what is wrong."""
        match = _CONDITION.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not `PATH == LITERAL` or `PATH != LITERAL`")
        literal = match["literal"]
        try:
            value = json_value(literal)  # a number as the body's are read: `0.1` is exactly 0.1
        except ValueError:
            raise ValueError(f"{literal!r} is not a JSON literal (quote strings: \"paid\")") from None
        if isinstance(value, dict | list):
            raise ValueError(f"{literal!r}: compare with a string, number, true, false or null")
        return cls.model_validate({"path": _check_path(match["path"]), "op": match["op"], "value": value})

    def holds(self, data: Any) -> bool:
        """Whether the condition is true of the parsed body `data`."""
        equal = _same(resolve(data, self.path), self.value)
        return equal if self.op == "==" else not equal


def _conditions(value: Any) -> Any:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("condition is a string or a list of strings")
    return tuple(Condition.parse(c) if isinstance(c, str) else c for c in items)


class Rule(BaseModel):
    """One `[[sources.NAME.rules]]` table: which events become which conversion, from where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: str = Field(min_length=1)
    kind: Literal["lead", "sale"]
    lead_kind: LeadKind = "sign_up"
    sale_kind: SaleKind = "purchase"
    condition: Annotated[tuple[Condition, ...], BeforeValidator(_conditions)] = ()
    amount: JsonPath | None = None
    amount_format: Literal["minor", "decimal"] = "minor"
    tax: JsonPath | None = None
    currency: JsonPath | None = None
    invoice_id: JsonPath | None = None
    subscription_id: JsonPath | None = None
    email: JsonPath | None = None
    name: JsonPath | None = None
    provider_customer_id: JsonPath | None = None
    external_id: JsonPath | None = None
    click_id: JsonPath | None = None
    metadata_paths: tuple[JsonPath, ...] = ()

    @model_validator(mode="after")
    def _fits_kind(self) -> Rule:
        if self.kind == "lead":
            stray = [k for k in _SALE_ONLY if k in self.model_fields_set]
            if stray:
                raise ValueError(f"sale-only setting(s) on a kind = \"lead\" rule: {', '.join(stray)}")
            return self
        if "lead_kind" in self.model_fields_set:
            raise ValueError('lead_kind only applies to kind = "lead"')
        needed = ["amount", "currency", "invoice_id"]
        if self.sale_kind != "purchase":
            needed.append("subscription_id")
        missing = [k for k in needed if getattr(self, k) is None]
        if missing:
            raise ValueError(f"a {self.sale_kind} sale rule needs {', '.join(missing)} (dotted paths)")
        return self

    def applies(self, event_type: str, data: Any) -> bool:
        """Whether this rule is for `event_type` and every condition holds."""
        return self.event_type == event_type and all(c.holds(data) for c in self.condition)

    def convert(self, data: Mapping[str, Any]) -> Lead | Sale:
        """The conversion this rule makes of `data`; raises `PayloadError` or `Ignore`.

        `external_id` / `click_id` paths are the sender's own fields for them; the objects at
        `metadata_paths` are where the core reads the source's key lists (after those fields)."""
        hints: dict[str, Any] = {
            "email": self._text(data, "email"),
            "name": self._text(data, "name"),
            "provider_customer_id": self._text(data, "provider_customer_id"),
            "external_id": self._text(data, "external_id"),
            "click_id": self._text(data, "click_id"),
            "metadata_sources": tuple(resolve(data, p) for p in self.metadata_paths),
        }
        if self.kind == "lead":
            return Lead(kind=self.lead_kind, **hints)
        return self._sale(data, hints)

    def _sale(self, data: Mapping[str, Any], hints: dict[str, Any]) -> Sale:
        try:
            currency = normalize_currency(self._need(data, "currency"))
        except ValueError as exc:
            raise PayloadError(f"{self.currency}: {exc}") from None
        gross = self._money(data, self.amount, currency, required=True)
        tax = self._money(data, self.tax, currency, required=False)
        if gross < 0 or tax < 0 or tax > gross:
            raise PayloadError(f"{self.event_type}: amount {gross} and tax {tax} are not a paid sale")
        if gross - tax == 0:
            raise Ignore("zero_amount")
        subscription = (self._text(data, "subscription_id") if self.sale_kind == "purchase"
                        else self._need(data, "subscription_id"))
        metadata: dict[str, Any] = {"taxAmount": tax} if self.tax else {}
        if subscription:
            metadata["subscriptionId"] = subscription
        return Sale(
            kind=self.sale_kind, amount=gross - tax, currency=currency,
            invoice_id=self._need(data, "invoice_id"), subscription_id=subscription,
            metadata=metadata, **hints,
        )

    def _text(self, data: Mapping[str, Any], field: str) -> str | None:
        path: str | None = getattr(self, field)
        value = resolve(data, path) if path else None
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is not None and not isinstance(value, str):
            raise PayloadError(f"{path} ({field}) is not a string: {type(value).__name__}")
        return (value or "").strip() or None

    def _need(self, data: Mapping[str, Any], field: str) -> str:
        value = self._text(data, field)
        if value is None:
            raise PayloadError(f"{self.event_type}: required path {getattr(self, field)} ({field}) is missing")
        return value

    def _money(self, data: Mapping[str, Any], path: str | None, currency: str, required: bool) -> int:
        value = resolve(data, path) if path else None
        if value is None:
            if required:
                raise PayloadError(f"{self.event_type}: required path {path} (amount) is missing")
            return 0
        return _to_minor(value, self.amount_format, currency, str(path))


def _to_minor(value: Any, fmt: str, currency: str, path: str) -> int:
    """An amount in ISO minor units: an integer as is ("minor"), a decimal converted exactly.

    JSON numbers arrive as exact `Decimal`s (`adapter.payload.json_object`); a fraction in a
    "minor" amount, a bool, non-ASCII digits or more decimals than the currency has would need
    guessing, so they are a `PayloadError`. The sign is checked by the caller."""
    if fmt == "minor":
        number = integer(value)
        if number is None:
            raise PayloadError(f"{path}: {value!r} is not an integer of minor units (amount_format = \"minor\")")
        return number
    exact = decimal(value)
    if exact is None:
        raise PayloadError(f"{path}: {value!r} is not a decimal amount")
    try:
        return to_minor(exact, currency)
    except ValueError as exc:
        raise PayloadError(f"{path}: {exc}") from None


class RuleSet(BaseModel):
    """Provider settings holding `rules`; subclass it to add the provider's own keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[Rule, ...]

    @field_validator("rules")
    @classmethod
    def _some(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        # Checked after the items, so a broken rule is not also reported as "no rules".
        if not rules:
            raise ValueError("at least one [[sources.NAME.rules]] table is needed")
        return rules


def apply_rules(rules: Sequence[Rule], event_type: str, data: Mapping[str, Any]) -> list[Lead | Sale]:
    """Conversions of one event by `rules` (see the module docstring for the contract).

    Raises `Ignore("condition_not_met")` when rules exist for `event_type` but none applies,
    `Ignore("zero_amount")` when every applicable rule is a Sale of 0, and `PayloadError`
    when a required path is missing or a value has the wrong shape.
    """
    typed = [r for r in rules if r.event_type == event_type]
    if not typed:
        return []
    out: list[Lead | Sale] = []
    reason = "condition_not_met"
    for rule in typed:
        if not rule.applies(event_type, data):
            continue
        try:
            out.append(rule.convert(data))
        except Ignore as exc:  # a Sale of 0; another rule may still make a conversion
            reason = exc.reason
    if not out:
        raise Ignore(reason)
    return out
