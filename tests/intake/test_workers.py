"""The worker pool (intake/workers.py) as a pure object, on a real event loop."""

from __future__ import annotations

import asyncio
import gc

from fastwebhook.intake.workers import WorkerPool
from fastwebhook.store.rows import Delivery, StoredRequest

REQUEST = StoredRequest("POST", "/", "", [], {}, "127.0.0.1", 0.0, "r")


def live_deliveries(workflow: str) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, Delivery) and o.workflow == workflow)


def test_an_idle_worker_keeps_no_finished_delivery_alive():
    """Memory stays bounded by what is ready or running: a worker waiting for work must not hold
    its last cohort (with 64 workers that was ~9,000 finished deliveries and their bodies)."""
    finished = []

    async def execute_cohort(cohort: list[Delivery]) -> None:
        await asyncio.sleep(0)
        finished.append(len(cohort))

    async def scenario() -> int:
        pool = WorkerPool(4, execute_cohort)
        pool.start()
        for n in range(300):
            pool.push(Delivery(n.to_bytes(16, "big"), "idle-test", "v", REQUEST, b"x" * 1000, None, None, 0.0))
        while sum(finished) < 300 or pool.running or len(pool.idle) < pool.workers:
            await asyncio.sleep(0)   # until every worker is back at its wait
        held = live_deliveries("idle-test")
        assert await pool.stop(0.1) == []
        return held

    assert asyncio.run(scenario()) == 0
