"""The bounded queue and the worker pool that drains it.

`reserve()` is the one place that says no: the intake reserves a slot before it accepts a
request, so a full queue answers 503 before anything is recorded.  A slot is released when its
execution finishes (or its request turns out a duplicate, or its commit fails).

Work is leased: the accepting process owns its executions from the moment they are written and
renews the lease while it holds them; work whose lease lapsed, or whose owner on this host is
dead, is claimed by a sweeper.  That is how a crash's leftovers run again after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..config import Workflow

log = logging.getLogger("fastwebhook.workers")
YIELD_EVERY = 64            # executions a worker runs back to back before letting I/O in


@dataclass(slots=True)
class Work:
    id: bytes
    id_text: str
    workflow: Workflow
    context: dict
    reply: asyncio.Future | None = None   # sync mode: where the outcome goes


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def owner_is_dead(owner: str, me: str) -> bool:
    """An owner on this host whose process is gone (or is us, restarted under the same pid)."""
    host, _, rest = owner.partition(":")
    pid_text, _, _nonce = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or owner == me:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class WorkQueue:
    def __init__(self, capacity: int, workers: int, execute: Callable[[Work], Awaitable[Any]]):
        self.capacity = capacity
        self.workers = workers
        self.execute = execute
        self.load = 0                       # reserved: accepted or being committed, not finished
        self.ready: deque[Work] = deque()
        self.idle: deque[asyncio.Future] = deque()
        self.running = 0
        self._tasks: list[asyncio.Task] = []

    def reserve(self) -> bool:
        if self.load >= self.capacity:
            return False
        self.load += 1
        return True

    def release(self) -> None:
        self.load -= 1

    @property
    def room(self) -> int:
        return self.capacity - self.load

    def push(self, work: Work) -> None:
        self.ready.append(work)
        while self.idle:
            waiter = self.idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"fastwebhook-worker-{i}")
                       for i in range(self.workers)]

    async def stop(self, grace: float) -> None:
        """Let running executions finish up to `grace` seconds; queued ones stay in the store."""
        self.ready.clear()
        deadline = asyncio.get_running_loop().time() + grace
        while self.running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        ran = 0
        while True:
            if not self.ready:
                waiter = loop.create_future()
                self.idle.append(waiter)
                await waiter
                continue
            work = self.ready.popleft()
            self.running += 1
            try:
                await self.execute(work)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a worker never dies of one execution
                log.exception("execution %s crashed its worker step", work.id_text)
            finally:
                self.running -= 1
            ran += 1
            if ran % YIELD_EVERY == 0:
                await asyncio.sleep(0)
