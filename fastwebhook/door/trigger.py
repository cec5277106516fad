"""One workflow's door: the hot path from a parsed `Request` to what the intake makes of it.

ip allowlist -> room in the queue (else held, unread, until there is: admission.py) -> rate
limit -> media type -> provider handshake -> verify (raw bytes) -> decode and parse once ->
schema -> dedup key -> the stored request -> `Intake.offer` -> the answer.  What a
request needs that does not depend on the request is prepared here once per workflow.  The
trigger owns no state of the queue: the intake says accepted, duplicate or refused, and the
trigger turns that into the response and the request-log line.
"""

from __future__ import annotations

import asyncio
import math
import time

from ..config.model import Mode, Workflow
from ..core.errors import RequestError
from ..http import Answer, Request, Response, answered_status
from ..http.messages import JSON, Prepared
from ..core.ids import new_id, to_text
from ..intake.intake import Offered, Receipt
from ..store.rows import Delivery, RequestLine, StoredRequest
from ..verify import RequestView, public_url_base
from ..intake.dedup import KeyHasher
from ..workflow.templates import Template
from .admission import QUEUE_FULL, RETRY_AFTER
from .body import accepts, decode_content, parse_body
from .context import REDACTED_HEADERS, context_of, stored_headers, stored_query
from .door import Door
from .netaccess import AddressSet
from .ratelimit import TokenBucket, parse_rate
from .schema import SchemaError

STORE_DOWN = Response.error(503, "store unavailable", RETRY_AFTER)
# The 202 of an acceptance, made as bytes at once: ids have one length, so the head is constant.
ACCEPTED_HEAD = Prepared.head_of(202, JSON, len(b'{"execution_id":"","status":"queued"}') + len(to_text(bytes(16))))


