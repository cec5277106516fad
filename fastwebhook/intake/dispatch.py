"""The claim side of the durable queue: claims batches under leases, feeds the worker pool,
writes what executions leave behind in batches.

The intake holds acknowledged deliveries; RAM holds only a window of them (the workers' ready
queue and the intake's recent batches) and the claim reads the rest back.  A claim takes the
next unclaimed intake batches in one transaction: each delivery gets its execution row, its
dedup key goes into the unique index, and a key already taken ends it `duplicate`.  Work whose
lease lapsed (its owner died) is reclaimed the same way.  Status changes, jobs and request-log
lines wait in `records` and go to the store together, as soon as the store is free.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Callable

from ..store import Store
from ..store.rows import Claim, Delivery, Final, Records, RequestLine
from .balance import BUSY_EVERY, CLAIM_BATCH, Balance
from .intake import Intake
from .workers import WorkerPool

log = logging.getLogger("fastwebhook.dispatch")
LEASE_SECONDS = 30.0
SWEEP_EVERY = 1.0           # look for lapsed leases and other processes' batches this often
IN_MEMORY = CLAIM_BATCH      # claimed deliveries ready or running, at most
IN_MEMORY_BYTES = 64 << 20   # ... and bytes of their bodies (a claim's first one whatever its size)
# Records are written in batches: a few rows, waiting for more, for at most RECORD_LINGER.  When
# executions end one by one (each waiting on a script, say), a transaction per execution would
# cost the event loop and the store's thread more than the executions themselves.
RECORD_BATCH = 256
RECORD_LINGER = 0.02
# An execution's "started" is written once it has run this long: most end sooner, and their
# final status is then their one write (a cohort's status rows were half "started" ones).
STARTED_AFTER = 0.5


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


class Dispatcher:
    def __init__(self, store: Store, intake: Intake, pool: WorkerPool, balance: Balance, *,
                 runs_nothing: Callable[[str], bool], settled: Callable[[Claim], None],
                 clock: Callable[[], float] = time.time, lease: float = LEASE_SECONDS):
        self.store = store
        self.intake = intake
        self.pool = pool
        self.balance = balance          # how soon a claim may follow the last
        self.runs_nothing = runs_nothing
        self.settled = settled          # told what a claim resolved or found duplicate
        self.clock = clock
        self.lease = lease
        self.owner = new_owner()
        self.records = Records()
        self.unclaimed = True           # the intake may hold batches nobody claimed yet
        self.dead_owners: tuple[str, ...] = ()
        self.stopping = False
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._last_sweep = 0.0
        self._last_round = 0.0
        intake.on_committed = self.poke_claim

    # -- what others tell it ----------------------------------------------------------------------
    def poke_claim(self) -> None:
        self.unclaimed = True
        self._wake.set()

    def change(self, final: Final) -> None:
        self.records.change(final)
        self._wake.set()

    def add_jobs(self, jobs) -> None:
        self.records.jobs.extend(jobs)
        self._wake.set()

    def queue_alert(self, alert: Delivery) -> None:
        """A failure workflow's delivery: written with its failed execution's final status
        (so the two are in the store together or not at all), then claimed like any other."""
        self.records.alerts.append(alert)
        self._wake.set()

    def log_request(self, line: RequestLine) -> None:
        self.records.requests.append(line)
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------------
    async def find_dead_owners(self) -> None:
        owners = await self.store.pending_owners()
        self.dead_owners = tuple(o for o in owners if owner_is_dead(o, self.owner))

    async def run(self) -> None:
        """Supervised: a failing round (the store down) is retried after a back-off, the
        records it held kept for the next one."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), self._until_due())
                except TimeoutError:
                    pass
            self._wake.clear()
            while not self.stopping:
                wait = self._last_round + self.balance.pause() - loop.time()
                if wait > 0:   # judged again soon: the intake may fall idle or the share grow
                    await asyncio.sleep(min(wait, BUSY_EVERY))
                    continue
                self._last_round = loop.time()
                if 0 < len(self.records) < RECORD_BATCH and not (self.unclaimed and self._room() > 0):
                    await asyncio.sleep(RECORD_LINGER)   # nothing to claim now: let more finish first
                await self.flush()
                now = self.clock()
                if now - self._last_sweep >= SWEEP_EVERY:
                    self._last_sweep = now
                    self.unclaimed = True
                    if await self.reclaim():
                        # It filled the room and more may wait: those are older than anything a
                        # claim would take (order_key lanes go by age), so they come first.
                        self._last_sweep = 0.0
                        continue
                if not (self.unclaimed and self._room() > 0 and await self.claim()):
                    break
            if self.stopping:
                await self.flush()

    def _until_due(self) -> float:
        """How long the loop may wait for a wake-up: a sweep's interval, or less when the oldest
        "started" not yet written falls due sooner."""
        starts = self.records.starts
        if not starts:
            return SWEEP_EVERY
        oldest = next(iter(starts.values())).started_at
        return min(SWEEP_EVERY, max(RECORD_LINGER, oldest + STARTED_AFTER - self.clock()))

    def _room(self) -> int:
        """How many to claim now.  What RAM holds of the backlog stays bounded (the rest waits in
        the store): at most IN_MEMORY deliveries ready or running, since a worker runs a cohort
        of up to 256 at once and 64 workers could otherwise hold 16,384 executions with their
        parsed bodies; and at most IN_MEMORY_BYTES of their bodies (the claim stops there too,
        past its first delivery: with bodies of a MiB, 1,024 would be a GiB).  The ready queue
        is topped up only once it is down to one batch: while workers finish a few at a time, a
        claim of those few would cost a transaction each.
        Deliveries parked behind an order-key lane or a concurrency cap do not count: they never
        stall the claims of other keys or workflows (each workflow's share of the queue bounds
        them)."""
        pool = self.pool
        ready = len(pool.ready)
        if ready >= CLAIM_BATCH or pool.held_bytes >= IN_MEMORY_BYTES:
            return 0
        return max(0, IN_MEMORY - ready - pool.running)

    async def claim(self) -> bool:
        """One claim, as much as there is room for; False when the intake had nothing left to claim."""
        now = self.clock()
        claim = await self.store.claim(self.owner, now, now + self.lease, self._room(),
                                       self.intake.in_window, self.runs_nothing,
                                       max_bytes=IN_MEMORY_BYTES - self.pool.held_bytes)
        self.intake.claimed(claim.finished, claim.partial, claim.done_below)
        if not (claim.run or claim.resolved or claim.duplicates):
            self.unclaimed = False
            return False
        self.settled(claim)
        for delivery in claim.run:
            self.pool.push(delivery)
        return True

    async def reclaim(self) -> bool:
        """Lapsed work back to the workers; True when it filled the room (more may be left)."""
        room = self._room()
        if room <= 0:
            return False
        now = self.clock()
        found = await self.store.reclaim(self.owner, now, now + self.lease, room, self.dead_owners)
        for delivery in found:
            self.pool.push(delivery)
        return len(found) >= room

    async def flush(self) -> None:
        """Write the records so far; a flush under way is waited for, so after this returns
        everything recorded before the call is in the store (but the "started" of executions
        not yet STARTED_AFTER into their run)."""
        async with self._flushing:
            self.records.due(self.clock() - STARTED_AFTER)
            if not self.records:
                return
            records = self.records
            self.records = Records(starts=records.starts)
            try:
                appended = await self.store.record(records)
            except BaseException:
                self.records.merge_back(records)
                raise
            if appended:   # in the intake now: counted in the queue, and a claim takes them
                self.intake.enqueued(appended)
                self.poke_claim()

    async def renew(self) -> None:
        if self.pool.backlog:
            await self.store.renew(self.owner, self.clock() + self.lease)

    async def release(self) -> None:
        """At shutdown: what this process holds and has not run goes back at once."""
        await self.flush()
        await self.store.renew(self.owner, 0.0)
