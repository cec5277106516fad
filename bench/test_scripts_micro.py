"""Micro-benchmark of one script run on a reused V8 context (run by `make bench`).

What a `script` node costs per execution once its context is warm: the scope as JSON, one
`eval_cancelable` round trip to V8's thread, the value back as JSON.  A fresh context per call
would cost ~2 ms instead.
"""

from __future__ import annotations

import pytest
import uvloop

from fastwebhook.workflow.script_pool import ScriptPool
from fastwebhook.workflow.scripts import Script

SCOPE = {
    "$context": {"data": {"ref": "refs/heads/main", "commits": [{"id": "abc", "message": "fix"}] * 3},
                 "headers": {"x-github-event": "push"}, "query": {}},
    "$jobsMapByNodeKey": {}, "$env": {}, "$system": {"now": "2026-01-01T00:00:00.000Z"},
    "$execution": {"id": "e"}, "$workflow": {"key": "w"},
}
SCRIPT = Script.function_body("return $context.data.ref.replace('refs/heads/', '');")


@pytest.fixture
def pool_on_loop():
    loop = uvloop.new_event_loop()
    pool = ScriptPool()
    loop.run_until_complete(pool.start())
    loop.run_until_complete(pool.run(SCRIPT, SCOPE, 1.0, 64 << 20))   # compiled in the context
    yield loop, pool
    loop.run_until_complete(pool.close())
    loop.close()


def test_script_on_a_reused_context(benchmark, pool_on_loop):
    loop, pool = pool_on_loop

    def step():
        return loop.run_until_complete(pool.run(SCRIPT, SCOPE, 1.0, 64 << 20))

    assert benchmark(step) == ("main", [])
