"""Group commit of collection writes: every node's writes with its job row, one transaction per
batch of whatever the running executions handed in meanwhile.

A write that breaks a constraint fails its node alone; a store that fails fails the batch's
nodes (each execution records its failure) and the loop goes on with the next batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import StoreError
from ..store import Store
from ..store.rows import Effect

MAX_BATCH = 256


class Effects:
    def __init__(self, store: Store):
        self.store = store
        self.pending: list[tuple[Effect, asyncio.Future]] = []
        self._wake = asyncio.Event()

    async def commit(self, effect: Effect) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((effect, future))
        self._wake.set()
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def run(self) -> None:
        """Supervised: commits batches for as long as the service runs."""
        while True:
            if not self.pending:   # a restarted loop finds what waited while it was down
                await self._wake.wait()
            self._wake.clear()
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                try:
                    outcomes = await self.store.write_effects([effect for effect, _ in batch])
                except StoreError as exc:
                    outcomes = [StoreError(f"the write was not committed: {exc}")] * len(batch)
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(StoreError(f"the write was not committed: {exc!r}"))
                    raise
                for (_, future), outcome in zip(batch, outcomes):
                    if not future.done():
                        future.set_result(outcome)

