"""`query`: records a filter matches, sorted (`sort = ["-score"]`), at most `limit`; one record
(or null), or a list with `multiple = true`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..collections import check_fields, collection_named, compile_filter, render_filter

NAME = "query"
FIELDS = ("collection", "filter", "sort", "limit", "multiple")
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class QueryNode:
    collection: Any
    filter: Any
    sort: tuple[str, ...]
    limit: int
    multiple: bool


def prepare(fields: Mapping[str, Any], path: str, report, known) -> QueryNode:
    collection = collection_named(fields, path, report, known)
    filter = fields.get("filter", {})
    check_fields(collection, filter, f"{path}.filter", report, filter=True)
    sort = fields.get("sort", [])
    if isinstance(sort, str):
        sort = [sort]
    if not isinstance(sort, list) or not all(isinstance(s, str) for s in sort):
        report(f"{path}.sort", "must be a list of field names, \"-name\" for descending")
        sort = []
    elif collection is not None:
        for i, name in enumerate(sort):
            field = name[1:] if name.startswith("-") else name
            if field not in collection.columns:
                report(f"{path}.sort[{i}]", f"{collection.name} has no field {field!r} (\"-name\" sorts descending)")
    multiple = fields.get("multiple", False)
    if not isinstance(multiple, bool):
        report(f"{path}.multiple", "must be true or false")
    limit = fields.get("limit", 100 if multiple else 1)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        report(f"{path}.limit", f"must be an integer from 1 to {MAX_LIMIT}")
        limit = 1
    return QueryNode(collection, compile_filter(filter), tuple(sort), limit if multiple else 1, bool(multiple))


async def execute(prepared: QueryNode, run) -> Any:
    collection = prepared.collection
    sql, params = collection.select(render_filter(prepared.filter, run), prepared.sort, prepared.limit)
    records = [collection.decode(row) for row in await run.resources.store.read_records(sql, params)]
    if prepared.multiple:
        return records
    return records[0] if records else None
