"""`hooktrack demo`: the whole path on one machine, nothing to configure.

Writes `DIR/hooktrack.toml` (SQLite in DIR, random secrets), starts a local tracking receiver
and hooktrack on loopback, sends signed sample events — a lead, a one-time purchase, a
subscription checkout and its first invoice (one Sale), a renewal, a trial, a Paddle and a
Lemon Squeezy sale, a partial refund of the purchase (its partner commission), a redelivery
and a forged signature — then prints what each became and what the receiver got. The demo's
tracking API refuses the renewal once (422), so one conversion is dead-lettered and can be
replayed. The config and database stay behind so `hooktrack events --config DIR/hooktrack.toml`
can explore them; `--serve` keeps everything running for the admin page at /admin/.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from adapter.app import create_app
from adapter.errors import ConfigError
from adapter.journal import list_events, outbox_summary
from adapter.plugin import load_providers
from adapter.receiver import TrackingReceiver, free_port, run_in_thread
from adapter.render import events_table
from adapter.samples import post_sample
from adapter.settings import load_settings

__all__ = ["SCENARIO", "run_demo"]

# (source, sample, what to expect, how: "send" | "redeliver" the previous body | "forge" the signature)
SCENARIO: list[tuple[str, str, str, str]] = [
    ("stripe", "customer.created", "Lead 'Sign up' for user_42 with its click id", "send"),
    ("stripe", "checkout.session.completed", "Sale 'Purchase' $49.00 (tax excluded)", "send"),
    ("stripe", "checkout.session.completed", "Stripe retries the same event: duplicate", "redeliver"),
    ("stripe", "checkout.session.completed+subscription", "Sale 'Subscription creation' $29.00", "send"),
    ("stripe", "invoice.paid", "same invoice as the checkout: one Sale, answered duplicate", "send"),
    ("stripe", "invoice.paid+renewal", "Sale 'Subscription renewal', user_43 from identity memory; "
     "the tracking API refuses it once (422): a dead letter to replay", "send"),
    ("stripe", "customer.subscription.created+trial", "Lead 'Started Trial'", "send"),
    ("paddle", "transaction.completed", "Paddle Sale 'Purchase': string amounts, total - tax", "send"),
    ("lemonsqueezy", "order_created", "Lemon Squeezy Sale 'Purchase': total - tax, in cents", "send"),
    ("stripe", "charge.refunded", "Refund of $10.78 (tax included) of the $49.00 purchase: the partner "
     "commission's sale amount becomes $39.20", "send"),
    ("stripe", "checkout.session.completed", "signed with the wrong secret: rejected 400", "forge"),
]

CONFIG = """\
# Written by `hooktrack demo`. Secrets here are throwaway demo values.
[store]
url = "sqlite:///hooktrack-demo.db"

[tracking]
url = "{tracking_url}"
api_key = "{api_key}"
timeout_s = 5

[forwarder]
base_delay_s = 0.2
max_delay_s = 5
poll_interval_s = 0.1
fill_window_s = 1

[admin]
token = "{admin_token}"

[sources.stripe]
provider = "stripe"
secrets = ["{stripe_secret}"]

[sources.paddle]
provider = "paddle"
secrets = ["{paddle_secret}"]

