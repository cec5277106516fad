"""The HTTP protocol fed hostile bytes.

Two levels (STYLE practice 9): `HttpProtocol` driven directly with a fake transport, a fake
loop whose clock only moves when told, and a stub application (the edge of the protocol under
test: it answers fixed Responses, or futures resolved later); and the real server over real
sockets.  Whatever arrives, nothing raises out of `data_received`, no answer is written after
close, answers leave in request order, and a valid request is still answered afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import deque

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastwebhook.http.messages import Answer, Prepared, Response
from fastwebhook.http.protocol import HttpProtocol, Limits
from conftest import base_config
from wait_support import wait_for

LIMITS = Limits(max_header_size=2048, max_body_size=4096, read_timeout=5.0, keepalive_timeout=10.0)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


# --- the fakes --------------------------------------------------------------------------------

class FakeTimer:
    def __init__(self, when: float, callback, args):
        self.when, self.callback, self.args = when, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just what the protocol and an asyncio.Future ask of a loop; time moves by `advance`."""

    def __init__(self):
        self.now = 1000.0
        self.timers: list[FakeTimer] = []
        self.ready: deque = deque()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback, *args, context=None) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        self.timers.append(timer)
        return timer

    def call_soon(self, callback, *args, context=None) -> None:
        self.ready.append((callback, args))

    def get_debug(self) -> bool:
        return False

    def run_ready(self) -> None:
        while self.ready:
            callback, args = self.ready.popleft()
            callback(*args)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing due timers in order (those they set too)."""
        target = self.now + seconds
        while True:
            due = sorted((t for t in self.timers if not t.cancelled and t.when <= target), key=lambda t: t.when)
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback(*timer.args)
            self.run_ready()
        self.now = target


class FakeTransport:
    def __init__(self):
        self.data = b""
        self.closed = False
        self.paused = False
        self.writes_after_close = 0
        self.pauses = 0
        self.resumes = 0

    def write(self, data: bytes) -> None:
        if self.closed:
            self.writes_after_close += 1
        self.data += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False
        self.resumes += 1

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 50000) if name == "peername" else default


class StubApp:
    """The edge of the protocol: `/later` answers with a future resolved by the test, `/given`
    with an `Answer` the test gives (`/given-at-once`: given before the protocol has it),
    `/small` has a 64-byte body limit, anything else a 202 at once."""

    def __init__(self, loop: FakeLoop):
        self.loop = loop
        self.handled = []
        self.pending: list[asyncio.Future] = []
        self.answers: list[Answer] = []
        self.errors: list = []
        self.refusals: list = []
        self.open = 0

    def route(self, request) -> None:
        request.body_limit = 64 if request.path == "/small" else LIMITS.max_body_size

    def handle(self, request):
        self.handled.append(request)
        if request.path == "/later":
            future = asyncio.Future(loop=self.loop)
            self.pending.append(future)
            return future
        if request.path.startswith("/given"):
            answer = Answer()
            self.answers.append(answer)
            if request.path == "/given-at-once":
                answer.set_result(Response.json(201, {"given": "at once"}))
            return answer
        return Response.json(202, {"n": len(self.handled), "body": request.body.decode("latin-1")})

    def too_large(self, request) -> Response:
        return Response.error(413, "too large", close=True)

    def connection_opened(self) -> None:
        self.open += 1

    def connection_closed(self) -> None:
        self.open -= 1

    def internal_error(self, exc) -> None:
        self.errors.append(exc)

    def refused(self, peer: str, target: bytes, status: int, reason: str, request_id: str) -> None:
        self.refusals.append((status, reason))

    def resolve(self, future: asyncio.Future) -> None:
        if not future.done():
            future.set_result(Response.json(200, {"later": True}))
        self.loop.run_ready()


def connect(app: StubApp) -> tuple[HttpProtocol, FakeTransport]:
    protocol = HttpProtocol(app, LIMITS, app.loop, lambda: app.loop.now)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


def responses(data: bytes, head_ids: frozenset[str] | None = frozenset()) -> list[tuple[int, dict, bytes]]:
    """Parse what the protocol wrote: interim 100s dropped, every final answer complete.

    An answer to a HEAD request (its id in `head_ids`) has a Content-Length but no content;
    `head_ids=None` when the ids are unknown: an answer directly followed by the next one, or
    by the end, is then taken for one."""
    out = []
    offset = 0
    while offset < len(data):
        if data.startswith(CONTINUE, offset):
            offset += len(CONTINUE)
            continue
        head_end = data.index(b"\r\n\r\n", offset)
        lines = data[offset:head_end].decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        if head_ids is None:
            rest = data[head_end + 4:]
            if not rest or rest.startswith(b"HTTP/1.1 "):
                length = 0
        elif headers["x-request-id"] in head_ids:
            length = 0
        body = data[head_end + 4:head_end + 4 + length]
        assert len(body) == length, "a truncated answer was written"
        out.append((int(lines[0].split(" ")[1]), headers, body))
        offset = head_end + 4 + length
    return out


def feed(protocol: HttpProtocol, transport: FakeTransport, app: StubApp, chunks: list[bytes],
         rng: random.Random) -> None:
    """Deliver chunks as a transport would: nothing while reading is paused, nothing after close.
    Between chunks some pending answers become ready, in any order."""
    for chunk in chunks:
        if transport.closed:
            break
        while transport.paused and not transport.closed:
            open_futures = [f for f in app.pending if not f.done()]
            if not open_futures:
                break
            app.resolve(rng.choice(open_futures))
        if transport.paused:
            break
        protocol.data_received(chunk)
        for future in list(app.pending):
            if not future.done() and rng.random() < 0.3:
                app.resolve(future)


def finish(protocol: HttpProtocol, transport: FakeTransport, app: StubApp) -> None:
    """Resolve what is left, then the peer goes away; checks the invariants of one connection."""
    for future in app.pending:
        app.resolve(future)
    protocol.connection_lost(None)
    assert app.errors == [], f"our own code raised inside a parser callback: {app.errors!r}"
    assert transport.writes_after_close == 0
    written = responses(transport.data, head_ids(app))
    handled_ids = [r.request_id for r in app.handled]
    answered_ids = [headers["x-request-id"] for _, headers, _ in written]
    # in request order; at most one refusal (id "-") and it comes last
    assert answered_ids[:len(handled_ids)] == handled_ids[:len(answered_ids)]
    refusals = [i for i, rid in enumerate(answered_ids) if rid not in handled_ids]
    assert refusals in ([], [len(answered_ids) - 1])
    assert len(written) <= len(app.handled) + 1


def head_ids(app: StubApp) -> frozenset[str]:
    return frozenset(r.request_id for r in app.handled if r.method == "HEAD")


def assert_answers_a_valid_request(app: StubApp) -> None:
    protocol, transport = connect(app)
    before = len(app.handled)
    protocol.data_received(VALID["post"])
    assert len(app.handled) == before + 1
    [(status, headers, body)] = responses(transport.data)
    assert status == 202
    assert orjson.loads(body)["body"] == "{}"
    assert not transport.closed
    protocol.connection_lost(None)


# --- inputs -----------------------------------------------------------------------------------

def _post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


VALID = {
    "post": _post(b"/hook", b"{}"),
    "post-query": _post(b"/hook?a=1&a=2", b'{"a": [1, 2, 3]}'),
    "later": _post(b"/later", b'{"x": 1}'),
    "small": _post(b"/small", b"{}"),
    "get": b"GET /hook HTTP/1.1\r\nHost: h\r\n\r\n",
    "head": b"HEAD /hook HTTP/1.1\r\nHost: h\r\n\r\n",
    "chunked": (b"POST /hook HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\n{\"a\r\n5\r\n\": 1}\r\n0\r\n\r\n"),
    "expect": _post(b"/hook", b'{"e": 1}', b"Expect: 100-continue\r\n"),
    "http10": b"POST /hook HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
    "close": _post(b"/hook", b"{}", b"Connection: close\r\n"),
    "too-large": _post(b"/small", b"x" * 100),
}
KEEP_ALIVE = [name for name in VALID if name not in ("http10", "close", "too-large")]

request_names = st.sampled_from(list(VALID))
random_bytes = st.binary(max_size=3000)
hostile_bytes = st.lists(st.sampled_from([
    b"\r\n", b"\n", b"\r", b":", b" ", b"\t", b"\x00", b"\xff", b"0", b"9", b"F", b"-", b";", b",",
    b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n", b"Content-Length: 99999\r\n",
    b"Expect: 100-continue\r\n", b"Connection: close\r\n", b"Upgrade: websocket\r\nConnection: upgrade\r\n",
    b"HTTP/1.0", b"HTTP/1.1", b"HTTP/2.0", b"GET / HTTP/1.1\r\n\r\n", b"0\r\n\r\n",
]), max_size=6).map(b"".join) | st.binary(min_size=1, max_size=8)


@st.composite
def mutated_requests(draw) -> bytes:
    data = bytearray(b"".join(VALID[name] for name in draw(st.lists(request_names, min_size=1, max_size=4))))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        at = draw(st.integers(0, len(data)))
        if kind == "insert":
            data[at:at] = draw(hostile_bytes)
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def split(draw, data: bytes) -> list[bytes]:
    """`data` cut at random points into the pieces data_received gets."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


