"""Accepting one webhook: the hot path from a parsed `Request` to its 2xx.

ip allowlist -> rate limit -> media type -> provider handshake -> verify (raw bytes) -> decode and
parse once -> schema -> dedup -> reserve a queue slot -> append to the open batch -> (commit) ->
202.  Everything a request needs that does not depend on the request is prepared here once per
workflow.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING

import orjson

from .body import accepts, decode_content, parse_body
from ..config import Workflow
from .context import REDACTED, build_context, redact
from .dedup import dedup_hash
from ..errors import RequestError
from ..http.messages import Request, Response, answered_status
from ..ids import new_id, to_text
from ..intake.writer import MAX_BATCH
from .netaccess import AddressSet
from .ratelimit import TokenBucket, parse_rate
from .schema import SchemaError
from ..store.base import NewExecution, RequestLogEntry
from ..workflow.templates import Template
from ..verify import RequestView, public_url_base
from ..intake.workers import Work

if TYPE_CHECKING:
    from ..service import Service

RETRY_AFTER = ((b"retry-after", b"1"),)
# durability = "memory" answers before the commit only while the writer keeps up (less than one
# batch waiting): past that it answers after the commit, as "commit" does.  That bounds what a
# crash can lose and what the process holds in memory, and turns a writer that falls behind into
# slower answers instead of an ever-growing backlog the garbage collector has to walk.
MEMORY_BACKLOG = MAX_BATCH
QUEUE_FULL = Response.error(503, "queue full", RETRY_AFTER)
STORE_DOWN = Response.error(503, "store unavailable", RETRY_AFTER)


class Trigger:
    """One workflow's door: everything it checks, prepared at load."""

    def __init__(self, workflow: Workflow, service: "Service"):
        self.workflow = workflow
        self.key = workflow.key
        self.service = service
        verifier = workflow.verify.verifier if workflow.verify.scheme != "none" else None
        self.verify = verifier.verify if verifier is not None else None
        self.handshake = verifier.handshake if verifier is not None else None
        self.needs_view = verifier is not None and verifier.needs_request
        self.url_base = public_url_base(workflow.public_url)
        self.tls = service.config.server.tls_enabled
        self.secret_query = verifier.secret_query if verifier is not None else frozenset()
        self.allowed = AddressSet(workflow.ip_allow) if workflow.ip_allow else None
        rate = parse_rate(workflow.rate_limit, "rate_limit") if workflow.rate_limit else None
        self.bucket = TokenBucket(*rate) if rate else None
        self.schema = workflow.schema_validator
        self.content_types = workflow.content_types
        self.body_limit = workflow.max_body_size
        self.sync = workflow.mode == "sync"
        self.dedup_template = Template(workflow.dedup.key) if workflow.dedup.key else None
        dedup = verifier if verifier is not None and workflow.dedup.enabled else None
        self.dedup_from_headers = dedup.dedup_key if dedup else None
        self.dedup_from_data = dedup.dedup_from_data if dedup else None
        self.dedup_enabled = workflow.dedup.enabled
        self.dedup_ttl = workflow.dedup.ttl
        header = workflow.verify.options.get("header")
        self.redacted = (frozenset({header.lower()}) if isinstance(header, str) else frozenset()) | \
            (verifier.secret_headers if verifier is not None else frozenset())
        metrics = service.metrics
        self.duration = metrics.request_duration.slot(self.key)
        self.answered = {code: metrics.requests.slot(self.key, str(code)) for code in _CODES}
        self.duplicates = metrics.duplicates.slot(self.key)

    # -- the hot path ---------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response | asyncio.Future:
        started = time.perf_counter()
        service = self.service
        headers = request.headers
        ip = request.ip  # the client behind trusted proxies, worked out by the app's router
        try:
            if self.allowed is not None and ip not in self.allowed:
                raise RequestError("forbidden", status=403, reason="ip", detail=f"source {ip} not in ip_allow")
            if self.bucket is not None:
                wait = self.bucket.take()
                if wait:
                    raise RateLimited(wait)
            content_type = headers.get("content-type")
            if self.content_types and not accepts(content_type, self.content_types):
                raise RequestError(f"unsupported media type {content_type!r}", status=415, reason="media_type")
            body = request.body
            if self.verify is not None:
                view = RequestView.build(request.method, request.path, request.query_string, headers,
                                         self.url_base, self.tls) if self.needs_view else None
                if self.handshake is not None:
                    answer = self.handshake(body, headers, request.received_at, view)
                    if answer is not None:
                        self._log(request, answer.status, "handshake", started, None)
                        return Response(answer.status, answer.body, answer.content_type)
                body = self.verify(body, headers, request.received_at, view)
            # A decrypted body (wecom, feishu) is the plaintext, never content-encoded.
            raw = decode_content(body, headers.get("content-encoding"), self.body_limit) if body is request.body else body
            data = parse_body(raw, content_type)
            if self.schema is not None:
                self.schema(data)
        except RequestError as exc:
            return self.reject(request, exc, started)
        context = build_context(data, headers, request.query_string, request.params, request.method,
                                request.path, ip, request.received_at, body, self.body_limit)
        dedup_key = self._dedup_key(context) if self.dedup_enabled else None
        key_hash = None
        if dedup_key:
            key_hash = dedup_hash(self.key, dedup_key)
            original = service.dedup.get(key_hash)
            if original is not None:
                waiters = service.uncommitted.get(original)
                if waiters is not None:  # never call it a duplicate of something not yet on disk
                    return self._after_original(request, waiters, started)
                return self.duplicate(request, original, started)
        if not service.queue.reserve():
            return self.refuse(request, QUEUE_FULL, "queue_full", started)
        return self.accept(request, context, dedup_key, key_hash, started)

    def accept(self, request: Request, context, dedup_key: str | None, key_hash: int | None,
               started: float) -> Response | asyncio.Future:
        service = self.service
        execution_id = new_id()
        now = request.received_at
        stored = orjson.dumps({
            "method": request.method, "path": request.path,
            "headers": redact(request.headers, self.redacted),
            "query": {k: REDACTED if k in self.secret_query else v for k, v in context["query"].items()}
            if self.secret_query else context["query"],
            "params": request.params, "ip": context["ip"], "received_at": now})
        execution = NewExecution(
            execution_id, self.key, self.workflow.version, now, stored, context.raw_body,
            key_hash, dedup_key, now + self.dedup_ttl, service.owner, now + service.lease)
        if key_hash is not None:
            service.dedup.put(key_hash, execution_id, now + self.dedup_ttl)
        id_text = to_text(execution_id)
        context.forget_data()
        work = Work(execution_id, id_text, self.workflow, context)
        if not service.durable and not self.sync and service.writer.uncommitted < MEMORY_BACKLOG:
            service.writer.add_execution(execution, self._on_memory_commit(execution, work))
            return self.accepted(request, execution_id, id_text, started)
        answer = service.loop.create_future()
        if key_hash is not None:
            service.uncommitted[execution_id] = []
        service.writer.add_execution(execution, self._on_commit(request, execution, work, answer, started))
        return answer

    def _after_original(self, request: Request, waiters: list, started: float) -> asyncio.Future:
        """A repeat of a request whose commit is in flight is answered when that commit lands:
        200 duplicate if it did, 503 if it failed (then the sender's retry is a fresh request)."""
        answer = self.service.loop.create_future()

        def original_committed(original: bytes | None, error: Exception | None) -> None:
            if error is not None:
                response = self.refuse(request, STORE_DOWN, "store", started)
            else:
                response = self.duplicate(request, original, started)
            if not answer.done():
                answer.set_result(response)

        waiters.append(original_committed)
        return answer

    def _on_commit(self, request, execution: NewExecution, work: Work, answer: asyncio.Future, started):
        def committed(original: bytes | None, error: Exception | None) -> None:
            service = self.service
            for waiter in service.uncommitted.pop(execution.id, ()):
                waiter(original or execution.id, error)
            if error is not None:
                self._forget(execution)
                service.queue.release()
                response = self.refuse(request, STORE_DOWN, "store", started)
            elif original is not None:
                service.dedup.put(execution.dedup_hash, original, execution.dedup_expires)
                service.queue.release()
                response = self.duplicate(request, original, started)
            elif self.sync:
                work.reply = answer
                service.queue.push(work)
                service.await_sync(work, answer)
                answer.add_done_callback(lambda done: self._log(
                    request, answered_status(done), None, started, execution.id))
                return
            else:
                service.queue.push(work)
                response = self.accepted(request, work.id, work.id_text, started)
            if not answer.done():
                answer.set_result(response)
        return committed

    def _on_memory_commit(self, execution: NewExecution, work: Work):
        """Memory durability answered already.  The work still waits for its commit, so a
        duplicate the store catches (another process took the key) does not run; a commit that
        failed is run anyway, since it was acknowledged, but would not survive a crash."""
        def committed(original: bytes | None, error: Exception | None) -> None:
            service = self.service
            if original is not None:
                service.dedup.put(execution.dedup_hash, original, execution.dedup_expires)
                service.queue.release()
                return
            if error is not None:
                service.log.error("execution %s was acknowledged but not stored: %s", work.id_text, error)
            service.queue.push(work)
        return committed

    def _forget(self, execution: NewExecution) -> None:
        if execution.dedup_hash is not None:
            self.service.dedup.forget(execution.dedup_hash, execution.id)

    def _dedup_key(self, context) -> str | None:
        if self.dedup_template is not None:
            value = self.dedup_template.render_text({"$context": context})
            return value or None
        if self.dedup_from_headers is not None:
            value = self.dedup_from_headers(context["headers"])
            if value:
                return value
        if self.dedup_from_data is not None:
            return self.dedup_from_data(context["data"])
        return None

    # -- answers --------------------------------------------------------------------------------
    def accepted(self, request: Request, execution_id: bytes, id_text: str, started: float) -> Response:
        id_bytes = id_text.encode()
        self._log(request, 202, None, started, execution_id)
        return Response(202, b'{"execution_id":"' + id_bytes + b'","status":"queued"}',
                        headers=((b"x-execution-id", id_bytes),))

    def duplicate(self, request: Request, original: bytes, started: float) -> Response:
        id_text = to_text(original)
        self.duplicates.value += 1
        self._log(request, 200, "duplicate", started, original)
        return Response(200, b'{"execution_id":"' + id_text.encode() + b'","status":"duplicate"}',
                        headers=((b"x-execution-id", id_text.encode()),))

    def reject(self, request: Request, exc: RequestError, started: float) -> Response:
        metrics = self.service.metrics
        metrics.count(metrics.rejected, self.key, exc.reason)
        reason = exc.message if exc.detail == exc.message else f"{exc.message}: {exc.detail}"
        self._log(request, exc.status, reason, started, None)
        extra = {"path": exc.pointer} if isinstance(exc, SchemaError) else {}
        return Response.error(exc.status, exc.message, exc.headers, **extra)

    def refuse(self, request: Request, response: Response, reason: str, started: float) -> Response:
        metrics = self.service.metrics
        metrics.count(metrics.rejected, self.key, reason)
        self._log(request, response.status, reason, started, None)
        return response

    def _log(self, request: Request, status: int, reason: str | None, started: float,
             execution: bytes | None) -> None:
        elapsed = time.perf_counter() - started
        service = self.service
        (self.answered.get(status) or service.metrics.requests.slot(self.key, str(status))).value += 1
        self.duration.observe(elapsed)
        service.writer.log_request(RequestLogEntry(
            request.received_at, request.ip, request.method, request.path, self.key, status,
            reason, len(request.body), elapsed * 1000, request.request_id, execution))


_CODES = (200, 201, 202, 204, 400, 401, 403, 404, 405, 413, 415, 422, 429, 431, 500, 503, 504)


class RateLimited(RequestError):
    status = 429
    reason = "rate"

    def __init__(self, wait: float):
        super().__init__("rate limit exceeded")
        self.headers = ((b"retry-after", str(max(1, math.ceil(wait))).encode()),)
