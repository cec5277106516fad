"""The door's half of dedup: an in-process window of recent keys (NATS JetStream's duplicate
window is the model), then the store's unique index for older ones.

The cache is rebuilt at start from the intake's unclaimed deliveries and the index's live keys.
While it holds every live key (`complete`), a miss is a new key and costs nothing more; once it
had to drop a live key, a miss is checked against the index by the group commit.  Either way
the claim's unique index is the truth: a repeat that slips past the door ends `duplicate`.
"""

from __future__ import annotations

import hashlib
import struct
import time

DEFAULT_CAPACITY = 250_000
# An entry is one bytes object, its expiry and the execution id packed: ~60 bytes a key instead of
# a tuple, a bytes and a float (~130).
_EXPIRY = struct.Struct("<d")


def dedup_hash(workflow: str, key: str) -> int:
    """A signed 64-bit digest of (workflow, key): fits SQLite's and PostgreSQL's BIGINT."""
    return KeyHasher(workflow)(key)


class KeyHasher:
    """`dedup_hash` for one workflow, its prefix hashed once (a copy per key is cheaper)."""

    __slots__ = ("_prefix",)

    def __init__(self, workflow: str):
        self._prefix = hashlib.blake2b(f"{workflow}\x00".encode(), digest_size=8)

    def __call__(self, key: str) -> int:
        digest = self._prefix.copy()
        digest.update(key.encode())
        return int.from_bytes(digest.digest(), "big", signed=True)


class DoorCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, clock=time.time):
        self.capacity = capacity
        self.clock = clock
        self.complete = True
        self._entries: dict[int, bytes] = {}   # hash -> expiry + execution id; insertion order: oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: int) -> bytes | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if _EXPIRY.unpack_from(entry)[0] <= self.clock():
            del self._entries[key_hash]
            return None
        return entry[8:]

    def put(self, key_hash: int, execution: bytes, expires_at: float) -> None:
        entries = self._entries
        entries.pop(key_hash, None)
        entries[key_hash] = _EXPIRY.pack(expires_at) + execution
        if len(entries) > self.capacity:
            oldest = next(iter(entries))
            if _EXPIRY.unpack_from(entries.pop(oldest))[0] > self.clock():
                self.complete = False

    def forget(self, key_hash: int, execution: bytes) -> None:
        """Drop an entry, but only if it still names `execution` (a commit that failed)."""
        entry = self._entries.get(key_hash)
        if entry is not None and entry[8:] == execution:
            del self._entries[key_hash]

    def clear(self) -> None:
        """Forget everything: from now on misses are checked against the store's index."""
        self._entries.clear()
        self.complete = False
