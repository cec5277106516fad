"""The intake: one request's life from its queue slot to its release.

`offer()` takes a delivery the door has checked: door dedup (the cache, a repeat of one whose
commit is in flight waits for it), a slot in the durable queue (full: refused before anything is
recorded), a place in the open batch.  The group commit writes batch N as ONE append while the
loop fills batch N+1; when N lands its offers are settled in order (their 2xx go out) and the
batch is handed to the claim, kept in memory while the window has room.  A slot is released
when its execution is final (`release`), or at once when the offer did not become one.

Where the store takes several appends at once (PostgreSQL: each on its own connection, the
server group-commits them), as many writers run (`Store.appenders`), each taking the next
batch: a commit's round trip no longer holds up the batch behind it.  Batches may then land out
of order, so while a workflow in force has an `order_key` (its executions run in arrival order)
only the first writer appends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from enum import Enum
from typing import Callable, Iterable

from .dedup import DoorCache
from ..observe.metrics import Metrics
from ..store import Store
from ..store.rows import ClaimCopies, Delivery, bodies_within, body_bytes, workflow_of

log = logging.getLogger("fastwebhook.intake")

MAX_BATCH = 1000          # deliveries per append: bounds the latency of one commit
# ... and bytes of bodies per append (past its first delivery): large bodies make smaller
# batches, so one append never nears SQLite's or PostgreSQL's 1 GB limit for a value, nor
# holds a thousand bodies of a MiB at once.
MAX_BATCH_BYTES = 32 << 20
# Committed deliveries kept in memory for the claim; the rest are read back.  A claim keeping up
# finds its batches here (a few of them); one that fell behind reads back whatever the size.
WINDOW = 2048
WINDOW_BYTES = 32 << 20   # ... with at most this many bytes of bodies among them
# ... and past those, claim copies of batches whose workflows run nothing (~600 bytes a delivery):
# a backlog of such deliveries as deep as the default capacity resolves without a read-back.
COPIES_WINDOW = 10_000
# durability = "memory" answers before the commit only while less than one batch waits: past
# that it answers after the commit, as "commit" does.  That bounds what a crash can lose and
# what the process holds, and turns a store that falls behind into slower answers.
MEMORY_BACKLOG = MAX_BATCH


class Offered(Enum):
    """What became of an offer: its kind."""
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"     # of an execution acknowledged before (its id is the receipt's)
    QUEUE_FULL = "queue_full"
    STORE_DOWN = "store_down"


class Receipt:
    """What became of an offer: its kind, and the execution it names (accepted or duplicate)."""

    __slots__ = ("kind", "execution")

    def __init__(self, kind: Offered, execution: bytes | None = None):
        self.kind = kind
        self.execution = execution


QUEUE_FULL = Receipt(Offered.QUEUE_FULL)
STORE_DOWN = Receipt(Offered.STORE_DOWN)
Settle = Callable[[Receipt], None]


class Intake:
    def __init__(self, store: Store, metrics: Metrics, capacity: int, durable: bool,
                 cache: DoorCache | None = None, clock: Callable[[], float] = time.time):
        self.store = store
        self.metrics = metrics
        self.capacity = capacity
        self.durable = durable
        self.cache = cache or DoorCache()
        self.clock = clock
        # With other processes or hosts on the store, a miss of this process's window may be a key
        # another one took: each batch's misses are then checked against the shared index first.
        self.check_misses = False
        self.depth = 0                    # acknowledged (or being committed) and not final
        self.queued: Counter[str] = Counter()   # the same, by workflow (each one's share)
        self.owner: str | None = None     # the claims' owner name of this process (Service sets it)
        self.healthy = True
        # the open batch: deliveries, and how each offer is settled (None: answered already)
        self.open: list[Delivery] = []
        self.settles: list[Settle | None] = []
        self.unchecked: set[int] = set()  # dedup hashes of the open batch to check (check_misses)
        self.in_flight = 0                # deliveries in the appends under way
        self.committing: dict[int, list[Delivery]] = {}   # ... and which, by batch
        self.waiting: dict[bytes, list[Settle]] = {}   # commit in flight -> repeats waiting on it
        self.window: dict[int, list[Delivery]] = {}    # committed batches by seq, for the claim
        self.window_size = 0
        self.window_bytes = 0
        self.copies: dict[int, ClaimCopies] = {}       # ... past the window, those that run nothing
        self.copies_size = 0
        self.runs_nothing: Callable[[str], bool] = lambda workflow: False   # Service sets it
        self.replies: dict[bytes, asyncio.Future] = {}  # sync mode: where the answer goes
        self.on_committed: Callable[[], None] = lambda: None
        self.on_room: Callable[[], None] = lambda: None   # slots were released (the door admits)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._parallel = asyncio.Event()   # set: writers after the first may append too

    @property
    def room(self) -> int:
        return self.capacity - self.depth

    @property
    def uncommitted(self) -> int:
        """Deliveries offered and not yet in the store."""
        return len(self.open) + self.in_flight

    def uncommitted_deliveries(self) -> list[Delivery]:
        return [*self.open, *(d for batch in self.committing.values() for d in batch)]

    @property
    def busy(self) -> bool:
        """A batch is being committed or waits to be: the store belongs to the ack path."""
        return bool(self.open) or self.in_flight > 0

    # -- the loop's side ------------------------------------------------------------------------
    def offer(self, delivery: Delivery, settle: Settle | None, reply: asyncio.Future | None = None) -> Receipt | None:
        """An outcome now, or None: `settle` is called once the batch's commit decides."""
        key_hash = delivery.dedup_hash
        if key_hash is not None:
            original = self.cache.get(key_hash)
            if original is not None:
                waiters = self.waiting.get(original)
                if waiters is None:
                    return Receipt(Offered.DUPLICATE, original)
                waiters.append(settle)   # never call it a duplicate of something not yet on disk
                return None
            if self.check_misses:
                self.unchecked.add(key_hash)
        if self.depth >= self.capacity:
            return QUEUE_FULL
        self.depth += 1
        self.queued[delivery.workflow] += 1
        if key_hash is not None:
            self.cache.put(key_hash, delivery.id, delivery.dedup_expires)
        if reply is not None:
            self.replies[delivery.id] = reply
        answer_now = not self.durable and reply is None and key_hash not in self.unchecked \
            and len(self.open) + self.in_flight < MEMORY_BACKLOG
        open_batch = self.open
        open_batch.append(delivery)
        self.settles.append(None if answer_now else settle)
        if key_hash is not None and not answer_now:
            self.waiting[delivery.id] = []
        if len(open_batch) == 1:   # the first of a batch wakes the writers (a later one finds them awake)
            self._wake.set()
            self._idle.clear()
        return Receipt(Offered.ACCEPTED, delivery.id) if answer_now else None

    def enqueued(self, deliveries: list[Delivery]) -> None:
        """Deliveries the work side put in the store's intake itself (failure workflows'):
        they hold slots until they are final, as offered ones do.  They are not refused for a
        full queue, and the slot of each one's failed execution may be taken already: it was
        given back when that execution became final, before the flush that appended the alert,
        and the door may have admitted a webhook into it meanwhile.  So the depth can pass the
        capacity by one flush's alerts; the door then admits nothing until it is below again."""
        self.depth += len(deliveries)
        for delivery in deliveries:
            self.queued[delivery.workflow] += 1

    def release(self, delivery: Delivery) -> None:
        """An execution became final (or never will run): its slot is free again."""
        self.depth -= 1
        self.queued[delivery.workflow] -= 1
        self.on_room()

    def release_all(self, deliveries: Iterable[Delivery]) -> None:
        released = Counter(map(workflow_of, deliveries))   # (counted in C: a claim's hundreds)
        if released:
            queued = self.queued
            for workflow, count in released.items():
                queued[workflow] -= count
            self.depth -= released.total()
            self.on_room()

    def in_window(self, seq: int) -> list[Delivery] | None:
        """A committed batch, or its claim copies, if memory still holds it."""
        return self.window.get(seq) or self.copies.get(seq)

    def claimed(self, finished: list[int], partial: tuple[int, list[Delivery]] | None,
                done_below: int | None = None) -> None:
        """A claim took these batches whole (they leave the window) and part of `partial`
        (kept, read back or not, so the next claim need not decode it again).  Those below
        `done_below` were claimed by someone (another process or host, maybe): they leave too."""
        if done_below is not None:
            finished = [*finished, *(seq for seq in (*self.window, *self.copies) if seq < done_below)]
        for seq in finished:
            batch = self.window.pop(seq, None)
            if batch is not None:
                self.window_size -= len(batch)
                self.window_bytes -= body_bytes(batch)
            copies = self.copies.pop(seq, None)
            if copies is not None:
                self.copies_size -= len(copies)
        if partial is not None:
            seq, batch = partial
            if isinstance(batch, ClaimCopies):
                if seq not in self.copies:
                    self.copies[seq] = batch
                    self.copies_size += len(batch)
            elif seq not in self.window and self.window_bytes + (size := body_bytes(batch)) <= WINDOW_BYTES:
                self.window[seq] = batch
                self.window_size += len(batch)
                self.window_bytes += size

    # -- the group commit -------------------------------------------------------------------------
    def in_order(self, ordered: bool) -> None:
        """Whether batches must land in the order they were made (a workflow has an order_key)."""
        if ordered:
            self._parallel.clear()
        else:
            self._parallel.set()

    async def run(self, writer: int = 0) -> None:
        """Writer number `writer`: supervised, so an unexpected error costs one batch (its
        senders get 503) and the loop goes on."""
        while True:
            if writer:
                await self._parallel.wait()
            await self._wake.wait()
            if writer and not self._parallel.is_set():
                continue
            if not self.open:
                self._wake.clear()
                continue
            size = batch_size(self.open)
            batch, settles = self.open[:size], self.settles[:size]
            del self.open[:size], self.settles[:size]
            taken = len(batch)   # (the append may drop repeats from the batch in place)
            self.in_flight += taken
            self.committing[id(batch)] = batch
            try:
                await self._commit(batch, settles)
            except BaseException as exc:
                self._failed(batch, settles, exc)
                raise
            finally:
                self.in_flight -= taken
                del self.committing[id(batch)]
                if not self.open and not self.in_flight:
                    self._idle.set()

    async def _commit(self, batch: list[Delivery], settles: list[Settle | None]) -> None:
        started = time.perf_counter()
        seq, batch, settles = await self._append(batch, settles)
        if seq is None:
            return
        self.healthy = True
        self.metrics.store_commit.observe(time.perf_counter() - started)
        self.metrics.store_batch.observe(len(batch))
        size = body_bytes(batch)
        if self.window_size + len(batch) <= WINDOW and self.window_bytes + size <= WINDOW_BYTES:
            self.window[seq] = batch
            self.window_size += len(batch)
            self.window_bytes += size
        elif self.copies_size + len(batch) <= COPIES_WINDOW \
                and all(map(self.runs_nothing, set(map(workflow_of, batch)))):
            self.copies[seq] = ClaimCopies(d.claim_copy() for d in batch)
            self.copies_size += len(batch)
        _call(self.on_committed)
        waiting = self.waiting
        for delivery, settle in zip(batch, settles):
            waiters = waiting.pop(delivery.id, None) if delivery.dedup_hash is not None else None
            if settle is not None:
                try:   # (_call inlined: once per delivery)
                    settle(Receipt(Offered.ACCEPTED, delivery.id))
                except Exception:  # noqa: BLE001
                    log.exception("a commit callback failed")
            if waiters:
                duplicate = Receipt(Offered.DUPLICATE, delivery.id)
                for waiter in waiters:
                    _call(waiter, duplicate)

    async def _append(self, batch: list[Delivery], settles: list[Settle | None]):
        """The batch as one append: (its seq, what was appended).  Where other processes or hosts
        take keys too, the batch's misses of the window are checked against the shared index in
        the same round trip; repeats found there are answered and dropped, the rest appended
        (seq None: nothing was left)."""
        hashes = sorted({d.dedup_hash for d in batch if d.dedup_hash in self.unchecked}) if self.unchecked else None
        if hashes:
            self.unchecked.difference_update(hashes)
            seq, held = await self.store.append_unless_held(batch, hashes, self.clock(), self._held_by(batch))
            if seq is not None:
                return seq, batch, settles
            # in place: should the append below fail, `run` answers what is left, not the repeats
            # answered here already
            batch[:], settles[:] = self._drop_held(batch, settles, held)
            if not batch:
                return None, batch, settles
        return await self.store.append(batch, held_by=self._held_by(batch)), batch, settles

    def _held_by(self, batch: list[Delivery]) -> str | None:
        """This host, if a sync sender waits here for one of the batch (it claims that batch)."""
        replies = self.replies
        return self.owner if replies and any(d.id in replies for d in batch) else None

    def _drop_held(self, batch: list[Delivery], settles: list[Settle | None], held: dict[int, bytes]):
        """Answer the repeats of keys the shared index holds for another execution; keep the rest."""
        kept, kept_settles = [], []
        for delivery, settle in zip(batch, settles):
            original = held.get(delivery.dedup_hash)
            if original is None or original == delivery.id:
                kept.append(delivery)
                kept_settles.append(settle)
                continue
            self.release(delivery)
            self.replies.pop(delivery.id, None)
            self.cache.put(delivery.dedup_hash, original, delivery.dedup_expires)
            duplicate = Receipt(Offered.DUPLICATE, original)
            for waiter in [settle, *self.waiting.pop(delivery.id, ())]:
                if waiter is not None:
                    _call(waiter, duplicate)
        return kept, kept_settles

    def _failed(self, batch: list[Delivery], settles: list[Settle | None], exc: BaseException) -> None:
        """Offers still waiting were never acknowledged: they get 503 (a sender's retry is a
        fresh request).  Those answered already (memory durability) go back to be retried."""
        self.healthy = False
        retry, retry_settles = [], []
        for delivery, settle in zip(batch, settles):
            if settle is None:
                retry.append(delivery)
                retry_settles.append(None)
                continue
            self.release(delivery)
            reply = self.replies.pop(delivery.id, None)
            if reply is not None and not reply.done():
                reply.cancel()
            if delivery.dedup_hash is not None:
                self.cache.forget(delivery.dedup_hash, delivery.id)
            for waiter in [settle, *self.waiting.pop(delivery.id, ())]:
                _call(waiter, STORE_DOWN)
        if retry:
            log.error("%d acknowledged deliveries (durability memory) not yet stored: %s; retrying",
                      len(retry), exc)
            self.open[:0] = retry
            self.settles[:0] = retry_settles
            self._wake.set()   # another writer may have found nothing open meanwhile

    async def drain(self) -> None:
        """Until everything offered so far has been committed (or refused)."""
        while self.open or not self._idle.is_set():
            await self._idle.wait()
            if self.open and not self.healthy:
                return


def batch_size(open_batch: list[Delivery]) -> int:
    """How many of the open deliveries the next append takes: up to MAX_BATCH, and no more
    than MAX_BATCH_BYTES of bodies once it has one."""
    return bodies_within(open_batch[:MAX_BATCH], MAX_BATCH_BYTES, at_least_one=True)[0]


def _call(callback: Callable, *args) -> None:
    """One failing callback never stops the others."""
    try:
        callback(*args)
    except Exception:  # noqa: BLE001
        log.exception("a commit callback failed")
