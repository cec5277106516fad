"""A workflow's `rate_limit`: "500/s" read once at load, enforced by a token bucket per request."""

from __future__ import annotations

import re
import time
from typing import Callable

from ..core.errors import ConfigError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$", re.IGNORECASE)
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
        "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
        "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
        "d": 86400.0, "day": 86400.0, "days": 86400.0}
# A token is "there" a hair early: (1 / rate) * rate may come out as 0.9999999999999999.
_ROUNDING = 1e-9


def parse_rate(text: str, path: str) -> tuple[float, float] | None:
    """``"500/s"`` into (tokens per second, burst); "" (no limit) into None.

    The burst is one second's worth, but at least one request, so "30/m" lets one through and
    then one every two seconds.
    """
    if not isinstance(text, str):
        raise ConfigError(path, f"must be a string like \"500/s\", not {type(text).__name__}")
    if not text.strip():
        return None
    match = _RATE.match(text)
    per = _PER.get(match[2].lower()) if match else None
    if not match or per is None:
        raise ConfigError(path, f"not a rate: {text!r} (write e.g. \"500/s\", \"30/m\", \"1000/h\")")
    count = float(match[1])
    if count <= 0:
        raise ConfigError(path, f"rate must be more than 0: {text!r} (to refuse everything, set enabled = false)")
    rate = count / per
    return rate, max(rate, 1.0)


class TokenBucket:
    """`burst` tokens, refilled at `rate` a second; a request takes one.

    No lock: one event loop owns it.  Refill is computed lazily from the clock at each `take`,
    so an idle bucket costs nothing and never holds more than `burst`.
    """

    __slots__ = ("rate", "burst", "clock", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, not {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def take(self) -> float:
        """0.0 if a token was taken, else the seconds until one will be there (nothing taken)."""
        now = self.clock()
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= 1.0 - _ROUNDING:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate
