"""`hooktrack demo`: the whole path on one machine, nothing to configure.

Writes `DIR/hooktrack.toml` (SQLite in DIR, random secrets), starts a local tracking receiver
and hooktrack on loopback, sends signed sample events — a lead, a one-time purchase, a
subscription checkout and its first invoice (one Sale), a renewal, a trial, a redelivery and a
forged signature — then prints what each became and what the receiver got. The config and
database stay behind so `hooktrack events --config DIR/hooktrack.toml` can explore them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from adapter.app import create_app
from adapter.cli import post_sample
from adapter.journal import list_events, outbox_summary
from adapter.plugin import load_providers
from adapter.receiver import TrackingReceiver, free_port, run_in_thread
from adapter.render import events_table
from adapter.settings import load_settings

__all__ = ["SCENARIO", "run_demo"]

# (source, sample, what to expect, how: "send" | "redeliver" the previous body | "forge" the signature)
SCENARIO: list[tuple[str, str, str, str]] = [
    ("stripe", "customer.created", "Lead 'Sign up' for user_42 with its click id", "send"),
    ("stripe", "checkout.session.completed", "Sale 'Purchase' $49.00 (tax excluded)", "send"),
    ("stripe", "checkout.session.completed", "Stripe retries the same event: duplicate", "redeliver"),
    ("stripe", "checkout.session.completed+subscription", "Sale 'Subscription creation' $29.00", "send"),
    ("stripe", "invoice.paid", "same invoice as the checkout: one Sale, answered duplicate", "send"),
    ("stripe", "invoice.paid+renewal", "Sale 'Subscription renewal', user_43 from identity memory", "send"),
    ("stripe", "customer.subscription.created+trial", "Lead 'Started Trial'", "send"),
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
"""


def write_config(directory: Path, tracking_url: str, api_key: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob("hooktrack-demo.db*"):
        leftover.unlink()
    path = directory / "hooktrack.toml"
    path.write_text(CONFIG.format(
        tracking_url=tracking_url, api_key=api_key, admin_token=secrets.token_urlsafe(24),
        stripe_secret="whsec_" + secrets.token_hex(24),
    ))
    return path


def run_demo(directory: str) -> None:
    console = Console()
    receiver = TrackingReceiver(api_key="demo_" + secrets.token_hex(8))
    receiver_port = free_port()
    config = write_config(Path(directory), f"http://127.0.0.1:{receiver_port}", receiver.api_key)
    settings = load_settings(config)
    app = create_app(settings, registry=load_providers())
    with run_in_thread(receiver.app(), port=receiver_port), run_in_thread(app) as base_url:
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
                answers.add_row(f"{source} {sample}", expect, f"{response.status_code} {response.text}")
        console.print(answers)
        _wait_for_outbox(app.state.store)
        rows = asyncio.run(_read(app.state.store, lambda tx: list_events(tx, limit=100)))
        events_table(list(reversed(rows)), console, title="what became of each event")
        got = Table("endpoint", "Idempotency-Key", "body", title="what the tracking API received")
        for r in receiver.requests:
            got.add_row(f"{r.status} /track/{r.kind}", r.headers.get("idempotency-key", ""), _short(r.body))
        console.print(got)
    console.print(
        f"\nExplore it: [bold]hooktrack events --config {config}[/]  ·  "
        f"[bold]hooktrack events show ID --config {config}[/]"
    )


def _wait_for_outbox(store: Any, timeout_s: float = 15) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        counts = asyncio.run(_read(store, outbox_summary))
        if not counts.get("pending"):
            return
        time.sleep(0.1)


async def _read(store: Any, fn: Any) -> Any:
    return await store.read(fn)


def _short(body: dict[str, Any]) -> str:
    keep = ("eventName", "customerExternalId", "amount", "currency", "invoiceId", "clickId")
    return ", ".join(f"{k}={body[k]}" for k in keep if k in body)