[sources.lemonsqueezy]
provider = "lemonsqueezy"
secrets = ["{lemonsqueezy_secret}"]
"""


def write_config(directory: Path, tracking_url: str, api_key: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob("hooktrack-demo.db*"):
        leftover.unlink()
    path = directory / "hooktrack.toml"
    path.write_text(CONFIG.format(
        tracking_url=tracking_url, api_key=api_key, admin_token=secrets.token_urlsafe(24),
        stripe_secret="whsec_" + secrets.token_hex(24),
        paddle_secret="pdl_ntfset_" + secrets.token_hex(16),
        lemonsqueezy_secret=secrets.token_hex(16),
    ))
    return path


def refuse_once(event_name: str) -> Callable[[str, dict[str, Any]], tuple[int, dict[str, str]] | None]:
    """A receiver answer: 422 to the first conversion named `event_name`, the default 200 after
    (so the demo leaves one dead letter, and replaying it succeeds)."""
    refused: list[str] = []

    def respond(kind: str, body: dict[str, Any]) -> tuple[int, dict[str, str]] | None:
        if body.get("eventName") == event_name and not refused:
            refused.append(event_name)
            return 422, {}
        return None

    return respond


def run_demo(directory: str, *, serve: bool = False, port: int = 8000) -> None:
    """Run the scenario; with `serve`, keep hooktrack on 127.0.0.1:`port` until Ctrl-C."""
    console = Console()
    if serve:
        _check_port_free(port)
    receiver = TrackingReceiver(api_key="demo_" + secrets.token_hex(8), respond=refuse_once("Subscription renewal"),
                                program=True, commission_delay_s=0.5)
    receiver_port = free_port()
    config = write_config(Path(directory), f"http://127.0.0.1:{receiver_port}", receiver.api_key)
    settings = load_settings(config)
    app = create_app(settings, registry=load_providers())
    with run_in_thread(receiver.app(), port=receiver_port), \
            run_in_thread(app, port=port if serve else None) as base_url:
        console.print(f"[bold]hooktrack[/] on {base_url}, tracking receiver on 127.0.0.1:{receiver_port}, "
                      f"store {settings.store.url}\n")
        sources = app.state.sources
        answers = Table("sample", "expect", "answer", title="webhooks sent")
        with httpx.Client(timeout=10) as client:
            previous: httpx.Request | None = None
            for source, sample, expect, how in SCENARIO:
                if how == "redeliver" and previous is not None:
                    response = client.send(client.build_request(
                        "POST", previous.url, content=previous.content, headers=previous.headers))
                else:
                    forged = "whsec_forged_" + secrets.token_hex(8) if how == "forge" else None
                    response = post_sample(sources[source], sample, base_url, secret=forged, client=client)
                previous = response.request
                answers.add_row(f"{source} {sample}", expect, _answer(response))
        console.print(answers)
        _wait_for_outbox(app.state.store)
        rows = asyncio.run(_read(app.state.store, lambda tx: list_events(tx, limit=100)))
        events_table(list(reversed(rows)), console, title="what became of each event")
        got = Table("endpoint", "Idempotency-Key", "body", title="what the tracking API received")
        for r in receiver.requests:
            got.add_row(f"{r.status} {_ENDPOINTS.get(r.kind, r.kind)}", r.headers.get("idempotency-key", ""),
                        _short(r.body))
        console.print(got)
        dead = [c["id"] for ev in rows for c in ev["conversions"] if c["state"] == "dead"]
        console.print(
            f"\nExplore it: [bold]hooktrack events --config {config}[/]  ·  "
            f"[bold]hooktrack events show ID --config {config}[/]  ·  [bold]hooktrack stats --config {config}[/]"
        )
        if not serve:
            console.print("Replay the dead letter and browse the admin page: [bold]hooktrack demo --serve[/]")
            return
        _serve_forever(console, base_url, settings.admin.token or "", dead, config)


def _wait_for_outbox(store: Any, timeout_s: float = 15) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        counts = asyncio.run(_read(store, outbox_summary))
        if not counts.get("pending"):
            return
        time.sleep(0.1)


def _check_port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(f"port {port} is in use; pick another with `hooktrack demo --serve --port N`") from None


def _serve_forever(console: Console, base_url: str, token: str, dead: list[int], config: Path) -> None:
    """Keep the demo's hooktrack and tracking receiver running until Ctrl-C or SIGTERM."""
    console.print(
        f"\n[bold]hooktrack keeps running on {base_url}[/] (its tracking receiver too) until Ctrl-C.\n"
        f"  admin page:   {base_url}/admin/   token: [bold]{token}[/]\n"
        f"  or open:      {base_url}/admin/#token={token}\n"
        f"  metrics:      {base_url}/metrics\n"
        f"  admin API:    curl -H 'Authorization: Bearer {token}' {base_url}/admin/api/stats",
        soft_wrap=True,  # the URLs and the token stay on one line, whole, for copy and paste
    )
    if dead:
        console.print(f"  dead letter:  conversion #{dead[0]}: press Replay on its event's page, or run "
                      f"hooktrack replay {dead[0]} --config {config}", soft_wrap=True)
    stop = threading.Event()
    # Ctrl-C and SIGTERM only ask to stop, also while the servers shut down (a second Ctrl-C,
    # or `uv run` passing it on, must not break the shutdown). The process ends right after.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(0.5):
        pass
    console.print("stopping")


async def _read(store: Any, fn: Any) -> Any:
    return await store.read(fn)


def _answer(response: httpx.Response) -> str:
    """`200 duplicate (business_key)` / `400 invalid_signature`: the webhook answer in brief."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}"
    if "error" in body:
        return f"{response.status_code} {body['error'].get('code')}"
    reason = f" ({body['reason']})" if body.get("reason") else ""
    return f"{response.status_code} {body.get('status')}{reason} event #{body.get('eventId')}"


_ENDPOINTS = {"lead": "POST /track/lead", "sale": "POST /track/sale", "commissions": "GET /commissions",
              "commission": "PATCH /commissions/{id}"}


def _short(body: dict[str, Any]) -> str:
    keep = ("eventName", "customerExternalId", "amount", "currency", "invoiceId", "clickId", "status",
            "saleAmount")
    return ", ".join(f"{k}={body[k]}" for k in keep if k in body)
