"""One V8 context (mini-racer) as the script pool uses it: the driver installed in it, its
thread's CPU priority, and where V8's errors say a script went wrong."""

from __future__ import annotations

import logging
import os
import re
import time

import orjson
from py_mini_racer import JSEvalException, JSParseException, MiniRacer, init_mini_racer

log = logging.getLogger("fastwebhook.scripts")
MAX_LOG_LINES = 200        # a console.log in a loop must not fill the job record
MAX_LOG_LINE = 4000        # characters of one console line


# Installed once in every context.  Compiled functions live in a closure, not in globals, so one
# script cannot replace another's function (or the driver) for later runs in the same context,
# and JSON.parse / JSON.stringify are taken before any script could reassign them.
# `new Function` compiles the text as a function body and nothing else, so code that tries to
# close the function early is a syntax error rather than code run at definition time.
DRIVER = """
(() => {
  "use strict";
  const parse = JSON.parse, stringify = JSON.stringify;
  // Array methods taken now: a script may replace Array.prototype's for the scripts after it in
  // this context (freezing Array.prototype would slow every array in V8), never the driver's.
  const apply = Reflect.apply, push = Array.prototype.push, join = Array.prototype.join,
        map = Array.prototype.map, slice = String.prototype.slice, now = Date.now;
  const compiled = new Map();
  const timers = globalThis.__timer_manager;   // mini-racer's setTimeout bookkeeping
  const PARAMS = "$context, $jobsMapByNodeKey, $nodes, $env, $system, $execution, $workflow, console";

  function show(value) {
    try {
      if (typeof value === "string") return value;
      if (value instanceof Error) return String(value);
      if (typeof value === "object" && value !== null) {
        const text = stringify(value);
        if (text !== undefined) return text;
      }
      return String(value);
    } catch (_) {
      return "[unprintable]";
    }
  }

  function makeConsole(logs) {
    let dropped = 0;
    const writer = (prefix) => (...args) => {
      if (logs.length >= %(max_lines)d) { dropped++; return; }
      let line = prefix + apply(join, apply(map, args, [show]), [" "]);
      if (line.length > %(max_line)d) {
        line = apply(slice, line, [0, %(max_line)d]) + "... (" + (line.length - %(max_line)d) + " more characters)";
      }
      apply(push, logs, [line]);
    };
    const console = Object.freeze({
      log: writer(""), info: writer(""), debug: writer(""), dir: writer(""),
      warn: writer("[warn] "), error: writer("[error] "),
    });
    return [console, () => dropped];
  }

  function refuse(value) {   // a value JSON.stringify would silently drop or choke on
    const kind = typeof value;
    if (kind === "function" || kind === "symbol") return "a " + kind;
    if (kind === "bigint") return "a BigInt";
    if (value !== null && kind === "object" && typeof value.then === "function") {
      return "a Promise (scripts run synchronously; await is not available)";
    }
    return null;
  }

  function run(name, scope, body) {
    const logs = [];
    const [console, dropped] = makeConsole(logs);
    let outcome, started = 0;
    try {
      if (body !== undefined) {
        try {
          compiled.set(name, new Function(PARAMS, '"use strict";' + body + "\\n//# sourceURL=" + name));
        } catch (error) {
          return stringify({error: {reason: "compile", message: show(error)}, logs});
        }
      }
      const jobs = scope.$jobsMapByNodeKey;
      started = apply(now, Date, []);
      const value = compiled.get(name)(scope.$context, jobs, jobs, scope.$env, scope.$system,
                                       scope.$execution, scope.$workflow, console);
      const refused = refuse(value);
      outcome = refused === null ? {value}
        : {error: {reason: "result", message: "the script returned " + refused + ", which is not JSON"}};
    } catch (error) {
      outcome = {error: {reason: "exception", message: error instanceof Error ? show(error) : "threw " + show(error),
                         stack: error instanceof Error ? String(error.stack) : ""}};
    } finally {
      if (timers && timers.pending) timers.pending.clear();   // no timer callback outlives its script
    }
    if (dropped()) apply(push, logs, ["(" + dropped() + " more console lines dropped)"]);
    outcome.logs = logs;
    if (started) outcome.ms = apply(now, Date, []) - started;   // whether it may go in a batch
    try {
      return stringify(outcome);
    } catch (error) {
      return stringify({error: {reason: "result", message: "the script returned a value that is not JSON: " + show(error)}, logs});
    }
  }

  let finishedRuns = [];   // the outcomes of the batch under way, so far: read back after a timeout
  function runBatch(items) {   // [name, scope, body or null] each, one crossing; each outcome as run() gives it
    finishedRuns = [];
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      apply(push, finishedRuns, [run(item[0], item[1], item[2] === null ? undefined : item[2])]);
    }
    return "[" + apply(join, finishedRuns, [","]) + "]";
  }
  function finished() {
    return "[" + apply(join, finishedRuns, [","]) + "]";
  }

  // What the driver relies on cannot be changed by a script (a replaced Map.prototype.get, a
  // global JSON); a context whose answers no longer read as outcomes (an Object.prototype.toJSON)
  // is replaced by the pool.  Only a fresh context per run would keep scripts from each other
  // entirely, at ~2 ms a run.
  for (const shared of [Map.prototype, Function.prototype, String.prototype, Error.prototype, Reflect, JSON]) {
    Object.freeze(shared);
  }
  Object.defineProperty(globalThis, "JSON", {writable: false, configurable: false});
  // No global: the pool holds these functions by handle, and no script can reach them.
  return Object.freeze({runBatch: (text) => runBatch(parse(text)), finished});
})();
""" % {"max_lines": MAX_LOG_LINES, "max_line": MAX_LOG_LINE}

