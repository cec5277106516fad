"""Maintenance: what keeps the store and the figures right while the server runs.

The checkpoint of the write-ahead log, the purge of what is older than the retention, the
recount of the shared queue's depth (several processes or hosts) and the summary of refused
requests.  Each is a job the Service's task supervisor runs every so often; none is on the path
of a request or an execution.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Callable

from ..config.model import Config
from ..intake.intake import Intake
from ..observe.metrics import Metrics
from ..store import Store

log = logging.getLogger("fastwebhook")
PURGE_EVERY = 3600.0
PURGE_FIRST = 60.0          # seconds after a start: a server down for long may hold much that expired
PURGE_BATCH = 500           # executions (and as many intake, request-log rows) per transaction
PURGE_PAUSE = 0.005         # between two of them: the appends and claims go first
DEDUP_SLICES = 256          # the expired dedup keys go a slice of the hash space per transaction
_DEDUP_SLICE = (1 << 64) // DEDUP_SLICES
REJECTIONS_EVERY = 60.0     # seconds between two summaries of the requests refused
CHECKPOINT_EVERY = 0.5
DEPTH_EVERY = 1.0           # seconds between two counts of the shared queue (several processes or hosts)


class Maintenance:
    def __init__(self, store: Store, intake: Intake, metrics: Metrics, config: Callable[[], Config],
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.intake = intake
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self._rejections_seen: dict[tuple, int] = {}

    def start(self, supervise, *, leader: bool, shared: bool) -> None:
        """`leader`: this process checkpoints and purges for all; `shared`: others acknowledge
        deliveries too, so the queue's depth is counted again from the store."""
        if leader:
            supervise.every("purge", PURGE_EVERY, self.purge, first=PURGE_FIRST)
            supervise.every("checkpoint", CHECKPOINT_EVERY, self.store.checkpoint)
        if shared:
            supervise.every("depth", DEPTH_EVERY, self.count_depth)
        supervise.every("rejections", REJECTIONS_EVERY, self.report_rejections)

    async def count_depth(self) -> None:
        """With several processes or hosts, each acknowledges deliveries that others may run:
        the depth (the queue's bound) is counted again from the store, which holds them all,
        plus what this process has not committed yet; so is each workflow's share (from its
        executions claimed and not final, plus what this process holds unclaimed)."""
        intake = self.intake
        before, uncommitted = intake.depth, intake.uncommitted
        counted = await self.store.unfinished()
        intake.depth = counted + uncommitted + (intake.depth - before)   # what changed meanwhile kept
        # each workflow's share: its executions claimed and not final, plus what this process
        # has not committed (other processes' unclaimed deliveries are claimed within moments)
        pending = await self.store.pending_by_workflow()
        intake.queued = Counter(pending) + Counter(d.workflow for d in intake.uncommitted_deliveries())

    async def purge(self) -> None:
        """Everything older than the retention, in short transactions with pauses between them,
        so that the intake's appends and the claims get the store in between (a purge of a
        week's backlog in one transaction would hold the write lock for seconds)."""
        now = self.clock()
        before = now - self.config().storage.retention
        executions = rows = 0
        started = time.monotonic()
        for index in range(DEDUP_SLICES):   # at least one walk over the dedup hash space
            low = -(1 << 63) + index * _DEDUP_SLICE
            slice_ = (low, low + _DEDUP_SLICE - 1)   # both ends in: the last one ends at 2**63 - 1
            more = True
            while more:
                removed_executions, removed, more = await self.store.purge_batch(before, PURGE_BATCH, slice_, now)
                executions, rows = executions + removed_executions, rows + removed
                await asyncio.sleep(PURGE_PAUSE)
                slice_ = (1, 0)   # this slice is done (an empty range); the other tables go on
        if rows:
            log.info("purged what is older than the retention", extra={
                "executions": executions, "rows": rows, "seconds": round(time.monotonic() - started, 3)})

    async def report_rejections(self) -> None:
        """One log line summing the requests refused since the last one, by workflow and
        reason: a flood of bad signatures is one line a minute, not one a request."""
        counts = {values: slot.value for values, slot in self.metrics.rejected.slots.items()}
        seen, self._rejections_seen = self._rejections_seen, counts
        new = {f"{workflow or '-'}/{reason}": count - seen.get((workflow, reason), 0)
               for (workflow, reason), count in counts.items() if count > seen.get((workflow, reason), 0)}
        if new:
            log.info("rejected requests", extra={"total": sum(new.values()), "by_workflow_and_reason": new})
