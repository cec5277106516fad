"""What the store holds, as typed rows: statuses, the intake's deliveries, executions, jobs,
request-log lines.  No HTTP, no admin JSON, no body parsing: the store moves these as they are.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import accumulate
from operator import attrgetter
from typing import Any, Callable

import orjson


class Status(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    RESOLVED = "resolved"
    FAILED = "failed"
    ERROR = "error"
    ABORTED = "aborted"
    DUPLICATE = "duplicate"

    @property
    def final(self) -> bool:
        return not TRANSITIONS[self]


# The one table of allowed transitions; a final status has none.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.STARTED, Status.RESOLVED, Status.FAILED, Status.ERROR,
                              Status.ABORTED, Status.DUPLICATE}),
    Status.STARTED: frozenset({Status.RESOLVED, Status.FAILED, Status.ERROR, Status.ABORTED}),
    Status.RESOLVED: frozenset(), Status.FAILED: frozenset(), Status.ERROR: frozenset(),
    Status.ABORTED: frozenset(), Status.DUPLICATE: frozenset(),
}
PENDING = tuple(s for s in Status if not s.final)
FINAL = tuple(s for s in Status if s.final)


@dataclass(slots=True)
class StoredRequest:
    """A request as stored: what `$context` is built from, live, after a crash and on replay.
    Secrets are redacted before it is made."""

    method: str
    path: str
    query: str                       # the query string as sent (secret parameters redacted)
    headers: list[tuple[str, str]]   # lower-cased names, in order, repeats kept
    params: dict[str, str]
    ip: str
    received_at: float
    request_id: str


@dataclass(slots=True)
class Delivery:
    """One accepted request: a record in an intake batch, and later an execution."""

    id: bytes                   # 16-byte UUIDv7, time-ordered
    workflow: str
    version: str
    request: StoredRequest
    body: bytes                 # as received
    dedup_hash: int | None      # signed 64-bit hash of (workflow, dedup key)
    dedup_key: str | None
    dedup_expires: float
    door_ms: float = 0.0        # time spent at the door, for the request log
    logged: bool = False        # its request-log line is written on its own (sync mode)
    attempts: int = 0           # claims so far (read back with a claimed execution)
    failure_of: bytes | None = None   # queued by `on_failure`: the failed execution it reports
    replay_of: bytes | None = None   # the execution whose stored request this one runs again

    def claim_copy(self) -> Delivery:
        """What a claim reads of it, and nothing it would run on: no headers, no body."""
        request = self.request
        return Delivery(self.id, self.workflow, self.version,
                        StoredRequest(request.method, request.path, "", [], {}, "", request.received_at, ""),
                        b"", self.dedup_hash, self.dedup_key, self.dedup_expires)


workflow_of = attrgetter("workflow")   # a delivery's workflow, for maps and counts in C
body_of = attrgetter("body")           # ... and its body


def body_bytes(deliveries: list[Delivery]) -> int:
    """The bytes of their bodies (summed in C: a batch's thousand)."""
    return sum(map(len, map(body_of, deliveries)))


def bodies_within(deliveries: list[Delivery], budget: int, at_least_one: bool) -> tuple[int, int]:
    """How many of `deliveries`, from the first, have their bodies within `budget` bytes (one at
    least, however large, with `at_least_one`), and those bodies' bytes; counted in C."""
    ends = list(accumulate(map(len, map(body_of, deliveries))))
    fits = max(bisect_right(ends, budget), 1 if at_least_one and ends else 0)
    return fits, ends[fits - 1] if fits else 0


class ClaimCopies(list):
    """A committed batch as `Delivery.claim_copy`s, a tenth of its size in memory: enough for a
    claim to resolve deliveries whose workflow runs nothing, never enough to run one (a claim
    that finds one to run reads the batch back instead)."""


@dataclass(slots=True)
class Final:
    """An execution's change of status, written in batches."""

    id: bytes
    status: Status
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None


@dataclass(slots=True)
class Job:
    execution: bytes
    position: int
    node: str
    type: str
    status: str
    result: bytes | None        # orjson
    error: str | None
    logs: bytes | None          # orjson list
    duration_ms: float


class NewRow:
    """What an insert of one row that reads it back whole (RETURNING) tells of that row: its
    id, the values written (`written`, the Write's params in order), NULL in every other
    column.  So a store may put a batch of such inserts in at once and know the rows without
    reading them back: `sql` is the insert taking the new row's id as its first parameter,
    `last_id` reads the table's largest id."""

    __slots__ = ("sql", "last_id", "_picks")

    def __init__(self, sql: str, last_id: str, written: tuple[str, ...], columns: tuple[str, ...],
                 id_column: str = "id"):
        self.sql, self.last_id = sql, last_id
        # per column of the row read back: -1 the id, i the i-th value written, None NULL
        self._picks = tuple(-1 if column == id_column else written.index(column) if column in written else None
                            for column in columns)

    def row(self, row_id: int, params: tuple) -> tuple:
        return tuple(row_id if pick == -1 else None if pick is None else params[pick] for pick in self._picks)


@dataclass(slots=True)
class Write:
    """One statement of a collection write (SQL in the store's dialect)."""

    sql: str
    params: tuple
    new_row: NewRow | None = None   # set for an insert of one row read back whole


def encode_result(value: Any) -> bytes | None:
    """A job's result as stored (orjson; None stays NULL)."""
    if value is None:
        return None
    try:   # string keys and plain values, as results almost always are: orjson's quickest way
        return orjson.dumps(value)
    except TypeError:   # the same text, with the checks for other keys and values
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


@dataclass(slots=True)
class Effect:
    """A node's collection writes and its job row: committed together or not at all.

    `shape` says what the writes give `finish`, which makes the node's result of it (in the
    store's thread, inside the transaction): "row" (the last statement's first row), "rows",
    "count" (rows the statements changed) or "none".  Without `finish` the job row is written
    as it is (an outbound node's job, committed once its call succeeded)."""

    writes: list[Write]
    shape: str
    job: Job
    finish: Callable[[Any], Any] | None = None

    def encode(self, result: Any) -> bytes | None:
        return self.job.result if self.finish is None else encode_result(result)


@dataclass(slots=True)
class RequestLine:
    """One line of the request log."""

    at: float
    ip: str
    method: str
    path: str
    workflow: str | None
    status: int
    reason: str | None
    body_size: int
    duration_ms: float
    request_id: str
    execution: bytes | None


@dataclass(slots=True)
class Records:
    """What the worker side writes in batches: status changes, jobs, request-log lines, and
    failure workflows' deliveries (`alerts`), each written with its failed execution's status.

    An execution's "started" waits in `starts` until it has run for a while (`due`): most end
    sooner, and then their final status, keeping when they started, is their one write."""

    finals: dict[bytes, Final] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    requests: list[RequestLine] = field(default_factory=list)
    alerts: list[Delivery] = field(default_factory=list)
    starts: dict[bytes, Final] = field(default_factory=dict)   # "started", not yet due

    def __bool__(self) -> bool:
        return bool(self.finals or self.jobs or self.requests)   # an alert comes with its final

    def __len__(self) -> int:
        return len(self.finals) + len(self.jobs) + len(self.requests)

    def change(self, final: Final) -> None:
        """A later change of one execution replaces an earlier one, keeping when it started."""
        if final.status == Status.STARTED and final.id not in self.finals:
            self.starts[final.id] = final
            return
        earlier = self.starts.pop(final.id, None) or self.finals.get(final.id)
        if earlier is not None and final.started_at is None:
            final.started_at = earlier.started_at
        self.finals[final.id] = final

    def due(self, started_before: float) -> None:
        """The "started" of executions that started at `started_before` or earlier become
        changes to write."""
        if not self.starts:
            return
        due = [final for final in self.starts.values() if final.started_at <= started_before]
        for final in due:
            del self.starts[final.id]
            self.finals.setdefault(final.id, final)

    def merge_back(self, failed: "Records") -> None:
        """A batch that did not commit goes back in front of what came since."""
        for final in failed.finals.values():
            self.finals.setdefault(final.id, final)
        self.jobs[:0] = failed.jobs
        self.requests[:0] = failed.requests
        self.alerts[:0] = failed.alerts


@dataclass(slots=True)
class Claim:
    """What one claim took: executions to run, and those it settled itself."""

    run: list[Delivery] = field(default_factory=list)          # leased to the claimer
    resolved: list[Delivery] = field(default_factory=list)     # nothing to run: resolved in the claim
    duplicates: list[tuple[Delivery, bytes]] = field(default_factory=list)  # (delivery, original id)
    finished: list[int] = field(default_factory=list)        # intake batches now claimed whole
    partial: tuple[int, list[Delivery]] | None = None        # the batch it took part of (seq, all of it)
    # every intake batch below this seq (of those this claimer could take) is claimed, whoever
    # claimed it: what the claimer's memory holds of them is stale (None: not known)
    done_below: int | None = None


@dataclass(slots=True)
class ExecutionRecord:
    id: bytes
    workflow: str
    version: str
    status: Status
    dedup_key: str | None
    duplicate_of: bytes | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    request: StoredRequest | None
    body: bytes
    jobs: list[Job] | None = None
    failure_of: bytes | None = None     # a failure workflow's execution: the one it reports
    replay_of: bytes | None = None