# How many lines `new Function` puts before the body: "(function anonymous(PARAMS\n) {\n".
_BODY_FIRST_LINE = 3
_PARSE_LINE = re.compile(r"^<anonymous>:(\d+):")


# V8 runs each isolate on a thread of its own.  On a core it shares with the event loop, a script
# spinning to its timeout would take that core from the webhooks; at the lowest priority (nice
# 19: about 1/70 of the loop's share under Linux's fair scheduler) scripts run on what the loop
# leaves, and get the whole core whenever it waits.  A finished call hands its outcome back under
# the GIL from that low-priority thread, which can keep the loop waiting; batching the calls
# (BATCH_MAX) keeps those hand-overs few.
LOW_PRIORITY = 19
V8_FLAGS = ("--single-threaded", "--max-semi-space-size=1")


class Context:
    """One V8 isolate, its own thread, the driver's functions, and the scripts already compiled
    in it.

    Runs go in as the argument of a driver function (`call`), never as source text to evaluate:
    V8 keeps every evaluated source in its compilation cache, and a source holding a cohort's
    data is new each time (64 MiB of them stopped a context at its memory limit).  One JSON text
    holds a call's runs, parsed once by the driver."""

    def __init__(self, racer: MiniRacer, threads: set[int]):
        self.racer = racer
        self.threads = threads
        self.functions: dict = {}   # the driver's, by name: runBatch(text), finished()
        self.compiled: set[str] = set()
        self.used = False        # has run a script (and may hold its garbage)
        self.memory_limit = 0    # the hard limit last set on the isolate
        self.harmed = False      # its last call ended in memory or V8 trouble: not to be reused

    @classmethod
    async def open(cls) -> "Context":
        init_mini_racer(flags=V8_FLAGS, ignore_duplicate_init=True)
        before = _threads()
        racer = MiniRacer()   # bound to the running loop; its setTimeout install is a ~2 ms blocking eval
        context = cls(racer, _threads() - before)
        _set_priority(context.threads, LOW_PRIORITY)
        driver = await racer.eval_cancelable(DRIVER)
        context.functions = {name: driver[name].cancelable() for name in ("runBatch", "finished")}
        return context

    async def call(self, function: str, *args: str) -> str:
        """One call into V8: a driver function with text arguments (cancel it to stop it).

        Only for an idle isolate: mini-racer prepares a call's arguments with a blocking eval
        on the event loop's thread, which waits for whatever the isolate is running (a promise
        loop a script left behind would hold the whole server).  So the call's answer is given
        only after `idle()` has said so (the pool awaits it after every call)."""
        return await self.functions[function](*args)

    async def idle(self) -> None:
        """Returns once the isolate has run all it had queued; cancellable, never blocking.
        V8 runs a call's microtasks after the call has answered, so an answer alone does not
        say the isolate is free: `async () => { for (;;) await null; }` answers at once and
        never lets it go."""
        await self.racer.eval_cancelable("0")

    def cpu_time(self) -> float | None:
        """Seconds of CPU the isolate's threads have run (Linux), else None."""
        if not self.threads:
            return None
        total = 0
        for tid in self.threads:
            try:
                total += time.clock_gettime_ns(_cpu_clock(tid))
            except OSError:   # gone (the isolate closed)
                return None
        return total / 1e9

    def close(self) -> None:
        """Closed on the loop's thread, never on another: mini-racer frees the values a closing
        isolate hands back through the loop, and one freed there while another thread is still
        freeing the isolate crashed the process (SIGSEGV in mr_callback, seen in the suite).
        Joining the isolate's threads may take a few milliseconds behind other spinning
        scripts; a context is closed only when it is renewed, discarded or the pool closes.
        A failure is logged, never raised: the pool's slot and waiters are handled either way."""
        try:
            self.racer.close()
        except Exception:  # noqa: BLE001
            log.exception("closing a V8 context failed")


