"""`destroy`: the records a filter matches are removed; the result is how many.  Committed with
the node's job: never applied twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..collections import check_fields, collection_named, compile_filter, render_filter

NAME = "destroy"
FIELDS = ("collection", "filter")


@dataclass(frozen=True, slots=True)
class DestroyNode:
    collection: Any
    filter: Any


def prepare(fields: Mapping[str, Any], path: str, report, known) -> DestroyNode:
    collection = collection_named(fields, path, report, known)
    filter = fields.get("filter", {})
    check_fields(collection, filter, f"{path}.filter", report, filter=True)
    if not filter:
        report(f"{path}.filter", "must not be empty (it would remove every record)")
    return DestroyNode(collection, compile_filter(filter))


async def execute(prepared: DestroyNode, run) -> int:
    return await run.write([_write(prepared, run)], "count", int)


async def execute_cohort(prepared: DestroyNode, runs: list) -> list:
    """The cohort's removals in one batch, each with its own job row."""
    return await runs[0].resources.effects.commit_each(
        runs, lambda run: run.effect([_write(prepared, run)], "count", int))


def _write(prepared: DestroyNode, run):
    return prepared.collection.destroy(render_filter(prepared.filter, run))
