"""Micro-benchmarks of the hot-path pieces (run by `make bench`, skipped by `make test`).

Each measures fastwebhook's real code on the load benchmark's own request (bench/payload.py):
parse (bytes through the protocol), route, verify, dedup, enqueue, and the whole path from
socket bytes to response bytes with a fake transport.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from payload import BODY, SECRET, github_signature  # noqa: E402

from fastwebhook.door.body import parse_body  # noqa: E402
from fastwebhook.config import load_config  # noqa: E402
from fastwebhook.door.dedup import DedupCache, dedup_hash  # noqa: E402
from fastwebhook.http.protocol import HttpProtocol, Limits  # noqa: E402
from fastwebhook.verify import build_verifier  # noqa: E402

CONFIG = f"""
[storage]
url = "sqlite:///:memory:"
durability = "memory"
[queue]
capacity = 100000000
[workflows.bench]
path = "/hook"
[workflows.bench.verify]
scheme = "github"
secret = "{SECRET}"
[workflows.other]
path = "/api/devices/{{device}}/readings"
"""
SIGNATURE = github_signature()


def request_bytes(delivery: int) -> bytes:
    return (b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"User-Agent: GitHub-Hookshot/abc\r\nX-GitHub-Event: push\r\n"
            b"X-GitHub-Delivery: " + str(delivery).encode() + b"\r\n"
            b"X-Hub-Signature-256: " + SIGNATURE.encode() + b"\r\n"
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


class FakeTransport:
    def __init__(self):
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import asyncio

    from fastwebhook.app import WebhookApp
    from fastwebhook.service import Service

    path = tmp_path_factory.mktemp("micro") / "config.toml"
    path.write_text(CONFIG)
    config = load_config(str(path))
    loop = asyncio.new_event_loop()
    service = Service(config)
    service.loop = loop
    yield WebhookApp(config, service), service, loop
    loop.close()


def test_parse_json(benchmark):
    benchmark(parse_body, BODY, "application/json")


def test_verify_github(benchmark):
    verify = build_verifier("github", {}, (SECRET.encode(),), "bench").verify
    headers = {"x-hub-signature-256": SIGNATURE}
    benchmark(verify, BODY, headers, time.time(), None)


def test_dedup_lookup_and_insert(benchmark):
    cache = DedupCache()
    counter = itertools.count()

    def step():
        key = dedup_hash("bench", str(next(counter)))
        if cache.get(key) is None:
            cache.put(key, b"0123456789abcdef", time.time() + 86400)

    benchmark(step)


def test_route(benchmark, app):
    web, _, _ = app
    benchmark(web.router.match, "/api/devices/d1/readings")


def test_whole_request_memory_durability(benchmark, app):
    """Socket bytes -> protocol -> route -> verify -> parse -> dedup -> enqueue -> response bytes."""
    web, service, loop = app
    protocol = HttpProtocol(web, Limits(16384, 1 << 20, 15.0, 75.0), loop, time.time)
    transport = FakeTransport()
    protocol.connection_made(transport)
    counter = itertools.count()

    def step():
        protocol.data_received(request_bytes(next(counter)))
        if len(service.writer.pending.executions) > 10000:  # the writer is not running here
            service.writer.pending.executions.clear()
            service.writer.pending.requests.clear()
            service.writer.callbacks.clear()
            service.queue.ready.clear()
            service.queue.load = 0

    benchmark(step)
    assert transport.written > 0
    assert orjson.loads(b"{}") == {}


def test_enqueue(benchmark, app):
    """Reserve a queue slot and append an execution to the open batch (the writer not running)."""
    from fastwebhook.store.base import NewExecution

    _, service, _ = app
    writer, queue = service.writer, service.queue
    ids = itertools.count()

    def step():
        if queue.reserve():
            execution = NewExecution(next(ids).to_bytes(16, "big"), "bench", "v1", 0.0, b"{}", BODY,
                                     None, None, 0.0, service.owner, 30.0)
            writer.add_execution(execution, None)
        if len(writer.pending.executions) > 10000:
            writer.pending.executions.clear()
            writer.callbacks.clear()
            queue.load = 0

    benchmark(step)
