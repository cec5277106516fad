"""The admin API (SPEC section 9) and the queries the CLI shares with it: one code path."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import orjson

from ..config.model import Config
from ..core.errors import StoreError
from . import records
from .finding import SCAN_BOUND, Carried, carried, matcher
from .records import BadQuery
from .replays import KeyInUse, bulk_replay, replay, replay_filter
from ..http.messages import Request, Response, parse_query
from ..store import StatementTimeout, Store
from ..store.reads import Reads
from ..store.rows import Status
from .stored import Refused, StoredWorkflows, detail, summary
from ..workflow.collections import RecordError, filter_terms

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
STATUSES = tuple(status.value for status in Status)


def _limit(value: Any) -> int:
    if value in (None, ""):
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise BadQuery(f"limit must be a whole number, not {value!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


async def list_executions(store: Store, workflow: str | None = None, status: str | None = None,
                          limit: Any = None, cursor: str | None = None, wanted: Carried | None = None) -> dict:
    """Newest first; with `wanted` (what the request carried: dedup key, request id, data
    fields) a bounded scan whose `next` goes on where it stopped (finding.py)."""
    limit = _limit(limit)
    if status is not None and status not in STATUSES:
        raise BadQuery(f"status must be one of {', '.join(STATUSES)}")
    before = resume = None
    if cursor:
        before = records.parse_execution_id(cursor)
        scan = records.parse_scan_cursor(cursor) if wanted and before is None else None
        if before is None and scan is None:
            raise BadQuery(f"not a cursor: {cursor!r}")
        if scan is not None:
            *resume, before = scan
    if wanted:
        found, position = await Reads(store).scan_executions(matcher(wanted), workflow or None,
                                                             Status(status) if status else None, limit, before,
                                                             SCAN_BOUND, tuple(resume) if resume else None)
        return {"items": [records.execution(record) for record in found],
                "next": records.scan_cursor(*position, before) if position is not None else None}
    found = await Reads(store).list_executions(workflow or None, Status(status) if status else None, limit, before)
    items = [records.execution(record) for record in found]
    return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}


async def get_execution(store: Store, id_text: str) -> dict | None:
    raw = records.parse_execution_id(id_text)
    record = await Reads(store).get_execution(raw) if raw is not None else None
    return records.execution(record) if record is not None else None


async def list_requests(store: Store, limit: Any = None, cursor: str | None = None) -> dict:
    limit = _limit(limit)
    before = None
    if cursor:
        before = records.parse_request_cursor(str(cursor))
        if before is None:
            raise BadQuery(f"not a cursor: {cursor!r}")
    lines = await Reads(store).list_requests(limit, before)
    return {"items": [records.request(line) for line in lines],
            "next": records.request_cursor(lines[-1]) if len(lines) == limit else None}


async def list_records(store: Store, config: Config, name: str, filter_text: str | None = None,
                       limit: Any = None, cursor: str | None = None) -> dict | None:
    """A collection's records, newest first; `filter_text` is a JSON filter (SPEC section 7)."""
    collection = config.collections.get(name)
    if collection is None:
        return None
    limit = _limit(limit)
    try:
        filter = orjson.loads(filter_text) if filter_text else {}
    except orjson.JSONDecodeError as exc:
        raise BadQuery(f"filter is not valid JSON: {exc}") from None
    if not isinstance(filter, dict):
        raise BadQuery("filter must be a JSON object of field: value or field: {op: value}")
    terms = filter_terms(filter)
    if cursor:
        if not str(cursor).isdigit():
            raise BadQuery(f"not a cursor: {cursor!r}")
        terms.append(("id", "lt", int(cursor)))
    try:
        sql, params = collection.select(terms, ("-id",), limit, nulls=True)
    except RecordError as exc:
        raise BadQuery(str(exc)) from None
    items = [collection.decode(row) for row in await store.read_records(sql, params)]
    return {"items": items, "next": str(items[-1]["id"]) if len(items) == limit else None}


def list_workflows(config: Config) -> list[dict]:
    return [summary(w) for w in config.workflows.values()]


def stats(config: Config, metrics, now: float) -> dict:
    """Per workflow: executions finished by status, requests answered, and per node its runs,
    failures and p50/p99 duration, counted since this server started (the admin page samples
    them for its requests-per-second chart)."""
    counts = metrics.counts()
    workflows = {key: {"executions": {}, "requests": 0, "nodes": {}} for key in config.workflows}
    for (workflow, node), figures in metrics.node_figures().items():
        if workflow in workflows:
            workflows[workflow]["nodes"][node] = figures
    for (workflow, status), count in counts["executions_total"].items():
        if workflow in workflows and count:
            workflows[workflow]["executions"][status] = int(count)
    for (workflow, _code), count in counts["requests_total"].items():
        if workflow in workflows:
            workflows[workflow]["requests"] += int(count)
    return {"at": now, "workflows": workflows}


