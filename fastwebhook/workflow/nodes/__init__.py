"""The node registry: one module per node type, one table naming them.

A node type validates and compiles its TOML fields once at load (`prepare`) and runs against an
execution's `Run` (`run`).  The runner knows no node type; a new type is a module plus a line in
NODE_TYPES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from . import end, response

Report = Callable[[str, str], None]   # (TOML path, message): how prepare() reports problems


@dataclass(frozen=True)
class NodeType:
    name: str
    fields: frozenset[str]
    prepare: Callable[[Mapping[str, Any], str, Report], Any]
    run: Callable[[Any, Any], Awaitable[Any]]


NODE_TYPES: dict[str, NodeType] = {
    module.NAME: NodeType(module.NAME, frozenset(module.FIELDS), module.prepare, module.run)
    for module in (end, response)
}
