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