# --- the protocol, fed bytes --------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(data=st.data(), payload=random_bytes)
def test_random_bytes_never_raise(data, payload):
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    feed(protocol, transport, app, data.draw(split(payload)), random.Random(data.draw(st.integers())))
    finish(protocol, transport, app)
    assert_answers_a_valid_request(app)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), payload=mutated_requests())
def test_mutated_requests_never_raise(data, payload):
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    feed(protocol, transport, app, data.draw(split(payload)), random.Random(data.draw(st.integers())))
    if data.draw(st.booleans(), label="half-close") and not transport.closed:
        if not protocol.eof_received():
            transport.close()  # what a transport does when the protocol does not keep it open
    app.loop.advance(LIMITS.read_timeout + LIMITS.keepalive_timeout)  # deadlines fire too
    finish(protocol, transport, app)
    assert_answers_a_valid_request(app)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), names=st.lists(st.sampled_from(KEEP_ALIVE), min_size=1, max_size=12))
def test_a_valid_pipeline_split_anywhere_is_answered_in_order(data, names):
    payload = b"".join(VALID[name] for name in names)
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    feed(protocol, transport, app, data.draw(split(payload)), random.Random(data.draw(st.integers())))
    for future in app.pending:  # and the rest become ready in any order
        app.resolve(future)
    written = responses(transport.data, head_ids(app))
    assert [r.request_id for r in app.handled] == [h["x-request-id"] for _, h, _ in written]
    expected = {"later": 200, "get": 202, "head": 202}
    assert [status for status, _, _ in written] == [expected.get(name, 202) for name in names]
    for name, (_, _, body), request in zip(names, written, app.handled):
        if name == "head":
            assert body == b""
        elif name != "later":
            assert orjson.loads(body)["body"] == request.body.decode("latin-1")
    assert [r.body for r in app.handled] == [_body_of(name) for name in names]
    assert transport.data.count(CONTINUE) <= names.count("expect")
    assert not transport.closed and not transport.paused
    finish(protocol, transport, app)


