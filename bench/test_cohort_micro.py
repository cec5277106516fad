"""Micro-benchmark of the work side on the workflow benchmark's workflow (run by `make bench`):
bench/fastwebhook-workflow.toml's condition -> script -> create for COHORT executions, on a
real Service (SQLite in a temp dir, real V8), its records left unwritten (the dispatcher's
loop does not run).

    runner, one at a time   COHORT `run_workflow`s awaited together
    runner, cohort          `run_cohort` over the COHORT runs: the condition in Python, one V8
                            call per BATCH_MAX runs, one collection write for the cohort
    executions, one at a time   COHORT `Executions.execute`, a task each, as a worker per
                            execution ran them
    executions, cohort      `Executions.execute_cohort` over the COHORT deliveries, as a worker
                            runs a cohort now

Timed with `time.thread_time`: the event loop's own CPU (what the load benchmark's CPU budget
counts), not V8's or the store's threads.  Divide by COHORT for the cost per execution.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from pathlib import Path

import pytest
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from payload import BODY  # noqa: E402

from fastwebhook.config.loader import load_config  # noqa: E402
from fastwebhook.door.context import context_of  # noqa: E402
from fastwebhook.core.ids import new_id  # noqa: E402
from fastwebhook.service.service import Service  # noqa: E402
from fastwebhook.store.rows import Delivery, Records, StoredRequest  # noqa: E402
from fastwebhook.workflow.runner import Run, job_rows, run_cohort, run_workflow  # noqa: E402

COHORT = 256
CONFIG = Path(__file__).parent / "fastwebhook-workflow.toml"
_deliveries = itertools.count()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cohort")
    config = load_config(str(CONFIG), {**os.environ, "BENCH_DIR": str(directory)})
    loop = uvloop.new_event_loop()
    service = Service(config)
    resources = service.resources

    async def start():
        service.loop = service.executions.loop = asyncio.get_running_loop()
        await service.store.open()
        await service.store.ensure_collections(config.collections.values())
        await resources.scripts.of("bench").start()
        return asyncio.ensure_future(resources.effects.run())

    writer = loop.run_until_complete(start())
    yield service, loop
    writer.cancel()
    loop.run_until_complete(resources.scripts.close())
    loop.run_until_complete(service.store.close())
    loop.close()


def new_deliveries(workflow) -> list[Delivery]:
    deliveries = []
    for _ in range(COHORT):
        n = next(_deliveries)
        request = StoredRequest("POST", "/hook", "", [("content-type", "application/json"),
                                                      ("x-github-delivery", f"d-{n}")], {}, "127.0.0.1",
                                time.time(), f"r-{n}")
        deliveries.append(Delivery(new_id(), workflow.key, workflow.version, request, BODY, None, None, 0.0))
    return deliveries


def new_runs(service) -> list[Run]:
    config = service.config
    workflow = config.workflows["bench"]
    return [Run(d.id, workflow, context_of(d.request, d.body, workflow.max_body_size), config.env, service.resources)
            for d in new_deliveries(workflow)]


async def one_by_one(runs):
    return await asyncio.gather(*(run_workflow(run) for run in runs))


def measure_runner(benchmark, service, runner):
    service, loop = service

    def step():
        runs = new_runs(service)
        outcomes = loop.run_until_complete(runner(runs))
        return [row for run, outcome in zip(runs, outcomes) for row in job_rows(run.execution_id, outcome.jobs)], \
            outcomes

    step()   # the script compiled and known short; the table warm
    rows, outcomes = benchmark.pedantic(step, rounds=20, iterations=1)
    assert all(outcome.status == "resolved" and len(outcome.jobs) == 3 for outcome in outcomes)
    assert len(rows) == 2 * COHORT   # the create's job went in with its record


def measure_executions(benchmark, service, execute):
    service, loop = service
    workflow = service.config.workflows["bench"]

    def step():
        deliveries = new_deliveries(workflow)
        service.intake.queued[workflow.key] += len(deliveries)   # as the door counted them in
        service.intake.depth += len(deliveries)
        loop.run_until_complete(execute(service.executions, deliveries))
        records, service.dispatcher.records = service.dispatcher.records, Records()
        return records

    step()
    records = benchmark.pedantic(step, rounds=20, iterations=1)
    assert {final.status for final in records.finals.values()} == {"resolved"} and len(records.jobs) == 2 * COHORT


async def each_in_a_task(executions, deliveries):
    await asyncio.gather(*(executions.execute_cohort([delivery]) for delivery in deliveries))


async def as_a_cohort(executions, deliveries):
    await executions.execute_cohort(deliveries)


@pytest.mark.benchmark(timer=time.thread_time)
def test_runner_one_execution_at_a_time(benchmark, service):
    measure_runner(benchmark, service, one_by_one)


@pytest.mark.benchmark(timer=time.thread_time)
def test_runner_cohort(benchmark, service):
    measure_runner(benchmark, service, run_cohort)


@pytest.mark.benchmark(timer=time.thread_time)
def test_executions_one_execution_at_a_time(benchmark, service):
    measure_executions(benchmark, service, each_in_a_task)


@pytest.mark.benchmark(timer=time.thread_time)
def test_executions_cohort(benchmark, service):
    measure_executions(benchmark, service, as_a_cohort)
