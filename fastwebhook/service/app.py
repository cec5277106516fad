"""What the protocol calls: routing, the reserved endpoints, and each workflow's trigger."""

from __future__ import annotations

import asyncio
import logging
import time

from ..admin import page as admin_page
from ..admin.api import AdminApi
from ..config.model import ADMIN_PAGE, Config
from ..http.messages import PENDING, Request, Response, answered_status
from ..door.trigger import Trigger
from ..observe.metrics import CONTENT_TYPE
from ..door.netaccess import AddressSet, client_ip
from ..http.router import Router
from .service import Service
from ..store.rows import RequestLine
from ..admin.stored import StoredWorkflows

log = logging.getLogger("fastwebhook.app")
access_log = logging.getLogger("fastwebhook.access")
NOT_FOUND = Response.error(404, "not found")
OK = Response.json(200, {"status": "ok"})


class _Endpoint:
    """A routed path: the methods it takes and what answers them."""

    __slots__ = ("methods", "allow", "handler", "body_limit", "key")

    def __init__(self, methods: tuple[str, ...], handler, body_limit: int, key: str | None):
        self.methods = frozenset(methods)
        self.allow = ", ".join(methods).encode()
        self.handler = handler
        self.body_limit = body_limit
        self.key = key


class WebhookApp:
    def __init__(self, config: Config, service: Service, workflows: StoredWorkflows | None = None):
        self.service = service
        self.workflows = workflows      # the admin API's workflow changes (None: read-only)
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Routes for `config`, swapped in at once: the next request on every connection is
        routed by them, one already routed goes on with what it got.  Every trigger is built
        anew (a secret file read again; rate-limit buckets start full)."""
        max_body = config.server.max_body_size
        trusted = config.server.trusted_proxies
        router = Router()
        door, redact = self.service.door, config.storage.redact_headers
        for workflow in config.workflows.values():
            if workflow.enabled:
                router.add(workflow.path, _Endpoint(workflow.methods, Trigger(workflow, door, redact),
                                                    workflow.max_body_size, workflow.key))
        small = min(max_body, 64 << 10)
        router.add("/healthz", _Endpoint(("GET", "HEAD"), self._logged(lambda r: OK), small, None))
        router.add("/readyz", _Endpoint(("GET", "HEAD"), self._logged(self.readyz), small, None))
        if config.metrics_path:
            router.add(config.metrics_path, _Endpoint(("GET",), self._logged(self.metrics), small, None))
        if config.admin_token:
            admin = AdminApi(config, self.service.store, self.service.submit, self.workflows, self.service.metrics,
                             self.service.submit_many)
            router.add_prefix(AdminApi.PREFIX, _Endpoint(
                ("GET", "POST", "PUT", "DELETE"), self._logged(admin.handle), max_body, None))
            router.add_prefix(ADMIN_PAGE, _Endpoint(("GET",), self._logged(admin_page.answer), small, None))
        self.config, self.max_body, self.trusted = config, max_body, AddressSet(trusted) if trusted else None
        self.router = router
        # what the protocol calls per request: without access lines, not one call more
        self.handle = self._answer_logged if config.log_access else self._answer

    # -- the protocol's side ------------------------------------------------------------------
    def route(self, request: Request) -> None:
        if self.trusted is not None:  # once per request, so every answer and log line agrees
            request.ip = client_ip(request.peer, request.headers, self.trusted)
        found = self.router.match(request.path)
        if found is None:
            request.body_limit = self.max_body
            return
        request.route, request.params = found
        request.body_limit = request.route.body_limit

    def _answer_logged(self, request: Request):
        """`handle` with [log] access on: the answer, and a line of it on stdout."""
        response = self._answer(request)
        if isinstance(response, PENDING):
            response.add_done_callback(lambda done: _access_line(request, answered_status(done)))
        else:
            _access_line(request, response.status)
        return response

    def _answer(self, request: Request):
        """`handle`: a Response, or a future of one."""
        endpoint = request.route
        if endpoint is None:
            return self._plain_reject(request, NOT_FOUND, None, "not found")
        if request.method not in endpoint.methods:
            return self._plain_reject(request, Response.error(405, "method not allowed", ((b"allow", endpoint.allow),)),
                                      endpoint.key, "method")
        if self.service.stopping and endpoint.key is not None:
            return self._plain_reject(request, Response.error(503, "shutting down", ((b"retry-after", b"1"),)),
                                      endpoint.key, "shutting_down")
        return endpoint.handler(request)

    def too_large(self, request: Request) -> Response:
        key = request.route.key if request.route is not None else None
        limit = request.body_limit
        return self._plain_reject(request, Response.error(413, f"body exceeds {limit} bytes", close=True), key, "size")

    def connection_opened(self) -> None:
        self.service.metrics.connections_open += 1

    def connection_closed(self) -> None:
        self.service.metrics.connections_open -= 1

    def internal_error(self, exc: BaseException | None) -> None:
        log.error("internal error while parsing a request", exc_info=exc)

    def refused(self, peer: str, target: bytes, status: int, reason: str, request_id: str) -> None:
        """The protocol refused a request it could not (or would not) parse."""
        metrics = self.service.metrics
        metrics.count(metrics.requests, "", str(status))
        metrics.count(metrics.rejected, "", reason)
        path = target.partition(b"?")[0].decode("latin-1")[:1024]
        self.service.dispatcher.log_request(RequestLine(
            time.time(), peer, "-", path or "-", None, status, reason, 0, 0.0, request_id, None))
        if self.config.log_access:
            access_log.info("request", extra={"ip": peer, "method": "-", "path": path or "-", "status": status,
                                              "reason": reason, "request_id": request_id})

    # -- reserved endpoints -------------------------------------------------------------------
    def readyz(self, request: Request) -> Response:
        service = self.service
        problems = []
        if not service.intake.healthy:
            problems.append("store unreachable")
        problems += [f"{name} failing: {error}" for name, error in service.supervisor.failing.items()]
        if service.intake.room <= 0:
            problems.append("queue full")
        if service.stopping:
            problems.append("shutting down")
        if problems:
            return Response.json(503, {"status": "unavailable", "problems": problems}, ((b"retry-after", b"1"),))
        return Response.json(200, {"status": "ready", "queue_depth": service.intake.depth})

    def metrics(self, request: Request) -> Response:
        return Response(200, self.service.metrics.render(), CONTENT_TYPE.encode())

    def _plain_reject(self, request: Request, response: Response, key: str | None, reason: str) -> Response:
        metrics = self.service.metrics
        label = key or ""
        metrics.count(metrics.requests, label, str(response.status))
        if key is not None and reason in ("method", "size", "malformed"):
            metrics.count(metrics.rejected, key, reason)
        self._log(request, response.status, key, reason)
        return response

    def _logged(self, handler):
        """A reserved endpoint's answers go to the request log too (SPEC section 8: every request)."""
        def answer(request: Request):
            response = handler(request)
            if isinstance(response, PENDING):
                response.add_done_callback(lambda done: self._log(request, answered_status(done), None, None))
            else:
                self._log(request, response.status, None, None)
            return response
        return answer

    def _log(self, request: Request, status: int, key: str | None, reason: str | None) -> None:
        self.service.dispatcher.log_request(RequestLine(
            request.received_at, request.ip, request.method, request.path, key, status,
            reason, len(request.body), (time.time() - request.received_at) * 1000, request.request_id, None))


def _access_line(request: Request, status: int) -> None:
    route = request.route
    access_log.info("request", extra={
        "ip": request.ip, "method": request.method, "path": request.path, "status": status,
        "workflow": route.key if route is not None else None, "body_size": len(request.body),
        "duration_ms": round((time.time() - request.received_at) * 1000, 3), "request_id": request.request_id})
