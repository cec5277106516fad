"""Replays (SPEC section 9): an execution's stored request run again as a new execution that
names it (`replay_of`), one at a time or every one a filter matches.  No dedup: a replay is
asked for.  The admin API and the CLI share these; the CLI, with no server to hand them to,
appends them to the store, where a server's claim finds them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

import orjson

from ..config.model import Config
from ..core.ids import first_id_at, new_id
from ..store import Store
from ..store.reads import Reads
from ..store.replay_keys import ReplayKeys
from ..store.rows import Delivery, Status, StoredRequest
from . import records
from .records import BadQuery

MAX_BULK = 10_000
MAX_KEY = 255
PATH = "/api/admin/executions/replay"
# submit_many(deliveries, path) -> per delivery None (accepted) or why not: a server's intake
SubmitMany = Callable[[list[Delivery], str], Awaitable[list[str | None]]]


class KeyInUse(Exception):
    """An Idempotency-Key whose replay is under way, or was cut short (409)."""


@dataclass(frozen=True)
class ReplayFilter:
    workflow: str | None
    status: tuple[str, ...]
    since: float | None
    until: float | None
    limit: int
    dry_run: bool


def replay_filter(body: Any) -> ReplayFilter:
    """The JSON filter of a bulk replay, checked: {"workflow", "status" (one or a list),
    "since", "until" (RFC 3339), "limit" (up to 10,000), "dry_run"}."""
    if not isinstance(body, dict):
        raise BadQuery("the body must be a JSON object: {workflow, status, since, until, limit, dry_run}")
    unknown = sorted(set(body) - {"workflow", "status", "since", "until", "limit", "dry_run"})
    if unknown:
        raise BadQuery(f"unknown field(s): {', '.join(unknown)}")
    workflow = body.get("workflow")
    if workflow is not None and not isinstance(workflow, str):
        raise BadQuery("workflow must be a string")
    status = body.get("status", "failed")
    statuses = (status,) if isinstance(status, str) else tuple(status) if isinstance(status, list) else None
    valid = tuple(s.value for s in Status)
    if not statuses or any(s not in valid for s in statuses):
        raise BadQuery(f"status must be one of {', '.join(valid)}, or a list of them")
    limit = body.get("limit", MAX_BULK)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_BULK:
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_BULK}")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadQuery("dry_run must be true or false")
    since, until = _time(body.get("since"), "since"), _time(body.get("until"), "until")
    if since is not None and until is not None and until <= since:
        raise BadQuery("until must be later than since")
    return ReplayFilter(workflow, tuple(sorted(set(statuses))), since, until, limit, dry_run)


def _time(value: Any, name: str) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise BadQuery(f"{name} must be an RFC 3339 time with its offset, e.g. 2026-12-01T22:00:00Z")
    return parsed.timestamp()


def replayed(workflow, request: StoredRequest, body: bytes, of: bytes, failure_of: bytes | None) -> Delivery:
    """The new execution's delivery: the stored request, as the workflow's current version runs it
    (a failure workflow's execution replayed still reports its failure, and queues no alert of its own)."""
    return Delivery(new_id(), workflow.key, workflow.version, request, body, None, None, 0.0,
                    logged=True, replay_of=of, failure_of=failure_of)


async def replay(store: Store, config: Config, id_text: str, submit=None) -> dict | None:
    """One execution's stored request again.  `submit(delivery)` offers it to a running
    server's intake; without one (the CLI) it is appended to the store."""
    raw = records.parse_execution_id(id_text)
    record = await Reads(store).get_execution(raw) if raw is not None else None
    if record is None or record.request is None:
        return None
    workflow = config.workflows.get(record.workflow)
    if workflow is None:
        raise BadQuery(f"workflow {record.workflow!r} of that execution is no longer configured")
    delivery = replayed(workflow, record.request, record.body, raw, record.failure_of)
    if submit is not None:
        await submit(delivery)
    else:
        await store.append_outside([delivery])
    return {"execution_id": records.execution_id(delivery.id), "status": "queued", "replay_of": id_text}


async def bulk_replay(store: Store, config: Config, wanted: ReplayFilter, key: str | None = None,
                      submit_many: SubmitMany | None = None) -> dict:
    """Every execution `wanted` matches, oldest first, replayed (a dry run: only named):
    {"replayed", "matched", "items": [{"id", "replay_of"}], "not_replayed": [{"replay_of",
    "reason"}]}.  With `key`, the first answer is kept in the store, and the same key again
    answers it and replays nothing more, whatever the filter (a CLI's `--since 1h` is another
    time at each retry); a dry run neither takes nor reads a key."""
    if key is not None and not wanted.dry_run:
        if not key or len(key) > MAX_KEY:
            raise BadQuery(f"Idempotency-Key must be 1 to {MAX_KEY} characters")
        keys = ReplayKeys(store)
        taken, answer = await keys.take(key, time.time(), config.storage.retention)
        if not taken:
            if answer is None:
                raise KeyInUse("the bulk replay of this Idempotency-Key is under way (or was cut short: "
                               "see the executions it made, and use a new key for what is left)")
            return orjson.loads(answer)
        try:
            ready, answer = await _matching(store, config, wanted)
        except BaseException:
            await keys.release(key)   # nothing was replayed: the key is free again
            raise
        answer = await _submit(store, ready, answer, submit_many)   # a failure now leaves it taken
        await keys.answer(key, orjson.dumps(answer))
        return answer
    ready, answer = await _matching(store, config, wanted)
    return answer if wanted.dry_run else await _submit(store, ready, answer, submit_many)


async def _matching(store: Store, config: Config, wanted: ReplayFilter) -> tuple[list[Delivery], dict]:
    """The deliveries to offer, and the answer so far (a dry run's is whole)."""
    since = first_id_at(wanted.since) if wanted.since is not None else bytes(16)
    until = first_id_at(wanted.until) if wanted.until is not None else b"\xff" * 16
    found = await Reads(store).replay_candidates(wanted.workflow, tuple(Status(s) for s in wanted.status),
                                                 since, until, wanted.limit)
    ready: list[Delivery] = []
    not_replayed: list[dict] = []
    for id_, delivery in found:
        workflow = config.workflows.get(delivery.workflow) if delivery is not None else None
        if delivery is None:
            not_replayed.append({"replay_of": records.execution_id(id_), "reason": "its request is no longer stored"})
        elif workflow is None:
            not_replayed.append({"replay_of": records.execution_id(id_),
                                 "reason": f"workflow {delivery.workflow!r} is no longer configured"})
        else:
            ready.append(replayed(workflow, delivery.request, delivery.body, id_, delivery.failure_of))
    answer = {"replayed": 0, "matched": len(found), "items": [], "not_replayed": not_replayed}
    if wanted.dry_run:
        answer["dry_run"] = True
        answer["items"] = [{"id": None, "replay_of": records.execution_id(d.replay_of)} for d in ready]
    return ready, answer


async def _submit(store: Store, ready: list[Delivery], answer: dict, submit_many: SubmitMany | None) -> dict:
    not_replayed = answer["not_replayed"]
    if submit_many is not None:
        outcomes = await submit_many(ready, PATH)
    else:
        for start in range(0, len(ready), 1000):   # a server's claim takes them from the store
            await store.append_outside(ready[start:start + 1000])
        outcomes = [None] * len(ready)
    for delivery, refused in zip(ready, outcomes):
        if refused is None:
            answer["items"].append({"id": records.execution_id(delivery.id),
                                    "replay_of": records.execution_id(delivery.replay_of)})
        else:
            not_replayed.append({"replay_of": records.execution_id(delivery.replay_of), "reason": refused})
    answer["replayed"] = len(answer["items"])
    return answer
