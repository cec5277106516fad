"""A recording HTTP endpoint for the outbound nodes' tests: it keeps every request it gets and
answers scripted replies (status, body, headers, a delay, or held until the test releases it) in
order."""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]           # names lower-cased
    body: bytes
    at: float
    peer_port: int                    # the caller's port: the same one means a reused connection


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0
    # Held until the test sets it (an event, not a guess of how long the other side takes);
    # never set within HOLD_MOST, the reply is a 504 so the test fails rather than hangs.
    hold: threading.Event | None = None


HOLD_MOST = 30.0


class RecordingServer:
    """An HTTP endpoint on 127.0.0.1 (or another loopback address: `host`) that records each
    request and answers the scripted replies in order (then `Reply()`, a 200 with {"ok": true})."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with recorder._lock:
                    recorder.received.append(Received(
                        self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                        {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic(),
                        self.client_address[1]))
                    reply = recorder.replies.pop(0) if recorder.replies else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.hold is not None and not reply.hold.wait(HOLD_MOST):
                    reply = Reply(504, b"held and never released")
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):   # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
