"""Scripts run in a workflow's V8 contexts (context_pool.py): `WorkflowScripts` keeps a pool per
workflow, each script compiled once per context.

`ScriptPool.run(script, scope, timeout, memory) -> (value, logs)`, and for a cohort of runs of one
script `ScriptPool.run_many(script, scopes, timeout, memory)`.  A call into a reused context
costs ~115 µs of CPU, more than a short script itself, so short runs that wait together go in
one call (BATCH_MAX), as do a cohort's.  A context that ran out of memory, was stopped at its
timeout or left work running after its script returned is closed and replaced rather than
trusted again.

Scripts get plain data (the scope as JSON) and a `console` that writes into their job record;
no Python callback is exposed, and V8 by itself has no file, network or process access.
"""

from __future__ import annotations

import asyncio

import orjson

from ..store.rows import encode_result
from .context_pool import ContextPool, Served, Waiter, duration_text, first_line
from .scripts import Script, ScriptError
from .v8 import Context, js_string, line_in, syntax_error_line

__all__ = ["ScriptPool", "WorkflowScripts"]


# Failures the driver caught inside JavaScript: the context is as good as before, and keeping
# it spares the event loop a new isolate (~2 ms, blocking).  Any other failure closes it: out of
# memory, V8 failing, a run cancelled halfway, and a timeout, since what a stopped script leaves
# behind cannot be told (a promise loop goes on after TerminateExecution, and the next call
# into that isolate would block the event loop behind it).
_CONTEXT_UNHARMED = frozenset({"exception", "compile", "result"})


class _RunAgain(Exception):
    """The batch a run was in failed as a whole: it runs again, by itself."""


def _outcomes(answer) -> list[dict]:
    """The driver's answer to a batch: a JSON array of outcome objects, or an engine error."""
    try:
        outcomes = orjson.loads(answer)
    except (TypeError, orjson.JSONDecodeError):
        outcomes = None
    if not isinstance(outcomes, list) or not all(isinstance(o, dict) for o in outcomes):
        raise ScriptError("engine", "V8 gave the pool an answer it cannot read")
    return outcomes


# A run that gets a context takes up to BATCH_MAX - 1 waiting runs along (same memory limit)
# into ONE call into V8: mini-racer's machinery costs ~115 us of CPU a call (handles, the
# callback from V8's thread, its GIL hand-over), more than a short script itself.  So runs wait
# for a context rather than taking an idle one at once: contexts are handed out once a loop
# iteration, to the oldest waiter, which takes those who came meanwhile.  Only scripts whose
# last run was short (SHORT_RUN, as V8 timed it) go in a batch, whose runs take turns; a script
# not run yet, or a slow one, runs alone.  A batch that fails as a whole (a timeout, memory, V8
# itself) says nothing of which run was to blame: the taker runs its own again, alone, and the
# others go back to wait, to run alone.
BATCH_MAX = 64
SHORT_RUN = 0.002
# A cohort's runs are of one script with one timeout, which holds each call as a whole: a call
# takes COHORT_CHUNK of them, fewer when that many runs of the script (each as long as its last
# median, RUN_FLOOR at least: V8 times runs to the millisecond) could take a quarter of it.
COHORT_CHUNK = 256
RUN_FLOOR = 0.0005
# How long the runs a stopped batch finished may take to read back before they run again alone.
READ_BACK = 1.0


# Contexts in all the workflows' pools together, beyond each pool's first: a pool grows past
# its first only while the total is under this (an isolate is ~1 MiB idle, up to its scripts'
# memory limit busy).
MOST_CONTEXTS = 8


class WorkflowScripts:
    """A ScriptPool per workflow, so what a script does to its context (globals, a replaced
    Array.prototype.map, a compiled function) is never seen by another workflow's scripts;
    runs of one workflow share its contexts.  A workflow's pool opens its first context for its
    first run."""

    def __init__(self, initial: int = 1, most: int = 4, most_in_all: int = MOST_CONTEXTS):
        self.initial, self.most, self.most_in_all = initial, most, most_in_all
        self._pools: dict[str, ScriptPool] = {}

    def of(self, workflow: str) -> "ScriptPool":
        pool = self._pools.get(workflow)
        if pool is None:
            pool = self._pools[workflow] = ScriptPool(self.initial, self.most, may_grow=self._may_grow)
        return pool

    @property
    def size(self) -> int:
        return sum(pool.size for pool in self._pools.values())

    def _may_grow(self) -> bool:
        return self.size < self.most_in_all

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self._pools.values()))


