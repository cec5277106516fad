"""The door side of the service: what every workflow's trigger shares.

The intake (a delivery offered, its outcome), the admission (room, or a wait for it), the
metrics, the request log, and the loop the sync answers are timed on.  A trigger is given this,
not the whole Service.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from ..config.model import OnSyncTimeout, Workflow
from ..http import Response
from ..intake.executions import id_header
from ..intake.intake import Intake
from ..observe.metrics import Metrics
from ..store.rows import RequestLine
from .admission import Admission


class Door:
    def __init__(self, intake: Intake, admission: Admission, metrics: Metrics,
                 log_request: Callable[[RequestLine], None], tls: bool):
        self.intake = intake
        self.admission = admission
        self.metrics = metrics
        self.log_request = log_request
        self.tls = tls
        self.loop: asyncio.AbstractEventLoop | None = None   # set at start

    def await_sync(self, id_text: str, workflow: Workflow, answer: asyncio.Future) -> None:
        """Past `sync_timeout` the sender gets 202 (or 504) and the execution goes on."""
        def timed_out() -> None:
            if answer.done():
                return
            status = 504 if workflow.on_sync_timeout == OnSyncTimeout.ERROR else 202
            answer.set_result(Response.json(status, {"execution_id": id_text, "status": "started"},
                                            id_header(id_text)))

        handle = self.loop.call_later(workflow.sync_timeout, timed_out)
        answer.add_done_callback(lambda _: handle.cancel())
