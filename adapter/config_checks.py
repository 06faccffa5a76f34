"""Config mistakes that would silently open a door or stop delivery (SPEC §5).

`refusals(raw, expanded)` runs on the config as read and after `${NAME}` expansion, before
validation; what it returns stops startup (`parse_settings` raises `ConfigError` listing them, each naming its key):

- a value that still looks like a variable reference (`$NAME`, `${NAME:-x}`, `${NAME-x}`, ...):
  hooktrack expands only `${NAME}`, so anything else is taken literally, and a literal
  `"$STRIPE_WEBHOOK_SECRET"` is a public string anyone can sign with;
- a secret, key, token, password or URL with surrounding whitespace or a control character
  (the trailing newline of a Kubernetes secret read from a file): every signature then fails,
  or every forward is refused by the HTTP client;
- an all-whitespace admin token;
- a tracking URL with a query or fragment, or (for Dub) one that names an endpoint
  (`.../track/sale`) instead of the API's base URL.

`warnings(settings)` lists what is legal but probably wrong; `hooktrack check` prints them and
`hooktrack serve` / `worker` log them at startup. Messages never contain a secret's value;
`redact_url` hides the credentials of a URL wherever one is shown.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from adapter.settings import Settings

__all__ = ["MAX_TOLERANCE_S", "MIN_TOLERANCE_S", "log_warnings", "redact_url", "refusals", "warnings"]

log = logging.getLogger("hooktrack.config")

MIN_TOLERANCE_S = 10
MAX_TOLERANCE_S = 3600

# Searched in the file's values with their `${NAME}` references taken out (so that a value an
# environment variable supplies may hold a `$`): any `$` form left that reads like one is a mistake.
_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_UNEXPANDED = re.compile(r"\$\{[^}]*\}?|\$[A-Z_][A-Z0-9_]+\b|^\$[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"(^|_)(secrets?|token|password|api_key|private_key|public_key|basic_auth|url)$")


def refusals(raw: dict[str, Any], expanded: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, problem) for every value that must stop startup: `raw` is the file as parsed,
    `expanded` the same after `${NAME}` expansion."""
    found: list[tuple[str, str]] = []
    for key, _name, value in _strings(raw, ""):
        if _UNEXPANDED.search(_ENV_REF.sub("", value)):
            found.append((key, "looks like an unexpanded environment variable; hooktrack expands only "
                               "${NAME} (no $NAME, no ${NAME:-default}): the value would be used literally"))
    refused = {key for key, _ in found}
    admin = expanded.get("admin")
    token = admin.get("token") if isinstance(admin, dict) else None
    if isinstance(token, str) and token and not token.strip():
        found.append(("admin.token", "is all whitespace: anyone could guess it"))
        refused.add("admin.token")
    for key, name, value in _strings(expanded, ""):
        if key not in refused and _SECRET_NAME.search(name) and not value.lstrip().startswith("-----BEGIN"):
            problem = _unclean(value)
            if problem:
                found.append((key, problem))
    tracking = expanded.get("tracking")
    if isinstance(tracking, dict) and isinstance(tracking.get("url"), str):
        problem = _endpoint_problem(tracking["url"], str(tracking.get("api") or "dub"))
        if problem:
            found.append(("tracking.url", problem))
    return found


def warnings(settings: Settings) -> list[str]:
    """What is allowed but probably a mistake, one sentence each."""
    out: list[str] = []
    owners: dict[str, list[str]] = {}
    for name, source in settings.sources.items():
        for secret in dict.fromkeys(source.secrets):
            owners.setdefault(secret, []).append(name)
        if source.provider == "stripe" and any(not s.startswith("whsec_") for s in source.secrets):
            out.append(f"sources.{name}.secrets: a Stripe signing secret starts with whsec_ (the endpoint's "
                       "'Signing secret', not an API key)")
        if not MIN_TOLERANCE_S <= source.tolerance_s <= MAX_TOLERANCE_S:
            out.append(f"sources.{name}.tolerance_s = {source.tolerance_s}: outside {MIN_TOLERANCE_S}.."
                       f"{MAX_TOLERANCE_S} s, so genuine retries are refused or old captures replay")
    for names in owners.values():
        if len(names) > 1:
            out.append(f"sources {', '.join(names)} share a secret: a delivery signed with it is accepted by "
                       "each of them (deliveries are deduplicated per source), so one payment can count twice")
    tracking = settings.tracking
    api = str(getattr(tracking, "api", "dub") or "dub")
    parts = urlsplit(tracking.url)
    if parts.scheme == "http" and not _loopback(parts.hostname or ""):
        out.append(f"tracking.url {redact_url(tracking.url)} is plain http:// to another host: the API key "
                   "and every conversion travel unencrypted")
    if api == "dub" and not tracking.api_key.startswith("dub_"):
        out.append("tracking.api_key: a Dub API key starts with dub_ (Settings → API Keys in Dub)")
    return out


def log_warnings(settings: Settings) -> None:
    """Log each of `warnings(settings)` (at startup)."""
    for text in warnings(settings):
        log.warning("config: %s", text)


def redact_url(url: str) -> str:
    """`url` with any `user:password@` replaced by `***@`."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _strings(value: Any, key: str, name: str = "") -> Iterator[tuple[str, str, str]]:
    """(dotted key, key name, value) of every string in the config."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}.{k}" if key else str(k), str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}[{i}]", name)
    elif isinstance(value, str):
        yield key, name, value


def _unclean(value: str) -> str | None:
    if value != value.strip():
        return ("has leading or trailing whitespace (a newline at the end, as a secret read from a file "
                "often has?): remove it")
    for i, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return f"contains a control or invisible character (U+{ord(char):04X} at position {i + 1})"
    return None


def _endpoint_problem(url: str, api: str) -> str | None:
    parts = urlsplit(url.strip())
    if parts.query or url.rstrip().endswith("?"):
        return "has a query string: give the API's base URL only"
    if parts.fragment or "#" in url:
        return "has a fragment (#...): give the API's base URL only"
    if api == "dub" and "track" in parts.path.strip("/").split("/"):
        return ("names an endpoint: give Dub's base URL (https://api.dub.co); hooktrack adds /track/lead "
                "and /track/sale itself")
    return None


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
