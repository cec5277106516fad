"""JavaScript in V8 (mini-racer): scripts compiled once at load, run in a pool of reused contexts.

Being built: `ScriptPool.run(script, scope, timeout, memory) -> (value, logs)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Script:
    """A script node's function body, or a condition's expression (made a body that returns
    it).  `name` is the global its compiled function gets in each V8 context."""

    source: str       # as written in the config
    body: str         # the function body V8 compiles

    @property
    def name(self) -> str:
        return "__fwh_" + hashlib.sha256(self.body.encode()).hexdigest()[:16]

    @classmethod
    def function_body(cls, code: str) -> "Script":
        return cls(code, code)

    @classmethod
    def expression(cls, source: str) -> "Script":
        return cls(source, f"return ({source}\n);")


class ScriptPool:
    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def run(self, script: Script, scope: dict, timeout: float, memory: int):
        raise NotImplementedError("the V8 pool is being built")
