"""The one narrow interface every store implements (SQLite now, PostgreSQL next).

Writes arrive as whole batches: the intake gathers the rows of many requests and the store
commits them in one transaction (group commit).  Work is claimed with leases (owner + expiry)
so several processes, and later several hosts, share one store without double runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

QUEUED, STARTED, RESOLVED, FAILED, ERROR, ABORTED = "queued", "started", "resolved", "failed", "error", "aborted"
PENDING_STATUSES = (QUEUED, STARTED)
FINAL_STATUSES = (RESOLVED, FAILED, ERROR, ABORTED)


@dataclass(slots=True)
class NewExecution:
    id: bytes                   # 16-byte UUIDv7: time-ordered, so index inserts append
    workflow: str
    version: str
    created_at: float
    request: bytes              # orjson of method, path, headers (redacted), query, params, ip
    body: bytes                 # the raw body as received
    dedup_hash: int | None      # signed 64-bit hash of (workflow, dedup key)
    dedup_key: str | None
    dedup_expires: float
    owner: str                  # the accepting process holds the lease from the start
    lease_until: float


@dataclass(slots=True)
class Transition:
    id: bytes
    status: str
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


@dataclass(slots=True)
class RequestLogEntry:
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
class Batch:
    executions: list[NewExecution] = field(default_factory=list)
    requests: list[RequestLogEntry] = field(default_factory=list)
    transitions: dict[bytes, Transition] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.executions or self.requests or self.transitions or self.jobs)

    def transition(self, change: Transition) -> None:
        """Later transitions of one execution replace earlier ones, keeping when it started."""
        earlier = self.transitions.get(change.id)
        if earlier is not None and change.started_at is None:
            change.started_at = earlier.started_at
        self.transitions[change.id] = change


@dataclass(slots=True)
class ClaimedExecution:
    id: bytes
    workflow: str
    version: str
    created_at: float
    request: bytes
    body: bytes
    dedup_key: str | None
    attempts: int


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def commit(self, batch: Batch, now: float) -> dict[int, bytes]:
        """Write the batch in one transaction.  Returns, for each execution (by index) whose
        dedup key is already held by a live execution, that original execution's id; those
        executions are not written."""

    async def claim(self, owner: str, now: float, lease_until: float, limit: int,
                    reclaim_owners: tuple[str, ...] = ()) -> list[ClaimedExecution]:
        """Take up to `limit` pending executions whose lease lapsed (or whose owner is known
        dead), oldest first, leasing them to `owner`."""

    async def pending_owners(self) -> list[str]: ...
    async def renew(self, owner: str, lease_until: float) -> None: ...
    async def live_dedup(self, now: float, limit: int) -> list[tuple[int, bytes, float]]:
        """(hash, execution id, expires_at) of dedup keys still live, newest first."""

    async def get_execution(self, id: bytes) -> dict[str, Any] | None: ...
    async def list_executions(self, workflow: str | None, status: str | None, limit: int,
                              before: bytes | None) -> list[dict[str, Any]]: ...
    async def list_requests(self, limit: int, before: int | None) -> list[dict[str, Any]]: ...
    async def purge(self, before: float) -> int: ...
