"""`script`: a JavaScript function body run in V8 (see workflow/script_pool.py); its `return` is the
node's result and its console lines go into the job record.

The code is not compiled at load: that would start V8 in the process that reads the config, and
V8 does not survive a fork into worker processes.  A syntax error is reported, with its line,
when the node first runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...core.units import parse_duration, parse_size
from ..scripts import Script, ScriptError

NAME = "script"
CODE_FIELDS = ("code",)
FIELDS = ("code", "timeout", "memory_limit")

DEFAULT_TIMEOUT = 1.0
DEFAULT_MEMORY = 64 << 20
# A context's own heap is ~1 MiB; a limit below this would stop every script, not a runaway one.
LEAST_MEMORY = 4 << 20


@dataclass(frozen=True, slots=True)
class ScriptNode:
    script: Script
    timeout: float           # seconds
    memory: int              # bytes


def prepare(fields: Mapping[str, Any], path: str, report, known) -> ScriptNode:
    code = fields.get("code")
    if not isinstance(code, str) or not code.strip():
        report(f"{path}.code", "must be a JavaScript function body (use `return` to give the result)")
        code = "return null;"
    timeout, memory = prepare_limits(fields, path, report)
    return ScriptNode(Script.function_body(code), timeout, memory)


def prepare_limits(fields: Mapping[str, Any], path: str, report) -> tuple[float, int]:
    """`timeout` and `memory_limit`, as every node that runs JavaScript takes them."""
    timeout = _setting(parse_duration, fields.get("timeout", "1s"), f"{path}.timeout", report, DEFAULT_TIMEOUT)
    if timeout <= 0:
        report(f"{path}.timeout", "must be more than 0")
        timeout = DEFAULT_TIMEOUT
    memory = _setting(parse_size, fields.get("memory_limit", "64MiB"), f"{path}.memory_limit", report,
                      DEFAULT_MEMORY)
    if memory < LEAST_MEMORY:
        report(f"{path}.memory_limit", "must be at least 4MiB")
        memory = DEFAULT_MEMORY
    return timeout, memory


def _setting(parse, value, where, report, default):
    try:
        return parse(value, where)
    except Exception as exc:  # noqa: BLE001 - a ConfigError, reported with its path
        report(where, getattr(exc, "message", str(exc)))
        return default


async def execute(prepared: ScriptNode, run) -> Any:
    return await evaluate(prepared.script, prepared.timeout, prepared.memory, run)


async def execute_cohort(prepared: ScriptNode, runs: list) -> list:
    return await evaluate_cohort(prepared.script, prepared.timeout, prepared.memory, runs)


async def evaluate(script: Script, timeout: float, memory: int, run) -> Any:
    """The script's value, its console lines in the running node's job (those it printed before
    failing too: they help to see why)."""
    try:
        pool = run.resources.scripts.of(run.workflow.key)
        value, logs = await pool.run(script, run.script_scope(script.reads), timeout, memory)
    except ScriptError as error:
        run.logs.extend(error.logs)
        raise
    run.logs.extend(logs)
    return value


async def evaluate_cohort(script: Script, timeout: float, memory: int, runs: list) -> list:
    """`evaluate` for a cohort's runs, one call into V8 for them: each run's value, or the
    exception that fails its node."""
    results: list = [None] * len(runs)
    scoped: list[int] = []
    scopes: list[dict] = []
    for i, run in enumerate(runs):
        try:
            scopes.append(run.script_scope(script.reads))
            scoped.append(i)
        except Exception as exc:  # noqa: BLE001 - fails that run's node alone
            results[i] = exc
    pool = runs[0].resources.scripts.of(runs[0].workflow.key)   # a cohort is of one workflow
    outcomes = await pool.run_many(script, scopes, timeout, memory) if scopes else []
    for i, outcome in zip(scoped, outcomes):
        run = runs[i]
        if isinstance(outcome, ScriptError):
            run.logs.extend(outcome.logs)
            results[i] = outcome
        else:
            value, logs = outcome
            run.logs.extend(logs)
            results[i] = value
    return results
