"""`update`: the records a filter matches get new values; the result is how many.  Committed
with the node's job: never applied twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..collections import check_fields, collection_named, compile_filter, render_filter
from ..templates import compile_value

NAME = "update"
FIELDS = ("collection", "filter", "values")


@dataclass(frozen=True, slots=True)
class UpdateNode:
    collection: Any
    filter: Any              # compiled (collections.compile_filter)
    values: Any


def prepare(fields: Mapping[str, Any], path: str, report, known) -> UpdateNode:
    collection = collection_named(fields, path, report, known)
    filter = fields.get("filter", {})
    check_fields(collection, filter, f"{path}.filter", report, filter=True)
    if not filter:
        report(f"{path}.filter", "must not be empty (it would update every record)")
    values = fields.get("values", {})
    check_fields(collection, values, f"{path}.values", report)
    if not values:
        report(f"{path}.values", "must set at least one field")
    return UpdateNode(collection, compile_filter(filter), compile_value(values))


async def execute(prepared: UpdateNode, run) -> int:
    return await run.write([_write(prepared, run)], "count", int)


async def execute_cohort(prepared: UpdateNode, runs: list) -> list:
    """The cohort's updates in one batch, each with its own job row."""
    return await runs[0].resources.effects.commit_each(
        runs, lambda run: run.effect([_write(prepared, run)], "count", int))


def _write(prepared: UpdateNode, run):
    return prepared.collection.update(render_filter(prepared.filter, run), run.render(prepared.values))
