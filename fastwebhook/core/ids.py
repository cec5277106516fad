"""Execution ids: UUIDv7 (RFC 9562), monotonic within a process.

Time-ordered ids keep index inserts at the right edge of the B-tree, which is a third of the
cost of random keys.  Within one millisecond a counter in `rand_a` keeps them increasing.
"""

import random
import time
import uuid

_last_ms = 0
_counter = 0
_bits = random.SystemRandom().getrandbits  # seeded from the OS; ids must not repeat across forks
_fast_bits = random.Random(_bits(64)).getrandbits


def new_id() -> bytes:
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000
    if ms > _last_ms:
        _last_ms, _counter = ms, _fast_bits(10)
    else:
        _counter += 1
        if _counter > 0xFFF:          # 4096 ids in one millisecond: borrow the next one
            _last_ms, _counter = _last_ms + 1, 0
        ms = _last_ms
    value = (ms << 80) | (0x7000 | _counter) << 64 | (0b10 << 62) | _fast_bits(62)
    return value.to_bytes(16, "big")


def first_id_at(seconds: float) -> bytes:
    """The smallest id of that millisecond: ids below it were made before it."""
    return (int(seconds * 1000) << 80).to_bytes(16, "big")


def reseed() -> None:
    """Called in a forked worker process so siblings do not share a random stream."""
    global _fast_bits
    _fast_bits = random.Random(_bits(64)).getrandbits


def to_text(raw: bytes) -> str:
    """The canonical 8-4-4-4-12 form; slicing the hex is several times cheaper than uuid.UUID."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def from_text(text: str) -> bytes | None:
    try:
        return uuid.UUID(text).bytes
    except (ValueError, TypeError, AttributeError):
        return None
