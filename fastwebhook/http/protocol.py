"""HTTP/1.1 over asyncio: bytes in, `Request` out; `Response` (or a future of one) in, bytes out.

The protocol knows nothing of webhooks.  Limits are enforced in the parser callbacks and
answered from prebuilt responses; responses leave in request order whatever order they are
ready in, so pipelining is correct by construction.  No task is created per request: a response
that is not ready yet is a future (or an `Answer`, which calls back at once) whose callback
flushes the pipeline.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections import deque
from typing import Callable, Protocol as TypingProtocol

import httptools
from multidict import CIMultiDict

from .limits import (BAD_HOST, HEADERS_TOO_LARGE, MALFORMED, UNSUPPORTED_UPGRADE, VERSION_NOT_SUPPORTED,
                     Deadline, Limits, valid_host)
from .messages import PENDING, Answer, Request, Response

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# our own bug in a callback: the connection pays, never the process (limits.py has the others)
INTERNAL_ERROR = (Response.error(500, "internal error", close=True), "internal")
FAILED_ANSWER = Response.error(500, "internal error")   # our bug; the framing is intact: go on
NO_ANSWER = Response.error(503, "no answer in time", ((b"retry-after", b"1"),), close=True)
MAX_PIPELINE = 32           # responses waiting to go out before we stop reading
HEAD_SLACK = 1024           # raw head bytes allowed past max_header_size: request line, delimiters
_request_prefix = f"{os.getpid():x}-{os.urandom(3).hex()}-"
_request_counter = itertools.count(1)


class Application(TypingProtocol):
    def route(self, request: Request) -> None: ...
    def handle(self, request: Request) -> Response | asyncio.Future | Answer: ...
    def too_large(self, request: Request) -> Response: ...
    def connection_opened(self) -> None: ...
    def connection_closed(self) -> None: ...
    def internal_error(self, exc: BaseException | None) -> None: ...
    def refused(self, peer: str, target: bytes, status: int, reason: str, request_id: str) -> None: ...


class _Reject(Exception):
    """Raised inside a parser callback: answer with the refusal and close."""

    def __init__(self, refusal: tuple[Response, str | None]):
        self.refusal = refusal


class _Pending:
    """One request's place in the pipeline."""

    __slots__ = ("request_id", "keep_alive", "response", "head_only", "held")

    def __init__(self, request_id: bytes, keep_alive: bool, response, head_only: bool = False, held: bool = False):
        self.request_id = request_id
        self.keep_alive = keep_alive
        self.response = response
        self.head_only = head_only   # a HEAD request: headers as for GET, no content
        self.held = held             # the application holds it (no room yet): nothing more is read


class _Incoming:
    """The request being read, from its first byte to its last: the head as it arrives, then
    the `Request` and its body.  The connection holds one at a time (None between requests)."""

    __slots__ = ("url", "header_bytes", "raw_headers", "in_head", "head_began_in_chunk", "head_received",
                 "request", "chunks", "body_size")

    def __init__(self):
        self.url = b""
        self.header_bytes = 0
        self.raw_headers: list[tuple[str, str]] = []
        # httptools holds a header's name and value until the line ends, so `on_header` alone
        # cannot stop one endless header line: the raw bytes of an unfinished head are counted too.
        self.in_head = True
        self.head_began_in_chunk = True
        self.head_received = 0
        self.request: Request | None = None   # once the head is complete
        self.chunks: list[bytes] = []
        self.body_size = 0


