"""The V8 contexts a workflow's scripts run in, pooled (`ContextPool`): opened, lent to one run
(or one batch) at a time, grown while all are stuck, and closed and replaced when a run left one
not to be trusted.  What runs in a context, and how runs are batched, is script_pool.py's.

V8 runs on mini-racer's own native thread; awaiting a call into it leaves our event loop free to
take webhooks while a script runs.  A fresh context costs ~2 ms and a call into a reused one
~115 µs of CPU, so contexts are kept and reused, one call at a time each; more contexts open
only while the open ones are stuck (STUCK_AFTER).  Their threads run at the lowest CPU
priority, so a runaway script costs the webhooks little.
"""

from __future__ import annotations

import asyncio
from collections import deque

from py_mini_racer import JSEvalException, JSOOMException

from .scripts import Script, ScriptError
from .v8 import Context

__all__ = ["ContextPool", "Served", "Waiter", "duration_text", "first_line"]


class Waiter:
    """A run waiting for a context.  Its future gets a context (run it yourself), or the
    outcome, when a run that got a context took it along (`Served`, or a ScriptError)."""

    __slots__ = ("future", "script", "scope_text", "memory", "timeout", "alone")

    def __init__(self, future, script, scope_text, memory, timeout):
        self.future, self.script, self.scope_text = future, script, scope_text
        self.memory, self.timeout = memory, timeout
        self.alone = False        # it was in a batch that failed: it runs by itself from now on


class Served:
    """A run's (value, logs), given to its waiter by the run whose batch took it along."""

    __slots__ = ("value", "logs")

    def __init__(self, value, logs):
        self.value, self.logs = value, logs


# A new context opens only when every open one has spent STUCK_AFTER of its isolate's CPU in its
# call (a script spinning to its timeout, a slow batch) and runs are waiting: more contexts would
# split the batches, and each costs memory and V8's threads CPU of their own.  Counted in CPU,
# not time: under load a batch of short runs takes tens of milliseconds by the clock (V8's
# threads run at the lowest priority), and more contexts would only wait for the same core.
STUCK_AFTER = 0.1
# A script's time is its own: a call is held to its timeout of the isolate's CPU, never of time.
# Under load V8's nice-19 thread gets about 1/70 of the core the loop leaves, and a run that
# waits for a context waits for other runs: counted in time, both failed scripts that did
# nothing wrong (483 "timed out" in one sustained run of the workflow bench).  A call that
# cannot get the CPU is still stopped after WALL_SLACK times its timeout of time.
WALL_SLACK = 10
# How much of V8's CPU the microtasks a call's scripts queued may take after it answered (a
# promise's .then does, in microseconds), counted the same way.
SETTLE = 0.1


