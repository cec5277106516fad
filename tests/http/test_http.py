"""HTTP/1.1 over real sockets (SPEC section 4): keep-alive, pipelining, chunked bodies,
100-continue, HTTP/1.0, limits, timeouts, malformed and smuggling-shaped requests.

Every test runs the real server on port 0 with a real SQLite file.  After each hostile case a
normal request on a fresh connection must still be accepted.
"""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass

import orjson
import pytest

from fastwebhook.admin.api import list_executions, list_requests
from conftest import base_config
from wait_support import wait_for

CONFIG = base_config(server="""
max_header_size = "2KiB"
max_body_size = "8KiB"
read_timeout = "1s"
keepalive_timeout = "1s"
""") + """
[workflows.hook]
path = "/hook"

[workflows.small]
path = "/small"
max_body_size = "100"

[workflows.echo]
path = "/echo"
mode = "sync"

  [[workflows.echo.nodes]]
  key = "reply"
  type = "response"
  body = "{{$context.data}}"
"""

READ_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 1.0
OK_REQUEST = b"POST /hook HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
SMUGGLED = (b"POST /hook?smuggled=1 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 16\r\n\r\n{\"smuggled\": 1}\n")


@pytest.fixture
def server(serve):
    return serve(CONFIG)


# --- a raw HTTP/1.1 client -------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return orjson.loads(self.body)


def parse_replies(data: bytes) -> list[Reply]:
    """Every complete response in `data`, framed by Content-Length; a trailing fragment fails."""
    replies = []
    offset = 0
    while offset < len(data):
        head_end = data.index(b"\r\n\r\n", offset)
        lines = data[offset:head_end].decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = data[head_end + 4:head_end + 4 + length]
        assert len(body) == length, f"truncated response: {data[offset:]!r}"
        replies.append(Reply(int(status), headers, body))
        offset = head_end + 4 + length
    return replies