def _body_of(name: str) -> bytes:
    return {"post": b"{}", "post-query": b'{"a": [1, 2, 3]}', "later": b'{"x": 1}', "small": b"{}",
            "get": b"", "head": b"", "chunked": b'{"a": 1}', "expect": b'{"e": 1}'}[name]


def test_pipeline_backpressure_pauses_and_resumes_reading():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["later"] * 40)
    assert transport.paused
    assert transport.data == b""
    for future in app.pending[:-1]:
        app.resolve(future)
    assert not transport.paused
    assert len(responses(transport.data)) == 39
    app.resolve(app.pending[-1])
    assert len(responses(transport.data)) == 40
    finish(protocol, transport, app)


def test_answers_wait_for_the_one_before_them():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["later"] + VALID["post"] + VALID["later"] + VALID["post"])
    assert transport.data == b""  # the 202s are ready, but the first answer is not
    app.resolve(app.pending[1])
    assert transport.data == b""
    app.resolve(app.pending[0])
    assert [s for s, _, _ in responses(transport.data)] == [200, 202, 200, 202]
    finish(protocol, transport, app)


def test_a_refusal_waits_for_the_answers_before_it():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["later"] + VALID["post"] + b"NOT HTTP\r\n\r\n" + VALID["post"])
    assert transport.data == b"" and not transport.closed and transport.paused
    app.resolve(app.pending[0])
    assert [s for s, _, _ in responses(transport.data)] == [200, 202, 400]
    assert transport.closed
    assert len(app.handled) == 2
    finish(protocol, transport, app)


