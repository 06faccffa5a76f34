"""hooktrack: payment webhooks in, verified Lead and Sale conversions out."""

from __future__ import annotations

__version__ = "0.1.0"
