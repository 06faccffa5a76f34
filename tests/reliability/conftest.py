"""Reliability suites: report how many generated cases ran (the issue's note quotes it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from adapter.receiver import TrackingReceiver
from tests.reliability.sources import CASES, NOTES, Candidate, start_client


@pytest.fixture
def hooktrack(request: pytest.FixtureRequest, tmp_path: Path,
              receiver: TrackingReceiver) -> Iterator[tuple[TestClient, Candidate]]:
    """hooktrack serving the provider of `request.param` (use with `indirect=True` over
    `provider_params()`), forwarding to the `receiver`."""
    candidate: Candidate = request.param
    client = start_client(tmp_path, receiver.url, candidate)  # type: ignore[attr-defined]
    try:
        yield client, candidate
    finally:
        client.__exit__(None, None, None)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the Hypothesis cases that ran, per suite and provider, and the suites' notes."""
    if NOTES:
        terminalreporter.section("reliability")
        for note in NOTES:
            terminalreporter.write_line(note)
    if not CASES:
        return
    terminalreporter.section("hypothesis cases")
    for suite in sorted({suite for suite, _ in CASES}):
        per = {p: n for (s, p), n in sorted(CASES.items()) if s == suite}
        detail = ", ".join(f"{p}={n}" for p, n in per.items())
        terminalreporter.write_line(f"{suite}: {sum(per.values())} ({detail})")
    terminalreporter.write_line(f"total: {sum(CASES.values())} generated cases")
