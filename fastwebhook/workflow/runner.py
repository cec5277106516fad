"""The workflow runner: walks a workflow's nodes, records one job per node run.

It runs executions in cohorts (`run_cohort`): runs of one workflow walk the nodes together, and
a node whose type has a cohort entry (`run_cohort`) runs once for all the runs at it (one V8
call, one collection write); a type without one runs per run, the runs at it concurrently.
Each run keeps its own results, jobs and end: a node that fails fails that run alone, and a
branching node splits the cohort into the runs that take `then` and those that take `else`.
`run_workflow` is a cohort of one.

It knows no node type: each node's entry points come from the registry, and what the runner
does with a result depends only on the type's declared traits (`branches`: True/False picks
`then` or `else`; `at_once`: its job is committed the moment it succeeds).  Failures are caught
per node and per execution; nothing raised by a node escapes into the worker.

Resuming after a crash: a job committed by an earlier attempt (a collection write commits with
its job row, an outbound call commits its job right after it succeeds) is not run again; its
recorded result stands in, so nothing is created, updated or destroyed twice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import orjson

from ..config.model import NodeSpec, Workflow
from ..core.ids import to_text
from ..store.rows import Effect, Job, Status, Write, encode_result
from ..core.units import timestamp
from .nodes import NODE_TYPES, NodeType
from .nodes.end import EndExecution
from .scripts import EVERYTHING, Reads
from .templates import render_value

if TYPE_CHECKING:   # (the door builds it: door.context.context_of)
    from ..door.context import Context


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
    status: Status
    error: str | None
    jobs: list[JobRecord]
    response: dict | None


class Run:
    """What one execution sees and leaves behind."""

    def __init__(self, execution_id: bytes, workflow: Workflow, context: Context,
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
        self.ended: tuple[Status, str | None] | None = None   # (status, error) once it stopped early
        self.logs: list = []
        self._node: NodeSpec | None = None
        self._started = 0.0
        self._job_with_writes = False   # the running node's job row goes in with its collection writes
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

    def script_scope(self, reads: Reads = EVERYTHING) -> dict:
        """The scope as plain data, for a script: what V8 is handed, only what the script can
        name (scripts.Reads)."""
        names = reads.parameters
        scope = {}
        if "$context" in names:
            scope["$context"] = self.context.filled(reads.context_keys)
        if "$jobsMapByNodeKey" in names:
            scope["$jobsMapByNodeKey"] = self.results
        if "$env" in names:
            scope["$env"] = dict(self.env)
        if "$system" in names:
            scope["$system"] = SYSTEM.as_dict()
        if "$execution" in names:
            scope["$execution"] = {"id": self.id_text}
        if "$workflow" in names:
            scope["$workflow"] = {"key": self.workflow.key}
        return scope

    def log(self, *parts: Any) -> None:
        """A line in the running node's job record."""
        self.logs.append(" ".join(p if isinstance(p, str) else orjson.dumps(p, default=str).decode()
                                  for p in parts))

    def respond(self, answer: dict) -> None:
        self.response = answer
        if self.on_response is not None:
            self.on_response(answer)

    def effect(self, writes: list[Write], shape: str, finish) -> Effect:
        """Collection writes, to be committed in one transaction with this node's job row
        (resolved, holding the result): after a crash the write is either there with its job,
        and is not done again, or neither is."""
        spec = self._node
        job = Job(self.execution_id, len(self.jobs), spec.key, spec.type, Status.RESOLVED, None, None,
                  _encode_logs(self.logs), (time.perf_counter() - self._started) * 1000)
        self._job_with_writes = True
        return Effect(writes, shape, job, finish)

    async def write(self, writes: list[Write], shape: str, finish) -> Any:
        """`effect`, committed."""
        return await self.resources.effects.commit(self.effect(writes, shape, finish))

    def outcome(self) -> Outcome:
        status, error = self.ended or (Status.RESOLVED, None)
        return Outcome(status, error, self.jobs, self.response)


async def run_workflow(run: Run, node_metrics=None) -> Outcome:
    """A cohort of one."""
    await _walk([run], run.workflow.nodes, node_metrics)
    return run.outcome()


async def run_cohort(runs: list[Run], node_metrics=None) -> list[Outcome]:
    """Each run's outcome, the runs walked through their workflow's nodes together."""
    by_workflow: dict[int, list[Run]] = {}
    for run in runs:
        by_workflow.setdefault(id(run.workflow), []).append(run)
    for cohort in by_workflow.values():
        await _walk(cohort, cohort[0].workflow.nodes, node_metrics)
    return [run.outcome() for run in runs]


async def _walk(runs: list[Run], nodes: tuple[NodeSpec, ...], node_metrics) -> None:
    """The runs through `nodes`; a run that ends (fails, an end node, a false condition without
    branches) drops out where it ends, `ended` saying how."""
    for spec in nodes:
        node_type = NODE_TYPES[spec.type]
        figures = node_metrics.node(runs[0].workflow.key, spec.key) if node_metrics is not None else None
        if len(runs) == 1:   # the shortest way: the node's own entry
            run = runs[0]
            went_on = runs if _resumed(run, spec) or await _run_one(node_type, spec, run, figures) else []
        else:
            went_on, fresh = [], []     # the runs with a result at this node, those still to run it
            for run in runs:
                (went_on if _resumed(run, spec) else fresh).append(run)
            if fresh:
                went_on += await _run_node(node_type, spec, fresh, figures)
        if node_type.branches and went_on:
            then, otherwise = _split(spec, went_on)
            if then and otherwise:   # neither waits for the other's slow node
                await asyncio.gather(_walk(then, spec.then, node_metrics),
                                     _walk(otherwise, spec.otherwise, node_metrics))
            elif then:
                await _walk(then, spec.then, node_metrics)
            elif otherwise:
                await _walk(otherwise, spec.otherwise, node_metrics)
        runs = [run for run in runs if run.ended is None]
        if not runs:
            return


