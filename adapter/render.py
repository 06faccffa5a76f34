"""Human-readable tables for the CLI and the demo (rich).

Everything shown that a provider or the tracking API could have chosen (event types and ids,
bodies, answers) goes through `safe`: rich markup in it is escaped, so `[/]` in an event type
is printed, not parsed, and control, escape and invisible characters are shown as `\\xNN` /
`\\uNNNN`, so an ANSI or OSC sequence in a stored string never reaches the terminal.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["conversion_line", "events_table", "journey_view", "safe", "stats_view"]

_STYLE = {"accepted": "green", "duplicate": "cyan", "ignored": "yellow", "rejected": "red",
          "delivered": "green", "pending": "blue", "dead": "red", "skipped": "yellow", "unattributed": "magenta"}


# C0 and C1 controls (ESC, BEL, CR, ...), DEL, and the invisible or reordering characters
# (zero-width, bidi overrides and isolates, line/paragraph separators, BOM).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe(value: object) -> str:
    """`value` as rich markup that prints it literally and puts no control character on the
    terminal (None prints as an empty string)."""
    text = "" if value is None else str(value)
    return escape(_UNSAFE.sub(_visible, text))


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _styled(word: str | None) -> str:
    return f"[{_STYLE.get(word or '', 'white')}]{safe(word)}[/]" if word else "-"


def conversion_line(conv: dict[str, Any]) -> str:
    """`sale #3 Purchase → delivered (1 attempt)` style summary (rich markup)."""
    reason = f" ({safe(conv['reason'])})" if conv.get("reason") else ""
    tries = conv.get("attempts") or 0
    return (f"{safe(conv['kind'])} #{conv['id']} {safe(conv['event_name'])} → {_styled(conv['state'])}{reason}"
            f" [{tries} attempt{'s' if tries != 1 else ''}]")


def events_table(rows: list[dict[str, Any]], console: Console | None = None, title: str | None = None) -> None:
    table = Table("id", "received (UTC)", "source", "event", "status", "reason", "conversions", title=title)
    for ev in rows:
        convs = "\n".join(conversion_line(c) for c in ev.get("conversions", [])) or "-"
        event = f"{safe(ev.get('event_type') or '-')}\n[dim]{safe(ev.get('provider_event_id'))}[/]"
        reason = safe(ev.get("reason")) or (f"same as #{ev['duplicate_of']}" if ev.get("duplicate_of") else "-")
        table.add_row(str(ev["id"]), _when(ev["received_at"]), safe(ev["source"]), event, _styled(ev["status"]),
                      reason, convs)
    (console or Console()).print(table)


def journey_view(ev: dict[str, Any], console: Console | None = None) -> None:
    out = console or Console()
    # Provider payloads and tracking API answers are data, not rich markup: escape them.
    out.print(f"[bold]event #{ev['id']}[/] {safe(ev['source'])} {safe(ev.get('event_type'))} "
              f"({safe(ev.get('provider_event_id') or 'no id')}) received {_when(ev['received_at'])} UTC")
    out.print(f"  status: {_styled(ev['status'])}" + (f"  reason: {safe(ev['reason'])}" if ev.get("reason") else ""))
    if ev.get("reason_text"):
        out.print(f"  why: {safe(ev['reason_text'])}")
    if ev.get("body"):
        body = " ".join(str(ev["body"]).split())
        out.print(f"  arrived: {safe(body[:300])}{'…' if len(body) > 300 else ''}  [dim](--json for all)[/]",
                  soft_wrap=True, highlight=False)
    if ev.get("duplicate_of"):
        out.print(f"  redelivery of event #{ev['duplicate_of']}")
    if not ev["conversions"]:
        out.print("  no conversions")
    for conv in ev["conversions"]:
        out.print(f"  {conversion_line(conv)}  Idempotency-Key: {safe(conv['idempotency_key'])}")
        if conv.get("reason_text"):
            out.print(f"    why: {safe(conv['reason_text'])}")
        if conv.get("state") == "dead":
            out.print(f"    replay it: [bold]hooktrack replay {conv['id']}[/]")
        if conv.get("reverses") is not None:
            out.print(f"    reverses: sale #{conv['reverses']}")
        sent = json.dumps(conv.get("payload", {}), separators=(", ", ": "))
        if conv.get("request") and not conv.get("payload"):  # a request without a body (a lookup)
            sent = conv["request"]
        out.print("    sent: " + safe(sent), soft_wrap=True)
        for a in conv.get("attempts_log", []):
            status = a["status_code"] if a["status_code"] is not None else a["error"]
            excerpt = f"  {a['response_excerpt']}" if a.get("response_excerpt") else ""
            when = _when(a["attempted_at"])
            out.print(f"    attempt {when}: {safe(a['outcome'])} ({safe(status)}, {a['latency_ms']} ms)"
                      f"{safe(excerpt)}")


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


def stats_view(data: dict[str, Any], console: Console | None = None) -> None:
    """`hooktrack stats`: events per source and status, rejections, conversions, the outbox."""
    out = console or Console()
    statuses = list(data["events"])
    window = f"since {_when(data['since'])} UTC" if data.get("since") else "all time"
    table = Table("source", *statuses, "pending", "dead", title=f"events ({window}) and the outbox (now)")
    for name, entry in sorted(data["sources"].items()):
        table.add_row(safe(name), *(str(entry["events"].get(s, 0)) for s in statuses), str(entry["pending"]),
                      f"[red]{entry['dead']}[/]" if entry["dead"] else "0")
    table.add_row("[bold]total[/]", *(f"[bold]{data['events'][s]}[/]" for s in statuses),
                  f"[bold]{data['outbox']['pending']}[/]", f"[bold]{data['outbox']['dead']}[/]")
    out.print(table)
    if data["rejected"]:
        out.print("rejected by reason: " + ", ".join(f"{safe(r)} {n}" for r, n in sorted(data["rejected"].items())))
    for kind, states in sorted(data["conversions"].items()):
        out.print(f"{safe(kind)}s: " + ", ".join(f"{_styled(s)} {n}" for s, n in sorted(states.items())))
    for dest in data.get("destinations", []):
        if dest.get("paused_reason"):
            out.print(f"[red]destination {safe(dest['name'])} is paused[/]: {safe(dest['paused_reason'])} "
                      "(one probe a pause_probe_s; sending resumes by itself)", soft_wrap=True)
    box = data["outbox"]
    oldest = f" (oldest {_age(box['oldest_pending_age_s'])})" if box["pending"] else ""
    out.print(f"outbox: {box['pending']} pending{oldest}, {box['dead']} dead letter{'s' if box['dead'] != 1 else ''}")
    if box["dead"]:
        out.print("  see them: [bold]hooktrack events --state dead[/]; "
                  "send them again: [bold]hooktrack replay --dead[/]", soft_wrap=True)
