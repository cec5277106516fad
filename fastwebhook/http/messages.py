"""Requests as the protocol hands them over, and responses as the bytes that go out."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_plus

import orjson
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict

REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {phrase}\r\n".encode() for code, phrase in REASONS.items()}
JSON = b"application/json"
_HEADER_LINE = b"\r\n%s: %s"   # % (name, value)
NO_HEADERS = CIMultiDictProxy(CIMultiDict())
log = logging.getLogger("fastwebhook.http")


class Request:
    """One parsed HTTP request.  `body` is the bytes that arrived (one chunk: that very object)."""

    __slots__ = ("method", "target", "path", "query_string", "headers", "header_list", "body", "http_version",
                 "keep_alive", "peer", "ip", "received_at", "request_id", "route", "params", "body_limit",
                 "held")

    def __init__(self, method: str, target: bytes, peer: str, received_at: float, request_id: str):
        self.method = method
        self.target = target
        if not target.startswith(b"/") and target[:4].lower() == b"http":
            target = origin_form(target)
        path, _, query = target.partition(b"?")
        self.path = path.decode("latin-1")
        self.query_string = query
        self.headers: CIMultiDictProxy[str] = NO_HEADERS   # the protocol sets both once the head is read
        self.header_list: list[tuple[str, str]] = []      # as received, names lower-cased
        self.body = b""
        self.http_version = "1.1"
        self.keep_alive = True
        self.peer = peer          # the socket's peer
        self.ip = peer            # the client: the peer, or who a trusted proxy says it forwards
        self.received_at = received_at
        self.request_id = request_id
        self.route = None
        self.params: dict[str, str] = {}
        self.body_limit = 0
        self.held = False         # waiting at the door for room in the queue: its connection is not read


def origin_form(target: bytes) -> bytes:
    """RFC 9112 3.2.2: a server accepts the absolute form ("http://host/path?q") and routes on
    its path and query; the authority is the Host's business, which we do not route on."""
    scheme, separator, rest = target.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return target
    path_start = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    path = rest[path_start:]
    return path if path.startswith(b"/") else b"/" + path


class Response:
    __slots__ = ("status", "body", "content_type", "headers", "close")

    def __init__(self, status: int, body: bytes = b"", content_type: bytes = JSON,
                 headers: tuple[tuple[bytes, bytes], ...] = (), close: bool = False):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.close = close

    @classmethod
    def json(cls, status: int, value: Any, headers: tuple[tuple[bytes, bytes], ...] = (),
             close: bool = False) -> "Response":
        return cls(status, orjson.dumps(value), JSON, headers, close)

    @classmethod
    def error(cls, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = (),
              close: bool = False, **extra: Any) -> "Response":
        return cls.json(status, {"error": message, **extra}, headers, close)

    def encode(self, request_id: bytes, keep_alive: bool) -> bytes:
        """Status line, headers and body as one bytes object: one write, one syscall."""
        status_line = _STATUS_LINES.get(self.status) or f"HTTP/1.1 {self.status} Unknown\r\n".encode()
        extra = b"".join(map(_HEADER_LINE.__mod__, self.headers)) if self.headers else b""
        body = self.body
        return b"".join((status_line, b"content-type: ", self.content_type, b"\r\ncontent-length: ",
                         str(len(body)).encode(), b"\r\nx-request-id: ", request_id, extra,
                         b"\r\n\r\n" if keep_alive and not self.close else b"\r\nconnection: close\r\n\r\n",
                         body))


class Prepared(Response):
    """A hot path's response, its bytes made when it is: `head` is everything up to the
    x-request-id value, `tail` all after it, as `Response.encode` would make them."""

    __slots__ = ("head", "tail")

    def __init__(self, status: int, body: bytes, head: bytes, tail: bytes):
        super().__init__(status, body)
        self.head = head
        self.tail = tail

    @staticmethod
    def head_of(status: int, content_type: bytes, length: int) -> bytes:
        """What `Response.encode` starts with, up to the x-request-id value."""
        return b"".join((_STATUS_LINES[status], b"content-type: ", content_type, b"\r\ncontent-length: ",
                         str(length).encode(), b"\r\nx-request-id: "))

    def encode(self, request_id: bytes, keep_alive: bool) -> bytes:
        if keep_alive:
            return b"".join((self.head, request_id, self.tail))
        end = self.tail.index(b"\r\n\r\n")   # of the headers: "connection: close" goes before it
        return b"".join((self.head, request_id, self.tail[:end], b"\r\nconnection: close", self.tail[end:]))


class Answer:
    """A Response to come, given once: what an acceptance waits for while its commit runs.

    An asyncio future's callbacks wait for the loop's next turn; these run the moment it is
    given, so an acknowledgement leaves with the commit that decided it, without a turn of the
    loop per request.  It has the part of a future's interface the protocol and the door use,
    so either stands for a response not ready yet (`PENDING`); it is not awaitable."""

    __slots__ = ("_response", "_cancelled", "_callbacks")

    def __init__(self):
        self._response: Response | None = None
        self._cancelled = False
        self._callbacks: list = []

    def done(self) -> bool:
        return self._response is not None or self._cancelled

    def cancelled(self) -> bool:
        return self._cancelled

    def result(self) -> Response:
        if self._cancelled:
            raise asyncio.CancelledError()
        if self._response is None:
            raise asyncio.InvalidStateError("the answer is not given yet")
        return self._response

    def exception(self) -> None:
        if self._cancelled:
            raise asyncio.CancelledError()
        return None

    def set_result(self, response: Response) -> None:
        if self.done():
            raise asyncio.InvalidStateError("the answer was given already")
        self._response = response
        self._run()

    def cancel(self) -> bool:
        if self.done():
            return False
        self._cancelled = True
        self._run()
        return True

    def add_done_callback(self, callback) -> None:
        if self.done():
            _call(callback, self)
        else:
            self._callbacks.append(callback)

    def remove_done_callback(self, callback) -> int:
        kept = [c for c in self._callbacks if c != callback]
        removed = len(self._callbacks) - len(kept)
        self._callbacks = kept
        return removed

    def _run(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, self)


def _call(callback, answer: Answer) -> None:
    """As the loop runs a future's callback: a failing one is logged, the others still run."""
    try:
        callback(answer)
    except Exception:  # noqa: BLE001
        log.exception("an answer's callback failed")


# what stands for a response not ready yet: the protocol and the door take either
PENDING = (asyncio.Future, Answer)


def answered_status(done: asyncio.Future | Answer) -> int:
    """The status a finished future of a Response answered with (for the request log)."""
    if done.cancelled():
        return 503
    return 500 if done.exception() is not None else done.result().status


def parse_query(query: str | bytes) -> MultiDict[str]:
    """The one query parser: names and values unquoted (`+` is a space), blank values kept,
    repeats kept in order.  Unquoting is skipped for fields with nothing to unquote, which is
    most of what senders send."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    pairs = []
    for field in query.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in field or "+" in field:
            name, value = unquote_plus(name), unquote_plus(value)
        pairs.append((name, value))
    return MultiDict(pairs)