def test_a_head_line_without_end_is_refused_at_the_limit():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(b"POST /hook HTTP/1.1\r\nX-Endless: ")
    for _ in range(4):
        if transport.closed:
            break
        protocol.data_received(b"v" * 1024)
    assert [s for s, _, _ in responses(transport.data)] == [431]
    assert transport.closed
    finish(protocol, transport, app)


def test_a_head_up_to_the_limit_in_small_pieces_is_accepted():
    header = b"X-Fill: " + b"f" * (LIMITS.max_header_size - 200) + b"\r\n"
    payload = b"POST /hook HTTP/1.1\r\nHost: h\r\n" + header + b"Content-Length: 2\r\n\r\n{}"
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    for i in range(0, len(payload), 10):
        protocol.data_received(payload[i:i + 10])
    assert [s for s, _, _ in responses(transport.data)] == [202]
    finish(protocol, transport, app)


# --- deadlines, on the fake clock ---------------------------------------------------------------

def test_idle_connection_closes_at_the_keepalive_deadline():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    app.loop.advance(LIMITS.keepalive_timeout - 0.1)
    assert not transport.closed
    app.loop.advance(0.2)
    assert transport.closed and transport.data == b""
    finish(protocol, transport, app)


def test_a_request_that_never_completes_is_dropped_at_the_read_deadline():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    app.loop.advance(1.0)
    protocol.data_received(VALID["post"][:-1])
    app.loop.advance(LIMITS.read_timeout - 0.1)
    assert not transport.closed
    protocol.data_received(b"")  # more (empty) data does not push the deadline back
    app.loop.advance(0.2)
    assert transport.closed
    assert transport.data == b"" and app.handled == []
    finish(protocol, transport, app)


def test_read_deadline_counts_from_the_start_of_the_request_not_each_byte():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    payload = VALID["post"]
    for byte in payload[:-1]:
        protocol.data_received(bytes([byte]))
        app.loop.advance(0.1)
        if transport.closed:
            break
    assert transport.closed
    assert app.loop.now - 1000.0 <= LIMITS.read_timeout + 0.2
    finish(protocol, transport, app)


def test_keepalive_deadline_restarts_after_each_answer():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    for _ in range(5):
        app.loop.advance(LIMITS.keepalive_timeout * 0.8)
        protocol.data_received(VALID["post"])
        assert not transport.closed
    app.loop.advance(LIMITS.keepalive_timeout + 0.1)
    assert transport.closed
    assert len(responses(transport.data)) == 5
    finish(protocol, transport, app)


def test_no_deadline_while_an_answer_is_being_prepared():
    """A slow (sync-mode) answer is ours to wait for, not the client's fault."""
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["later"])
    app.loop.advance(LIMITS.keepalive_timeout * 5)
    assert not transport.closed
    app.resolve(app.pending[0])
    assert [s for s, _, _ in responses(transport.data)] == [200]
    app.loop.advance(LIMITS.keepalive_timeout + 0.1)
    assert transport.closed
    finish(protocol, transport, app)


def test_a_response_future_that_fails_is_answered_500_and_the_connection_goes_on_in_order():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["later"] + VALID["post"])
    app.pending[0].set_exception(RuntimeError("a bug in a handler"))
    app.loop.run_ready()
    assert [s for s, _, _ in responses(transport.data)] == [500, 202]
    assert [str(e) for e in app.errors] == ["a bug in a handler"], "the application was told why"
    app.errors.clear()
    protocol.data_received(VALID["post"])
    assert [s for s, _, _ in responses(transport.data)] == [500, 202, 202], "the connection goes on"
    finish(protocol, transport, app)


def test_an_answer_that_never_comes_gets_503_at_the_answer_deadline():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["post"] + VALID["later"])
    app.loop.advance(LIMITS.answer_timeout - 1)
    assert [s for s, _, _ in responses(transport.data)] == [202] and not transport.closed
    app.loop.advance(2)
    assert [s for s, _, _ in responses(transport.data)] == [202, 503]
    assert transport.closed
    app.resolve(app.pending[0])  # too late: nothing more is written
    assert transport.writes_after_close == 0
    finish(protocol, transport, app)