class ScriptPool(ContextPool):
    """A workflow's contexts (ContextPool) and the scripts run in them, alone or batched."""

    def __init__(self, initial: int = 2, most: int = 6, may_grow=lambda: True):
        super().__init__(initial, most, may_grow)
        self._took: dict[str, float] = {}             # script name: seconds its last run took

    async def run(self, script: Script, scope: dict | str, timeout: float, memory: int) -> tuple:
        """The script's returned value (None for undefined) and its console lines; `scope` as
        data, or already as JSON text."""
        return await self._run(script, _scope_text(scope), timeout, memory)

    async def run_many(self, script: Script, scopes: list, timeout: float, memory: int) -> list:
        """A cohort: the script run for each scope (data, or JSON text), each run's (value, logs)
        or its ScriptError, in order.  A script known to be short runs for the whole cohort on
        one context, up to COHORT_CHUNK runs a call into V8 (`_chunk`), the call held to the
        script's timeout.  A call stopped at its timeout serves the runs that finished and fails
        the one running; the rest run alone.  One that fails otherwise (memory, V8 itself) names
        no culprit: its runs and the rest run alone.  A script not run yet, or a slow one, runs
        per scope, as `run` runs it."""
        if not scopes:
            return []
        texts = [_scope_text(scope) for scope in scopes]
        if len(texts) == 1 or not self._short(script):
            return await self._each(script, texts, timeout, memory)
        try:
            context, _ = await self._acquire(script, texts[0], memory, timeout, alone=True)
        except ScriptError as error:
            return [error] * len(texts)
        results: list = []
        try:
            while len(results) < len(texts) and self._short(script):
                if self._waiters:   # others wait: the next context, idle or opened
                    self._offer()
                chunk = texts[len(results):len(results) + self._chunk(script, timeout)]
                try:
                    outcomes, running = await self._batch_call(
                        context, [(script, text, timeout) for text in chunk], memory)
                except _RunAgain:   # nothing is known of the chunk: its runs and the rest run alone
                    break
                results.extend(await self._settle_all(context, script, outcomes))
                if running is not None:   # stopped at its timeout: that run's time is up
                    if running < len(chunk):
                        results.append(ScriptError("timeout", f"script timed out after {duration_text(timeout)}"))
                    break
        except BaseException:   # cancelled mid-run, or a failure of ours: not trusted again
            self._discard(context)
            raise
        if context.harmed:
            self._discard(context)
        else:
            self._release(context)
        if len(results) < len(texts):
            results.extend(await self._each(script, texts[len(results):], timeout, memory, alone=True))
        return results

    async def _each(self, script: Script, texts: list[str], timeout: float, memory: int,
                    alone: bool = False) -> list:
        """Each run by itself (batched with whatever else waits, unless `alone`)."""
        async def one(text: str):
            try:
                return await self._run(script, text, timeout, memory, alone)
            except ScriptError as error:
                return error
        if len(texts) == 1:
            return [await one(texts[0])]
        return list(await asyncio.gather(*(one(text) for text in texts)))

    async def _settle_all(self, context: Context, script: Script, outcomes: list[dict]) -> list:
        """`_settle` for a cohort's outcomes, without a coroutine for each run that gave a value."""
        settled: list = []
        took: list[float] = []
        for outcome in outcomes:
            if "error" in outcome:
                try:
                    settled.append(await self._settle(context, script, outcome))
                except ScriptError as error:
                    settled.append(error)
            else:
                settled.append((outcome.get("value"), outcome.get("logs", [])))
                took.append(outcome.get("ms", 0))
        if took:
            # Whether it may go in a batch: the chunk's median run.  V8 times a run by the wall
            # clock, and under load its nice-19 thread is preempted for milliseconds now and
            # then: by its slowest run a 50 us script read as slow every few cohorts, and the
            # next one fell back to a waiter, a timeout and a coroutine per run.
            took.sort()
            self._took[script.name] = took[len(took) // 2] / 1000
            context.compiled.add(script.name)
        return settled

    async def _run(self, script: Script, scope_text: str, timeout: float, memory: int,
                   alone: bool = False) -> tuple:
        got = await self._acquire(script, scope_text, memory, timeout, alone)
        if isinstance(got, Served):
            return got.value, got.logs
        context, alone = got
        renew = False
        while True:
            if renew:   # outside the try below: a failed renewal has given up its slot itself
                context, renew = await self._renew(context), False
            reused = context.used
            batch = [] if alone or not self._short(script) else self._companions(memory)
            if self._waiters:   # more than one batch takes: the next context, idle or opened
                self._offer()
            try:
                if batch:
                    value, logs = await self._run_batch(context, script, scope_text, timeout, memory, batch)
                else:
                    value, logs = await self._run_in(context, script, scope_text, timeout, memory)
            except _RunAgain:   # the batch failed as a whole with ours in it: ours again, by itself
                alone, renew = True, context.harmed
                continue
            except ScriptError as error:
                if error.reason in _CONTEXT_UNHARMED:
                    self._release(context)
                    raise
                if error.reason in ("memory", "engine") and reused:
                    # Garbage of earlier runs counts against the hard limit until a full GC, so
                    # a reused context can stop a script that keeps its limit; and an earlier
                    # script may have spoilt the context (an Object.prototype.toJSON).  A script
                    # has no effects outside V8: judge it again on a fresh context, in the time left.
                    renew = True
                    continue
                self._discard(context)
                raise
            except BaseException:   # cancelled mid-run, or a failure of ours: not trusted again
                self._discard(context)
                raise
            self._release(context)
            return value, logs

    def _chunk(self, script: Script, timeout: float) -> int:
        took = max(self._took.get(script.name, SHORT_RUN), RUN_FLOOR)
        return max(1, min(COHORT_CHUNK, int(timeout / (4 * took))))

    def _short(self, script: Script) -> bool:
        return self._took.get(script.name, SHORT_RUN + 1) <= SHORT_RUN

    def _companions(self, memory: int) -> list[Waiter]:
        taken: list[Waiter] = []
        kept: list[Waiter] = []
        while self._waiters and len(taken) < BATCH_MAX - 1:
            waiter = self._waiters.popleft()
            if waiter.future.done():
                continue
            (kept if waiter.alone or waiter.memory != memory or not self._short(waiter.script)
             else taken).append(waiter)
        self._waiters.extendleft(reversed(kept))
        return taken

    async def _run_batch(self, context: Context, script: Script, scope_text: str, timeout: float, memory: int,
                         batch: list[Waiter]):
        """Ours (first) and the batch's runs in one call: ours is returned, theirs are served.

        The call is held to the shortest timeout of its runs.  When that stops it, the runs that
        finished are read back and served; the one that was running is failed if that timeout is
        its own, else it goes back to wait, to run alone; those not started go back to wait.  A
        call that failed otherwise (memory, V8 itself) names no culprit: every run goes back, to
        run alone, ours too (_RunAgain).  Every companion is served, failed or back waiting,
        whatever happens here."""
        runs = [(script, scope_text, timeout)] + [(w.script, w.scope_text, w.timeout) for w in batch]
        held_to = min(run[2] for run in runs)
        settled: set[int] = set()     # indexes into `batch` that were served or failed
        again: list[Waiter] = []     # to wait again
        try:
            try:
                outcomes, running = await self._batch_call(context, runs, memory)
            except _RunAgain:
                for waiter in batch:
                    waiter.alone = True
                raise
            for index, waiter in enumerate(batch, start=1):
                if index < len(outcomes):
                    await self._serve(context, waiter, outcomes[index])
                elif index == running and waiter.timeout <= held_to:
                    waiter.future.set_exception(ScriptError(
                        "timeout", f"script timed out after {duration_text(waiter.timeout)}"))
                else:
                    waiter.alone = waiter.alone or index == running
                    again.append(waiter)
                settled.add(index)
            if outcomes:
                return await self._settle(context, script, outcomes[0])
            if running == 0 and timeout <= held_to:
                raise ScriptError("timeout", f"script timed out after {duration_text(timeout)}")
            raise _RunAgain()
        finally:
            again.extend(w for i, w in enumerate(batch, start=1) if i not in settled)
            self._wait_again(again)

    async def _batch_call(self, context: Context, runs: list[tuple], memory: int) -> tuple[list[dict], int | None]:
        """Runs, each (script, scope text, timeout), in one call into V8, held to the shortest
        timeout: the outcomes of those that finished, and the index of the one that was running
        when that stopped the call (None: all finished).  _RunAgain when
        nothing is known of the runs (memory, V8 itself, or not even the finished ones read back
        after a timeout); the context is marked harmed when it should not be trusted again."""
        loop = asyncio.get_running_loop()
        compiled = context.compiled
        items = "[" + ",".join(f"[{js_string(s.name)},{text},{'null' if s.name in compiled else js_string(s.body)}]"
                               for s, text, _ in runs) + "]"   # each scope's JSON as it is
        started = loop.time()
        try:
            return _outcomes(await self._call(context, "runBatch", (items,), min(r[2] for r in runs), memory)), None
        except ScriptError as failure:
            context.harmed = True   # whatever failed, this context is not used for another batch
            if failure.reason != "timeout":   # memory, V8, or work left pending: no run to blame
                raise _RunAgain() from None
        try:
            # The runs that finished are read back, from an isolate seen idle first (a call into
            # a busy one would block the event loop), and the context is closed after.
            async with asyncio.timeout(READ_BACK):
                await context.idle()
            outcomes = _outcomes(await self._call(context, "finished", (), READ_BACK, memory))
        except (ScriptError, TimeoutError):   # not even that: nothing is known of the batch
            context.harmed = True
            raise _RunAgain() from None
        context.harmed = True
        running = len(outcomes)   # the run in progress when the time ran out
        if running < len(runs):
            self._took[runs[running][0].name] = loop.time() - started   # not in a batch again soon
        return outcomes, running

    async def _serve(self, context: Context, waiter: Waiter, outcome: dict) -> None:
        if waiter.future.done():   # its caller gave up meanwhile
            return
        try:
            value, logs = await self._settle(context, waiter.script, outcome)
        except ScriptError as error:
            if not waiter.future.done():
                waiter.future.set_exception(error)
            return
        if not waiter.future.done():
            waiter.future.set_result(Served(value, logs))

    async def _run_in(self, context: Context, script: Script, scope_text: str, timeout: float, memory: int):
        name = script.name
        body = "null" if name in context.compiled else js_string(script.body)
        try:
            answer = await self._call(context, "runBatch", (f"[[{js_string(name)},{scope_text},{body}]]",),
                                      timeout, memory)
        except ScriptError as error:
            if error.reason == "timeout":
                self._took[name] = timeout   # a slow one: alone from now on
            raise
        return await self._settle(context, script, _outcomes(answer)[0])

    async def _settle(self, context: Context, script: Script, outcome: dict):
        """One run's outcome (the driver's object) as (value, logs), or its ScriptError."""
        name = script.name
        logs = outcome.get("logs", [])
        error = outcome.get("error")
        self._took[name] = outcome.get("ms", 0) / 1000
        if error is None:
            context.compiled.add(name)
            return outcome.get("value"), logs
        message = first_line(error["message"])
        # A condition's expression is one line inside a body of ours: a line number would mislead.
        lines_are_the_users = script.body == script.source
        if error["reason"] == "compile":
            line = await syntax_error_line(context.racer, script.body) if lines_are_the_users else None
            raise ScriptError("compile", f"script does not compile: {message}{_at(line)}", logs, line)
        context.compiled.add(name)
        line = line_in(error.get("stack", ""), name) if lines_are_the_users else None
        raise ScriptError(error["reason"], f"{message}{_at(line)}", logs, line)


def _scope_text(scope: dict | str) -> str:
    return scope if isinstance(scope, str) else encode_result(scope).decode()


def _at(line: int | None) -> str:
    return f" (line {line})" if line else ""
