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


def test_the_pool_counts_the_bodies_it_holds_ready_or_running():
    """What the dispatcher's claims are bounded by, in bytes (IN_MEMORY_BYTES)."""
    go = asyncio.Event()
    running_bytes = []

    async def execute_cohort(cohort: list[Delivery]) -> None:
        running_bytes.append(pool.held_bytes)
        await go.wait()

    pool = WorkerPool(1, execute_cohort)

    async def scenario() -> None:
        pool.start()
        for n in range(5):
            pool.push(Delivery(n.to_bytes(16, "big"), "bytes", "v", REQUEST, b"x" * 1000, None, None, 0.0))
        assert pool.held_bytes == 5_000
        while not running_bytes:
            await asyncio.sleep(0)
        assert running_bytes == [5_000] and pool.running == 5   # one cohort: all five, still counted
        pool.push(Delivery((9).to_bytes(16, "big"), "bytes", "v", REQUEST, b"y" * 300, None, None, 0.0))
        go.set()
        while pool.running or pool.ready:
            await asyncio.sleep(0)
        assert pool.held_bytes == 0
        pool.push(Delivery((10).to_bytes(16, "big"), "bytes", "v", REQUEST, b"z" * 700, None, None, 0.0))
        go.clear()
        while not pool.running:
            await asyncio.sleep(0)
        pool.push(Delivery((11).to_bytes(16, "big"), "bytes", "v", REQUEST, b"w" * 200, None, None, 0.0))
        assert pool.held_bytes == 900
        left = await pool.stop(0.01)   # the one ready is handed back, the running one cancelled
        assert [len(d.body) for d in left] == [200] and pool.held_bytes == 0

    asyncio.run(scenario())