@pytest.mark.parametrize("head, status", [
    (b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400),                       # no Host in 1.1
    (b"POST /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n", 400),  # two
    (b"POST /x HTTP/1.1\r\nHost: a b\r\nContent-Length: 0\r\n\r\n", 400),             # invalid
    (b"POST /x HTTP/1.1\r\nHost: a/b\r\nContent-Length: 0\r\n\r\n", 400),
    (b"POST /x HTTP/1.0\r\nHost: a\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 400),  # two, 1.0
    (b"POST /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 202),                        # 1.0 may omit it
    (b"POST /x HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 0\r\n\r\n", 202),
    (b"POST /x HTTP/1.1\r\nHost: hooks.example.com:443\r\nContent-Length: 0\r\n\r\n", 202),
    (b"POST /x HTTP/1.1\r\nHost: \r\nContent-Length: 0\r\n\r\n", 202),               # empty is valid
])
def test_host_header_rules_of_rfc_9112_section_3_2(head, status):
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(head)
    answers = responses(transport.data)
    assert [s for s, _, _ in answers] == [status]
    if status == 400:
        assert b"Host" in answers[0][2] and transport.closed and app.handled == []
    finish(protocol, transport, app)


def test_half_close_keeps_the_connection_for_the_answers_owed():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["later"] + VALID["post"] + VALID["later"])
    assert protocol.eof_received() is True
    app.resolve(app.pending[0])
    assert not transport.closed
    app.resolve(app.pending[1])
    assert [s for s, _, _ in responses(transport.data)] == [200, 202, 200]
    assert responses(transport.data)[-1][1]["connection"] == "close"
    assert transport.closed
    finish(protocol, transport, app)


def test_half_close_with_nothing_owed_closes():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["post"] + VALID["post"][:10])
    assert protocol.eof_received() is False
    assert len(responses(transport.data)) == 1


def test_connection_lost_with_answers_pending_drops_them_quietly():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["later"] * 3)
    protocol.connection_lost(ConnectionResetError())
    for future in app.pending:
        app.resolve(future)
    assert transport.data == b""
    assert app.open == 0 and app.errors == []


GIVEN = _post(b"/given", b"{}")


def test_an_answer_goes_out_the_moment_it_is_given_with_those_behind_it():
    """No turn of the loop between an Answer's commit and its bytes (a future waits for one)."""
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(GIVEN + VALID["post"])
    assert transport.data == b""
    app.answers[0].set_result(Response.json(200, {"given": True}))
    assert not app.loop.ready, "nothing was left for the loop to run"
    assert [(s, b) for s, _, b in responses(transport.data)] == [(200, b'{"given":true}'), (202, b'{"n":2,"body":"{}"}')]
    finish(protocol, transport, app)


def test_an_answer_given_before_the_protocol_has_it_goes_out_and_the_keepalive_deadline_follows():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(_post(b"/given-at-once", b"{}"))
    assert [s for s, _, _ in responses(transport.data)] == [201]
    app.loop.advance(LIMITS.keepalive_timeout + 0.1)   # idle, not an answer owed: closed quietly
    assert transport.closed
    assert [s for s, _, _ in responses(transport.data)] == [201]


def test_an_answer_never_given_gets_503_at_the_answer_deadline_and_a_late_one_is_dropped():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(VALID["post"] + GIVEN)
    app.loop.advance(LIMITS.answer_timeout + 1)
    assert [s for s, _, _ in responses(transport.data)] == [202, 503]
    assert transport.closed
    app.answers[0].set_result(Response.json(200, {"late": True}))
    assert transport.writes_after_close == 0
    finish(protocol, transport, app)


def test_connection_lost_with_answers_owed_drops_them_quietly():
    app = StubApp(FakeLoop())
    protocol, transport = connect(app)
    protocol.data_received(GIVEN * 3)
    protocol.connection_lost(ConnectionResetError())
    for answer in app.answers:
        answer.set_result(Response.json(200, {}))
    assert transport.data == b""
    assert app.open == 0 and app.errors == []


