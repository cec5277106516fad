"""The door's half of dedup: an in-process window of recent keys (NATS JetStream's duplicate
window is the model), in front of the store's unique index.

A repeat the window holds is answered at the door, with the original's id.  On one process a
miss is taken for a new key: a repeat older than the window is acknowledged, and the claim's
unique index ends it `duplicate`, naming its original, running nothing (SPEC: the door's check
may be a cache).  Checking every miss against the index instead cost ~15 % of the CPU of each
execution once the window had filled, which every busy server reaches.  Where other processes
or hosts take keys too, the intake checks each batch's misses against the shared index
(`Intake.check_misses`), so a repeat sent to another host is answered at its door too.  The
window is rebuilt at start from the intake's unclaimed deliveries and the index's live keys.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections import deque

DEFAULT_CAPACITY = 100_000
GENERATIONS = 4
# An entry is one bytes object, its expiry and the execution id packed (a tuple, a bytes and a
# float would be ~80 bytes more): ~145 bytes a key with its int and its slot in the dict, so the
# default window is ~14 MiB.
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
    """The recent keys, in generations: puts go into the youngest; when it is full it is sealed,
    and when there are GENERATIONS the oldest is dropped whole.  A dict alone would drop its
    oldest key with `next(iter(...))`, which walks every slot deleted before it (Python dicts
    compact only when they grow): O(n) per put once the window is full."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, clock=time.time):
        self.capacity = capacity
        self.clock = clock
        self._generation_size = max(1, capacity // GENERATIONS)
        self._young: dict[int, bytes] = {}   # hash -> expiry + execution id
        self._sealed: deque[dict[int, bytes]] = deque()   # oldest first

    def __len__(self) -> int:
        return len(self._young) + sum(len(entries) for entries in self._sealed)

    def get(self, key_hash: int) -> bytes | None:
        entries = self._young
        entry = entries.get(key_hash)
        if entry is None:
            for entries in reversed(self._sealed):   # the newest entry of a key wins
                entry = entries.get(key_hash)
                if entry is not None:
                    break
            else:
                return None
        if _EXPIRY.unpack_from(entry)[0] <= self.clock():
            del entries[key_hash]
            return None
        return entry[8:]

    def put(self, key_hash: int, execution: bytes, expires_at: float) -> None:
        young = self._young
        young[key_hash] = _EXPIRY.pack(expires_at) + execution
        if len(young) >= self._generation_size:
            sealed = self._sealed
            sealed.append(young)
            self._young = {}
            if len(sealed) >= GENERATIONS:   # the young one and GENERATIONS - 1 sealed hold `capacity`
                sealed.popleft()

    def forget(self, key_hash: int, execution: bytes) -> None:
        """Drop an entry, but only if it still names `execution` (a commit that failed)."""
        for entries in (self._young, *self._sealed):
            entry = entries.get(key_hash)
            if entry is not None and entry[8:] == execution:
                del entries[key_hash]

    def clear(self) -> None:
        """Forget everything (repeats of what it held now end `duplicate` at the claim)."""
        self._young = {}
        self._sealed.clear()
