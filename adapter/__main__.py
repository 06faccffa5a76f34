"""`python -m adapter` is `hooktrack`."""

from __future__ import annotations

from adapter.cli import main

main()
