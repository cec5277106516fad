"""`create`: a record in a collection (or, with `upsert_on`, the one holding those unique
fields updated).  Committed with the node's job: never created twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..collections import check_fields, collection_named
from ..templates import compile_value

NAME = "create"
FIELDS = ("collection", "values", "upsert_on")


@dataclass(frozen=True, slots=True)
class CreateNode:
    collection: Any          # workflow.collections.Collection (None after a reported error)
    values: Any              # compiled templates
    upsert_on: tuple[str, ...]


def prepare(fields: Mapping[str, Any], path: str, report, known) -> CreateNode:
    collection = collection_named(fields, path, report, known)
    values = fields.get("values", {})
    check_fields(collection, values, f"{path}.values", report)
    upsert_on = fields.get("upsert_on", [])
    if not isinstance(upsert_on, list) or not all(isinstance(f, str) for f in upsert_on):
        report(f"{path}.upsert_on", "must be a list of field names, e.g. [\"email\"]")
        upsert_on = []
    if upsert_on and collection is not None and tuple(upsert_on) not in collection.unique \
            and set(upsert_on) not in [set(u) for u in collection.unique]:
        listed = ", ".join(str(list(u)) for u in collection.unique) or "none"
        report(f"{path}.upsert_on", f"must name one of {collection.name}'s unique constraints ({listed})")
    if collection is not None:
        unique = next((u for u in collection.unique if set(u) == set(upsert_on)), tuple(upsert_on))
        upsert_on = list(unique)
    return CreateNode(collection, compile_value(values), tuple(upsert_on))


async def execute(prepared: CreateNode, run) -> dict:
    collection = prepared.collection
    write = collection.insert(run.render(prepared.values), prepared.upsert_on)
    return await run.write([write], "row", collection.decode)


async def execute_cohort(prepared: CreateNode, runs: list) -> list:
    """The cohort's records in one batch; a refused one fails its run alone."""
    collection, values, upsert_on = prepared.collection, prepared.values, prepared.upsert_on
    return await runs[0].resources.effects.commit_each(
        runs, lambda run: run.effect([collection.insert(run.render(values), upsert_on)], "row", collection.decode))
