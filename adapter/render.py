"""Human-readable tables for the CLI and the demo (rich)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["conversion_line", "events_table", "journey_view"]

_STYLE = {"accepted": "green", "duplicate": "cyan", "ignored": "yellow", "rejected": "red",
          "delivered": "green", "pending": "blue", "dead": "red", "skipped": "yellow"}


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _styled(word: str | None) -> str:
    return f"[{_STYLE.get(word or '', 'white')}]{word}[/]" if word else "-"


def conversion_line(conv: dict[str, Any]) -> str:
    """`sale #3 Purchase → delivered (1 attempt)` style summary."""
    reason = f" ({conv['reason']})" if conv.get("reason") else ""
    tries = conv.get("attempts") or 0
    return (f"{conv['kind']} #{conv['id']} {conv['event_name']} → {_styled(conv['state'])}{reason}"
            f" [{tries} attempt{'s' if tries != 1 else ''}]")


def events_table(rows: list[dict[str, Any]], console: Console | None = None, title: str | None = None) -> None:
    table = Table("id", "received (UTC)", "source", "event", "status", "reason", "conversions", title=title)
    for ev in rows:
        convs = "\n".join(conversion_line(c) for c in ev.get("conversions", [])) or "-"
        event = f"{ev.get('event_type') or '-'}\n[dim]{ev.get('provider_event_id') or ''}[/]"
        reason = ev.get("reason") or (f"same as #{ev['duplicate_of']}" if ev.get("duplicate_of") else "-")
        table.add_row(str(ev["id"]), _when(ev["received_at"]), ev["source"], event, _styled(ev["status"]),
                      reason, convs)
    (console or Console()).print(table)


def journey_view(ev: dict[str, Any], console: Console | None = None) -> None:
    out = console or Console()
    out.print(f"[bold]event #{ev['id']}[/] {ev['source']} {ev.get('event_type') or ''} "
              f"({ev.get('provider_event_id') or 'no id'}) received {_when(ev['received_at'])} UTC")
    out.print(f"  status: {_styled(ev['status'])}" + (f"  reason: {ev['reason']}" if ev.get("reason") else ""))
    if ev.get("duplicate_of"):
        out.print(f"  redelivery of event #{ev['duplicate_of']}")
    if not ev["conversions"]:
        out.print("  no conversions")
    for conv in ev["conversions"]:
        out.print(f"  {conversion_line(conv)}  Idempotency-Key: {conv['idempotency_key']}")
        out.print("    sent: " + json.dumps(conv.get("payload", {}), separators=(", ", ": ")), soft_wrap=True)
        for a in conv.get("attempts_log", []):
            status = a["status_code"] if a["status_code"] is not None else a["error"]
            excerpt = f"  {a['response_excerpt']}" if a.get("response_excerpt") else ""
            when = _when(a["attempted_at"])
            out.print(f"    attempt {when}: {a['outcome']} ({status}, {a['latency_ms']} ms){excerpt}")
