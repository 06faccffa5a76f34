"""Pacing: send no faster than the tracking API allows, at a steady rate (SPEC §7).

Dub's limiter is a sliding window per API key: quota comes back gradually, not all at the reset,
so the forwarder spaces requests `window / limit` apart instead of sending a burst whenever
`X-RateLimit-Remaining` allows. The limit comes from `X-RateLimit-Limit`; the window from how
far `X-RateLimit-Reset` moves when a window ends (it names the end of the current window), and
until that is seen, from the destination's documented window. `tracking.max_requests_per_minute`
caps the rate further. A 429 blocks every request of this process until the API's time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from adapter.destinations import RateInfo

__all__ = ["Pacer"]

MIN_WINDOW_S = 1.0
MAX_WINDOW_S = 3600.0
HEADROOM = 0.97
"""The pace is this share of the API's limit, so that the catch-up allowed after a pause
(below) never takes a window over the limit."""
CATCH_UP_S = 0.5
"""A request may go out up to this long (at most 3% of the window) after its slot, when the
forwarder was busy elsewhere (recording a batch, claiming the next): idle time is not lost."""
_WINDOWS_S = (3600, 900, 600, 300, 120, 60, 30, 20, 15, 10, 5, 2, 1)
"""Window lengths an Upstash limiter is commonly given; its windows end at multiples of their
length, so the first `X-RateLimit-Reset` already rules most of them out."""


class Pacer:
    """Hands out send times spaced by the learned interval; shared by a forwarder's requests."""

    def __init__(self, max_per_minute: int | None = None, window_s: float = 60.0,
                 clock: Any = time.monotonic) -> None:
        self.cap_interval = 60.0 / max_per_minute if max_per_minute else 0.0
        self.api_interval = 0.0
        self.window_s = window_s
        self.limit: int | None = None
        self._clock = clock
        self._last_reset: int | None = None
        self._learned_window: float | None = None
        self._next = clock()
        self._blocked_until = 0.0

    def interval_s(self) -> float:
        """Seconds between two requests now (0 when nothing limits them)."""
        return max(self.cap_interval, self.api_interval)

    async def slot(self) -> None:
        """Wait for this request's turn."""
        while True:
            now = self._clock()
            interval = self.interval_s()
            self._next = max(self._next, now - min(CATCH_UP_S, 0.03 * self.window_s))
            at = max(self._next, self._blocked_until)
            if at <= now:
                self._next = at + interval
                return
            await asyncio.sleep(at - now)

    def block(self, seconds: float) -> None:
        """Send nothing for `seconds` (the API answered 429)."""
        self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, seconds))

    def learn(self, info: RateInfo, at_ms: int, destination: Any = None) -> None:
        """Update the pace from one answer's rate-limit headers."""
        if info.reset_at_ms is not None:
            last = self._last_reset
            if last is not None and info.reset_at_ms > last + 500:
                jump = (info.reset_at_ms - last) / 1000
                if MIN_WINDOW_S <= jump <= MAX_WINDOW_S:
                    # A window skipped without requests moves the reset by several windows: keep the least.
                    self._learned_window = min(self._learned_window or jump, jump)
            if last is None or info.reset_at_ms > last:
                self._last_reset = info.reset_at_ms
        if self._learned_window is not None:
            self.window_s = self._learned_window
        elif info.reset_at_ms is not None:
            self.window_s = _first_guess(info.reset_at_ms, at_ms, self.window_s)
        if info.limit is not None and info.limit > 0:
            self.limit = info.limit
            self.api_interval = self.window_s / (info.limit * HEADROOM)
        if info.remaining is not None and info.remaining <= 0:
            self.block(self.api_interval)


def _first_guess(reset_ms: int, now_ms: int, assumed: float) -> float:
    """The window before a reset has moved: at least the time left to the reset, and a length
    the reset is a multiple of (Upstash windows end at multiples of their length); never more
    than the destination's documented window, unless the reset is further away than that."""
    least = max(MIN_WINDOW_S, (reset_ms - now_ms) / 1000)
    if least > assumed:
        return min(MAX_WINDOW_S, least)
    fitting = [w for w in _WINDOWS_S if least <= w <= assumed and reset_ms % (w * 1000) == 0]
    return float(max(fitting)) if fitting else assumed
