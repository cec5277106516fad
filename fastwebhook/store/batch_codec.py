"""One intake batch as one blob: the deliveries' metadata as one orjson array, then their bodies.

    u32 little-endian length of the metadata | metadata (orjson) | body 0 | body 1 | ...

A group commit appends ONE such blob, whatever the batch's size: that is what makes a durable
acknowledgement cost one append.  Reading one delivery back decodes the metadata and slices
its body; nothing is parsed.

A failure workflow's delivery (`on_failure`) is a blob of its own whose metadata is an object,
`{"failure_of": HEX, "deliveries": [...]}`: the mark costs the blobs of webhooks nothing.
"""

from __future__ import annotations

import struct

import orjson

from .rows import Delivery, StoredRequest

_LENGTH = struct.Struct("<I")


def encode(deliveries: list[Delivery]) -> bytes:
    return _encode(deliveries, _metas(deliveries))


def encode_alert(delivery: Delivery) -> bytes:
    """A failure workflow's delivery, marked with the failed execution it reports."""
    return _encode([delivery], {"failure_of": delivery.failure_of.hex(), "deliveries": _metas([delivery])})


def _metas(deliveries: list[Delivery]) -> list:
    metas = []
    for d in deliveries:
        r = d.request
        metas.append((d.id.hex(), d.workflow, d.version, r.method, r.path, r.query, r.headers,
                      r.params, r.ip, r.received_at, r.request_id, d.dedup_hash, d.dedup_key,
                      d.dedup_expires, d.door_ms, d.logged, len(d.body)))
    return metas


def _encode(deliveries: list[Delivery], metas) -> bytes:
    head = orjson.dumps(metas)
    return b"".join((_LENGTH.pack(len(head)), head, *(d.body for d in deliveries)))


def decode(blob: bytes, only: int | None = None) -> list[Delivery]:
    """Every delivery of the blob, or only the one at index `only`."""
    (length,) = _LENGTH.unpack_from(blob)
    metas = orjson.loads(memoryview(blob)[4:4 + length])
    failure_of = None
    if type(metas) is dict:   # a failure workflow's delivery (encode_alert)
        failure_of, metas = bytes.fromhex(metas["failure_of"]), metas["deliveries"]
    offset = 4 + length
    deliveries = []
    for index, m in enumerate(metas):
        size = m[16]
        if only is None or index == only:
            request = StoredRequest(m[3], m[4], m[5], [tuple(pair) for pair in m[6]], m[7], m[8], m[9], m[10])
            deliveries.append(Delivery(bytes.fromhex(m[0]), m[1], m[2], request, blob[offset:offset + size],
                                       m[11], m[12], m[13], m[14], m[15]))
        offset += size
    if failure_of is not None:
        for delivery in deliveries:
            delivery.failure_of = failure_of
    return deliveries
