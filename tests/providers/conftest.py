"""Fixtures of the provider tests: `make_flow` (ingest without HTTP, see `flow.py`)."""

from tests.providers.flow import make_flow

__all__ = ["make_flow"]
