"""Mapping and ingest without HTTP: `parse` + `map_event`, and the ingest transaction against a
real SQLite store (no app, no forwarder, no receiver). Each provider keeps one end-to-end flow
through the app and a real loopback receiver; everything else about mapping is tested here,
which is what makes the provider suite fast.

`Flow.receive` is what `POST /webhooks/{source}` does after reading the body (verify, parse, map,
one transaction); `Flow.stored` reads back what the transaction stored, in one place, so the
tests assert on resolved identity and names rather than on one destination's request bodies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from adapter.destinations.dub import DubDestination
from adapter.events import Lead, Sale
from adapter.ingest import Ingestor, map_event, parse_events
from adapter.journal import conversions_of
from adapter.plugin import Provider, Source
from adapter.settings import TrackingSettings
from adapter.store import open_store
from adapter.testing import make_source

Signer = Callable[[bytes], Mapping[str, str]]


def mapped(src: Source, body: bytes | dict[str, Any], headers: Mapping[str, str] | None = None) -> list[Any]:
    """What the core makes of one (already verified) delivery before storing it: parse, then
    map with the source's key lists applied (every event's conversions, in order, for a delivery
    of several). Raises `Ignore` / `PayloadError` as the core does."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return [c for event in parse_events(src, raw, Headers(dict(headers or {}))) for c in map_event(src, event)]


def one(src: Source, body: bytes | dict[str, Any], headers: Mapping[str, str] | None = None) -> Lead | Sale:
    [conv] = mapped(src, body, headers)
    return conv


@dataclass(frozen=True)
class Stored:
    """One stored conversion as the tracking side will see it: resolved, named, decided."""

    kind: str
    event_name: str
    external_id: str | None
    click_id: str | None
    email: str | None
    name: str | None
    state: str
    reason: str | None
    invoice_id: str | None
    metadata: dict[str, Any]


class Flow:
    """One source of a provider with its own SQLite store; `receive` runs the real ingest."""

    def __init__(self, db: Path, provider: Provider, secrets: list[str], sign: Signer, name: str,
                 **settings: Any) -> None:
        self.src = make_source(provider, secrets, name=name, **settings)
        self.sign = sign
        self.loop = asyncio.new_event_loop()
        self.store = open_store(f"sqlite:///{db}")
        self.loop.run_until_complete(self.store.open())
        self.destination = DubDestination(TrackingSettings(url="http://127.0.0.1:9", api_key="dub_test"))
        self.ingestor = Ingestor(self.store, self.destination)

    def receive(self, body: bytes | dict[str, Any], headers: Mapping[str, str] | None = None,
                query: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Sign `body` (unless `headers` are given) and ingest it, with the request's `query`
        (a URL token); the webhook's JSON answer."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = dict(headers) if headers is not None else {"Content-Type": "application/json", **self.sign(raw)}
        outcome = self.loop.run_until_complete(self.ingestor.receive(self.src, raw, Headers(sent), query))
        answer: dict[str, Any] = outcome.body()
        return answer

    def stored(self, answer: dict[str, Any] | None = None) -> list[Stored]:
        """The conversions of the event `answer` names (every stored conversion without one)."""
        def read(tx: Any) -> list[dict[str, Any]]:
            if answer is not None:
                return conversions_of(tx, answer["eventId"], self.destination)
            ids = [row[0] for row in tx.all("SELECT id FROM events WHERE status != 'duplicate' ORDER BY id")]
            return [c for event_id in ids for c in conversions_of(tx, event_id, self.destination)]

        rows = self.loop.run_until_complete(self.store.read(read))
        return [_stored(row) for row in rows]

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


def _stored(row: dict[str, Any]) -> Stored:
    payload = row["payload"]  # the body the dub destination renders of the stored conversion
    return Stored(
        kind=row["kind"], event_name=row["event_name"], external_id=row["customer_external_id"],
        click_id=payload.get("clickId"), email=payload.get("customerEmail"), name=payload.get("customerName"),
        state=row["state"], reason=row["reason"], invoice_id=payload.get("invoiceId"),
        metadata=payload.get("metadata") or {},
    )


@pytest.fixture
def make_flow(tmp_path: Path) -> Iterator[Callable[..., Flow]]:
    """`make_flow(provider, secrets, sign, name=..., **source settings)`; stores closed after."""
    flows: list[Flow] = []

    def start(provider: Provider, secrets: list[str], sign: Signer, name: str | None = None,
              **settings: Any) -> Flow:
        flow = Flow(tmp_path / f"flow{len(flows)}.db", provider, secrets, sign, name or provider.name, **settings)
        flows.append(flow)
        return flow

    yield start
    for flow in flows:
        flow.close()
