"""hooktrack.toml: env expansion, defaults, and startup errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.app import create_app
from adapter.errors import ConfigError
from adapter.plugin import load_providers
from adapter.settings import load_settings

GOOD = """
[tracking]
url = "http://127.0.0.1:9/"
api_key = "${TRACKING_API_KEY}"

[sources.stripe-eu]
provider = "stripe"
secrets = ["${STRIPE_SECRET_A}", "whsec_${SUFFIX}"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hooktrack.toml"
    path.write_text(text)
    return path


def test_env_references_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKING_API_KEY", "key_1")
    monkeypatch.setenv("STRIPE_SECRET_A", "whsec_a")
    monkeypatch.setenv("SUFFIX", "b")
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.tracking.api_key == "key_1"
    assert settings.tracking.url == "http://127.0.0.1:9"
    assert settings.sources["stripe-eu"].secrets == ["whsec_a", "whsec_b"]
    assert settings.store.retention_days == 30 and settings.server.max_body_bytes == 1 << 20
    assert settings.store.url == f"sqlite:///{(tmp_path / 'hooktrack.db').resolve()}"


def test_unset_env_variable_is_a_startup_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACKING_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"tracking\.api_key: environment variable TRACKING_API_KEY is not set"):
        load_settings(write(tmp_path, GOOD))


def test_config_path_falls_back_to_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKING_API_KEY", "k")
    monkeypatch.setenv("STRIPE_SECRET_A", "whsec_a")
    monkeypatch.setenv("SUFFIX", "b")
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("HOOKTRACK_CONFIG", str(path))
    assert load_settings().tracking.api_key == "k"
    monkeypatch.delenv("HOOKTRACK_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert load_settings().tracking.api_key == "k"
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tracking]\nurl = "ftp://x"\napi_key = "k"', r"tracking\.url: .*not an http\(s\) URL"),
        ('[tracking]\nurl = "http://x"', r"tracking\.api_key: Field required"),
        ('[store]\nretention_days = 1\n[tracking]\nurl = "http://x"\napi_key = "k"', r"store\.retention_days"),
        ('[store]\nurl = "mysql://x"\n[tracking]\nurl = "http://x"\napi_key = "k"', r"store\.url: .*unsupported"),
        ('[tracking]\nurl = "http://x"\napi_key = "k"\n[sources.s]\nprovider = "stripe"\nlivemode = "prod"',
         r"sources\.s\.livemode"),
        ('[tracking]\nurl = "http://x"\napi_key = "k"\ntypo = 1', r"tracking\.typo: Extra inputs"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_invalid_values_are_clear_startup_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('provider = "nope"\nsecrets = ["x"]', r"sources\.s\.provider: unknown provider 'nope'"),
        ('provider = "stripe"', r"sources\.s\.secrets: stripe needs at least one signing secret"),
        ('provider = "stripe"\nsecrets = [""]', r"sources\.s\.secrets: .*empty"),
        ('provider = "stripe"\nsecrets = ["x"]\nnotification_url = "x"', r"sources\.s: notification_url: unknown setting"),
        ('provider = "paddle"\nsecrets = ["x"]\nclient_reference_prefix = "x"', r"sources\.s: unknown setting.*client_reference_prefix"),
    ],
)
def test_bad_sources_fail_at_startup(tmp_path: Path, source: str, message: str) -> None:
    path = write(tmp_path, f'[tracking]\nurl = "http://x"\napi_key = "k"\n[sources.s]\n{source}\n')
    with pytest.raises(ConfigError, match=message):
        create_app(load_settings(path), registry=load_providers())


def test_a_provider_can_refuse_unusable_secrets_at_startup(tmp_path: Path) -> None:
    from adapter.plugin import Provider

    class Picky(Provider):
        name = "picky"

        def check_secrets(self, secrets: object, ctx: object) -> None:
            raise ValueError("secret 1 is not valid base64")

    path = write(tmp_path, '[tracking]\nurl = "http://x"\napi_key = "k"\n[sources.p]\nprovider = "picky"\nsecrets = ["x"]\n')
    with pytest.raises(ConfigError, match=r"sources\.p\.secrets: secret 1 is not valid base64"):
        create_app(load_settings(path), registry={"picky": Picky})


def _stripe_config(secret: str = "whsec_ok", tracking: str = 'url = "https://api.dub.co"\napi_key = "dub_k"',
                   extra: str = "") -> str:
    return f'[tracking]\n{tracking}\n[sources.s]\nprovider = "stripe"\nsecrets = ["{secret}"]\n{extra}'


@pytest.mark.parametrize("value", ["$STRIPE_WEBHOOK_SECRET", "${STRIPE_WEBHOOK_SECRET:-whsec_x}",
                                   "${STRIPE_WEBHOOK_SECRET-whsec_x}", "${STRIPE_WEBHOOK_SECRET", "$secret",
                                   "whsec_$SUFFIX", "${}"])
def test_a_value_that_looks_like_an_unexpanded_variable_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"sources\.s\.secrets\[0\]: looks like an unexpanded environment variable"):
        load_settings(write(tmp_path, _stripe_config(value)))


