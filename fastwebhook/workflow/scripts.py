"""What a script is (`Script`: a node's function body, or a condition's expression) and how
one fails (`ScriptError`).  They run in V8 contexts (v8.py), pooled per workflow
(context_pool.py), batched and judged by script_pool.py."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property

from ..core.errors import FastwebhookError
from .v8 import MAX_LOG_LINES

__all__ = ["EVERYTHING", "MAX_LOG_LINES", "Reads", "Script", "ScriptError"]


class ScriptError(FastwebhookError):
    """A script that did not give a value.  `reason`: "exception" (it threw), "compile",
    "result" (what it returned is not JSON), "timeout", "pending" (it returned, leaving work
    running), "memory", "engine" (V8 itself failed), "closed" / "unavailable" (no context).  `logs` are the console lines it wrote
    before failing (none after a timeout or memory stop: V8 was terminated mid-run)."""

    def __init__(self, reason: str, message: str, logs: list[str] | None = None, line: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.logs = logs or []
        self.line = line


# A body reaches a run's scope only through the parameters it names, `arguments` or a direct
# `eval` (strict mode: no `with`).  So a script is handed the parameters it names and, where every
# `$context` it holds is `$context.<name>`, only those keys of the context.  Whatever could spell
# a name another way (`arguments`, `eval`, an escape like `\u0024env`) gets the whole scope, and
# any other use of `$context` (`$context[k]`, `$context?.raw`, a comment before the dot) the whole
# context.  Extra names (in a string, a comment) only ship more.
_PARAMETER = re.compile(r"(?<![\w$])\$(?:context|jobsMapByNodeKey|nodes|env|system|execution|workflow)(?![\w$])")
_CONTEXT_KEY = re.compile(r"\$context\s*\.\s*([A-Za-z_$][\w$]*)")
_CONTEXT_AS_A_WHOLE = re.compile(r"\$context(?![\w$])(?!\s*\.\s*[A-Za-z_$])")
_ANY_NAME = re.compile(r"(?<![\w$])(?:arguments|eval)(?![\w$])|\\u")


@dataclass(frozen=True)
class Reads:
    """What of a run's scope a script can name: its parameters (`$nodes` is handed as
    `$jobsMapByNodeKey`, the same object) and the keys of `$context` (None: all of them)."""

    parameters: frozenset[str]
    context_keys: frozenset[str] | None


EVERYTHING = Reads(frozenset({"$context", "$jobsMapByNodeKey", "$env", "$system", "$execution", "$workflow"}), None)


def reads_of(body: str) -> Reads:
    if _ANY_NAME.search(body):
        return EVERYTHING
    parameters = {"$jobsMapByNodeKey" if name == "$nodes" else name for name in _PARAMETER.findall(body)}
    keys = None if _CONTEXT_AS_A_WHOLE.search(body) else frozenset(_CONTEXT_KEY.findall(body))
    return Reads(frozenset(parameters), keys)


@dataclass(frozen=True)
class Script:
    """A script node's function body, or a condition's expression (made a body that returns
    it).  `name` is the key its compiled function has in each V8 context."""

    source: str       # as written in the config
    body: str         # the function body V8 compiles

    @cached_property   # asked on every run; frozen dataclasses still allow a cached_property
    def name(self) -> str:
        return "__fwh_" + hashlib.sha256(self.body.encode()).hexdigest()[:16]

    @cached_property
    def reads(self) -> Reads:
        """What of the scope a run of it is handed.  V8 takes a smaller scope for less: the
        raw body and the headers are most of a webhook's, and a script that cannot name them
        sees no difference."""
        return reads_of(self.body)

    @classmethod
    def function_body(cls, code: str) -> "Script":
        return cls(code, code)

    @classmethod
    def expression(cls, source: str) -> "Script":
        return cls(source, f"return !!({source}\n);")   # JavaScript's truth: [] and {} are true
