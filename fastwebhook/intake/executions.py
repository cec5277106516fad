"""The work side's executions: what a claimed delivery becomes, and who is told.

`Executions.execute_cohort(deliveries)` runs deliveries of one workflow together (the runner
walks them through the nodes as a cohort) and leaves each one's final status, its jobs and its
sync answer behind.  `settled(claim)` accounts for what a claim resolved or found a duplicate by
itself.  It is given only what it uses: the config in force (a getter, since a reload swaps it),
the intake (its replies and slots), the dispatcher (records), the store (an earlier attempt's
jobs), the resources and the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from typing import Any, Callable

import orjson

from ..config.model import Config, Workflow
from ..door.context import context_of
from ..http import Response
from ..core.ids import to_text
from ..observe.metrics import Metrics
from ..store import Store
from ..store.rows import FINAL, Claim, Delivery, Final, Status, workflow_of
from ..workflow.resources import Resources
from ..workflow.runner import Outcome, Run, job_rows, run_cohort
from ..workflow.templates import render_value
from .alerts import FAILING, alert_of
from .dispatch import Dispatcher
from .intake import Intake

log = logging.getLogger("fastwebhook")


class Executions:
    def __init__(self, config: Callable[[], Config], intake: Intake, dispatcher: Dispatcher, store: Store,
                 resources: Resources, metrics: Metrics, clock: Callable[[], float] = time.time):
        self.config = config
        self.intake = intake
        self.dispatcher = dispatcher
        self.store = store
        self.resources = resources
        self.metrics = metrics
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        # metric children per workflow, prepared here rather than looked up per execution
        self.stats: dict[str, ExecutionStats] = {}
        # several processes: the answer for a sync sender another process holds goes to it
        self.forward_reply: Callable[[bytes, Response], None] | None = None

    def settled(self, claim: Claim) -> None:
        """A claim resolved some deliveries itself and found others duplicates."""
        workflows = self.config().workflows
        for workflow, count in Counter(map(workflow_of, claim.resolved)).items():   # (counted in C)
            self.stats_of(workflow).finished(Status.RESOLVED, 0.0, count)
        cache = self.intake.cache
        for delivery, original in claim.duplicates:
            self.stats_of(delivery.workflow).finished(Status.DUPLICATE, 0.0)
            # the door's window named this one for its key: from now on it names the original
            cache.put(delivery.dedup_hash, original, delivery.dedup_expires)
            reply = self._reply_for(delivery, workflows.get(delivery.workflow))
            if reply is not None and not reply.done():
                text = to_text(original)
                reply.set_result(Response.json(200, {"execution_id": text, "status": "duplicate"},
                                               id_header(text)))
        self.intake.release_all([*claim.resolved, *(delivery for delivery, _ in claim.duplicates)])

    async def execute_cohort(self, deliveries: list[Delivery]) -> None:
        """Every delivery ends with its final status, whatever fails on the way: a failure of
        one execution's preparation or records is that execution's error alone."""
        config = self.config()
        started = self.clock()
        executions = [_Execution(d, config.workflows.get(d.workflow)) for d in deliveries]
        for execution in executions:
            execution.reply = self._reply_for(execution.delivery, execution.workflow)
            if execution.workflow is None:
                execution.outcome = Outcome(Status.ERROR, "its workflow no longer exists", [], None)
            else:
                self.dispatcher.change(Final(execution.delivery.id, Status.STARTED, started))
        try:
            await self._prepare(executions, config)
            runs = [execution.run for execution in executions if execution.outcome is None]
            if runs:
                ran = iter(await run_cohort(runs, self.metrics))
                for execution in executions:
                    if execution.outcome is None:
                        execution.outcome = next(ran)
        except Exception as exc:  # noqa: BLE001 - recorded as the error of each execution it left
            log.exception("a cohort of %d executions failed inside the runner", len(executions))
            for execution in executions:
                if execution.outcome is None:
                    execution.outcome = Outcome(Status.ERROR, f"internal error: {exc}", [], None)
        self._finish(executions, started, self.clock())

    async def _prepare(self, executions: list[_Execution], config: Config) -> None:
        """Each execution's Run; a second attempt (the first one's process died) resumes after
        its committed jobs, read for all such executions of the cohort at once."""
        again = [e for e in executions if e.outcome is None and e.delivery.attempts > 1]
        if again:
            found = await asyncio.gather(*(self.store.committed_jobs(e.delivery.id) for e in again),
                                         return_exceptions=True)
            for execution, committed in zip(again, found):
                execution.committed = committed
        for execution in executions:
            if execution.outcome is not None:
                continue
            delivery, workflow, reply = execution.delivery, execution.workflow, execution.reply
            try:
                if isinstance(execution.committed, BaseException):
                    raise execution.committed
                context = context_of(delivery.request, delivery.body, workflow.max_body_size)
                execution.run = Run(delivery.id, workflow, context, config.env, self.resources,
                                    committed=execution.committed,
                                    on_response=_answerer(reply, execution.id_text) if reply else None)
            except Exception as exc:  # noqa: BLE001 - recorded as the execution's error
                log.exception("execution %s failed inside the runner", execution.id_text)
                execution.outcome = Outcome(Status.ERROR, f"internal error: {exc}", [], None)

    def _finish(self, executions: list[_Execution], started: float, finished: float) -> None:
        dispatcher = self.dispatcher
        jobs: list = []
        for execution in executions:
            delivery, outcome = execution.delivery, execution.outcome
            try:
                jobs.extend(job_rows(delivery.id, outcome.jobs))
            except (TypeError, ValueError) as exc:  # a result that cannot be recorded ends it as an error
                outcome = execution.outcome = Outcome(Status.ERROR, f"a node's result could not be recorded: {exc}",
                                                      [], None)
                execution.run = None
            dispatcher.change(Final(delivery.id, Status(outcome.status), started, finished, outcome.error))
            workflow = execution.workflow   # (a workflow without on_failure stops at its first test)
            if workflow is not None and workflow.on_failure and outcome.status in FAILING and delivery.failure_of is None:
                self._alert(execution, workflow.on_failure, finished)
        if jobs:
            dispatcher.add_jobs(jobs)
        self.intake.release_all(execution.delivery for execution in executions)
        for execution in executions:
            outcome, reply = execution.outcome, execution.reply
            self.stats_of(execution.delivery.workflow).finished(outcome.status, finished - started)
            if reply is not None and not reply.done():
                id_text = execution.id_text
                try:
                    response = sync_response(id_text, execution.workflow, outcome, execution.run)
                except ValueError as exc:   # what the [response] table rendered is not a valid answer
                    response = Response.json(500, {"execution_id": id_text, "status": "failed", "error": str(exc)},
                                             id_header(id_text))
                reply.set_result(response)

    def _alert(self, execution: _Execution, on_failure: str, now: float) -> None:
        """The failure workflow's delivery, written with the failed execution's final status."""
        target = self.config().workflows.get(on_failure)
        if target is None:   # a stored one deleted since (the file's are checked at load)
            log.error("a failed execution's on_failure names no workflow: no alert queued", extra={
                "execution": execution.id_text, "workflow": execution.delivery.workflow, "on_failure": on_failure})
            return
        outcome = execution.outcome
        node = outcome.jobs[-1].node if outcome.jobs else None   # where the run stopped
        self.dispatcher.queue_alert(alert_of(execution.delivery, Status(outcome.status), outcome.error, node,
                                             target, now))

    def _reply_for(self, delivery: Delivery, workflow: Workflow | None) -> asyncio.Future | None:
        """Where a sync delivery's answer goes: this process's waiting sender, or, with several
        processes, the one that acknowledged it (its sender waits there)."""
        reply = self.intake.replies.pop(delivery.id, None)
        if reply is None and self.forward_reply is not None and workflow is not None and workflow.mode == "sync":
            reply = self.loop.create_future()
            forward = self.forward_reply
            reply.add_done_callback(lambda done: done.cancelled() or forward(delivery.id, done.result()))
        return reply

    def stats_of(self, key: str) -> "ExecutionStats":
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = ExecutionStats(self.metrics, key)
        return stats


def sync_response(id_text: str, workflow: Workflow | None, outcome: Outcome, run: Run | None) -> Response:
    header = id_header(id_text)
    if outcome.status != Status.RESOLVED or workflow is None:
        return Response.json(500, {"execution_id": id_text, "status": outcome.status,
                                   "error": outcome.error}, header)
    answer: dict[str, Any] = outcome.response or {}
    configured = workflow.response
    if not answer:
        scope = run.scope if run else {}
        answer = {"status": configured.status, "headers": render_value(dict(configured.headers), scope),
                  "body": render_value(configured.body, scope)}
    return response_from(answer, header)


class _Execution:
    """One delivery of a cohort on its way: its workflow, whom its sync answer goes to, its
    Run, and its outcome once it has one."""

    __slots__ = ("delivery", "workflow", "id_text", "reply", "committed", "run", "outcome")

    def __init__(self, delivery: Delivery, workflow: Workflow | None):
        self.delivery = delivery
        self.workflow = workflow
        self.id_text = to_text(delivery.id)
        self.reply: asyncio.Future | None = None
        self.committed = None
        self.run: Run | None = None
        self.outcome: Outcome | None = None


class ExecutionStats:
    """One workflow's executions_total children (by status) and its duration histogram."""

    __slots__ = ("by_status", "duration")

    def __init__(self, metrics: Metrics, key: str):
        self.by_status = {status.value: metrics.executions.slot(key, status.value) for status in FINAL}
        self.duration = metrics.execution_duration.slot(key)

    def finished(self, status: str, seconds: float, count: int = 1) -> None:
        """`count` executions ended `status`, each after `seconds`."""
        self.by_status[status].value += count
        self.duration.observe_many(seconds, count)


