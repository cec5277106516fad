"""Finding an execution by what it carried (SPEC section 9): its dedup key, the X-Request-Id
its sender saw, a field of its parsed body (`data.order.id=42`).

None of these has an index (one would cost every claim an insert for a rare search): they are
matched in a bounded scan of the stored requests, newest first (store/reads.py
`scan_executions`).  One request scans at most SCAN_BOUND stored requests: SCAN_BOUND/16 reads
of intake rows at worst (one delivery per batch), one read per batch when batches are big, each
delivery's metadata decoded and, for a `data.` filter, its body decoded and parsed: measured
here, about 20 ms of the loop's CPU for 10,000 deliveries by request id, 35 ms by a field of
200-byte JSON bodies, in steps of about a millisecond or less between which the loop runs
(reads.py says what bounds a step, and what does not).  A page that stops at the bound
answers `next`, where the following one goes on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import orjson

from ..door.context import context_of
from ..store.rows import Delivery
from .records import SHOW_LIMIT, BadQuery

SCAN_BOUND = 10_000
DATA = "data."
_UNREADABLE = object()


@dataclass(frozen=True)
class Carried:
    dedup_key: str | None = None
    request_id: str | None = None
    data: tuple[tuple[tuple[str, ...], Any], ...] = ()   # (path, value): all must hold

    def __bool__(self) -> bool:
        return self.dedup_key is not None or self.request_id is not None or bool(self.data)


def carried(query: dict[str, str]) -> Carried:
    """The filters of a query: dedup_key=, request_id=, data.<path>=<value> (the value as JSON
    when it parses as JSON, `42`, `true`, `"42"`, else as the string it is)."""
    data = []
    for name, text in query.items():
        if not name.startswith(DATA):
            continue
        path = tuple(name[len(DATA):].split("."))
        if not all(path):
            raise BadQuery(f"{name!r}: a data filter names a field, e.g. data.order.id=42")
        data.append((path, _value(text)))
    return Carried(query.get("dedup_key") or None, query.get("request_id") or None, tuple(data))


def from_options(dedup_key: str | None, request_id: str | None, data: list[str] | None) -> Carried:
    """The CLI's --dedup-key, --request-id and --data PATH=VALUE options, read as the query's."""
    query = {"dedup_key": dedup_key or "", "request_id": request_id or ""}
    for given in data or ():
        path, _, value = given.partition("=")
        query[DATA + path] = value
    return carried(query)


def _value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def matcher(wanted: Carried) -> Callable[[Delivery], bool]:
    """Whether a stored delivery carried all of `wanted` (the cheap fields first: a body is
    parsed only for a delivery they let through)."""
    def matches(d: Delivery) -> bool:
        if wanted.dedup_key is not None and d.dedup_key != wanted.dedup_key:
            return False
        if wanted.request_id is not None and d.request.request_id != wanted.request_id:
            return False
        if not wanted.data:
            return True
        data = _data(d)
        return all(_same(_field(data, path), value) for path, value in wanted.data)
    return matches


def _data(d: Delivery) -> Any:
    """The body parsed as the intake parsed it: `$context.data` (None when it no longer parses,
    which has no field to match)."""
    return context_of(d.request, d.body, SHOW_LIMIT)["data"]


def _field(data: Any, path: tuple[str, ...]) -> Any:
    for step in path:
        if isinstance(data, dict):
            data = data.get(step, _UNREADABLE)
        elif isinstance(data, list) and step.isdigit() and int(step) < len(data):
            data = data[int(step)]
        else:
            return _UNREADABLE
    return data


def _same(found: Any, wanted: Any) -> bool:
    """JSON equality: true is not 1, "42" is not 42, 42 is 42.0."""
    if found is _UNREADABLE:
        return False
    if isinstance(found, bool) or isinstance(wanted, bool):
        return type(found) is type(wanted) and found == wanted
    if isinstance(found, (int, float)) and isinstance(wanted, (int, float)):
        return found == wanted
    return type(found) is type(wanted) and found == wanted