class Trigger:
    """One workflow's door: everything it checks, prepared at load."""

    def __init__(self, workflow: Workflow, door: Door, redact_headers: frozenset[str] = frozenset()):
        self.workflow = workflow
        self.key = workflow.key
        self.version = workflow.version
        self.door = door
        self.intake = door.intake
        self.admission = door.admission
        verifier = workflow.verify.verifier if workflow.verify.scheme != "none" else None
        self.verify = verifier.verify if verifier is not None else None
        self.handshake = verifier.handshake if verifier is not None else None
        self.needs_view = verifier is not None and verifier.needs_request
        self.url_base = public_url_base(workflow.public_url)
        self.tls = door.tls
        self.secret_query = verifier.secret_query if verifier is not None else frozenset()
        self.allowed = AddressSet(workflow.ip_allow) if workflow.ip_allow else None
        rate = parse_rate(workflow.rate_limit, "rate_limit") if workflow.rate_limit else None
        self.bucket = TokenBucket(*rate) if rate else None
        self.schema = workflow.schema_validator
        self.content_types = workflow.content_types
        self.body_limit = workflow.max_body_size
        self.sync = workflow.mode == Mode.SYNC
        self.dedup_template = Template(workflow.dedup.key) if workflow.dedup.key else None
        dedup = verifier if verifier is not None and workflow.dedup.enabled else None
        self.dedup_from_headers = dedup.dedup_key if dedup else None
        self.dedup_from_data = dedup.dedup_from_data if dedup else None
        self.dedup_enabled = workflow.dedup.enabled
        self.dedup_ttl = workflow.dedup.ttl
        self.dedup_hash = KeyHasher(workflow.key)
        header = workflow.verify.options.get("header")
        self.redacted = REDACTED_HEADERS | redact_headers \
            | (frozenset({header.lower()}) if isinstance(header, str) else frozenset()) \
            | (verifier.secret_headers if verifier is not None else frozenset())
        metrics = door.metrics
        self.duration = metrics.request_duration.slot(self.key)
        self.answered = {code: metrics.requests.slot(self.key, str(code)) for code in _CODES}
        self.answered_202 = self.answered[202]   # the hot path's own
        self.duplicates = metrics.duplicates.slot(self.key)

    # -- the hot path ---------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response | asyncio.Future | Answer:
        started = time.perf_counter()
        if self.allowed is not None and request.ip not in self.allowed:
            return self.reject(request, RequestError("forbidden", status=403, reason="ip",
                                                     detail=f"source {request.ip} not in ip_allow"), started)
        if not self.admission.has_room(self.key):   # nothing more is done for it until there is
            return self.admission.wait(request, self.key, self.enter, started)
        return self.enter(request, started)

    def enter(self, request: Request, started: float) -> Response | asyncio.Future | Answer:
        """A request with room in the queue: checked, parsed and offered."""
        headers = request.headers
        try:
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
            coding = headers.get("content-encoding")
            raw = decode_content(body, coding, self.body_limit) if coding and body is request.body else body
            data = parse_body(raw, content_type)
            if self.schema is not None:
                self.schema(data)
        except RequestError as exc:
            return self.reject(request, exc, started)
        return self.admit(request, body, data, started)

    def admit(self, request: Request, body: bytes, data, started: float) -> Response | asyncio.Future | Answer:
        """The checks passed: store the request as the workflow will see it and offer it."""
        query = stored_query(request.query_string, self.secret_query) if request.query_string else ""
        stored = StoredRequest(request.method, request.path, query,
                               stored_headers(request.header_list, self.redacted), request.params, request.ip,
                               request.received_at, request.request_id)
        dedup_key = self._dedup_key(request, stored, body, data) if self.dedup_enabled else None
        delivery = Delivery(new_id(), self.key, self.version, stored, body,
                            self.dedup_hash(dedup_key) if dedup_key else None, dedup_key,
                            request.received_at + self.dedup_ttl, (time.perf_counter() - started) * 1000,
                            logged=self.sync)
        answer = self.door.loop.create_future() if self.sync else None

        def settle(outcome: Receipt) -> None:  # the commit decided (answer exists by then)
            response = self.respond(request, outcome, started)
            if response is not None and not answer.done():
                answer.set_result(response)

        outcome = self.intake.offer(delivery, settle, answer)
        if outcome is not None:  # decided at once: no future needed
            return self.respond(request, outcome, started)
        if self.sync:
            self.door.await_sync(to_text(delivery.id), self.workflow, answer)
            answer.add_done_callback(lambda done: self._log(request, answered_status(done), None, started, delivery.id))
        else:   # its commit gives it, and the protocol sends it then and there
            answer = Answer()
        return answer

    def respond(self, request: Request, outcome: Receipt, started: float) -> Response | None:
        """The answer to an outcome; None for an accepted sync offer (its run answers)."""
        kind = outcome.kind
        if kind is Offered.ACCEPTED:
            return None if self.sync else self.accepted(request, outcome.execution, started)
        if kind is Offered.DUPLICATE:
            return self.duplicate(request, outcome.execution, started)
        if kind is Offered.QUEUE_FULL:
            return self.refuse(request, QUEUE_FULL, "queue_full", started)
        return self.refuse(request, STORE_DOWN, "store", started)

    def _dedup_key(self, request: Request, stored: StoredRequest, body: bytes, data) -> str | None:
        if self.dedup_template is not None:
            context = context_of(stored, body, self.body_limit, data)
            return self.dedup_template.render_text({"$context": context}) or None
        if self.dedup_from_headers is not None:
            value = self.dedup_from_headers(request.headers)
            if value:
                return value
        if self.dedup_from_data is not None:
            return self.dedup_from_data(data)
        return None

    # -- answers --------------------------------------------------------------------------------
    def accepted(self, request: Request, execution_id: bytes, started: float) -> Response:
        id_bytes = to_text(execution_id).encode()
        self.answered_202.value += 1
        self.duration.observe(time.perf_counter() - started)
        body = b'{"execution_id":"' + id_bytes + b'","status":"queued"}'
        return Prepared(202, body, ACCEPTED_HEAD, b"".join((b"\r\nx-execution-id: ", id_bytes, b"\r\n\r\n", body)))

    def duplicate(self, request: Request, original: bytes, started: float) -> Response:
        id_bytes = to_text(original).encode()
        self.duplicates.value += 1
        self._log(request, 200, "duplicate", started, original)
        return Response(200, b'{"execution_id":"' + id_bytes + b'","status":"duplicate"}',
                        headers=((b"x-execution-id", id_bytes),))

    def reject(self, request: Request, exc: RequestError, started: float) -> Response:
        metrics = self.door.metrics
        metrics.count(metrics.rejected, self.key, exc.reason)
        reason = exc.message if exc.detail == exc.message else f"{exc.message}: {exc.detail}"
        self._log(request, exc.status, reason, started, None)
        extra = {"path": exc.pointer} if isinstance(exc, SchemaError) else {}
        return Response.error(exc.status, exc.message, exc.headers, **extra)

    def refuse(self, request: Request, response: Response, reason: str, started: float) -> Response:
        metrics = self.door.metrics
        metrics.count(metrics.rejected, self.key, reason)
        self._log(request, response.status, reason, started, None)
        return response

    def _count(self, status: int, started: float) -> float:
        elapsed = time.perf_counter() - started
        (self.answered.get(status) or self.door.metrics.requests.slot(self.key, str(status))).value += 1
        self.duration.observe(elapsed)
        return elapsed

    def _log(self, request: Request, status: int, reason: str | None, started: float,
             execution: bytes | None) -> None:
        """A request-log line of its own (an async acceptance is a line of the intake)."""
        elapsed = self._count(status, started)
        self.door.log_request(RequestLine(
            request.received_at, request.ip, request.method, request.path, self.key, status,
            reason, len(request.body), elapsed * 1000, request.request_id, execution))


_CODES = (200, 201, 202, 204, 400, 401, 403, 404, 405, 413, 415, 422, 429, 431, 500, 503, 504)


class RateLimited(RequestError):
    status = 429
    reason = "rate"

    def __init__(self, wait: float):
        super().__init__("rate limit exceeded")
        self.headers = ((b"retry-after", str(max(1, math.ceil(wait))).encode()),)