class AdminApi:
    """Bearer-token guarded; each call runs as its own task (admin calls are not the hot path)."""

    PREFIX = "/api/admin"

    def __init__(self, config: Config, store: Store, submit=None, workflows: StoredWorkflows | None = None,
                 metrics=None, submit_many=None):
        self.config = config
        self.store = store
        self.metrics = metrics        # for GET /api/admin/stats
        self.submit = submit          # offers a replayed delivery to this server's intake
        self.submit_many = submit_many   # ... and a bulk replay's, through the door's admission
        self.workflows = workflows    # changes them (without one, a server's, they are read-only)
        self.expected = f"Bearer {config.admin_token}".encode()

    def handle(self, request: Request) -> Response | asyncio.Future:
        given = request.headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(given, self.expected):
            return Response.error(401, "missing or wrong admin token",
                                  ((b"www-authenticate", b'Bearer realm="fastwebhook"'),))
        return asyncio.ensure_future(self._dispatch(request))

    async def _dispatch(self, request: Request) -> Response:
        parts = request.path[len(self.PREFIX):].strip("/").split("/")
        query = dict(parse_query(request.query_string))
        try:
            return await self._route(request, parts, query)
        except BadQuery as exc:
            return Response.error(400, str(exc))
        except StatementTimeout as exc:   # the query asks too much of the store: narrow it
            return Response.error(400, f"{exc}: narrow the query (or raise storage.statement_timeout)")
        except KeyInUse as exc:
            return Response.error(409, str(exc))
        except Refused as exc:
            return Response.error(exc.status, exc.message, **({"errors": exc.errors} if exc.errors else {}))
        except StoreError as exc:
            return Response.error(503, f"store unavailable: {exc}", ((b"retry-after", b"1"),))

    async def _route(self, request: Request, parts: list[str], query: dict) -> Response:
        method = request.method
        if parts[0] == "workflows":
            return await self._workflows(request, parts[1:])
        match parts:
            case ["executions"] if method == "GET":
                return Response.json(200, await list_executions(
                    self.store, query.get("workflow"), query.get("status"), query.get("limit"),
                    query.get("cursor"), carried(query)))
            case ["executions", "replay"] if method == "POST":
                answer = await bulk_replay(self.store, self.config, replay_filter(_json_body(request)),
                                           request.headers.get("idempotency-key"), self.submit_many)
                return Response.json(202, answer)
            case ["executions", id_text] if method == "GET" and id_text != "replay":
                record = await get_execution(self.store, id_text)
                return Response.json(200, record) if record else Response.error(404, "no such execution")
            case ["executions", id_text, "replay"] if method == "POST":
                answer = await replay(self.store, self.config, id_text, self.submit)
                return Response.json(202, answer) if answer else Response.error(404, "no such execution")
            case ["collections", name, "records"] if method == "GET":
                page = await list_records(self.store, self.config, name, query.get("filter"), query.get("limit"),
                                          query.get("cursor"))
                return Response.json(200, page) if page is not None else Response.error(404, "no such collection")
            case ["executions", _, "replay"] | ["executions", "replay"]:
                return Response.error(405, "method not allowed", ((b"allow", b"POST"),))
            case ["collections", _, "records"]:
                return Response.error(405, "method not allowed", ((b"allow", b"GET"),))
            case ["stats"] if method == "GET" and self.metrics is not None:
                return Response.json(200, stats(self.config, self.metrics, time.time()))
            case ["requests"] if method == "GET":
                return Response.json(200, await list_requests(self.store, query.get("limit"), query.get("cursor")))
            case ["executions"] | ["executions", _] | ["requests"]:
                return Response.error(405, "method not allowed", ((b"allow", b"GET"),))
        return Response.error(404, "not found")

    async def _workflows(self, request: Request, parts: list[str]) -> Response:
        method, workflows = request.method, self.workflows
        if method != "GET" and workflows is None:
            return Response.error(405, "workflows are read-only here", ((b"allow", b"GET"),))
        match parts:
            case [] if method == "GET":
                return Response.json(200, {"items": list_workflows(self.config), "next": None})
            case [] if method == "POST":
                return Response.json(201, await workflows.create(_json_body(request)))
            case [key] if method == "GET":
                found = await workflows.get(key) if workflows else (
                    detail(self.config.workflows[key]) if key in self.config.workflows else None)
                return Response.json(200, found) if found else Response.error(404, f"no workflow {key!r}")
            case [key] if method == "PUT":
                saved, created = await workflows.put(key, _json_body(request))
                return Response.json(201 if created else 200, saved)
            case [key] if method == "DELETE":
                await workflows.delete(key)
                return Response.json(200, {"key": key, "deleted": True})
            case [key, ("enable" | "disable") as action] if method == "POST":
                return Response.json(200, await workflows.set_enabled(key, action == "enable"))
            case []:
                return Response.error(405, "method not allowed", ((b"allow", b"GET, POST"),))
            case [_]:
                return Response.error(405, "method not allowed", ((b"allow", b"GET, PUT, DELETE"),))
            case [_, "enable" | "disable"]:
                return Response.error(405, "method not allowed", ((b"allow", b"POST"),))
        return Response.error(404, "not found")


def _json_body(request: Request) -> Any:
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise BadQuery(f"the body is not valid JSON: {exc}") from None