def _resumed(run: Run, spec: NodeSpec) -> bool:
    """Whether an earlier attempt committed this node's job: then its result stands."""
    done = run.committed.get(spec.key)
    if done is None or done.type != spec.type:
        return False
    result = orjson.loads(done.result) if done.result is not None else None
    run.jobs.append(JobRecord(spec.key, spec.type, done.status, result, done.error, [],
                              done.duration_ms, len(run.jobs), committed=True))
    run.results[spec.key] = result
    return True


def _split(spec: NodeSpec, runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """The runs that take `then` (a True result) and those that take `else`; with neither
    branch, a false result ends the run, resolved."""
    then: list[Run] = []
    otherwise: list[Run] = []
    for run in runs:
        if run.results[spec.key] is True:
            if spec.then:
                then.append(run)
        elif spec.otherwise:
            otherwise.append(run)
        elif not spec.then:
            run.ended = (Status.RESOLVED, None)
    return then, otherwise


async def _run_node(node_type: NodeType, spec: NodeSpec, runs: list[Run], figures) -> list[Run]:
    """The node for each run at it: the runs that go on with its result (the others failed,
    ended, or skipped it with ignore_fail)."""
    if node_type.execute_cohort is None:
        went_on = await asyncio.gather(*(_run_one(node_type, spec, run, figures) for run in runs))
        return [run for run, ok in zip(runs, went_on) if ok]
    started = time.perf_counter()
    for run in runs:
        run._node, run._started, run._job_with_writes, run.logs = spec, started, False, []
    try:
        results = await node_type.execute_cohort(spec.prepared, runs)
    except Exception as exc:  # noqa: BLE001 - the cohort entry failed as a whole: each run's failure
        results = [exc] * len(runs)
    settled = [(run, result, _settle(run, spec, result, figures)) for run, result in zip(runs, results)]
    settled = [item for item in settled if item[2] is not None]
    if node_type.at_once:
        await _commit_at_once(spec, [(run, job) for run, _, job in settled if not run._job_with_writes])
    went_on = []
    for run, result, job in settled:
        if job.status == Status.RESOLVED:
            _go_on(run, spec, job, result)
            went_on.append(run)
    return went_on


async def _run_one(node_type: NodeType, spec: NodeSpec, run: Run, figures) -> bool:
    """The node for one run by itself: whether the run goes on with its result."""
    run._node, run._started, run._job_with_writes, run.logs = spec, time.perf_counter(), False, []
    try:
        result = await node_type.execute(spec.prepared, run)
    except Exception as exc:  # noqa: BLE001 - a node's failure is data, not a crash
        result = exc
    job = _settle(run, spec, result, figures)
    if job is None:
        return False
    if node_type.at_once and not run._job_with_writes:
        await _commit_at_once(spec, [(run, job)])
        if job.status != Status.RESOLVED:
            return False
    _go_on(run, spec, job, result)
    return True


def _settle(run: Run, spec: NodeSpec, result: Any, figures) -> JobRecord | None:
    """A node's result (or the exception it raised) in the run's jobs: its job when the run
    goes on with the result; None when the run ended here or skips the failed node."""
    if isinstance(result, EndExecution):
        _record(run, spec, Status.RESOLVED, None, None, figures)
        run.ended = (result.status, None if result.status == Status.RESOLVED else "ended by an end node")
        return None
    if isinstance(result, Exception):
        message = f"node {spec.key!r} ({spec.path}): {result}"
        _record(run, spec, Status.FAILED, None, message, figures)
        if not spec.ignore_fail:
            run.ended = (Status.FAILED, message)
        return None
    return _record(run, spec, Status.RESOLVED, result, None, figures)


async def _commit_at_once(spec: NodeSpec, done: list[tuple[Run, JobRecord]]) -> None:
    """An outbound effect's jobs, committed now (one batch); a job whose commit failed is
    failed: the call was made, only its record is not in."""
    if not done:
        return
    effects = done[0][0].resources.effects
    outcomes = await effects.commit_many([Effect([], "none", _job_row(run.execution_id, job)) for run, job in done])
    for (run, job), outcome in zip(done, outcomes):
        if not isinstance(outcome, BaseException):
            job.committed = True
            continue
        job.status = Status.FAILED
        job.error = f"node {spec.key!r} ({spec.path}): its result could not be recorded: {outcome}"
        if not spec.ignore_fail:
            run.ended = (Status.FAILED, job.error)


def _go_on(run: Run, spec: NodeSpec, job: JobRecord, result: Any) -> None:
    job.committed = job.committed or run._job_with_writes
    run.results[spec.key] = result


def _record(run: Run, spec: NodeSpec, status: str, result: Any, error: str | None, figures) -> JobRecord:
    elapsed = time.perf_counter() - run._started
    if figures is not None:   # the node's metric series (observe/metrics.py NodeFigures)
        figures.ran(status != Status.RESOLVED, elapsed)
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