class Conn:
    """One raw TCP connection with response framing and close detection."""

    def __init__(self, running, timeout: float = 5.0):
        self.sock = socket.create_connection((running.host, running.port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self, timeout: float = 5.0) -> Reply:
        deadline = time.monotonic() + timeout
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end >= 0:
                head = self.buffer[:head_end].lower()
                marker = head.find(b"content-length:")
                length = int(head[marker + 15:].split(b"\r\n", 1)[0]) if marker >= 0 else 0
                end = head_end + 4 + length
                if len(self.buffer) >= end:
                    reply = parse_replies(self.buffer[:end])[0]
                    self.buffer = self.buffer[end:]
                    return reply
            chunk = self._recv(deadline)
            assert chunk, f"connection closed before a full response: {self.buffer!r}"
            self.buffer += chunk

    def read_until_close(self, timeout: float = 5.0) -> bytes:
        """All bytes up to the server's close; fails if it does not close within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            chunk = self._recv(deadline)
            if not chunk:
                data, self.buffer = self.buffer, b""
                return data
            self.buffer += chunk

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no answer in time; got so far: {self.buffer!r}")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""
        except socket.timeout:
            raise AssertionError(f"no answer in time; got so far: {self.buffer!r}") from None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def post(path: str, body: bytes, *, extra: bytes = b"", version: bytes = b"1.1",
         content_type: bytes = b"application/json") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/" + version + b"\r\nHost: t\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def hostile(running, data: bytes, timeout: float = 5.0) -> list[Reply]:
    """Send `data` on a fresh connection; the server must answer and close by itself."""
    with Conn(running) as conn:
        conn.send(data)
        return parse_replies(conn.read_until_close(timeout))


def assert_still_serving(running) -> None:
    """A normal request on a new connection is accepted after whatever came before."""
    with Conn(running) as conn:
        conn.send(OK_REQUEST)
        reply = conn.read_reply()
    assert reply.status == 202, reply
    assert reply.json()["status"] == "queued"


def executions(running) -> list[dict]:
    service = running.server.service
    running.call(service.drain)
    return running.call(lambda: list_executions(service.store, limit=1000))["items"]


def wait_for_connections(running, count: int, timeout: float = 3.0) -> None:
    metrics = running.server.service.metrics
    wait_for(lambda: metrics.connections_open == count, timeout, step=0.01,
             failure=lambda: f"{metrics.connections_open} connections open, not {count}")


# --- keep-alive and pipelining ---------------------------------------------------------------

def test_fifty_requests_on_one_keep_alive_connection(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    ids, request_ids = set(), set()
    for i in range(50):
        conn.request("POST", f"/hook?i={i}", body=orjson.dumps({"i": i}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = orjson.loads(response.read())
        assert response.status == 202
        assert body["status"] == "queued"
        assert response.getheader("X-Execution-Id") == body["execution_id"]
        ids.add(body["execution_id"])
        request_ids.add(response.getheader("X-Request-Id"))
        assert response.getheader("Connection") is None  # still keep-alive
    conn.close()
    assert len(ids) == 50
    assert len(request_ids) == 50
    wait_for_connections(server, 0)


def test_pipelined_requests_answer_in_request_order(server):
    kinds = ["hook", "404", "echo", "405", "hook", "echo", "404", "hook", "405", "echo"]
    requests = []
    for n, kind in enumerate(kinds):
        if kind == "hook":
            requests.append(post(f"/hook?n={n}", orjson.dumps({"n": n})))
        elif kind == "echo":
            requests.append(post(f"/echo?n={n}", orjson.dumps({"n": n})))
        elif kind == "404":
            requests.append(post(f"/nowhere?n={n}", b"{}"))
        else:
            requests.append(f"GET /hook?n={n} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    with Conn(server) as conn:
        conn.send(b"".join(requests))  # one write
        replies = [conn.read_reply() for _ in kinds]
    expected_status = {"hook": 202, "echo": 200, "404": 404, "405": 405}
    assert [r.status for r in replies] == [expected_status[k] for k in kinds]
    assert len({r.headers["x-request-id"] for r in replies}) == len(kinds)
    for n, (kind, reply) in enumerate(zip(kinds, replies)):
        if kind == "echo":
            assert reply.json() == {"n": n}
        elif kind == "405":
            assert reply.headers["allow"] == "POST"
        elif kind == "hook":
            # the execution behind this answer is the one made from request n
            execution_id = reply.json()["execution_id"]
            record = server.call(lambda: _get_execution(server, execution_id))
            assert record["request"]["query"] == {"n": str(n)}


async def _get_execution(running, id_text: str):
    from fastwebhook.admin.api import get_execution
    return await get_execution(running.server.service.store, id_text)


def test_pipeline_with_a_malformed_request_answers_the_good_ones_first(server):
    data = OK_REQUEST + post("/echo", b'{"k": 1}') + b"BROKEN LINE\r\n\r\n" + OK_REQUEST
    replies = hostile(server, data)
    assert [r.status for r in replies] == [202, 200, 400]
    assert replies[-1].headers["connection"] == "close"
    assert_still_serving(server)


def test_pipeline_split_at_every_byte_still_parses(server):
    """The same two requests, delivered a few bytes at a time."""
    data = post("/echo", b'{"a": [1, 2, 3]}') + post("/echo", b'{"b": "x"}')
    with Conn(server) as conn:
        for i in range(0, len(data), 7):
            conn.send(data[i:i + 7])
            time.sleep(0.001)   # the behaviour: each piece its own segment, so the server reads them apart
        replies = [conn.read_reply(), conn.read_reply()]
    assert [r.json() for r in replies] == [{"a": [1, 2, 3]}, {"b": "x"}]


# --- request bodies and request shapes -------------------------------------------------------

def test_chunked_request_body_is_parsed_as_json(server):
    pieces = [b'{"items": [', b'1, 2, ', b'3], "name": ', b'"chunked"}']
    chunked = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    with Conn(server) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(chunked), 9):  # the chunks themselves arrive in pieces
            conn.send(chunked[i:i + 9])
            time.sleep(0.002)   # the behaviour: each piece its own segment, so the server reads them apart
        reply = conn.read_reply()
    assert reply.status == 200
    assert reply.json() == {"items": [1, 2, 3], "name": "chunked"}


def test_chunked_body_with_extensions_and_trailer(server):
    data = (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\n{\"a\"\r\n4\r\n: 1}\r\n0\r\nX-Trailer: yes\r\n\r\n")
    with Conn(server) as conn:
        conn.send(data)
        reply = conn.read_reply()
    assert reply.json() == {"a": 1}


def test_expect_100_continue(server):
    body = b'{"continued": true}'
    with Conn(server) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += conn.sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.send(body)
        reply = conn.read_reply()
    assert reply.status == 200
    assert reply.json() == {"continued": True}


def test_expect_100_continue_to_an_async_workflow(server):
    with Conn(server) as conn:
        conn.send(b"POST /hook HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert conn.sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.send(b"{}")
        reply = conn.read_reply()
    assert reply.status == 202


def test_expect_100_continue_with_a_body_over_the_limit_gets_413_not_100(server):
    with Conn(server) as conn:
        conn.send(b"POST /hook HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
        replies = parse_replies(conn.read_until_close(timeout=READ_TIMEOUT / 2))
    assert [r.status for r in replies] == [413]
    assert_still_serving(server)


def test_http_1_0_is_answered_and_closed(server):
    with Conn(server) as conn:
        conn.send(post("/hook", b"{}", version=b"1.0"))
        replies = parse_replies(conn.read_until_close(timeout=READ_TIMEOUT / 2))
    assert [r.status for r in replies] == [202]
    assert replies[0].headers["connection"] == "close"


def test_http_1_0_keep_alive_request_is_answered_and_closed(server):
    with Conn(server) as conn:
        conn.send(post("/hook", b"{}", version=b"1.0", extra=b"Connection: keep-alive\r\n"))
        replies = parse_replies(conn.read_until_close(timeout=READ_TIMEOUT / 2))
    assert [r.status for r in replies] == [202]


def test_connection_close_is_honoured_and_later_pipelined_requests_never_run(server):
    before = len(executions(server))
    data = post("/hook", b"{}", extra=b"Connection: close\r\n") + SMUGGLED
    replies = hostile(server, data, timeout=READ_TIMEOUT / 2)
    assert [r.status for r in replies] == [202]
    assert replies[0].headers["connection"] == "close"
    after = executions(server)
    assert len(after) == before + 1
    assert not [e for e in after if e["request"]["query"].get("smuggled")]


# --- limits -----------------------------------------------------------------------------------

def test_headers_over_max_header_size_get_431_and_close(server):
    data = b"POST /hook HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 3000 + b"\r\nContent-Length: 2\r\n\r\n{}"
    replies = hostile(server, data)
    assert [r.status for r in replies] == [431]
    assert_still_serving(server)


def test_many_small_headers_over_the_limit_get_431(server):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(400))
    replies = hostile(server, b"POST /hook HTTP/1.1\r\nHost: t\r\n" + headers + b"Content-Length: 2\r\n\r\n{}")
    assert [r.status for r in replies] == [431]
    assert_still_serving(server)


def test_many_headers_over_the_limit_get_431_before_the_head_ends(server):
    """Headers are counted as the parser hands them over, not only once the head is whole."""
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(400))
    with Conn(server) as conn:
        conn.send(b"POST /hook HTTP/1.1\r\nHost: t\r\n" + headers)   # no blank line: the head never ends
        replies = parse_replies(conn.read_until_close(timeout=READ_TIMEOUT / 2))
    assert [r.status for r in replies] == [431]
    assert_still_serving(server)


def test_url_over_max_header_size_gets_431(server):
    replies = hostile(server, b"POST /hook?" + b"q" * 3000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert [r.status for r in replies] == [431]
    assert_still_serving(server)


def test_an_endless_header_line_gets_431_before_it_ends(server):
    """A header line with no end must not be buffered until the read timeout."""
    for prefix in (b"POST /hook HTTP/1.1\r\nX-Big: ", b"POST /hook HTTP/1.1\r\nX-Big-Name-"):
        with Conn(server) as conn:
            conn.send(prefix)
            started = time.monotonic()
            try:
                for _ in range(16):  # 256 KiB, far past the 2 KiB limit
                    conn.send(b"a" * 16384)
            except (BrokenPipeError, ConnectionResetError):
                pass
            replies = parse_replies(conn.read_until_close(timeout=READ_TIMEOUT / 2))
            assert time.monotonic() - started < READ_TIMEOUT / 2
        assert [r.status for r in replies] == [431]
    assert_still_serving(server)


def test_body_over_the_limit_by_content_length_gets_413_before_the_body_is_sent(server):
    with Conn(server) as conn:
        conn.send(b"POST /hook HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 9000\r\n\r\n")
        started = time.monotonic()
        reply = conn.read_reply(timeout=READ_TIMEOUT / 2)  # before the read timeout could fire
        assert time.monotonic() - started < READ_TIMEOUT / 2
        assert conn.read_until_close(timeout=1) == b""
    assert reply.status == 413
    assert reply.headers["connection"] == "close"
    assert "8192" in reply.json()["error"]
    assert_still_serving(server)


def test_chunked_body_passing_the_limit_gets_413(server):
    with Conn(server) as conn:
        conn.send(b"POST /hook HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        sent = 0
        try:
            while sent < 20000:
                conn.send(b"400\r\n" + b"x" * 1024 + b"\r\n")
                sent += 1024
        except (BrokenPipeError, ConnectionResetError):
            pass
        replies = parse_replies(conn.read_until_close(timeout=READ_TIMEOUT / 2))
    assert [r.status for r in replies] == [413]
    assert_still_serving(server)


def test_body_exactly_at_the_limit_is_accepted(server):
    body = b'"' + b"x" * (8192 - 2) + b'"'
    with Conn(server) as conn:
        conn.send(post("/hook", body))
        assert conn.read_reply().status == 202


def test_workflow_max_body_size_is_lower_than_the_servers(server):
    with Conn(server) as conn:
        conn.send(post("/small", b'"' + b"x" * 98 + b'"'))
        assert conn.read_reply().status == 202
    replies = hostile(server, post("/small", b'"' + b"x" * 99 + b'"'))
    assert [r.status for r in replies] == [413]
    assert "100 bytes" in replies[0].json()["error"]
    # the same size is fine on a workflow without its own limit
    with Conn(server) as conn:
        conn.send(post("/hook", b'"' + b"x" * 99 + b'"'))
        assert conn.read_reply().status == 202


def test_read_timeout_drops_a_half_sent_request(server):
    with Conn(server) as conn:
        conn.send(b"POST /hook HTTP/1.1\r\nHost: t\r\nContent-Len")
        started = time.monotonic()
        assert conn.read_until_close(timeout=READ_TIMEOUT * 3) == b""
        elapsed = time.monotonic() - started
    assert READ_TIMEOUT * 0.7 <= elapsed <= READ_TIMEOUT * 2.5
    assert_still_serving(server)


def test_read_timeout_drops_a_body_that_never_finishes(server):
    with Conn(server) as conn:
        conn.send(post("/hook", b"{}")[:-1])  # one byte short
        started = time.monotonic()
        assert conn.read_until_close(timeout=READ_TIMEOUT * 3) == b""
        assert READ_TIMEOUT * 0.7 <= time.monotonic() - started <= READ_TIMEOUT * 2.5


def test_read_timeout_covers_the_whole_request_not_each_byte(server):
    """Slowloris: a byte every 100 ms never completes the request, and is dropped all the same."""
    data = b"POST /hook HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 200
    with Conn(server) as conn:
        started = time.monotonic()
        try:
            for byte in data:
                conn.send(bytes([byte]))
                time.sleep(0.1)   # the behaviour: a sender trickling a byte at a time, each well inside the timeout
                if time.monotonic() - started > READ_TIMEOUT * 3:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert conn.read_until_close(timeout=READ_TIMEOUT * 3) == b""
        assert time.monotonic() - started <= READ_TIMEOUT * 2.5
    assert_still_serving(server)


def test_keepalive_timeout_closes_an_idle_connection(server):
    with Conn(server) as conn:
        conn.send(OK_REQUEST)
        assert conn.read_reply().status == 202
        started = time.monotonic()
        assert conn.read_until_close(timeout=KEEPALIVE_TIMEOUT * 3) == b""
        elapsed = time.monotonic() - started
    assert KEEPALIVE_TIMEOUT * 0.7 <= elapsed <= KEEPALIVE_TIMEOUT * 2.5


def test_a_connection_that_never_sends_is_closed(server):
    with Conn(server) as conn:
        started = time.monotonic()
        assert conn.read_until_close(timeout=KEEPALIVE_TIMEOUT * 3) == b""
        assert time.monotonic() - started <= KEEPALIVE_TIMEOUT * 2.5
    wait_for_connections(server, 0)


def test_keepalive_deadline_is_rearmed_by_each_request(server):
    """Requests 0.6 s apart on a 1 s keep-alive: the connection lives past 2 s."""
    with Conn(server) as conn:
        for _ in range(4):
            conn.send(OK_REQUEST)
            assert conn.read_reply().status == 202
            time.sleep(KEEPALIVE_TIMEOUT * 0.6)   # the behaviour: idle for most of a keep-alive period


# --- malformed HTTP ---------------------------------------------------------------------------

MALFORMED = {
    "garbage bytes": b"\x00\x01\x02\xff garbage \x7f\r\n\r\n",
    "bad request line": b"POST/hook HTTP/1.1\r\nHost: t\r\n\r\n",
    "request line with no version": b"POST /hook HTTP/\r\nHost: t\r\n\r\n",
    "lower-case method": b"post /hook HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
    "invalid header token": b"POST /hook HTTP/1.1\r\nHo st: t\r\nContent-Length: 2\r\n\r\n{}",
    "header name with a colon-space before": b"POST /hook HTTP/1.1\r\nContent-Length : 2\r\n\r\n{}",
    "NUL in a header value": b"POST /hook HTTP/1.1\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    "bare CR in a header value": b"POST /hook HTTP/1.1\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\n{}",
    "bare LF line ends": b"POST /hook HTTP/1.1\nHost: t\nContent-Length: 2\n\n{}",
    "invalid chunk size": (b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\n{}\r\n0\r\n\r\n"),
    "chunk size overflow": (b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"FFFFFFFFFFFFFFFFFFFF\r\n{}\r\n0\r\n\r\n"),
    "chunk without CRLF after data": (b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      b"2\r\n{}XX0\r\n\r\n"),
    "negative content-length": b"POST /hook HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "content-length with a sign": b"POST /hook HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}",
    "content-length list": b"POST /hook HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n{}",
    "huge content-length": b"POST /hook HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "HTTP/1.2": b"POST /hook HTTP/1.2\r\nContent-Length: 2\r\n\r\n{}",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_gets_400_and_close(server, data):
    replies = hostile(server, data)
    assert [r.status for r in replies] == [400]
    assert replies[0].headers["connection"] == "close"
    assert "x-request-id" in replies[0].headers
    assert_still_serving(server)


def request_log(running) -> list[dict]:
    service = running.server.service
    running.call(service.drain)
    return running.call(lambda: list_requests(service.store, 1000))["items"]


def test_a_refusal_carries_a_request_id_of_its_own_and_the_log_has_it(server):
    replies = hostile(server, MALFORMED["invalid header token"])
    request_id = replies[0].headers["x-request-id"]
    assert request_id not in ("", "-")
    assert hostile(server, MALFORMED["invalid header token"])[0].headers["x-request-id"] != request_id
    [entry] = [e for e in request_log(server) if e["request_id"] == request_id]
    assert (entry["status"], entry["reason"]) == (400, "malformed")


def test_a_refusal_after_the_head_carries_that_requests_id(server):
    replies = hostile(server, b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n")
    [entry] = [e for e in request_log(server) if e["status"] == 413]
    assert replies[0].headers["x-request-id"] == entry["request_id"]


@pytest.mark.parametrize("target", [b"http://t/hook", b"HTTP://t:8080/hook?source=proxy", b"https://t/hook"])
def test_an_absolute_form_target_is_routed_on_its_path(server, target):
    with Conn(server) as conn:
        conn.send(b"POST " + target + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 2\r\n\r\n{}")
        reply = conn.read_reply()
    assert reply.status == 202, reply
    [entry] = [e for e in request_log(server) if e["request_id"] == reply.headers["x-request-id"]]
    assert entry["path"] == "/hook"


def test_a_body_refused_by_size_is_in_the_request_log(server):
    hostile(server, b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n")
    [entry] = [e for e in request_log(server) if e["status"] == 413]
    assert (entry["path"], entry["workflow"], entry["reason"]) == ("/small", "small", "size")


def test_malformed_http_is_in_the_request_log(server):
    hostile(server, MALFORMED["invalid header token"])
    assert [e for e in request_log(server) if e["status"] == 400]


def test_unsupported_http_version_gets_505_and_close(server):
    replies = hostile(server, b"POST /hook HTTP/2.0\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}" + SMUGGLED)
    assert [r.status for r in replies] == [505]
    assert_still_serving(server)


# --- request smuggling shapes -----------------------------------------------------------------

SMUGGLING = {
    "content-length and transfer-encoding": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "transfer-encoding and content-length": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    "two content-lengths": b"POST /hook HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 0\r\n\r\n{}",
    "two equal content-lengths": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"),
    "transfer-encoding gzip": b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n{}",
    "transfer-encoding xchunked": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
    "transfer-encoding chunked, gzip": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
    "transfer-encoding gzip, chunked": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
    "two transfer-encodings": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"),
    "transfer-encoding identity": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\n{}"),
    "transfer-encoding in HTTP/1.0": (
        b"POST /hook HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
    "transfer-encoding with space before colon": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\n{}"),
    "obs-fold header continuation": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\n{}"),
    "obs-fold transfer-encoding": (
        b"POST /hook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 2\r\n\r\n{}"),
}


@pytest.mark.parametrize("data", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_shapes_are_rejected_and_never_become_a_second_request(server, data):
    before = executions(server)
    replies = hostile(server, data + SMUGGLED)
    assert [r.status for r in replies] == [400]
    assert replies[0].headers["connection"] == "close"
    after = executions(server)
    assert len(after) == len(before), "the refused request (or the smuggled one) ran"
    assert not [e for e in after if e["request"]["query"].get("smuggled")]
    assert_still_serving(server)


# --- upgrades ---------------------------------------------------------------------------------

def test_websocket_upgrade_gets_400_and_close(server):
    data = (b"GET /hook HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    replies = hostile(server, data)
    assert [r.status for r in replies] == [400]
    assert replies[0].headers["connection"] == "close"
    assert_still_serving(server)


def test_upgrade_on_a_post_gets_one_400_and_runs_nothing(server):
    before = len(executions(server))
    data = (b"POST /hook HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}") + SMUGGLED
    replies = hostile(server, data)
    assert [r.status for r in replies] == [400]
    assert len(executions(server)) == before
    assert_still_serving(server)


def test_connect_gets_400_and_close(server):
    replies = hostile(server, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert [r.status for r in replies] == [400]
    assert_still_serving(server)


def test_connections_are_all_closed_after_hostile_traffic(server):
    for data in list(MALFORMED.values())[:5] + list(SMUGGLING.values())[:5]:
        hostile(server, data)
    wait_for_connections(server, 0)
    assert_still_serving(server)


# --- HEAD -------------------------------------------------------------------------------------

def test_head_answer_has_no_content_and_keeps_the_connection_in_step(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("HEAD", "/healthz")
    head = conn.getresponse()
    assert head.status == 200
    assert head.read() == b""
    conn.request("GET", "/healthz")  # same connection: must not read HEAD's content as its answer
    get = conn.getresponse()
    assert (get.status, orjson.loads(get.read())) == (200, {"status": "ok"})
    conn.close()
    with Conn(server) as raw:
        # The second asks the server to close after it: all of both answers is read, however
        # the bytes arrive (a HEAD answer's content-length cannot frame it).
        raw.send(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                 b"GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = raw.read_until_close()
    assert data.count(b"HTTP/1.1 ") == 2
    assert data.index(b"HTTP/1.1 404") == data.index(b"\r\n\r\n") + 4


# --- a client that half-closes ----------------------------------------------------------------

def test_half_closed_client_still_gets_its_answers(server):
    """A sender that shuts its side down after the request (nc -N, scripts) is still answered:
    its webhook was accepted, it must not look failed and be sent again."""
    before = len(executions(server))
    with Conn(server) as conn:
        conn.send(OK_REQUEST + post("/echo", b'{"e": 1}') + post("/nowhere", b"{}"))
        conn.sock.shutdown(socket.SHUT_WR)
        replies = parse_replies(conn.read_until_close(timeout=3))
    assert [r.status for r in replies] == [202, 200, 404]
    assert replies[-1].headers["connection"] == "close"
    assert len(executions(server)) == before + 2


def test_half_close_in_the_middle_of_a_request_just_closes(server):
    with Conn(server) as conn:
        conn.send(OK_REQUEST[:-1])
        conn.sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        assert conn.read_until_close(timeout=READ_TIMEOUT * 3) == b""
        assert time.monotonic() - started < READ_TIMEOUT / 2
    assert_still_serving(server)
