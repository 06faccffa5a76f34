"""Operator commands against a real store with real events: events, stats, replay, send."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from adapter.app import create_app
from adapter.cli import main
from adapter.operate import reprocess
from adapter.plugin import load_providers
from adapter.receiver import TrackingReceiver, run_in_thread
from adapter.settings import load_settings
from providers.polar import PolarProvider
from providers.stripe import StripeProvider
from tests.adapter.test_admin import refuse_once
from tests.conftest import STRIPE_SECRET, config, fixture, post_stripe, wait_for
from tests.providers import flow as flows
from tests.providers.test_polar import SECRET as POLAR_SECRET
from tests.providers.test_polar import signed as polar_signed


def hooktrack(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapter", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def write_config(tmp_path: Path, tracking_url: str) -> str:
    """The same store and source as the `make_client` fixture's, as a file for the CLI."""
    path = tmp_path / "hooktrack.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "hooktrack.db"}"\n'
        f'[tracking]\nurl = "{tracking_url}"\napi_key = "test_key"\n'
        f'[sources.stripe]\nprovider = "stripe"\nsecrets = ["{STRIPE_SECRET}"]\n'
    )
    return str(path)


@pytest.fixture
def day(make_client: Callable[..., TestClient], receiver: TrackingReceiver, tmp_path: Path) -> dict[str, Any]:
    """hooktrack running with its forwarder, after a purchase the tracking API refused (dead),
    a sign-up, a setup-mode checkout (ignored) and a forged delivery (rejected)."""
    client = make_client()
    refuse_once(receiver, "Purchase")
    purchase = post_stripe(client, fixture("stripe", "checkout.session.completed")).json()
    post_stripe(client, fixture("stripe", "checkout.session.completed+setup"))
    post_stripe(client, fixture("stripe", "customer.created"), secret="whsec_forged")
    wait_for(lambda: [r for r in receiver.requests if r.status == 422])
    cfg = write_config(tmp_path, receiver.url)  # type: ignore[attr-defined]
    wait_for(lambda: json.loads(hooktrack("stats", "--json", "--config", cfg).stdout)["outbox"]["dead"] == 1)
    return {"client": client, "config": cfg, "purchase": purchase}


def test_events_filters_since_limit_and_json(day: dict[str, Any]) -> None:
    cfg = day["config"]
    rows = json.loads(hooktrack("events", "--json", "--config", cfg).stdout)
    assert [r["status"] for r in rows] == ["rejected", "ignored", "accepted"]
    assert [r["status"] for r in json.loads(hooktrack("events", "--json", "--limit", "1", "--config", cfg).stdout)] \
        == ["rejected"]
    dead = json.loads(hooktrack("events", "--json", "--state", "dead", "--config", cfg).stdout)
    assert [r["id"] for r in dead] == [day["purchase"]["eventId"]]
    assert json.loads(hooktrack("events", "--json", "--since", "2h", "--config", cfg).stdout) == rows
    assert json.loads(hooktrack("events", "--json", "--since", "2100-01-01", "--config", cfg).stdout) == []
    table = hooktrack("events", "--status", "ignored", "--config", cfg)
    assert table.returncode == 0 and "setup_mode" in table.stdout and "accepted" not in table.stdout
    bad = hooktrack("events", "--since", "last tuesday", "--config", cfg)
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr


def test_events_show_explains_the_dead_letter(day: dict[str, Any]) -> None:
    shown = hooktrack("events", "show", str(day["purchase"]["eventId"]), "--config", day["config"])
    assert shown.returncode == 0
    assert "dead (http_422)" in shown.stdout and "422" in shown.stdout
    assert "hooktrack replay" in shown.stdout and "arrived:" in shown.stdout


def test_stats_counts_per_source_and_the_outbox(day: dict[str, Any]) -> None:
    found = json.loads(hooktrack("stats", "--json", "--config", day["config"]).stdout)
    assert found["sources"]["stripe"]["events"] == {"accepted": 1, "duplicate": 0, "ignored": 1, "rejected": 1}
    assert found["rejected"] == {"invalid_signature": 1}
    assert found["outbox"] == {"pending": 0, "dead": 1, "oldest_pending_age_s": None}
    human = hooktrack("stats", "--config", day["config"])
    assert human.returncode == 0 and "stripe" in human.stdout and "1 dead letter" in human.stdout
    assert "hooktrack replay --dead" in human.stdout


