"""Who gets a slot in the durable queue now, and who waits for one.

A request whose workflow has room (the queue below its capacity, the workflow below its share,
nobody of that workflow held before it) goes in at once.  Any other is **held**: nothing of it
is verified, parsed or stored, its connection is not read (the protocol sees `request.held`),
and it waits in its workflow's line.  Every slot the work frees admits the head of a line (the
lines take turns, each in arrival order); a request still held after `[queue] hold` is answered
503 with Retry-After.  So under a steady stream the door acknowledges exactly as fast as the
work finishes, and a waiting sender costs nothing meanwhile.

Refusals for a full queue are counted in /metrics as they happen and written to the request log
as one line per workflow per second, with their count, never one row each.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable

from ..http import PENDING, Answer, Request, Response
from ..intake.intake import Intake
from ..observe.metrics import Metrics
from ..store.rows import RequestLine

RETRY_AFTER = ((b"retry-after", b"1"),)
QUEUE_FULL = Response.error(503, "queue full", RETRY_AFTER)
SUMMARY_EVERY = 1.0         # seconds: one request-log line per workflow with that many refusals
Enter = Callable[[Request, float], "Response | asyncio.Future | Answer"]   # the rest of the door's path


class _Held:
    __slots__ = ("request", "enter", "started", "deadline", "answer")

    def __init__(self, request: Request, enter: Enter, started: float, deadline: float, answer: asyncio.Future):
        self.request, self.enter, self.started, self.deadline, self.answer = request, enter, started, deadline, answer


class Admission:
    def __init__(self, intake: Intake, metrics: Metrics, log_request: Callable[[RequestLine], None],
                 hold: float, shares: dict[str, int]):
        self.intake = intake
        self.metrics = metrics
        self.log_request = log_request
        self.hold_for = hold
        self.shares = shares                       # workflow -> most of its executions queued
        self.lines: dict[str, deque[_Held]] = {}   # workflow -> its held requests, oldest first
        self.held = 0
        self.refused: dict[str, list] = {}         # workflow -> [count, path] since the last summary
        self._admitting = False
        self._expiry: asyncio.TimerHandle | None = None
        self._summary: asyncio.TimerHandle | None = None
        intake.on_room = self.room_freed

    @property
    def holding(self) -> bool:
        return self.held > 0

    def use(self, hold: float, shares: dict[str, int]) -> None:
        """A reloaded config's hold and shares (a workflow gone keeps its line until it drains)."""
        self.hold_for, self.shares = hold, shares
        self.room_freed()

    def has_room(self, workflow: str) -> bool:
        intake = self.intake
        return intake.depth < intake.capacity and intake.queued[workflow] < self.shares.get(workflow, 1) \
            and not self.lines.get(workflow)

    def wait(self, request: Request, workflow: str, enter: Enter, started: float) -> Response | asyncio.Future:
        """No room: held for `hold`, or refused at once when there is no hold."""
        if self.hold_for <= 0:
            return self._refuse(request, workflow)
        loop = asyncio.get_running_loop()
        held = _Held(request, enter, started, loop.time() + self.hold_for, loop.create_future())
        line = self.lines.get(workflow)
        if line is None:
            line = self.lines[workflow] = deque()
        line.append(held)
        self.held += 1
        request.held = True
        if self._expiry is None:
            self._expiry = loop.call_at(held.deadline, self._expire)
        return held.answer

    # -- room appears ---------------------------------------------------------------------------
    def room_freed(self) -> None:
        """Slots were released: the held are admitted at the next turn of the loop (once for
        every release of this turn)."""
        if self.held and not self._admitting:
            self._admitting = True
            asyncio.get_running_loop().call_soon(self._admit)

    def _admit(self) -> None:
        self._admitting = False
        intake = self.intake
        while self.held and intake.depth < intake.capacity:
            admitted = False
            for workflow, line in self.lines.items():   # the lines take turns, one each
                if line and intake.queued[workflow] < self.shares.get(workflow, 1):
                    self._enter(line.popleft())
                    admitted = True
                    if intake.depth >= intake.capacity:
                        break
            if not admitted:
                break

    def _enter(self, held: _Held) -> None:
        self.held -= 1
        held.request.held = False
        if held.answer.done():     # its connection went away meanwhile
            return
        try:
            response = held.enter(held.request, held.started)
        except Exception as exc:  # noqa: BLE001 - the protocol answers 500 and logs it
            held.answer.set_exception(exc)
            return
        if isinstance(response, PENDING):
            response.add_done_callback(lambda done: _pass_on(done, held.answer))
        else:
            held.answer.set_result(response)

    # -- hold runs out --------------------------------------------------------------------------
    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._expiry = None
        soonest = None
        for workflow, line in self.lines.items():
            while line and line[0].deadline <= now:
                held = line.popleft()
                self.held -= 1
                held.request.held = False
                if not held.answer.done():
                    held.answer.set_result(self._refuse(held.request, workflow))
            if line and (soonest is None or line[0].deadline < soonest):
                soonest = line[0].deadline
        if soonest is not None:
            self._expiry = loop.call_at(soonest, self._expire)

    def _refuse(self, request: Request, workflow: str) -> Response:
        metrics = self.metrics
        metrics.count(metrics.rejected, workflow, "queue_full")
        metrics.count(metrics.requests, workflow, "503")   # not timed: request_duration times those let in
        counted = self.refused.get(workflow)
        if counted is None:
            self.refused[workflow] = [1, request.path]
        else:
            counted[0] += 1
        if self._summary is None:
            self._summary = asyncio.get_running_loop().call_later(SUMMARY_EVERY, self.summarize)
        return QUEUE_FULL

    def summarize(self) -> None:
        """The request log's line per workflow for the refusals since the last one."""
        self._summary = None
        refused, self.refused = self.refused, {}
        now = time.time()
        for workflow, (count, path) in refused.items():
            self.log_request(RequestLine(now, "-", "-", path, workflow, 503,
                                         f"queue full: {count} request{'s' if count > 1 else ''} refused "
                                         f"in the last {SUMMARY_EVERY:g} s", 0, 0.0, "-", None))

    def close(self) -> None:
        """At shutdown: the held get 503 (nothing of theirs was accepted)."""
        for timer in (self._expiry, self._summary):
            if timer is not None:
                timer.cancel()
        self._expiry = None
        for line in self.lines.values():
            while line:
                held = line.popleft()
                if not held.answer.done():
                    held.answer.set_result(Response.error(503, "shutting down", RETRY_AFTER))
        self.held = 0
        self.summarize()


def _pass_on(done: asyncio.Future, answer: asyncio.Future) -> None:
    if answer.done():
        return
    if done.cancelled():
        answer.cancel()
    elif done.exception() is not None:
        answer.set_exception(done.exception())
    else:
        answer.set_result(done.result())
