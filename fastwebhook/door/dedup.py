"""The in-process dedup cache: an LRU with a TTL in front of the store's dedup table.

The store's unique key is the truth; this cache answers the common repeat (a provider's retry
a few seconds later) without a round trip, and is warmed from the store at start-up so a
duplicate is still caught after a restart.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict


def dedup_hash(workflow: str, key: str) -> int:
    """A signed 64-bit digest of (workflow, key): fits SQLite's and PostgreSQL's BIGINT."""
    digest = hashlib.blake2b(f"{workflow}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class DedupCache:
    def __init__(self, capacity: int = 200_000, clock=time.time):
        self.capacity = capacity
        self.clock = clock
        self._entries: OrderedDict[int, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: int) -> bytes | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            del self._entries[key_hash]
            return None
        return entry[0]

    def put(self, key_hash: int, execution: bytes, expires_at: float) -> None:
        entries = self._entries
        entries[key_hash] = (execution, expires_at)
        entries.move_to_end(key_hash)
        if len(entries) > self.capacity:
            entries.popitem(last=False)

    def forget(self, key_hash: int, execution: bytes) -> None:
        """Drop an entry, but only if it still names `execution` (a failed commit's row)."""
        entry = self._entries.get(key_hash)
        if entry is not None and entry[0] == execution:
            del self._entries[key_hash]