class HttpProtocol(asyncio.Protocol):
    def __init__(self, app: Application, limits: Limits, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float]):
        self.app = app
        self.limits = limits
        self.loop = loop
        self.clock = clock
        # per connection
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.parser = httptools.HttpRequestParser(self)
        self.pipeline: deque[_Pending] = deque()
        self.closing = False
        self.reading_paused = False
        self.writing_paused = False
        self.held = 0                # requests in the pipeline the application holds
        self.max_header_size = limits.max_header_size
        self.read_timeout = limits.read_timeout
        self.tick = limits.tick
        self.incoming: _Incoming | None = None
        self.valid_host = ""         # the last Host found valid on this connection
        # timers: one handle, re-armed lazily to the nearest deadline
        self.deadline = 0.0
        self.deadline_kind: Deadline | None = None
        self.timer: asyncio.TimerHandle | None = None

    # -- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "unix"
        self.app.connection_opened()
        self._set_deadline(Deadline.IDLE, self.limits.keepalive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for pending in self.pipeline:
            if isinstance(pending.response, PENDING):
                pending.response.remove_done_callback(self._flush)
                if pending.held:   # nobody waits for it any more: it is never admitted
                    pending.response.cancel()
        self.pipeline.clear()
        self.app.connection_closed()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
            incoming = self.incoming
            if incoming is not None and incoming.in_head:
                self._count_head(incoming, len(data))
        except httptools.HttpParserUpgrade:
            self._refuse(UNSUPPORTED_UPGRADE)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._refuse(cause.refusal)
            else:  # our own bug: the connection pays, never the process
                self.app.internal_error(cause)
                self._refuse(INTERNAL_ERROR)
        except httptools.HttpParserError:
            self._refuse(MALFORMED)

    def eof_received(self) -> bool:
        """The client half-closed: it sends no more, but answers it is owed still go out
        (an accepted webhook must not look failed to its sender); then the connection closes."""
        if self.pipeline and not self.closing:
            self.pipeline[-1].keep_alive = False
            return True
        return False

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if len(self.pipeline) < MAX_PIPELINE and not self.held:
            self._resume_reading()

    # -- parser callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.incoming = _Incoming()
        # _set_deadline(READ) inlined: this runs for every request
        self.deadline_kind = Deadline.READ
        self.deadline = self.loop.time() + self.read_timeout
        if self.timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        incoming = self.incoming
        incoming.url += url
        incoming.header_bytes += len(url)
        if incoming.header_bytes > self.max_header_size:
            raise _Reject(HEADERS_TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Count and keep here (names lower-cased, as they are stored and shown); the multidict
        # is built once per request.
        incoming = self.incoming
        incoming.header_bytes += len(name) + len(value) + 4
        if incoming.header_bytes > self.max_header_size:
            raise _Reject(HEADERS_TOO_LARGE)
        incoming.raw_headers.append((name.lower().decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        incoming = self.incoming
        incoming.in_head = False
        parser = self.parser
        request = Request(parser.get_method().decode("latin-1"), incoming.url, self.peer, self.clock(),
                          new_request_id())
        incoming.request = request
        request.http_version = version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Reject(VERSION_NOT_SUPPORTED)
        request.header_list = incoming.raw_headers
        request.headers = headers = CIMultiDict(incoming.raw_headers)
        hosts = headers.getall("host", ())
        # RFC 9112 3.2: exactly one Host in HTTP/1.1 (at most one in 1.0), and a valid one
        if len(hosts) != 1:
            if hosts or version == "1.1":
                raise _Reject(BAD_HOST)
        elif hosts[0] != self.valid_host:   # a connection's requests name the same host: checked once
            if not valid_host(hosts[0]):
                raise _Reject(BAD_HOST)
            self.valid_host = hosts[0]
        coding = headers.get("transfer-encoding")
        if coding is not None and (version == "1.0" or coding.strip().lower() != "chunked"):
            # RFC 9112 6.1: in HTTP/1.0 the framing of such a message is faulty; and the parser
            # would frame "gzip, chunked" as chunked and hand over still-coded bytes.
            raise _Reject(MALFORMED)
        if parser.should_upgrade():
            # Upgrade (and CONNECT) would give the rest of the connection to another protocol:
            # refused before the request is handled, so it gets one answer and runs nothing.
            raise _Reject(UNSUPPORTED_UPGRADE)
        # HTTP/1.0 keep-alive would need "Connection: keep-alive" echoed; one request each is simpler.
        request.keep_alive = version == "1.1" and parser.should_keep_alive()
        expect = headers.get("expect")
        expect_continue = expect is not None and expect.lower() == "100-continue"
        self.app.route(request)
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > request.body_limit:
            raise _Reject(self._too_large(request))
        if expect_continue and request.http_version == "1.1":
            if not self.pipeline:  # later, and it would overtake an earlier response
                self.transport.write(CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        incoming = self.incoming
        incoming.body_size += len(chunk)
        if incoming.body_size > incoming.request.body_limit:
            raise _Reject(self._too_large(incoming.request))
        incoming.chunks.append(chunk)

    def on_message_complete(self) -> None:
        if self.closing:  # read in the same chunk as a request answered with close: never run it
            return
        incoming = self.incoming
        self.incoming = None
        request = incoming.request
        chunks = incoming.chunks
        request.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.deadline_kind = None
        response = self.app.handle(request)
        if not self.pipeline and not isinstance(response, PENDING):   # the common case
            self._send(request.request_id.encode(), request.keep_alive, request.method == "HEAD", response)
            return
        pending = _Pending(request.request_id.encode(), request.keep_alive, response,
                           request.method == "HEAD", request.held)
        self.pipeline.append(pending)
        if pending.held:   # not read on until the application lets it in (or refuses it)
            self.held += 1
            self._pause_reading()
        if isinstance(response, PENDING):   # its callback flushes: nothing behind it goes out before
            # (the deadline first: an Answer given already flushes in add_done_callback itself)
            self._set_deadline(Deadline.ANSWER, self.limits.answer_timeout)
            response.add_done_callback(self._flush)
        else:
            self._flush()
        if len(self.pipeline) >= MAX_PIPELINE:
            self._pause_reading()

    def _count_head(self, incoming: _Incoming, received: int) -> None:
        """After a chunk was parsed with a head still open: a head that began in this chunk
        holds an unknown part of it, one that began earlier holds all of it."""
        if incoming.head_began_in_chunk:
            incoming.head_began_in_chunk = False
            return
        incoming.head_received += received
        if incoming.head_received > self.limits.max_header_size + HEAD_SLACK:
            self._refuse(HEADERS_TOO_LARGE)

    # -- output -------------------------------------------------------------------------------
    def _flush(self, _future=None) -> None:
        pipeline = self.pipeline
        while pipeline and not self.closing:
            head = pipeline[0].response
            if isinstance(head, PENDING):
                if not head.done():
                    break
                head = self._answer_of(head)
            pending = pipeline.popleft()
            self.held -= pending.held
            self._send(pending.request_id, pending.keep_alive, pending.head_only, head)
        # below the high-water mark again, unless a refusal waits at the end or a request is
        # held: then nothing more is read
        if self.reading_paused and len(pipeline) < MAX_PIPELINE and not self.writing_paused and not self.held \
                and not (pipeline and isinstance(pipeline[-1].response, _Raw)):
            self._resume_reading()

    def _answer_of(self, future: asyncio.Future | Answer) -> Response:
        """A finished future's response; one that failed is our bug: 500, and the log says why."""
        try:
            response = future.result()
        except asyncio.CancelledError:
            return Response.error(503, "shutting down", ((b"retry-after", b"1"),))
        except BaseException as error:  # noqa: BLE001 (whatever it failed with is our bug)
            self.app.internal_error(error)
            return FAILED_ANSWER
        if not isinstance(response, Response):
            self.app.internal_error(TypeError(f"a handler answered {response!r}, not a Response"))
            return FAILED_ANSWER
        return response

    def _give_up(self) -> None:
        """The answer deadline passed: what is ready goes out, the late one gets 503, then close."""
        pipeline = self.pipeline
        while pipeline and not self.closing:
            pending = pipeline.popleft()
            self.held -= pending.held
            head = pending.response
            if isinstance(head, PENDING):
                head.remove_done_callback(self._flush)
                head = self._answer_of(head) if head.done() else NO_ANSWER
            self._send(pending.request_id, pending.keep_alive, pending.head_only, head)
        if not self.closing:
            self._close()

    def _send(self, request_id: bytes, keep_alive: bool, head_only: bool, response: Response) -> None:
        if self.closing:
            return
        keep_alive = keep_alive and not response.close
        data = response.encode(request_id, keep_alive)
        if head_only and response.body:
            # RFC 9110 9.3.2: content after a HEAD answer would be read as the next response
            data = data[:-len(response.body)]
        self.transport.write(data)
        if not keep_alive:
            self._close()
        elif not self.pipeline and self.incoming is None and self.deadline_kind in (None, Deadline.ANSWER):
            self._set_deadline(Deadline.IDLE, self.limits.keepalive_timeout)

    def _too_large(self, request: Request) -> tuple[Response, None]:
        # the application logs and counts this one itself: it knows the workflow
        return self.app.too_large(request), None

    def _refuse(self, refusal: tuple[Response, str | None]) -> None:
        """Answer a broken request after the good ones before it, then close.  It carries the
        id of the request it refuses, or a new one when the head never parsed."""
        if self.closing:  # the parser choked on bytes after an answer that closed the connection
            return
        response, reason = refusal
        incoming = self.incoming
        request = incoming.request if incoming is not None else None
        request_id = request.request_id if request is not None else new_request_id()
        if reason is not None:
            self.app.refused(self.peer, incoming.url if incoming is not None else b"", response.status, reason,
                             request_id)
        answer = response.encode(request_id.encode(), False)
        self._pause_reading()
        if not self.pipeline:
            self.transport.write(answer)
            self._close()
            return
        self.pipeline.append(_Pending(request_id.encode(), False, _Raw(answer)))
        self._flush()

    def _close(self) -> None:
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport.close()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and not self.closing:
            self.reading_paused = False
            self.transport.resume_reading()

    # -- deadlines ----------------------------------------------------------------------------
    def _set_deadline(self, kind: Deadline, seconds: float) -> None:
        """Setting a deadline is an assignment; the one timer wakes at least every `tick`
        seconds while a deadline is set, so it is never late for a deadline set after it."""
        self.deadline_kind = kind
        self.deadline = self.loop.time() + seconds
        if self.timer is None:
            self._arm()

    def _arm(self) -> None:
        self.timer = self.loop.call_at(min(self.deadline, self.loop.time() + self.tick), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.deadline_kind is None or self.closing:
            return
        now = self.loop.time()
        if now >= self.deadline:
            if self.deadline_kind == Deadline.ANSWER:
                self._give_up()
            else:  # a request still arriving, or a quiet keep-alive connection: just drop it
                self._close()
        else:
            self._arm()


def new_request_id() -> str:
    return f"{_request_prefix}{next(_request_counter):x}"


class _Raw(Response):
    """Bytes encoded already, written as they are."""

    def __init__(self, data: bytes):
        super().__init__(0, close=True)
        self.data = data

    def encode(self, request_id: bytes, keep_alive: bool) -> bytes:
        return self.data
