"""The workflow runner: walks a workflow's nodes, records one job per node run.

It knows no node type: each node's `run` comes from the registry, and what the runner does
with a result depends only on the type's declared traits (`branches`: True/False picks `then`
or `else`; `at_once`: its job is committed the moment it succeeds).  Failures are caught per
node and per execution; nothing raised by a node escapes into the worker.

Resuming after a crash: a job committed by an earlier attempt (a collection write commits with
its job row, an outbound call commits its job right after it succeeds) is not run again; its
recorded result stands in, so nothing is created, updated or destroyed twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from ..config import NodeSpec, Workflow
from ..errors import StoreError
from ..ids import to_text
from ..store.rows import Effect, Job, Status, Write, encode_result
from ..units import timestamp
from .nodes import NODE_TYPES
from .nodes.end import EndExecution
from .templates import render_value


class _System:
    """`$system`: computed when a template asks, not for every execution."""

    @property
    def now(self) -> str:
        return timestamp(time.time())

    def as_dict(self) -> dict:
        return {"now": self.now}


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
    position: int
    committed: bool = False      # already in the store (an effect's job, or a resumed one)


@dataclass(slots=True)
class Outcome:
    status: str
    error: str | None
    jobs: list[JobRecord]
    response: dict | None


class Run:
    """What one execution sees and leaves behind."""

    def __init__(self, execution_id: bytes, workflow: Workflow, context: Mapping[str, Any],
                 env: Mapping[str, str], resources: Any = None, *, committed: Mapping[str, Job] | None = None,
                 on_response=None):
        self.execution_id = execution_id
        self.id_text = to_text(execution_id)
        self.workflow = workflow
        self.context = context
        self.env = env
        self.resources = resources
        self.committed = committed or {}
        self.on_response = on_response     # sync mode: told the response node's answer at once
        self.jobs: list[JobRecord] = []
        self.results: dict[str, Any] = {}
        self.response: dict | None = None
        self.logs: list = []
        self._node: NodeSpec | None = None
        self._started = 0.0
        self._wrote = False
        self.scope = {
            "$context": context, "$jobsMapByNodeKey": self.results, "$nodes": self.results,
            "$execution": {"id": self.id_text}, "$workflow": {"key": workflow.key},
            "$env": env, "$system": SYSTEM,
        }

    def render(self, value: Any) -> Any:
        return render_value(value, self.scope)

    @property
    def node_key(self) -> str:
        """The running node's key (the request node's Idempotency-Key names it)."""
        return self._node.key

    def script_scope(self) -> dict:
        """The scope as plain data, for a script: what V8 is handed."""
        context = self.context.filled() if hasattr(self.context, "filled") else dict(self.context)
        return {"$context": context, "$jobsMapByNodeKey": self.results, "$env": dict(self.env),
                "$system": SYSTEM.as_dict(), "$execution": {"id": self.id_text},
                "$workflow": {"key": self.workflow.key}}

    def log(self, *parts: Any) -> None:
        """A line in the running node's job record."""
        self.logs.append(" ".join(p if isinstance(p, str) else orjson.dumps(p, default=str).decode()
                                  for p in parts))

    def respond(self, answer: dict) -> None:
        self.response = answer
        if self.on_response is not None:
            self.on_response(answer)

    async def write(self, writes: list[Write], shape: str, finish) -> Any:
        """Collection writes, committed in one transaction with this node's job row (resolved,
        holding the result): after a crash the write is either there with its job, and is not
        done again, or neither is."""
        spec = self._node
        job = Job(self.execution_id, len(self.jobs), spec.key, spec.type, Status.RESOLVED, None, None,
                  _encode_logs(self.logs), (time.perf_counter() - self._started) * 1000)
        result = await self.resources.effects.commit(Effect(writes, shape, job, finish))
        self._wrote = True
        return result


async def run_workflow(run: Run, node_metrics=None) -> Outcome:
    try:
        await _run_nodes(run, run.workflow.nodes, node_metrics)
        status, error = Status.RESOLVED, None
    except _NodeFailed as failed:
        status, error = Status.FAILED, failed.message
    except EndExecution as end:
        status = end.status
        error = None if status == Status.RESOLVED else "ended by an end node"
    except _Stop:
        status, error = Status.RESOLVED, None
    return Outcome(status, error, run.jobs, run.response)


class _NodeFailed(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _Stop(Exception):
    """A false condition with no branches: the execution ends, resolved."""


async def _run_nodes(run: Run, nodes: tuple[NodeSpec, ...], node_metrics) -> None:
    for spec in nodes:
        node_type = NODE_TYPES[spec.type]
        done = run.committed.get(spec.key)
        if done is not None and done.type == spec.type:   # an earlier attempt committed it: its result stands
            result = orjson.loads(done.result) if done.result is not None else None
            run.jobs.append(JobRecord(spec.key, spec.type, done.status, result, done.error, [],
                                      done.duration_ms, len(run.jobs), committed=True))
        else:
            run._node, run._started, run._wrote, run.logs = spec, time.perf_counter(), False, []
            try:
                result = await node_type.run(spec.prepared, run)
            except EndExecution:
                _record(run, spec, Status.RESOLVED, None, None, node_metrics)
                raise
            except Exception as exc:  # noqa: BLE001 - a node's failure is data, not a crash
                message = f"node {spec.key!r} ({spec.path}): {exc}"
                _record(run, spec, Status.FAILED, None, message, node_metrics)
                if spec.ignore_fail:
                    continue
                raise _NodeFailed(message) from None
            job = _record(run, spec, Status.RESOLVED, result, None, node_metrics)
            if node_type.at_once and not run._wrote:
                try:
                    await run.resources.effects.commit(Effect([], "none", _job_row(run.execution_id, job)))
                    job.committed = True
                except StoreError as exc:   # the call was made; only its record is not in
                    job.status, job.error = Status.FAILED, f"node {spec.key!r} ({spec.path}): its result " \
                                                           f"could not be recorded: {exc}"
                    if not spec.ignore_fail:
                        raise _NodeFailed(job.error) from None
                    continue
            job.committed = job.committed or run._wrote
        run.results[spec.key] = result
        if node_type.branches:
            branch = spec.then if result is True else spec.otherwise
            if branch:
                await _run_nodes(run, branch, node_metrics)
            elif result is not True and not spec.then and not spec.otherwise:
                raise _Stop()


def _record(run: Run, spec: NodeSpec, status: str, result: Any, error: str | None, node_metrics) -> JobRecord:
    elapsed = time.perf_counter() - run._started
    if node_metrics is not None:
        node_metrics.slot(spec.type).observe(elapsed)
    job = JobRecord(spec.key, spec.type, status, result, error, run.logs, elapsed * 1000, len(run.jobs))
    run.jobs.append(job)
    return job


def _job_row(execution: bytes, job: JobRecord) -> Job:
    return Job(execution, job.position, job.node, job.type, job.status, encode_result(job.result),
               job.error, _encode_logs(job.logs), job.duration_ms)


def job_rows(execution: bytes, jobs: list[JobRecord]) -> list[Job]:
    """The jobs an execution still has to write (those not committed already)."""
    return [_job_row(execution, job) for job in jobs if not job.committed]


def _encode_logs(logs: list) -> bytes | None:
    return orjson.dumps(logs, default=str) if logs else None
