"""The node registry: one module per node type, one table naming them.

A node type validates and compiles its TOML fields once at load (`prepare`) and runs against an
execution's `Run` (`execute`).  The runner knows no node type; a new type is a module plus a line in
MODULES.

    NAME     the `type = "..."` it answers to
    FIELDS   the settings it takes besides key, type, title, ignore_fail, then, else
    prepare(fields, path, report, known) -> prepared     once, at load; report(path, message)
    execute(prepared, run) -> result                      per execution (await-able)
    execute_cohort(prepared, runs) -> [result | Exception] (optional) once for a cohort's runs at
                       the node (await-able): each run's result, or the exception that fails it
    BRANCHES = True    (optional) the result is True/False and picks `then` / `else`
    AT_ONCE = True     (optional) an outbound effect: its job is committed as soon as it succeeds
    CODE_FIELDS = (..) (optional) settings that hold JavaScript: `check` reads no templates there
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from ...config.model import Known
from . import condition, create, destroy, end, notification, query, request, response, script, update

Report = Callable[[str, str], None]   # (TOML path, message): how prepare() reports problems


@dataclass(frozen=True)
class NodeType:
    name: str
    fields: frozenset[str]
    prepare: Callable[[Mapping[str, Any], str, Report, Known], Any]
    execute: Callable[[Any, Any], Awaitable[Any]]
    execute_cohort: Callable[[Any, list], Awaitable[list]] | None = None   # else `execute` per run
    branches: bool = False    # a True/False result picks `then` / `else`
    at_once: bool = False     # an outbound effect: its job is committed the moment it succeeds
    code_fields: frozenset[str] = frozenset()   # settings holding JavaScript, never rendered


MODULES = (condition, create, update, destroy, query, request, notification, script, response, end)
NODE_TYPES: dict[str, NodeType] = {
    module.NAME: NodeType(module.NAME, frozenset(module.FIELDS), module.prepare, module.execute,
                          getattr(module, "execute_cohort", None), getattr(module, "BRANCHES", False),
                          getattr(module, "AT_ONCE", False), frozenset(getattr(module, "CODE_FIELDS", ())))
    for module in MODULES
}
