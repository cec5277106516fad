"""The workflow runner: walks a workflow's nodes, records one job per node run.

It knows no node type: each node's `run` comes from the registry.  Failures are caught per node
and per execution; nothing raised by a node escapes into the worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import orjson

from ..config import NodeSpec, Workflow
from ..store.rows import Status
from .nodes import NODE_TYPES
from .nodes.end import EndExecution
from .templates import render_value


class _System:
    """`$system`: computed when a template asks, not for every execution."""

    @property
    def now(self) -> str:
        return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


SYSTEM = _System()


@dataclass(slots=True)
class JobRecord:
    node: str
    type: str
    status: str
    result: Any
    error: str | None
    logs: list
    duration_ms: float


@dataclass
class Run:
    """What one execution sees and leaves behind."""

    execution_id: str
    workflow: Workflow
    context: Mapping[str, Any]
    env: Mapping[str, str]
    jobs: list[JobRecord] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    response: dict | None = None
    logs: list = field(default_factory=list)

    def __post_init__(self):
        self.scope = {
            "$context": self.context, "$jobsMapByNodeKey": self.results, "$nodes": self.results,
            "$execution": {"id": self.execution_id}, "$workflow": {"key": self.workflow.key},
            "$env": self.env, "$system": SYSTEM,
        }

    def render(self, value: Any) -> Any:
        return render_value(value, self.scope)


@dataclass(slots=True)
class Outcome:
    status: str
    error: str | None
    jobs: list[JobRecord]
    response: dict | None


async def run_workflow(run: Run, node_metrics=None) -> Outcome:
    try:
        status = await _run_nodes(run, run.workflow.nodes, node_metrics)
        error = None if status == "resolved" else f"ended as {status}"
    except _NodeFailed as failed:
        status, error = Status.FAILED, failed.message
    except EndExecution as end:
        status = end.status
        error = None if status == "resolved" else "ended by an end node"
    return Outcome(status, error, run.jobs, run.response)


class _NodeFailed(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


async def _run_nodes(run: Run, nodes: tuple[NodeSpec, ...], node_metrics) -> str:
    for spec in nodes:
        node_type = NODE_TYPES[spec.type]
        started = time.perf_counter()
        run.logs = []
        try:
            result = await node_type.run(spec.fields["prepared"], run)
        except EndExecution:
            _record(run, spec, Status.RESOLVED, None, None, started, node_metrics)
            raise
        except Exception as exc:  # noqa: BLE001 - a node's failure is data, not a crash
            message = f"node {spec.key!r} ({spec.path}): {exc}"
            _record(run, spec, Status.FAILED, None, message, started, node_metrics)
            if spec.ignore_fail:
                continue
            raise _NodeFailed(message) from None
        run.results[spec.key] = result
        _record(run, spec, Status.RESOLVED, result, None, started, node_metrics)
        branch = spec.then if result is True else spec.otherwise if result is False else ()
        if branch:
            await _run_nodes(run, branch, node_metrics)
    return Status.RESOLVED


def _record(run: Run, spec: NodeSpec, status: str, result: Any, error: str | None,
            started: float, node_metrics) -> None:
    elapsed = time.perf_counter() - started
    if node_metrics is not None:
        node_metrics.slot(spec.type).observe(elapsed)
    run.jobs.append(JobRecord(spec.key, spec.type, status, result, error, run.logs, elapsed * 1000))


def encode_result(value: Any) -> bytes | None:
    if value is None:
        return None
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
