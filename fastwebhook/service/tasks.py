"""One supervisor for every background task: no task may die silently.

A task that raises is logged, marked unhealthy (`/readyz` says which), restarted after a
back-off that doubles up to a ceiling, and marked healthy again once it has run a while (or
reports a success itself).  Cancelling the supervisor stops every task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger("fastwebhook.supervisor")
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 5.0
HEALTHY_AFTER = 1.0        # a restarted task that has run this long without failing is healthy


class TaskSupervisor:
    def __init__(self):
        self.failing: dict[str, str] = {}      # task name -> its last error
        self._tasks: dict[str, asyncio.Task] = {}
        self._failures: dict[str, int] = {}    # task name -> how often it failed

    @property
    def healthy(self) -> bool:
        return not self.failing

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run()` for as long as the supervisor lives, restarting it when it fails."""
        self._tasks[name] = asyncio.get_running_loop().create_task(self._keep(name, run), name=f"fastwebhook-{name}")

    def every(self, name: str, seconds: float, job: Callable[[], Awaitable[None]], first: float | None = None) -> None:
        """Run `job()` every `seconds` (the first time after `first`, if given); a failing round
        is retried with back-off."""
        async def periodic() -> None:
            wait = seconds if first is None else first
            while True:
                await asyncio.sleep(wait)
                await job()
                self.ok(name)
                wait = seconds
        self.start(name, periodic)

    def ok(self, name: str) -> None:
        self.failing.pop(name, None)

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF
        while True:
            began = loop.time()
            try:
                await run()
                log.error("background task %s returned; restarting it", name)
                self.failing[name] = "returned"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, marked, restarted
                log.error("background task %s failed: %s", name, exc, exc_info=exc)
                self.failing[name] = f"{type(exc).__name__}: {exc}"
            self._failures[name] = failures = self._failures.get(name, 0) + 1
            if loop.time() - began > HEALTHY_AFTER:
                backoff = FIRST_BACKOFF
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            loop.call_later(HEALTHY_AFTER, self._settled, name, failures)

    def _settled(self, name: str, failures: int) -> None:
        """A while after a restart: not failed again since means healthy again."""
        if self._failures.get(name) == failures:
            self.failing.pop(name, None)

    async def stop(self, *names: str) -> None:
        """Cancel the named tasks (all when none is named) and wait for them."""
        tasks = [self._tasks.pop(n) for n in (names or list(self._tasks)) if n in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