def test_a_dollar_from_an_environment_variable_is_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the file's own text is searched: a secret that contains `$X` is allowed via ${NAME}."""
    monkeypatch.setenv("ODD_SECRET", "whsec_a$BC")
    assert load_settings(write(tmp_path, _stripe_config("${ODD_SECRET}"))).sources["s"].secrets == ["whsec_a$BC"]


@pytest.mark.parametrize(("value", "problem"), [
    ("whsec_abc\n", "has leading or trailing whitespace"),
    (" whsec_abc", "has leading or trailing whitespace"),
    ("whsec_a\x07bc", r"contains a control or invisible character \(U\+0007 at position 8\)"),
    ("whsec_a\u200bbc", r"contains .*U\+200B"),
])
def test_a_secret_with_whitespace_or_control_characters_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, problem: str) -> None:
    monkeypatch.setenv("FROM_K8S", value)
    with pytest.raises(ConfigError, match=rf"sources\.s\.secrets\[0\]: {problem}") as caught:
        load_settings(write(tmp_path, _stripe_config("${FROM_K8S}")))
    assert value.strip() not in str(caught.value)  # the message never shows the secret


def test_an_api_key_with_a_trailing_newline_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUB_API_KEY", "dub_abc\n")
    with pytest.raises(ConfigError, match=r"tracking\.api_key: has leading or trailing whitespace"):
        load_settings(write(tmp_path, _stripe_config(tracking='url = "https://api.dub.co"\napi_key = "${DUB_API_KEY}"')))


def test_an_admin_token_of_spaces_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"admin\.token: is all whitespace"):
        load_settings(write(tmp_path, _stripe_config(extra='[admin]\ntoken = "                "\n')))


@pytest.mark.parametrize(("url", "problem"), [
    ("https://api.dub.co?workspace=1", "has a query string"),
    ("https://api.dub.co/#x", "has a fragment"),
    ("https://api.dub.co/track/sale", "names an endpoint"),
    ("https://api.dub.co/track", "names an endpoint"),
])
def test_a_tracking_url_that_is_not_a_base_url_is_refused(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"tracking\.url: {problem}"):
        load_settings(write(tmp_path, _stripe_config(tracking=f'url = "{url}"\napi_key = "dub_k"')))


def test_a_pem_key_may_end_in_a_newline(tmp_path: Path) -> None:
    from adapter.config_checks import refusals

    pem = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"
    raw = {"sources": {"p": {"provider": "paddle_classic", "public_key": pem}}}
    assert refusals(raw, raw) == []


def _warnings(tmp_path: Path, text: str) -> list[str]:
    from adapter.config_checks import warnings

    return warnings(load_settings(write(tmp_path, text)))


def test_a_clean_config_has_no_warnings(tmp_path: Path) -> None:
    assert _warnings(tmp_path, _stripe_config()) == []


def test_two_sources_sharing_a_secret_are_warned_about(tmp_path: Path) -> None:
    text = _stripe_config(extra='[sources.t]\nprovider = "stripe"\nsecrets = ["whsec_other", "whsec_ok"]\n')
    assert _warnings(tmp_path, text) == [
        "sources s, t share a secret: a delivery signed with it is accepted by each of them (deliveries are "
        "deduplicated per source), so one payment can count twice"]


@pytest.mark.parametrize(("text", "warning"), [
    (_stripe_config("sk_live_notasigningsecret"), "sources.s.secrets: a Stripe signing secret starts with whsec_"),
    (_stripe_config(extra="tolerance_s = 86400\n"), "sources.s.tolerance_s = 86400: outside 10..3600 s"),
    (_stripe_config(extra="tolerance_s = 5\n"), "sources.s.tolerance_s = 5: outside 10..3600 s"),
    (_stripe_config(tracking='url = "http://user:pw@dub.internal:8080"\napi_key = "dub_k"'),
     "tracking.url http://***@dub.internal:8080 is plain http:// to another host"),
    (_stripe_config(tracking='url = "https://api.dub.co"\napi_key = "sk_123"'),
     "tracking.api_key: a Dub API key starts with dub_"),
])
def test_likely_mistakes_are_warned_about(tmp_path: Path, text: str, warning: str) -> None:
    found = _warnings(tmp_path, text)
    assert len(found) == 1 and found[0].startswith(warning), found


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://localhost:8080", "http://[::1]:9"])
def test_plain_http_to_loopback_is_fine(tmp_path: Path, url: str) -> None:
    assert _warnings(tmp_path, _stripe_config(tracking=f'url = "{url}"\napi_key = "dub_k"')) == []


def test_server_limits_have_safe_defaults_and_are_settable(tmp_path: Path) -> None:
    server = load_settings(write(tmp_path, _stripe_config())).server
    assert (server.header_timeout_s, server.body_timeout_s, server.max_header_bytes, server.max_connections,
            server.keep_alive_s) == (10, 20, 65536, 256, 5)
    text = _stripe_config() + "[server]\nheader_timeout_s = 3\nmax_connections = 64\n"
    server = load_settings(write(tmp_path, text)).server
    assert server.header_timeout_s == 3 and server.max_connections == 64


def test_an_invalid_url_is_reported_without_its_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tracking\.url: .*not an http\(s\) URL: 'ftp://\*\*\*@x'") as caught:
        load_settings(write(tmp_path, _stripe_config(tracking='url = "ftp://user:hunter2@x"\napi_key = "dub_k"')))
    assert "hunter2" not in str(caught.value)
