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

__all__ = ["MAX_LOG_LINES", "Script", "ScriptError"]


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


# A body can reach `$context.raw` only through `$context` itself, `arguments` or a direct `eval`
# (strict mode: no `with`).  Where every `$context` it holds is `$context.<a name, not raw>` and
# neither of the others appears, no run of it can read the raw body; any other use, however it
# is spelt (`$context[k]`, `$context?.raw`, a comment in between), counts as reading it.
_CONTEXT_AS_A_WHOLE = re.compile(r"\$context(?![\w$])(?!\s*\.\s*(?!raw(?![\w$]))[A-Za-z_$][\w$]*)")
_PARAMETERS_OTHERWISE = re.compile(r"(?<![\w$])(?:arguments|eval)(?![\w$])")


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
    def reads_raw(self) -> bool:
        """Whether a run may read `$context.raw`.  A scope without it costs V8 ~30 % less to
        take (the raw body is most of a webhook's scope), and nothing a script that cannot
        name it does sees the difference."""
        return bool(_CONTEXT_AS_A_WHOLE.search(self.body) or _PARAMETERS_OTHERWISE.search(self.body))

    @classmethod
    def function_body(cls, code: str) -> "Script":
        return cls(code, code)

    @classmethod
    def expression(cls, source: str) -> "Script":
        return cls(source, f"return !!({source}\n);")   # JavaScript's truth: [] and {} are true
