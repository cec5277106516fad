"""The supervisor over real asyncio tasks: a task that raises something unexpected is logged,
named as failing, restarted, healthy again once it runs; the others never stop."""

from __future__ import annotations

import asyncio

from fastwebhook.service.tasks import HEALTHY_AFTER, TaskSupervisor
from wait_support import wait_for_async


def test_a_task_that_raises_is_marked_failing_restarted_and_healthy_again_while_others_run(caplog):
    async def main():
        supervisor = TaskSupervisor()
        runs = {"flaky": 0, "steady": 0}

        async def flaky():
            runs["flaky"] += 1
            if runs["flaky"] == 1:
                raise RuntimeError("the disk caught fire")
            await asyncio.Event().wait()     # then runs for good

        async def steady():
            while True:
                runs["steady"] += 1
                await asyncio.sleep(0.01)   # a task that keeps working, a round every 10 ms

        supervisor.start("flaky", flaky)
        supervisor.start("steady", steady)
        failing = dict(await wait_for_async(lambda: supervisor.failing, 5, failure="flaky never failed"))
        steady_then = runs["steady"]
        # Healthy again takes the restart's back-off and HEALTHY_AFTER without failing.
        await wait_for_async(lambda: supervisor.healthy and runs["steady"] > steady_then, HEALTHY_AFTER + 5,
                             failure=lambda: f"still failing: {supervisor.failing}")
        result = failing, runs["flaky"], runs["steady"] > steady_then, supervisor.healthy
        await supervisor.stop()
        return result

    failing, flaky_runs, steady_went_on, healthy = asyncio.run(main())
    assert failing == {"flaky": "RuntimeError: the disk caught fire"}
    assert flaky_runs == 2, "restarted once after the failure"
    assert steady_went_on and healthy
    assert "background task flaky failed: the disk caught fire" in caplog.text


def test_a_periodic_job_that_fails_is_reported_retried_and_cleared_by_its_next_success():
    async def main():
        supervisor = TaskSupervisor()
        rounds = []
        seen: dict = {}

        async def job():
            rounds.append(len(rounds))
            if len(rounds) == 2:
                raise ValueError("round two failed")
            if len(rounds) == 3:
                seen.update(supervisor.failing)   # the round after the failure, before it succeeds

        supervisor.every("job", 0.01, job)
        await wait_for_async(lambda: len(rounds) > 3, 5, failure=lambda: f"only {len(rounds)} rounds ran")
        await supervisor.stop()
        return len(rounds), seen, dict(supervisor.failing)

    rounds, seen, failing_at_end = asyncio.run(main())
    assert rounds > 3, "the job went on after the failing round"
    assert seen == {"job": "ValueError: round two failed"}
    assert failing_at_end == {}, "a round that succeeds clears the failure"
