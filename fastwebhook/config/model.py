"""The config as the server holds it: frozen dataclasses, their enums and constants.

Loaded once (config/loader.py) and never changed: a reload builds a new Config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Callable, Mapping


RESERVED_PATHS = ("/metrics", "/healthz", "/readyz")
ADMIN_PREFIX = "/api/admin"
ADMIN_PAGE = "/admin"                 # the executions page (web/), served with the admin API
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ANSWER_SLACK = 60.0                   # seconds past the longest wait a response may take (answer_timeout)


class Mode(StrEnum):
    """`[workflows.K] mode`: answer at once (202), or with the workflow's answer."""
    ASYNC = "async"
    SYNC = "sync"


class OnSyncTimeout(StrEnum):
    """`[workflows.K] on_sync_timeout`: past sync_timeout, 202 with the id, or 504."""
    ACCEPT = "accept"
    ERROR = "error"


class Durability(StrEnum):
    """`[storage] durability`: acknowledge after the commit, or before it (one batch at most)."""
    COMMIT = "commit"
    MEMORY = "memory"



@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 8080),)
    processes: int = 1
    max_body_size: int = 1 << 20
    max_header_size: int = 16 << 10
    read_timeout: float = 15.0
    keepalive_timeout: float = 75.0
    trusted_proxies: tuple[Any, ...] = ()
    tls_cert: str = ""               # absolute PEM paths; both set (checked at load) = HTTPS
    tls_key: str = ""

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


@dataclass(frozen=True)
class StorageConfig:
    url: str = "sqlite:///./fastwebhook.db"
    durability: Durability = Durability.COMMIT
    retention: float = 7 * 86400.0
    redact_headers: frozenset[str] = frozenset()   # stored as "[redacted]", besides the built-in set
    statement_timeout: float = 0.25   # seconds one collection statement or admin read may run


@dataclass(frozen=True)
class QueueConfig:
    capacity: int = 10000
    workers: int = 64
    lease: float = 30.0     # seconds a claim holds its executions (renewed while they run)
    hold: float = 2.0       # seconds a request that finds its queue full waits for room, then 503


@dataclass(frozen=True)
class OutboundConfig:
    deny: tuple[Any, ...] = ()      # networks request nodes and http channels may not reach


@dataclass(frozen=True)
class VerifyConfig:
    scheme: str = "none"
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    # Built from the scheme registry at load (fastwebhook.verify.Verifier); secrets stay inside.
    verifier: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class DedupConfig:
    enabled: bool = False
    key: str = ""            # a template; "" means the scheme's default key
    ttl: float = 86400.0


@dataclass(frozen=True)
class ResponseConfig:
    status: int = 200
    headers: tuple[tuple[str, Any], ...] = (("Content-Type", "application/json"),)   # values may be templates
    body: Any = '{"ok": true, "execution": "{{$execution.id}}"}'


@dataclass(frozen=True)
class Known:
    """What a node's settings may name, checked at load: channels, collections, `[env]`."""

    channels: Mapping[str, Any] = field(default_factory=dict)
    collections: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeSpec:
    key: str
    type: str
    path: str                       # where it sits in the TOML, for errors at run time too
    title: str = ""
    ignore_fail: bool = False
    prepared: Any = field(default=None, compare=False, repr=False)   # the node type's compiled settings
    then: tuple["NodeSpec", ...] = ()
    otherwise: tuple["NodeSpec", ...] = ()


@dataclass(frozen=True)
class Workflow:
    key: str
    path: str
    title: str = ""
    methods: tuple[str, ...] = ("POST",)
    mode: Mode = Mode.ASYNC
    enabled: bool = True
    sync_timeout: float = 30.0
    on_sync_timeout: OnSyncTimeout = OnSyncTimeout.ACCEPT
    ip_allow: tuple[Any, ...] = ()
    max_body_size: int = 1 << 20
    content_types: frozenset[str] = frozenset()
    rate_limit: str = ""
    schema: str = ""
    schema_validator: Callable | None = field(default=None, compare=False, repr=False)
    order_key: str = ""
    concurrency: int = 0
    max_queued: int = 0             # most of its executions in the queue; 0: a fair share (Config.share)
    public_url: str = ""
    on_failure: str = ""            # the workflow an execution of this one that ends failed or error queues
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    response: ResponseConfig = field(default_factory=ResponseConfig)
    nodes: tuple[NodeSpec, ...] = ()
    version: str = ""               # a digest of the workflow's table: executions record it
    origin: str = "file"            # "file" (the config), or "api": stored through the admin API


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerConfig
    storage: StorageConfig
    queue: QueueConfig
    metrics_path: str
    admin_token: str
    log_level: str
    log_format: str
    log_access: bool                     # a log line per request, besides the request log
    env: Mapping[str, str]
    channels: Mapping[str, Any]          # name -> workflow.channels.Channel
    collections: Mapping[str, Any]       # name -> workflow.collections.Collection
    workflows: Mapping[str, Workflow]    # the file's, then those stored through the admin API
    shadowed: tuple[str, ...] = ()       # stored workflows the file's of the same key hide
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    secrets_dir: str = ""                # [admin] secrets_dir: besides $CREDENTIALS_DIRECTORY, the
                                         # one folder stored workflows may name files in

    def share(self, workflow: Workflow) -> int:
        """The most of `workflow`'s executions the queue holds at once: its `max_queued`, else a
        fair share of the capacity, 1 / min(4, enabled workflows) of it, so that one workflow's
        flood holds or refuses that workflow only."""
        if workflow.max_queued:
            return min(workflow.max_queued, self.queue.capacity)
        enabled = sum(1 for w in self.workflows.values() if w.enabled)
        return max(1, self.queue.capacity // min(4, max(1, enabled)))

    def answer_timeout(self) -> float:
        """The server's bound on any answer, the admin API's too (a hold, then a commit and a
        sync run answer before it): a response not ready by then is a bug, answered 503.  A
        client that waits less may give up on an answer still coming."""
        return self.queue.hold + max((w.sync_timeout for w in self.workflows.values()), default=0.0) + ANSWER_SLACK
