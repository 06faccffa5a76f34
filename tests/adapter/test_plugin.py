"""The entry-point registry: built-ins and third-party plugins load the same way."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from adapter.plugin import load_providers
from providers.stripe import StripeProvider


def _fake_distribution(root: Path, name: str, entry_points: str) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hooktrack.providers]\n{entry_points}\n")


def test_builtin_stripe_is_registered_as_an_entry_point() -> None:
    assert load_providers()["stripe"] is StripeProvider


def test_broken_plugins_are_logged_and_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    _fake_distribution(tmp_path, "broken_one", "ghost = no_such_module_anywhere:Ghost")
    _fake_distribution(tmp_path, "wrong_type", "notaprovider = json:JSONDecoder")
    _fake_distribution(tmp_path, "misnamed", "alias = providers.stripe:StripeProvider")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="hooktrack.plugin"):
        found = load_providers()
    assert "stripe" in found
    assert not {"ghost", "notaprovider", "alias"} & set(found)
    text = caplog.text
    assert "'ghost' failed to load" in text
    assert "'notaprovider' is not a hooktrack Provider" in text
    assert "'alias' declares name 'stripe'" in text


def test_providers_are_closed_when_the_app_shuts_down(tmp_path: Path) -> None:
    """`Provider.close` releases what a provider holds (Recurly's API client) at shutdown, once
    per source, and one provider that fails to close does not keep the others open."""
    from starlette.testclient import TestClient

    from adapter.app import create_app
    from tests.conftest import config

    closed: list[str] = []

    class Closing(StripeProvider):
        def close(self) -> None:
            closed.append("closing")

    class Failing(StripeProvider):
        def close(self) -> None:
            closed.append("failing")
            raise RuntimeError("cannot close")

    from tests.conftest import STRIPE_SECRET

    settings = config(tmp_path, "http://127.0.0.1:9", sources={
        "a": {"provider": "failing", "secrets": [STRIPE_SECRET]},
        "b": {"provider": "closing", "secrets": [STRIPE_SECRET]}})
    with TestClient(create_app(settings, registry={"closing": Closing, "failing": Failing}, worker=False)):
        assert closed == []
    assert sorted(closed) == ["closing", "failing"]
