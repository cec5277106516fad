"""parse_rate and TokenBucket, driven by a fake clock."""

from __future__ import annotations

import math

import pytest

from fastwebhook.core.errors import ConfigError
from fastwebhook.door.ratelimit import TokenBucket, parse_rate

PATH = "workflows.w.rate_limit"


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("text, expected", [
    ("500/s", (500.0, 500.0)),
    ("10/sec", (10.0, 10.0)),
    ("2/second", (2.0, 2.0)),
    ("30/m", (0.5, 1.0)),                 # burst is one second's worth, but at least one
    ("120/min", (2.0, 2.0)),
    ("1000/h", (1000 / 3600, 1.0)),
    ("7200/hour", (2.0, 2.0)),
    ("86400/d", (1.0, 1.0)),
    ("2.5/s", (2.5, 2.5)),
    (" 500 / S ", (500.0, 500.0)),
    ("100/minutes", (100 / 60, 100 / 60)),
    ("", None),
    ("   ", None),
])
def test_parse_rate(text: str, expected) -> None:
    assert parse_rate(text, PATH) == expected


@pytest.mark.parametrize("text", ["500", "500/", "/s", "500/ms", "500/week", "-1/s", "0/s", "0.0/m",
                                  "1e3/s", "five/s", "500/s/s", "500 per second", "1/2s"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rate(text, PATH)
    assert caught.value.path == PATH
    assert repr(text) in caught.value.message


def test_parse_rate_rejects_non_strings() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse_rate(500, PATH)  # type: ignore[arg-type]


def test_burst_then_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(*parse_rate("4/s", PATH), clock=clock)
    assert [bucket.take() for _ in range(4)] == [0.0] * 4
    assert bucket.take() == pytest.approx(0.25)           # a quarter second to the next token
    clock.advance(0.25)
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.25)
    clock.advance(0.125)
    assert bucket.take() == pytest.approx(0.125)         # half a token back, half to wait


def test_refused_take_costs_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1.0, clock=clock)
    assert bucket.take() == 0.0
    for _ in range(100):                                  # hammering does not push the wait out
        assert bucket.take() == pytest.approx(1.0)
    clock.advance(1.0)
    assert bucket.take() == 0.0


@pytest.mark.parametrize("rate, retry_after", [("30/m", 2), ("1000/h", 4), ("1/d", 86400), ("10/s", 1)])
def test_retry_after(rate: str, retry_after: int) -> None:
    clock = FakeClock()
    bucket = TokenBucket(*parse_rate(rate, PATH), clock=clock)
    while bucket.take() == 0.0:
        pass
    wait = bucket.take()
    assert max(1, math.ceil(wait)) == retry_after
    clock.advance(wait)
    assert bucket.take() == 0.0


def test_long_idle_does_not_exceed_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(*parse_rate("5/s", PATH), clock=clock)
    clock.advance(3600.0)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert bucket.take() > 0.0


def test_steady_rate_is_sustained() -> None:
    clock = FakeClock()
    bucket = TokenBucket(*parse_rate("100/s", PATH), clock=clock)
    taken = 0
    for _ in range(10_000):                               # 10 s of a request every millisecond
        clock.advance(0.001)
        taken += bucket.take() == 0.0
    assert 100 * 10 <= taken <= 100 * 10 + 100            # the rate, plus at most one burst


def test_exact_refill_is_not_lost_to_rounding() -> None:
    clock = FakeClock(0.1)
    bucket = TokenBucket(3.0, 1.0, clock=clock)
    assert bucket.take() == 0.0
    for _ in range(1000):
        clock.advance(1 / 3)
        assert bucket.take() == 0.0


def test_rejects_impossible_buckets() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0.0, 1.0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, 0.5)
