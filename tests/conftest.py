"""Shared fixtures: a real fastwebhook server on port 0 over real sockets and a real SQLite file.

`serve(config_text)` runs the server in-process on its own uvloop thread (fast to start, and its
Service is reachable for assertions); `spawn(config_text)` runs `python -m fastwebhook serve` as a
child process, for the tests that kill it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import uvloop

import cli_support
from wait_support import wait_for
from fastwebhook.config.loader import load_config
from fastwebhook.process.server import Server


def base_config(*, server: str = "", log: str = 'level = "warning"', admin: str = "") -> str:
    """The [server], [storage], [log] and [admin] tables write_config puts before a body that has
    none, with more settings (TOML lines) in [server] and [admin], or [log] as given: for a test
    that needs one of them changed.  `{db}` is left for write_config to fill."""
    return (f'\n[server]\nlisten = ["127.0.0.1:0"]\n{server}\n[storage]\nurl = "sqlite:///{{db}}"\n'
            f'[log]\n{log}\n[admin]\ntoken = "test-token"\n{admin}\n')


BASE_CONFIG = base_config()


def write_config(tmp_path: Path, body: str, db_name: str = "fastwebhook.db") -> Path:
    """BASE_CONFIG (a [server], [storage], [log], [admin] section) unless `body` brings its own."""
    db = tmp_path / db_name
    text = body.replace("{db}", str(db))
    if "[storage]" not in text:
        text = BASE_CONFIG.format(db=db) + text
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@dataclass
class RunningServer:
    host: str
    port: int
    server: Server
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    db: str
    _stop: asyncio.Event = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def call(self, coro_fn, timeout: float = 10.0):
        """Run `coro_fn()` on the server's loop (for store reads and assertions)."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(20)


def start_server(config_path: Path) -> RunningServer:
    config = load_config(str(config_path))
    ready = threading.Event()
    box: dict = {}

    async def main():
        server = Server(config)
        stop = asyncio.Event()
        box.update(server=server, loop=asyncio.get_running_loop(), stop=stop)
        try:
            await server.start()
        except BaseException as exc:
            box["error"] = exc
            ready.set()
            raise
        ready.set()
        await stop.wait()
        await server.stop()

    thread = threading.Thread(target=lambda: uvloop.run(main()), daemon=True)
    thread.start()
    if not ready.wait(20) or "error" in box:
        raise RuntimeError(f"server did not start: {box.get('error')!r}")
    host, port = box["server"].addresses[0]
    db = config.storage.url[len("sqlite:///"):]
    return RunningServer(host, port, box["server"], box["loop"], thread, db, box["stop"])


@pytest.fixture
def serve(tmp_path):
    started: list[RunningServer] = []

    def _serve(body: str, db_name: str = "fastwebhook.db") -> RunningServer:
        running = start_server(write_config(tmp_path, body, db_name))
        started.append(running)
        return running

    yield _serve
    for running in started:
        running.stop()


@dataclass
class ChildServer:
    process: subprocess.Popen
    host: str
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def log_entries(log_path: Path) -> list[dict]:
    """A child server's log as its JSON objects (a line being written is left out)."""
    entries = []
    for line in log_path.read_text().splitlines():
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return entries


def wait_for_entry(log_path: Path, holds, *, after: int = 0, process: subprocess.Popen | None = None,
                   timeout: float = 30.0) -> dict:
    """The first entry of a child server's log, past its first `after`, that `holds` is true of;
    fails with the log's tail when none comes in time (or the child exits first)."""
    def found() -> dict | None:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        return next((entry for entry in log_entries(log_path)[after:] if holds(entry)), None)
    return wait_for(found, timeout, failure=lambda: f"no such log line: {log_path.read_text()[-2000:]}")


def spawn_server(config_path: Path, log_path: Path, port: int | None = None) -> ChildServer:
    """`python -m fastwebhook serve` in a child process; returns once it listens."""
    process = cli_support.start_server(config_path, log_path, dict(os.environ, PYTHONUNBUFFERED="1"))

    def ready() -> ChildServer | None:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        address = None
        for entry in log_entries(log_path):
            if entry.get("msg") == "listening" and entry.get("pid", process.pid) == process.pid:
                host, _, bound = entry["address"].rpartition(":")
                address = (host, int(bound))
            elif entry.get("msg") == "ready" and address is not None:
                return ChildServer(process, address[0], address[1], log_path)
        return None
    try:
        return wait_for(ready, 30, failure="server did not become ready")
    except AssertionError:
        process.kill()
        raise


@pytest.fixture
def spawn():
    """spawn_server, with every child killed at teardown should a test fail half-way."""
    children: list[ChildServer] = []

    def _spawn(config: Path, log: Path) -> ChildServer:
        children.append(spawn_server(config, log))
        return children[-1]

    yield _spawn
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait(10)


@pytest.fixture
def endpoint():
    """A recording HTTP server (tests/http_support.py) on 127.0.0.1, closed after the test."""
    from http_support import RecordingServer  # noqa: PLC0415

    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture
def smtp_servers():
    """start(**aiosmtpd Controller options) -> (Inbox, port); every one stopped at teardown."""
    from aiosmtpd.controller import Controller  # noqa: PLC0415
    from smtp_support import Inbox  # noqa: PLC0415

    controllers = []

    def start(**options):
        inbox, port = Inbox(), free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return inbox, port

    yield start
    for controller in controllers:
        controller.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_exchange(host: str, port: int, data: bytes, *, timeout: float = 5.0, read_until_close: bool = False,
                 expect_responses: int | None = None) -> bytes:
    """Send raw bytes on a fresh connection and read what comes back."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            received += chunk
            if expect_responses is not None and received.count(b"HTTP/1.1 ") >= expect_responses \
                    and _complete(received, expect_responses):
                break
        return received


def _complete(data: bytes, count: int) -> bool:
    """True when `count` full responses (by content-length) are in `data`."""
    offset = 0
    for _ in range(count):
        head_end = data.find(b"\r\n\r\n", offset)
        if head_end < 0:
            return False
        head = data[offset:head_end].lower()
        marker = head.find(b"content-length: ")
        length = int(head[marker + 16:].split(b"\r\n", 1)[0]) if marker >= 0 else 0
        offset = head_end + 4 + length
        if offset > len(data):
            return False
    return True