def _cpu_clock(tid: int) -> int:
    """The clock of one thread's CPU time, as Linux numbers it for any thread of the process
    (glibc's pthread_getcpuclockid: CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED).  A read is one
    clock_gettime, under the GIL: the /proc file it replaces cost an open and a read, and
    letting the GIL go for them cost the event loop ~70 us a read under load."""
    return (~tid << 3) | 6


def _threads() -> set[int]:
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:   # not Linux: a long script keeps the normal priority
        return set()


def _set_priority(threads: set[int], niceness: int) -> None:
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except OSError:   # gone already: nothing to lower
            pass


async def syntax_error_line(racer: MiniRacer, body: str) -> int | None:
    """Where a body's syntax error is: `new Function` says what, not where, but a script's parse
    error carries the line.  The body is parsed inside a function that is never called, so
    nothing of it runs, not even declarations of a body that closes the wrapping function early."""
    try:
        await racer.eval_cancelable("(function(){throw 0;(function(){" + body + "\n})})")
    except JSParseException as error:
        match = _PARSE_LINE.match(str(error))
        return int(match[1]) if match else None
    except JSEvalException:
        return None
    return None


def line_in(stack: str, name: str) -> int | None:
    """The body line of the innermost stack frame in the script itself."""
    match = re.search(re.escape(name) + r":(\d+):\d+", stack)
    return int(match[1]) - _BODY_FIRST_LINE + 1 if match else None


def js_string(text: str) -> str:
    # A JSON string is a JavaScript string literal (U+2028/9 included, since ES2019).
    return orjson.dumps(text).decode()


async def syntax_errors(bodies: dict[str, str]) -> dict[str, tuple[str, int | None]]:
    """For `fastwebhook check` (a process that never forks, so V8 may start in it): each function
    body that does not compile, by its key: V8's message and the line of the body it names."""
    racer = MiniRacer()
    try:
        found = {}
        for key, body in bodies.items():
            try:
                await racer.eval_cancelable("(function(){throw 0;(function(){" + body + "\n})})")
            except JSParseException as error:
                match = _PARSE_LINE.match(str(error))
                message = str(error).splitlines()[0].split(": ", 1)[-1]
                found[key] = (message, int(match[1]) if match else None)
        return found
    finally:
        racer.close()