class ContextPool:
    """Reused V8 contexts: `initial` opened at `start()` or for the first runs, more (up to
    `most`, and while `may_grow()` says so) while all are stuck.  Runs wait in `_waiters`
    (`_acquire`); a context given back (`_release`) goes to the oldest."""

    def __init__(self, initial: int = 2, most: int = 6, may_grow=lambda: True):
        self.initial = initial
        self.most = max(most, initial, 1)
        self._may_grow = may_grow
        self._idle: list[Context] = []
        self._waiters: deque[Waiter] = deque()
        self._size = 0            # contexts open or being opened, idle or busy
        self._closed = False
        self._replacing: set[asyncio.Task] = set()   # held so the loop does not drop them
        # contexts in a call into V8: when it began, and the isolate's CPU time then
        self._calling: dict[Context, tuple[float, float | None]] = {}
        self._handing_out = False
        self._growing: asyncio.TimerHandle | None = None

    @property
    def size(self) -> int:
        return self._size

    async def start(self) -> None:
        self._closed = False
        while self._size < self.initial:
            self._size += 1
            try:
                self._idle.append(await Context.open())
            except BaseException:
                self._size -= 1
                raise

    async def close(self) -> None:
        self._closed = True
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(ScriptError("closed", "the script pool is closed"))
        self._waiters.clear()
        idle, self._idle = self._idle, []
        for context in idle:
            self._size -= 1
            context.close()

    async def _acquire(self, script: Script, scope_text: str, memory: int, timeout: float, alone: bool = False):
        """(a context, whether to run alone), or the outcome when a batch took this run along
        (never one that waits `alone`: no batch takes it).  Waiting costs a run none of its time:
        every call ahead of it ends at its own timeout, and then it is its turn."""
        if self._closed:
            raise ScriptError("closed", "the script pool is closed")
        waiter = Waiter(asyncio.get_running_loop().create_future(), script, scope_text, memory, timeout)
        waiter.alone = alone
        self._waiters.append(waiter)
        self._offer()
        future = waiter.future
        try:
            got = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None \
                    and isinstance(future.result(), Context):
                self._release(future.result())   # handed a context just as we stopped waiting
            future.cancel()
            raise
        return got if isinstance(got, Served) else (got, waiter.alone)

    def _offer(self) -> None:
        """Runs wait: an idle context goes to the oldest at the next loop iteration (with those
        who came meanwhile), or, none idle, a new one opens if all stay stuck."""
        loop = asyncio.get_running_loop()
        if self._idle:
            if not self._handing_out:
                self._handing_out = True
                loop.call_soon(self._hand_out)
        elif self._size < self.initial:   # one was given up (out of memory): its slot refills now
            self._open_for_waiters()
        elif self._size < self.most and self._growing is None:
            self._growing = loop.call_later(STUCK_AFTER, self._grow)

    def _hand_out(self) -> None:
        self._handing_out = False
        if self._idle and not self._closed:
            self._release(self._idle.pop())   # the most recently used: its compiled scripts are warm

    def _grow(self) -> None:
        self._growing = None
        if self._closed or self._idle or self._size >= self.most or not self._may_grow() \
                or not any(not waiter.future.done() for waiter in self._waiters):
            return
        loop = asyncio.get_running_loop()
        busy_for = min((_spent(context, *began) for context, began in self._calling.items()), default=0.0)
        if self._calling and busy_for >= STUCK_AFTER:
            self._open_for_waiters()
            busy_for = 0.0
        self._growing = loop.call_later(STUCK_AFTER - busy_for, self._grow)

    def _release(self, context: Context) -> None:
        if self._closed:
            self._size -= 1
            context.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(context)
                return
        self._idle.append(context)

    def _wait_again(self, waiters: list[Waiter]) -> None:
        """Back to the front of the queue, in their order; failed if the pool closed meanwhile."""
        waiting = [w for w in waiters if not w.future.done()]
        if self._closed:
            for waiter in waiting:
                waiter.future.set_exception(ScriptError("closed", "the script pool is closed"))
            return
        self._waiters.extendleft(reversed(waiting))

    async def _call(self, context: Context, function: str, args: tuple, timeout: float, memory: int) -> str:
        """One call of a driver function, held to `timeout` of the isolate's CPU (`_within`) and
        to the memory limit."""
        racer = context.racer
        if context.memory_limit != memory:   # a call into V8 each: only when it changes
            racer.set_hard_memory_limit(memory)
            context.memory_limit = memory
        context.used = True
        context.harmed = False
        loop = asyncio.get_running_loop()
        began = loop.time(), context.cpu_time()
        self._calling[context] = began
        # The idle probe goes in right behind the call (V8 takes its tasks in order), so it
        # answers with no round trip of its own once the call's microtasks have run.
        call = loop.create_task(context.call(function, *args))
        idle = loop.create_task(context.idle())
        answered = False
        stop_by = began[0] + WALL_SLACK * timeout
        try:
            # Cancelling the call makes mini-racer terminate the JavaScript (mr_cancel_task).
            answer = await _within(context, call, timeout, stop_by, began)
            answered = True
            # out of its call: waiting for the probe's answer is not being stuck in a script,
            # and opens no context (more would only split the batches)
            self._calling.pop(context, None)
            # what its scripts queued has run: the next call may come
            await _within(context, idle, SETTLE, stop_by, (loop.time(), context.cpu_time()))
        except TimeoutError:
            context.harmed = True
            if answered:
                raise ScriptError("pending", "script left work running after it returned (a promise or an async "
                                  "function still going); a script must finish what it starts") from None
            raise ScriptError("timeout", f"script timed out after {duration_text(timeout)}") from None
        except JSEvalException as error:
            context.harmed = True
            if isinstance(error, JSOOMException) or racer.was_hard_memory_limit_reached():
                raise ScriptError("memory", f"script exceeded its memory limit of {_size_text(memory)}") from None
            raise ScriptError("engine", f"script failed: {first_line(str(error))}") from None
        finally:
            self._calling.pop(context, None)
            unfinished = [task for task in (call, idle) if not task.done()]
            for task in unfinished:
                task.cancel()
            if unfinished:
                # Their cancellation reaches mini-racer (mr_cancel_task) before the caller may
                # close the context: nothing of ours still talks to an isolate being freed.
                await asyncio.wait(unfinished)
            for task in (call, idle):
                if not task.cancelled():
                    task.exception()   # seen: its failure, if any, is the call's (told above)
        if racer.was_hard_memory_limit_reached():
            context.harmed = True
            raise ScriptError("memory", f"script exceeded its memory limit of {_size_text(memory)}")
        return answer

    async def _renew(self, context: Context) -> Context:
        """A fresh context in the slot of `context`, which is closed.  If none opens, the slot
        is given up (a waiter gets a replacement, or is failed)."""
        context.close()
        try:
            return await Context.open()
        except BaseException as error:
            self._size -= 1
            self._replace_for_waiters()
            if isinstance(error, Exception):
                raise ScriptError("unavailable", f"could not open a V8 context: {error}") from None
            raise

    def _discard(self, context: Context) -> None:
        self._size -= 1
        context.close()
        self._replace_for_waiters()

    def _replace_for_waiters(self) -> None:
        """Whoever waits for a context gets a fresh one in place of one given up."""
        if not self._closed and any(not waiter.future.done() for waiter in self._waiters):
            self._open_for_waiters()

    def _open_for_waiters(self) -> None:
        self._size += 1
        task = asyncio.get_running_loop().create_task(self._replace())
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replace(self) -> None:
        try:
            context = await Context.open()
        except Exception as error:  # noqa: BLE001 - told to the waiter, which has no context to use
            self._size -= 1
            failure = ScriptError("unavailable", f"could not open a V8 context: {error}")
            for waiter in self._waiters:   # one fails; all do when no context is left to wait for
                if not waiter.future.done():
                    waiter.future.set_exception(failure)
                    if self._size > 0:
                        break
            return
        self._release(context)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def duration_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _size_text(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def _spent(context: Context, began: float, cpu_then: float | None) -> float:
    """What the isolate has spent since the loop time `began`: its CPU since then (`cpu_then`;
    one waiting for the core spends none), else, where that cannot be read, the time."""
    cpu_now = context.cpu_time() if cpu_then is not None else None
    if cpu_now is None:
        return asyncio.get_running_loop().time() - began
    return cpu_now - cpu_then


async def _within(context: Context, task: asyncio.Task, budget: float, stop_by: float,
                  began: tuple[float, float | None]):
    """`task`'s result; TimeoutError (the task cancelled) once the isolate has spent `budget` since
    `began` (`_spent`: its CPU, else time), or at the loop time `stop_by`, whichever comes first.
    The task is awaited directly: on a busy loop every hop between it and us costs a turn."""
    loop = asyncio.get_running_loop()
    tick = min(SETTLE, budget)
    timer: list[asyncio.TimerHandle] = []

    def look() -> None:
        if loop.time() >= stop_by or _spent(context, *began) >= budget:
            task.cancel()
        else:
            timer[0] = loop.call_at(min(stop_by, loop.time() + tick), look)

    timer.append(loop.call_at(min(stop_by, loop.time() + tick), look))
    try:
        return await task
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():   # we are cancelled ourselves
            raise
        raise TimeoutError from None   # its time was up
    finally:
        timer[0].cancel()
