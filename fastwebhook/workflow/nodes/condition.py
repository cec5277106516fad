"""`condition`: `all` / `any` of [a, op, b] comparisons, or a JavaScript `expression`; its
True / False picks the `then` / `else` branch (without branches, False ends the execution)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..scripts import Script
from ..templates import Template, compile_value, render_value
from .script import evaluate, evaluate_cohort, prepare_limits

NAME = "condition"
CODE_FIELDS = ("expression",)
FIELDS = ("all", "any", "expression", "timeout", "memory_limit")
BRANCHES = True


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equal(a: Any, b: Any) -> bool:
    if a == b:
        return True
    x, y = _number(a), _number(b)   # "3" == 3, as a form's field and a number compare
    return x is not None and y is not None and (isinstance(a, (int, float)) or isinstance(b, (int, float))) and x == y


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(a: Any, b: Any) -> bool:
        x, y = _number(a), _number(b)
        if x is not None and y is not None:
            return compare(x, y)
        if isinstance(a, str) and isinstance(b, str):
            return compare(a, b)
        return False
    return check


def _contains(a: Any, b: Any) -> bool:
    if isinstance(a, str):
        return isinstance(b, str) and b in a
    if isinstance(a, (list, tuple, dict)):
        return b in a
    return False


def _empty(a: Any, _b: Any = None) -> bool:
    return a is None or a == "" or (isinstance(a, (list, dict)) and not a)


def _matches(a: Any, b: Any) -> bool:
    if not isinstance(a, str):
        return False
    pattern = b if isinstance(b, re.Pattern) else re.compile(str(b))
    return pattern.search(a) is not None


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equal,
    "!=": lambda a, b: not _equal(a, b),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    "in": lambda a, b: _contains(b, a),
    "not_in": lambda a, b: not _contains(b, a),
    "contains": _contains,
    "starts_with": lambda a, b: isinstance(a, str) and isinstance(b, str) and a.startswith(b),
    "ends_with": lambda a, b: isinstance(a, str) and isinstance(b, str) and a.endswith(b),
    "matches": _matches,
    "empty": _empty,
    "not_empty": lambda a, b=None: not _empty(a),
}
UNARY = ("empty", "not_empty")


@dataclass(frozen=True, slots=True)
class ConditionNode:
    mode: str                        # "all", "any" or "expression"
    tests: tuple = ()                # (a, compare, b) each, for all / any
    script: Script | None = None     # for an expression
    timeout: float = 0.0
    memory: int = 0


def prepare(fields: Mapping[str, Any], path: str, report, known) -> ConditionNode:
    given = [name for name in ("all", "any", "expression") if name in fields]
    if len(given) != 1:
        report(path, "a condition needs exactly one of all, any or expression")
        return ConditionNode("all")
    mode = given[0]
    if mode == "expression":
        source = fields["expression"]
        if not isinstance(source, str) or not source.strip():
            report(f"{path}.expression", "must be a JavaScript expression")
            source = "false"
        timeout, memory = prepare_limits(fields, path, report)
        return ConditionNode(mode, script=Script.expression(source), timeout=timeout, memory=memory)
    tests = []
    entries = fields[mode]
    if not isinstance(entries, list) or not entries:
        report(f"{path}.{mode}", "must be a non-empty list of [a, op, b] comparisons")
        entries = []
    for i, entry in enumerate(entries):
        where = f"{path}.{mode}[{i}]"
        if not isinstance(entry, list) or len(entry) not in (2, 3) or not isinstance(entry[1], str):
            report(where, "must be [a, op, b] (or [a, op] for empty / not_empty)")
            continue
        op = entry[1]
        if op not in OPERATORS:
            report(f"{where}[1]", f"unknown operator {op!r} (known: {' '.join(OPERATORS)})")
            continue
        if (len(entry) == 2) != (op in UNARY):
            report(where, f"{op!r} takes {'one operand' if op in UNARY else 'two operands'}")
            continue
        right = entry[2] if len(entry) == 3 else None
        if op == "matches" and isinstance(right, str) and "{{" not in right:
            try:
                right = re.compile(right)
            except re.error as exc:
                report(f"{where}[2]", f"not a valid regular expression: {exc}")
                continue
        tests.append((compile_value(entry[0]), OPERATORS[op], compile_value(right)))
    return ConditionNode(mode, tuple(tests))


async def execute(prepared: ConditionNode, run) -> bool:
    if prepared.mode == "expression":
        return bool(await evaluate(prepared.script, prepared.timeout, prepared.memory, run))
    return _holds(prepared, run.scope)


async def execute_cohort(prepared: ConditionNode, runs: list) -> list:
    """The comparisons for each run, in Python; an expression for the cohort in one V8 call."""
    if prepared.mode == "expression":
        values = await evaluate_cohort(prepared.script, prepared.timeout, prepared.memory, runs)
        return [value if isinstance(value, Exception) else bool(value) for value in values]
    results: list = []
    for run in runs:
        try:
            results.append(_holds(prepared, run.scope))
        except Exception as exc:  # noqa: BLE001 - fails that run's node alone
            results.append(exc)
    return results


def _holds(prepared: ConditionNode, scope) -> bool:
    outcomes = (compare(_value(a, scope), _value(b, scope)) for a, compare, b in prepared.tests)
    return all(outcomes) if prepared.mode == "all" else any(outcomes)


def _value(value: Any, scope) -> Any:
    if isinstance(value, Template):
        return value.render(scope)
    if isinstance(value, (dict, list)):
        return render_value(value, scope)
    return value