def test_replay_by_id_delivers_it_through_the_running_worker(day: dict[str, Any], receiver: TrackingReceiver) -> None:
    conv_id = day["purchase"]["conversions"][0]["id"]
    out = hooktrack("replay", str(conv_id), "999", "--wait", "20", "--config", day["config"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"requeued 1 conversion(s): #{conv_id}" in out.stdout and "left alone (not dead): #999" in out.stdout
    assert "delivered: 1; dead again: 0; still pending: 0" in out.stdout
    assert "requeueing" in out.stderr  # the progress bar goes to stderr, the report to stdout
    assert [r.body["eventName"] for r in receiver.delivered()].count("Purchase") == 1


def test_replay_dead_with_filters_and_json(day: dict[str, Any], receiver: TrackingReceiver) -> None:
    cfg = day["config"]
    none = json.loads(hooktrack("replay", "--dead", "--source", "elsewhere", "--json", "--config", cfg).stdout)
    assert none["requeued"] == []
    report = json.loads(hooktrack("replay", "--dead", "--since", "1h", "--wait", "20", "--json", "--config", cfg).stdout)
    assert report["requeued"] == [day["purchase"]["conversions"][0]["id"]] and report["delivered"] == report["requeued"]
    again = hooktrack("replay", "--dead", "--config", cfg)
    assert again.returncode == 0 and "requeued 0 conversion(s)" in again.stdout and "nothing to do" in again.stdout


@pytest.mark.parametrize("args", [[], ["1", "--dead"], ["1", "--source", "stripe"]])
def test_replay_usage_errors_are_clear(tmp_path: Path, args: list[str]) -> None:
    out = hooktrack("replay", *args, "--config", write_config(tmp_path, "http://127.0.0.1:9"))
    assert out.returncode == 2 and "Usage" in out.stderr and "Traceback" not in out.stderr


def test_send_lists_samples_and_posts_one(tmp_path: Path, receiver: TrackingReceiver) -> None:
    cfg = write_config(tmp_path, receiver.url)  # type: ignore[attr-defined]
    listed = hooktrack("send", "stripe", "--config", cfg)
    assert listed.returncode == 0 and "checkout.session.completed" in listed.stdout and "note:" not in listed.stdout
    unknown = hooktrack("send", "stripe", "charge.nothing", "--config", cfg)
    assert unknown.returncode == 2 and "unknown sample" in unknown.stderr
    settings = config(tmp_path, receiver.url)  # type: ignore[attr-defined]
    with run_in_thread(create_app(settings, registry=load_providers())) as url:
        sent = hooktrack("send", "stripe", "customer.created", "--url", url, "--config", cfg)
    assert sent.returncode == 0 and sent.stdout.startswith("200 ") and '"accepted"' in sent.stdout


def test_send_says_clearly_when_hooktrack_is_not_there(tmp_path: Path) -> None:
    out = hooktrack("send", "stripe", "customer.created", "--url", "http://127.0.0.1:9",
                    "--config", write_config(tmp_path, "http://127.0.0.1:9"))
    assert out.returncode == 2 and "cannot reach hooktrack at http://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr


class _PrivateKeyProvider(StripeProvider):
    """A provider whose deliveries only the provider can sign (like Paddle Classic's RSA)."""

    samples_package = "providers"

    def sign(self, body: bytes, secret: str, timestamp: int, ctx: Any) -> dict[str, str]:
        raise NotImplementedError("hooktrack cannot sign stripe webhooks: they are signed with the provider's "
                                  "private key")


def test_send_says_when_a_provider_cannot_be_signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("adapter.plugin.load_providers", lambda: {"stripe": _PrivateKeyProvider})
    cfg = write_config(tmp_path, "http://127.0.0.1:9")
    runner = CliRunner()
    listed = runner.invoke(main, ["send", "stripe", "--config", cfg])
    assert listed.exit_code == 0 and "customer.created" in listed.output
    assert "note: hooktrack cannot sign stripe webhooks" in listed.output
    sent = runner.invoke(main, ["send", "stripe", "customer.created", "--config", cfg])
    assert sent.exit_code == 2 and isinstance(sent.exception, SystemExit)  # a message, not a traceback
    assert "private key" in sent.output and "provider's dashboard" in sent.output


# -- reprocess ------------------------------------------------------------------------------------


class BuggyStripe(StripeProvider):
    """Stripe as an older release mapped it: a bug in `map` (fixed by the installed provider)."""

    def map(self, event: Any, ctx: Any) -> Any:
        raise TypeError("a bug fixed in the next release")


def _events(cfg: str) -> list[dict[str, Any]]:
    return sorted(json.loads(hooktrack("events", "--json", "--config", cfg).stdout), key=lambda r: r["id"])


def _reprocess(*args: str) -> Any:
    return CliRunner().invoke(main, ["reprocess", *args])


def test_reprocess_maps_a_malformed_event_again_and_dedupes_what_it_makes(
        tmp_path: Path, receiver: TrackingReceiver) -> None:
    """A verified delivery the old provider could not map is kept as `malformed_payload`; after
    the upgrade, `reprocess --malformed` maps it into a Sale through the ingest transaction.
    Reprocessing it again, or the provider's own retry, is a duplicate: one sale, not two."""
    cfg = write_config(tmp_path, receiver.url)  # type: ignore[attr-defined]
    settings = load_settings(cfg)
    checkout = fixture("stripe", "checkout.session.completed")
    with TestClient(create_app(settings, registry={"stripe": BuggyStripe}, worker=False)) as old:
        answer = post_stripe(old, checkout)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "malformed_payload"
    [kept] = _events(cfg)
    assert (kept["status"], kept["reason"]) == ("rejected", "malformed_payload")

    fixed = _reprocess("--malformed", "--json", "--config", cfg)  # the installed (real) Stripe provider
    assert fixed.exit_code == 0, fixed.output
    result = json.loads(fixed.output)[str(kept["id"])]
    assert result["status"] == "accepted" and [c["kind"] for c in result["conversions"]] == ["sale"]
    new_id = result["eventId"]
    rows = {r["id"]: r for r in _events(cfg)}
    assert rows[new_id]["status"] == "accepted"
    assert (rows[kept["id"]]["status"], rows[kept["id"]]["reason"]) == ("rejected", "reprocessed")

    again = _reprocess("--malformed", "--config", cfg)
    assert again.exit_code == 0 and "nothing to do" in again.output

    twice = _reprocess(str(new_id), "--json", "--config", cfg)
    assert twice.exit_code == 0, twice.output
    assert json.loads(twice.output)[str(new_id)]["status"] == "duplicate"
    assert json.loads(twice.output)[str(new_id)]["reason"] == "business_key"

    with TestClient(create_app(settings, registry=load_providers(), worker=False)) as upgraded:
        retry = post_stripe(upgraded, checkout)  # Stripe retries what got a 400
    assert retry.json()["status"] == "duplicate"
    stats = json.loads(hooktrack("stats", "--json", "--config", cfg).stdout)
    assert sum(stats["conversions"]["sale"].values()) == 1, stats["conversions"]


def test_reprocess_explains_what_it_cannot_do(tmp_path: Path, receiver: TrackingReceiver) -> None:
    cfg = write_config(tmp_path, receiver.url)  # type: ignore[attr-defined]
    with TestClient(create_app(load_settings(cfg), registry=load_providers(), worker=False)) as client:
        post_stripe(client, fixture("stripe", "customer.created"), secret="whsec_forged")  # no body kept
    [forged] = _events(cfg)
    out = _reprocess(str(forged["id"]), "999", "--config", cfg)
    assert out.exit_code == 0, out.output
    assert f"#{forged['id']}: skipped (no body kept" in out.output and "#999: skipped (no event" in out.output
    assert _reprocess("--config", cfg).exit_code == 2
    assert _reprocess("1", "--malformed", "--config", cfg).exit_code == 2
    assert _reprocess("1", "--since", "1h", "--config", cfg).exit_code == 2


make_flow = flows.make_flow  # the providers' fixture: the real ingest on a SQLite store


class BuggyPolar(PolarProvider):
    def map(self, event: Any, ctx: Any) -> Any:
        raise KeyError("customer")


def test_reprocess_gives_back_the_event_id_a_header_carried(make_flow: Any, tmp_path: Path) -> None:
    """Polar (Standard Webhooks) names its event by the `webhook-id` header, which is not stored:
    a map failure keeps the id that parse read, and `reprocess` hands it back, so the event maps
    under the same delivery id (the dedup key a later retry of it will meet)."""
    flow = make_flow(BuggyPolar(), [POLAR_SECRET], lambda body: polar_signed(body, msg_id="msg_polar_1"))
    answer = flow.receive(fixture("polar", "order.paid"))
    assert answer["error"]["code"] == "malformed_payload"
    kept = flow.loop.run_until_complete(flow.store.read(lambda tx: tx.all("SELECT id FROM events")))[0][0]
    settings = config(tmp_path, "http://127.0.0.1:9", store={"url": f"sqlite:///{tmp_path / 'flow0.db'}"},
                      sources={"polar": {"provider": "polar", "secrets": [POLAR_SECRET]}})
    report = reprocess(settings, [], malformed=True)
    result = report.results[kept]
    assert result["status"] == "accepted", result
    assert [c["kind"] for c in result["conversions"]] == ["sale"]
    again = flow.loop.run_until_complete(flow.store.read(
        lambda tx: tx.all("SELECT dedup_key, status FROM events WHERE id = ?", (result["eventId"],))))
    assert again == [("msg_polar_1", "accepted")]