def id_header(id_text: str) -> tuple:
    return ((b"x-execution-id", id_text.encode()),)


def _answerer(reply: asyncio.Future, id_text: str):
    """Sync mode: the response node's answer goes out at once; the workflow goes on.  An answer
    that is not valid HTTP fails the node (ValueError), and the caller gets the 500."""
    def answer(response: dict) -> None:
        if not reply.done():
            reply.set_result(response_from(response, id_header(id_text)))
    return answer


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _header(name: str, value: str) -> tuple[bytes, bytes]:
    """One rendered header, or ValueError: a value from webhook data must not add headers of its
    own (CR / LF) or carry what HTTP/1.1 cannot."""
    if not _TOKEN.match(name):
        raise ValueError(f"response header name {name!r} is not a valid HTTP token")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"response header {name!r}: a value may not hold line breaks")
    try:
        return name.encode("ascii"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"response header {name!r}: {value[:40]!r} has characters HTTP headers cannot carry "
                         "(Latin-1 only)") from None


def response_from(answer: dict, extra_headers: tuple) -> Response:
    body = answer.get("body", "")
    headers = {str(k).lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
    content_type = headers.pop("content-type", None)
    if isinstance(body, (dict, list)):
        payload, content_type = orjson.dumps(body), content_type or "application/json"
    else:
        payload = ("" if body is None else str(body)).encode()
        content_type = content_type or "text/plain; charset=utf-8"
    headers.pop("content-length", None)
    encoded = tuple(_header(k, v) for k, v in headers.items())
    status = answer.get("status", 200)
    return Response(status if isinstance(status, int) else 200, payload, _header("content-type", content_type)[1],
                    encoded + extra_headers)
