"""The forwarder's pacer (adapter/pacing.py) on a fake clock: steady spacing at the API's limit,
the window learned from `X-RateLimit-Reset`, a 429 blocking every request."""

from __future__ import annotations

import asyncio
import itertools

from adapter.destinations import RateInfo
from adapter.pacing import HEADROOM, Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _sends(pacer: Pacer, clock: Clock, count: int) -> list[float]:
    """When `count` requests are allowed out, sleeping on the fake clock."""
    times: list[float] = []

    async def go() -> None:
        real_sleep = asyncio.sleep

        async def fake_sleep(seconds: float) -> None:
            clock.now += seconds
            await real_sleep(0)

        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            for _ in range(count):
                await pacer.slot()
                times.append(clock.now)
        finally:
            asyncio.sleep = real_sleep

    asyncio.run(go())
    return times


def test_without_rate_headers_nothing_is_held_back() -> None:
    clock = Clock()
    times = _sends(Pacer(clock=clock), clock, 5)
    assert times == [1000.0] * 5


def test_requests_are_spaced_at_the_limit_never_in_a_burst() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    # A 60 s window (Dub's minute) ending at a multiple of 60 s.
    pacer.learn(RateInfo(600, 599, 1_020_000), at_ms=1_000_000)
    times = _sends(pacer, clock, 11)
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
    assert gaps == {round(60 / (600 * HEADROOM), 6)}  # ~0.103 s: 97% of 10 requests/s


def test_the_window_is_learned_from_how_far_the_reset_moves() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.learn(RateInfo(40, 39, 1_000_010_000), at_ms=1_000_006_000)
    assert pacer.window_s == 10  # the first guess: the reset is a multiple of 10 s, not of 60 s
    pacer.learn(RateInfo(40, 30, 1_000_015_000), at_ms=1_000_011_000)
    assert pacer.window_s == 5  # the reset moved by 5 s: the window is 5 s
    assert abs(pacer.interval_s() - 5 / (40 * HEADROOM)) < 1e-9


def test_a_cap_below_the_api_limit_wins() -> None:
    pacer = Pacer(60)  # tracking.max_requests_per_minute = 60
    pacer.learn(RateInfo(3000, 2999, None), at_ms=0)
    assert pacer.interval_s() == 1.0


def test_a_429_blocks_every_request_until_the_apis_time() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.block(2.5)
    times = _sends(pacer, clock, 2)
    assert times[0] == 1002.5
