"""One intake batch as one blob: the deliveries' metadata as one orjson array, then their bodies.

    u32 little-endian length of the metadata | metadata (orjson) | body 0 | body 1 | ...

A replay's metadata has one field more, the id it replays (so it lives as long as its request
does, and a webhook's costs nothing more); blobs written before it read as they did.

A group commit appends ONE such blob, whatever the batch's size: that is what makes a durable
acknowledgement cost one append.  Reading one delivery back decodes the metadata and slices
its body; nothing is parsed.
"""

from __future__ import annotations

import struct

import orjson

from .rows import Delivery, StoredRequest

_LENGTH = struct.Struct("<I")


def encode(deliveries: list[Delivery]) -> bytes:
    metas = []
    for d in deliveries:
        r = d.request
        meta = (d.id.hex(), d.workflow, d.version, r.method, r.path, r.query, r.headers,
                r.params, r.ip, r.received_at, r.request_id, d.dedup_hash, d.dedup_key,
                d.dedup_expires, d.door_ms, d.logged, len(d.body))
        metas.append(meta if d.replay_of is None else (*meta, d.replay_of.hex()))
    head = orjson.dumps(metas)
    return b"".join((_LENGTH.pack(len(head)), head, *(d.body for d in deliveries)))


def decode(blob: bytes, only: int | None = None) -> list[Delivery]:
    """Every delivery of the blob, or only the one at index `only`."""
    (length,) = _LENGTH.unpack_from(blob)
    metas = orjson.loads(memoryview(blob)[4:4 + length])
    offset = 4 + length
    deliveries = []
    for index, m in enumerate(metas):
        size = m[16]
        if only is None or index == only:
            request = StoredRequest(m[3], m[4], m[5], [tuple(pair) for pair in m[6]], m[7], m[8], m[9], m[10])
            deliveries.append(Delivery(bytes.fromhex(m[0]), m[1], m[2], request, blob[offset:offset + size],
                                       m[11], m[12], m[13], m[14], m[15],
                                       replay_of=bytes.fromhex(m[17]) if len(m) > 17 else None))
        offset += size
    return deliveries
