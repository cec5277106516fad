"""Durations ("250ms", "15s", "24h") and sizes ("1MiB", "16KiB") as config writes them, and
times as records show them."""

import math
import re
import time

from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib|k|m|g)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3,
               None: 1}


def parse_duration(text: str | int | float, path: str) -> float:
    """Seconds from a duration; a bare number is seconds."""
    if isinstance(text, bool):
        raise ConfigError(path, f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ConfigError(path, f"duration must not be negative: {text!r}")
        return float(text)
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(path, f"not a duration: {text!r} (write e.g. \"250ms\", \"15s\", \"24h\", \"7d\")")
    return float(match[1]) * _DURATION_UNITS[match[2]]


def parse_size(text: str | int, path: str) -> int:
    """Bytes from a size; KiB/MiB are powers of two, KB/MB powers of ten."""
    if isinstance(text, bool):
        raise ConfigError(path, f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(path, f"size must not be negative: {text!r}")
        return text
    match = _SIZE.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(path, f"not a size: {text!r} (write e.g. \"1MiB\", \"16KiB\", \"512\")")
    unit = match[2].lower() if match[2] else None
    return int(match[1]) * _SIZE_UNITS[unit]


_seconds: dict[int, str] = {}   # whole seconds formatted lately: most times share a few


def timestamp(value: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds ("2026-12-01T22:52:04.123Z"), as every record shows times
    (datetime's rounding: to the microsecond, half to even, then cut to the millisecond)."""
    if value is None:
        return None
    fraction, whole = math.modf(value)
    second, micro = int(whole), round(fraction * 1_000_000)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    text = _seconds.get(second)
    if text is None:
        if len(_seconds) >= 64:   # a run reads back times of many seconds (a backlog, a listing)
            _seconds.clear()
        text = _seconds[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{text}.{micro // 1000:03d}Z"
