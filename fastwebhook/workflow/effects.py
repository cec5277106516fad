"""Group commit of collection writes: every node's writes with its job row, one transaction per
batch of whatever the running executions handed in meanwhile.  A cohort's effects go in
together (`commit_many`): one batch, one future for all of them.

A write that breaks a constraint fails its node alone; a store that fails fails the batch's
nodes (each execution records its failure) and the loop goes on with the next batch.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

from ..core.errors import StoreError
from ..store import Store
from ..store.rows import Effect

MAX_BATCH = 256


class _Cohort:
    """A cohort's effects waiting for the writer: one future for their outcomes' list.  Taken
    a batch at a time when there are more than MAX_BATCH (or than the room left in a batch)."""

    __slots__ = ("effects", "future", "outcomes", "taken")

    def __init__(self, effects: list[Effect], future: asyncio.Future):
        self.effects, self.future = effects, future
        self.outcomes: list = []
        self.taken = 0

    def told(self, outcomes: list) -> None:
        self.outcomes.extend(outcomes)
        if len(self.outcomes) == len(self.effects) and not self.future.done():
            self.future.set_result(self.outcomes)


class Effects:
    def __init__(self, store: Store):
        self.store = store
        self.pending: list[tuple[Effect, asyncio.Future] | _Cohort] = []
        self._wake = asyncio.Event()

    async def commit(self, effect: Effect) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((effect, future))
        self._wake.set()
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def commit_many(self, effects: list[Effect]) -> list:
        """Each effect's outcome (its result, or the exception that refused it), in order: one
        transaction for them all (one per MAX_BATCH when there are more)."""
        if not effects:
            return []
        cohort = _Cohort(effects, asyncio.get_running_loop().create_future())
        self.pending.append(cohort)
        self._wake.set()
        return await cohort.future

    async def commit_each(self, items: Sequence, build: Callable[[Any], Effect]) -> list:
        """`build(item)` for each item, then those effects in one batch: each item's outcome,
        the exception `build` raised for an item standing in for its effect."""
        outcomes: list = []
        effects: list[Effect] = []
        for item in items:
            try:
                effects.append(build(item))
                outcomes.append(None)
            except Exception as exc:  # noqa: BLE001 - that item's failure, told to its node
                outcomes.append(exc)
        committed = iter(await self.commit_many(effects))
        return [next(committed) if outcome is None else outcome for outcome in outcomes]

    async def run(self) -> None:
        """Supervised: commits batches for as long as the service runs."""
        while True:
            if not self.pending:   # a restarted loop finds what waited while it was down
                await self._wake.wait()
            self._wake.clear()
            while self.pending:
                batch = self._next_batch()
                try:
                    outcomes = await self.store.write_effects([effect for effect, _ in batch])
                except StoreError as exc:
                    outcomes = [StoreError(f"the write was not committed: {exc}")] * len(batch)
                except BaseException as exc:
                    failure = StoreError(f"the write was not committed: {exc!r}")
                    self._tell(batch, [failure] * len(batch), failed=True)
                    raise
                self._tell(batch, outcomes)

    def _next_batch(self) -> list[tuple[Effect, asyncio.Future | _Cohort]]:
        """Up to MAX_BATCH effects off `pending`, each with whom its outcome goes to; a cohort
        that does not fit in whole leaves its rest at the front for the next batch."""
        batch: list[tuple[Effect, asyncio.Future | _Cohort]] = []
        taken = 0
        pending = self.pending
        while taken < len(pending) and len(batch) < MAX_BATCH:
            entry = pending[taken]
            if isinstance(entry, _Cohort):
                room = MAX_BATCH - len(batch)
                batch.extend((effect, entry) for effect in entry.effects[entry.taken:entry.taken + room])
                entry.taken = min(len(entry.effects), entry.taken + room)
                if entry.taken < len(entry.effects):
                    break
            else:
                batch.append(entry)
            taken += 1
        del pending[:taken]
        return batch

    @staticmethod
    def _tell(batch: list, outcomes: list, failed: bool = False) -> None:
        cohort: _Cohort | None = None
        told: list = []
        for (_, whom), outcome in zip(batch, outcomes):
            if isinstance(whom, _Cohort):
                if whom is not cohort:
                    if cohort is not None:
                        cohort.told(told)
                    cohort, told = whom, []
                told.append(outcome)
            elif not whom.done():
                whom.set_exception(outcome) if failed else whom.set_result(outcome)
        if cohort is not None:
            cohort.told(told)
