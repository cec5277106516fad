"""One intake batch as one blob: the deliveries' metadata as one orjson array, then their bodies.

    u32 little-endian length of the metadata | metadata (orjson) | body 0 | body 1 | ...

A group commit appends ONE such blob, whatever the batch's size: that is what makes a durable
acknowledgement cost one append.  Reading one delivery back decodes the metadata and slices
its body; nothing is parsed.

A replay's or a failure workflow's delivery has two metadata fields more: the execution it
replays and the failed one it reports (hex, or null).  A webhook's metadata stops before them,
so the marks cost webhooks nothing.
"""

from __future__ import annotations

import struct
from typing import Collection, Iterable, Iterator

import orjson

from .rows import Delivery, StoredRequest, body_of

_LENGTH = struct.Struct("<I")


def encode(deliveries: list[Delivery]) -> bytes:
    metas = []
    for d in deliveries:
        r = d.request
        meta = (d.id.hex(), d.workflow, d.version, r.method, r.path, r.query, r.headers,
                r.params, r.ip, r.received_at, r.request_id, d.dedup_hash, d.dedup_key,
                d.dedup_expires, d.door_ms, d.logged, len(d.body))
        if d.replay_of is not None or d.failure_of is not None:
            meta = (*meta, _hex(d.replay_of), _hex(d.failure_of))
        metas.append(meta)
    head = orjson.dumps(metas)
    return b"".join((_LENGTH.pack(len(head)), head, *map(body_of, deliveries)))


def decode(blob: bytes, only: int | Collection[int] | None = None) -> list[Delivery]:
    """Every delivery of the blob, in order, or only the one at index `only` (or those at the
    indexes it holds): the others' bodies are not copied out."""
    metas, starts = _metas(blob)
    if only is None:
        indexes: Iterable[int] = range(len(metas))
    else:
        wanted = {only} if isinstance(only, int) else set(only)
        indexes = (index for index in range(len(metas)) if index in wanted)
    return [_delivery(blob, metas[index], starts[index]) for index in indexes]


def newest_first(blob: bytes, below: int | None = None) -> Iterator[tuple[int, Delivery]]:
    """The blob's deliveries with their indexes, last first (only those below index `below`),
    each made as it is asked for: a reader that stops, or lets the loop run between two of them,
    has not copied out the bodies it did not reach."""
    metas, starts = _metas(blob)
    for index in range(min(len(metas), len(metas) if below is None else below) - 1, -1, -1):
        yield index, _delivery(blob, metas[index], starts[index])


def _metas(blob: bytes) -> tuple[list, list[int]]:
    """The metadata array, and where each delivery's body starts in the blob."""
    (length,) = _LENGTH.unpack_from(blob)
    metas = orjson.loads(memoryview(blob)[4:4 + length])
    starts, offset = [], 4 + length
    for m in metas:
        starts.append(offset)
        offset += m[16]
    return metas, starts


def _delivery(blob: bytes, m: list, start: int) -> Delivery:
    request = StoredRequest(m[3], m[4], m[5], [tuple(pair) for pair in m[6]], m[7], m[8], m[9], m[10])
    delivery = Delivery(bytes.fromhex(m[0]), m[1], m[2], request, blob[start:start + m[16]],
                        m[11], m[12], m[13], m[14], m[15])
    if len(m) > 17:
        delivery.replay_of, delivery.failure_of = _bytes(m[17]), _bytes(m[18])
    return delivery


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)
