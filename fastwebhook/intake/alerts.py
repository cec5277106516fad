"""Failure workflows: `[workflows.K] on_failure = "W"` queues an execution of W when one of K ends
`failed` or `error`, its `$context.data` saying what failed:

    {"execution_id", "workflow", "status", "node", "error", "request": {"method", "path", "ip"}}

The alert is not offered at the door.  It goes to the store with the failed execution's final
status, in the same transaction (`Dispatcher.queue_alert`, `Store.record`), as an intake batch
of its own that the claim then takes like any other: a crash (even kill -9) leaves both or
neither, and neither means the failed execution is still pending, runs again after the restart
and, failing again, queues its alert then.  So each failure queues exactly one.  An alert's own
failure queues nothing (`Delivery.failure_of` marks it): failure workflows neither chain nor loop.
"""

from __future__ import annotations

import orjson

from ..config.model import Workflow
from ..core.ids import new_id, to_text
from ..store.rows import Delivery, Status, StoredRequest

FAILING = frozenset({Status.FAILED, Status.ERROR})
_AS_JSON = [("content-type", "application/json")]


def alert_of(failed: Delivery, status: Status, error: str | None, node: str | None, target: Workflow,
             now: float) -> Delivery:
    """The delivery of `target` (the failure workflow) that reports `failed`.  `node`: the key of
    the node the execution stopped at (None when it ended before or outside any node)."""
    request = failed.request
    data = {"execution_id": to_text(failed.id), "workflow": failed.workflow, "status": status.value,
            "node": node, "error": error,
            "request": {"method": request.method, "path": request.path, "ip": request.ip}}
    stored = StoredRequest("POST", target.path, "", list(_AS_JSON), {}, "", now, f"on_failure:{to_text(failed.id)}")
    # logged: it was no HTTP request, so the request log has no line of it
    return Delivery(new_id(), target.key, target.version, stored, orjson.dumps(data), None, None, 0.0,
                    logged=True, failure_of=failed.id)