def test_an_answer_runs_its_callbacks_in_order_and_one_that_fails_stops_none(caplog):
    answer, calls = Answer(), []

    def failing(done):
        calls.append("failing")
        raise RuntimeError("a bug in a callback")

    answer.add_done_callback(lambda done: calls.append(("first", done.result().status)))
    answer.add_done_callback(failing)
    answer.add_done_callback(lambda done: calls.append("last"))
    removed = Answer()
    removed.add_done_callback(failing)
    assert removed.remove_done_callback(failing) == 1
    with caplog.at_level(logging.ERROR, logger="fastwebhook.http"):
        answer.set_result(Response(204))
        removed.set_result(Response(204))
    assert calls == [("first", 204), "failing", "last"]
    assert "a bug in a callback" in caplog.text
    with pytest.raises(asyncio.InvalidStateError):
        answer.set_result(Response(200))
    answer.add_done_callback(lambda done: calls.append("after"))   # done already: at once
    assert calls[-1] == "after"
    assert answer.cancel() is False and not answer.cancelled()


def test_a_cancelled_answer_says_so_as_a_future_would():
    answer, seen = Answer(), []
    assert not answer.done()
    with pytest.raises(asyncio.InvalidStateError):
        answer.result()
    answer.add_done_callback(lambda done: seen.append(done.cancelled()))
    assert answer.cancel() is True
    assert seen == [True] and answer.done()
    for read in (answer.result, answer.exception):
        with pytest.raises(asyncio.CancelledError):
            read()


@pytest.mark.parametrize("keep_alive", [True, False])
def test_a_prepared_response_is_the_bytes_response_encode_makes(keep_alive):
    body = b'{"execution_id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","status":"queued"}'
    tail = b"\r\nx-execution-id: 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\r\n\r\n" + body
    prepared = Prepared(202, body, Prepared.head_of(202, b"application/json", len(body)), tail)
    generic = Response(202, body, headers=((b"x-execution-id", b"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),))
    assert prepared.encode(b"req-1", keep_alive) == generic.encode(b"req-1", keep_alive)


# --- the real server, over real sockets ---------------------------------------------------------

SERVER_CONFIG = base_config(server="""
max_header_size = "2KiB"
max_body_size = "4KiB"
read_timeout = "1s"
keepalive_timeout = "1s"
""") + """
[workflows.hook]
path = "/hook"

[workflows.later]
path = "/later"
mode = "sync"

[workflows.small]
path = "/small"
max_body_size = "64"
"""

real_inputs = st.one_of(mutated_requests(), random_bytes)


@pytest.fixture
def fuzz_server(serve):
    return serve(SERVER_CONFIG)


def test_real_server_survives_random_and_mutated_requests(fuzz_server, caplog):
    caplog.set_level(logging.ERROR)
    running = fuzz_server
    answered: list[int] = []

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.data(), payload=real_inputs)
    def exchange(data, payload):
        chunks = data.draw(split(payload))
        with socket.create_connection((running.host, running.port), timeout=3) as sock:
            try:
                for chunk in chunks:
                    sock.sendall(chunk)
                sock.shutdown(socket.SHUT_WR)  # no more: the server need not wait for a deadline
            except OSError:  # it may have answered and closed already
                pass
            received = b""
            while True:
                try:
                    piece = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not piece:
                    break
                received += piece
        answered.append(len(responses(received, head_ids=None)))  # whatever came back is whole answers

    exchange()
    assert len(answered) >= 200 and sum(answered) > 100
    assert running.thread.is_alive()
    with socket.create_connection((running.host, running.port), timeout=5) as sock:
        sock.sendall(VALID["post"])
        received = b""
        while b"\r\n\r\n" not in received or not responses_complete(received):
            piece = sock.recv(65536)
            assert piece, received
            received += piece
    [(status, headers, body)] = responses(received)
    assert status == 202 and orjson.loads(body)["status"] == "queued"
    wait_for(lambda: running.server.service.metrics.connections_open == 0, 3, step=0.01,
             failure="a connection stayed open")
    internal = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert internal == [], internal


def responses_complete(data: bytes) -> bool:
    try:
        responses(data)
    except (ValueError, AssertionError):
        return False
    return True
