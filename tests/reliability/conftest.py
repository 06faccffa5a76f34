"""Reliability suites: the `hooktrack` fixture. (The count of generated cases that ran is
printed by tests/conftest.py, which also gathers it from xdist workers.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from adapter.receiver import TrackingReceiver
from tests.reliability.sources import Candidate, start_client


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
