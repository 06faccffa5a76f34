"""`hooktrack providers NAME [--test-secrets]` (SPEC §6): what one provider maps, the settings it
needs and a ready `[sources.NAME]` block.

Without `--test-secrets` the block's secrets and required settings are `${ENV}` placeholders.
With it, they are the provider's `test_source()` (adapter.samples): throwaway values the
built-in samples are signed with, so the block pasted into a config makes `hooktrack send NAME
SAMPLE` verify. The block is checked the way `serve` would build it (and, with test secrets, by
signing a sample) before it is printed, so a block that would not work says so.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from adapter.errors import ConfigError
from adapter.plugin import Provider, build_sources
from adapter.samples import SamplesMixin, samples_of
from adapter.settings import parse_settings

__all__ = ["describe_provider", "source_block", "toml_value"]


def toml_value(value: Any) -> str:
    """`value` as a TOML value (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string uses JSON's escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _placeholder(name: str, field: str) -> str:
    return "${" + re.sub(r"[^A-Z0-9]+", "_", f"{name}_{field}".upper()) + "}"


def _required(name: str, model: type[BaseModel] | None) -> dict[str, Any]:
    """The settings a source must give, as `${ENV}` placeholders (lists for list fields)."""
    if model is None:
        return {}
    out: dict[str, Any] = {}
    for field, info in model.model_fields.items():
        if info.is_required() and info.default is PydanticUndefined:
            text = _placeholder(name, field)
            out[field] = [text] if "list" in str(info.annotation).lower() else text
    return out


def source_block(name: str, cls: type[Provider], *, test_secrets: bool) -> tuple[dict[str, Any], str | None]:
    """The `[sources.NAME]` settings (provider first) and, when it cannot work as printed, why."""
    provider = cls()
    conf: dict[str, Any] = {"provider": name}
    if test_secrets:
        if not isinstance(provider, SamplesMixin):
            return conf, f"{name} has no built-in samples, so there is nothing to sign"
        try:
            conf.update(provider.test_source())
        except NotImplementedError as exc:
            return conf | _required(name, cls.settings_model), str(exc)
    else:
        if cls.requires_secrets:
            conf["secrets"] = [_placeholder(name, "webhook_secret")]
        conf.update(_required(name, cls.settings_model))
        return conf, None
    problem = _problem(name, cls, conf)
    if problem:  # show what is still to fill in, as placeholders
        conf.update({k: v for k, v in _required(name, cls.settings_model).items() if k not in conf})
    return conf, problem


def _problem(name: str, cls: type[Provider], conf: dict[str, Any]) -> str | None:
    """Why `conf` would not serve signed samples (None when it does)."""
    from adapter.operate import signing_problem

    try:
        sources = build_sources(parse_settings({"tracking": {"url": "http://127.0.0.1:9", "api_key": "k"},
                                                "sources": {name: conf}}), {name: cls})
    except ConfigError as exc:
        return f"this block needs settings hooktrack cannot make up: {exc}"
    return signing_problem(sources[name])


def _default(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "optional"
    try:
        return f"default {toml_value(value)}"
    except TypeError:
        return f"default {value!r}"


def describe_provider(name: str, cls: type[Provider], *, test_secrets: bool) -> str:
    """The text `hooktrack providers NAME [--test-secrets]` prints."""
    lines = [f"# {name}: " + " ".join((cls.__doc__ or "").split())]
    model = cls.settings_model
    if model is not None:
        lines.append("# settings:")
        for field, info in model.model_fields.items():
            need = "required" if info.is_required() else _default(info.default)
            lines.append(f"#   {field} ({need})")
    samples = sorted(samples_of(cls()))
    if samples:
        lines.append("# samples (hooktrack send " + name + " SAMPLE): " + ", ".join(samples))
    conf, problem = source_block(name, cls, test_secrets=test_secrets)
    if test_secrets and problem is None:
        lines.append("# throwaway test secrets: the built-in samples are signed with them; never use them live")
    if problem:
        lines.append(f"# note: {problem}")
    lines.append(f"[sources.{_key(name)}]")
    lines += [f"{_key(k)} = {toml_value(v)}" for k, v in conf.items()]
    return "\n".join(lines)
