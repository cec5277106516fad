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

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from payload import BODY, SECRET, github_signature  # noqa: E402

from fastwebhook.door.body import parse_body  # noqa: E402
from fastwebhook.config.loader import load_config  # noqa: E402
from fastwebhook.intake.dedup import DoorCache, dedup_hash  # noqa: E402
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
        self.on_write = None

    def write(self, data: bytes) -> None:
        self.written += 1
        if self.on_write is not None:
            self.on_write()

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

    from fastwebhook.service.app import WebhookApp
    from fastwebhook.service.service import Service

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
    cache = DoorCache()
    counter = itertools.count()

    def step():
        key = dedup_hash("bench", str(next(counter)))
        if cache.get(key) is None:
            cache.put(key, b"0123456789abcdef", time.time() + 86400)

    benchmark(step)


def test_dedup_lookup_and_insert_with_a_full_window(benchmark):
    """The steady state of a busy server: the window is full, every put drops an old key."""
    cache = DoorCache()
    for number in range(cache.capacity):
        cache.put(dedup_hash("bench", f"old-{number}"), b"0123456789abcdef", time.time() + 86400)
    counter = itertools.count()

    def step():
        key = dedup_hash("bench", str(next(counter)))
        if cache.get(key) is None:
            cache.put(key, b"0123456789abcdef", time.time() + 86400)

    benchmark(step)
    assert len(cache) <= cache.capacity


def test_route(benchmark, app):
    web, _, _ = app
    benchmark(web.router.match, "/api/devices/d1/readings")


def test_whole_request_memory_durability(benchmark, app):
    """Socket bytes -> protocol -> route -> verify -> parse -> dedup -> offer -> response bytes."""
    web, service, loop = app
    protocol = HttpProtocol(web, Limits(16384, 1 << 20, 15.0, 75.0), loop, time.time)
    transport = FakeTransport()
    protocol.connection_made(transport)
    counter = itertools.count()
    intake = service.intake

    def step():
        protocol.data_received(request_bytes(next(counter)))
        if len(intake.open) > 500:  # the writer is not running here: forget, as a commit would
            forget(intake)

    benchmark(step)
    assert transport.written > 0


def forget(intake) -> None:
    intake.open.clear()
    intake.settles.clear()
    intake.waiting.clear()
    intake.depth = 0


def deliveries(count: int):
    from fastwebhook.core.ids import new_id
    from fastwebhook.store.rows import Delivery, StoredRequest

    headers = [("host", "127.0.0.1"), ("content-type", "application/json"), ("x-github-event", "push"),
               ("x-github-delivery", "1234"), ("x-hub-signature-256", "[redacted]"), ("content-length", "1160")]
    return [Delivery(new_id(), "bench", "v1", StoredRequest("POST", "/hook", "", headers, {}, "127.0.0.1",
                                                            time.time(), f"r-{n}"),
                     BODY, n, str(n), time.time() + 86400) for n in range(count)]


def test_offer(benchmark, app):
    """Door dedup, a queue slot and a place in the open batch (the writer not running)."""
    _, service, _ = app
    intake = service.intake
    pool = iter(itertools.cycle(deliveries(1000)))

    def step():
        intake.offer(next(pool), None)
        if len(intake.open) > 500:
            forget(intake)
            intake.cache.clear()

    benchmark(step)


def test_encode_a_batch_of_256_deliveries(benchmark):
    """What one group commit's append serialises (divide by 256 for a delivery's share)."""
    from fastwebhook.store import batch_codec

    batch = deliveries(256)
    benchmark(batch_codec.encode, batch)


def test_whole_batch_of_64_commit_durability(benchmark, tmp_path):
    """The real service (store, writer, claim, workers) on a real SQLite file, 64 connections'
    requests through the protocol and back out after their group commit; synchronous=OFF so
    the disk's fsync is left out (divide by 64 for one request's share)."""
    import uvloop

    from fastwebhook.service.app import WebhookApp
    from fastwebhook.service.service import Service
    from fastwebhook.store.sqlite import SqliteStore
    from fastwebhook.store.sqlite_connector import SqliteConnector

    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace('durability = "memory"', 'durability = "commit"'))
    config = load_config(str(path))
    loop = uvloop.new_event_loop()
    service = Service(config, store=SqliteStore(SqliteConnector(str(tmp_path / "micro.db"), synchronous="OFF")))
    loop.run_until_complete(service.start())
    web = WebhookApp(config, service)
    connections = []
    for _ in range(64):
        protocol = HttpProtocol(web, Limits(16384, 1 << 20, 15.0, 75.0), loop, time.time)
        transport = FakeTransport()
        protocol.connection_made(transport)
        connections.append((protocol, transport))
    counter = itertools.count()
    waiting = {"left": 0, "done": None}

    def on_write() -> None:
        waiting["left"] -= 1
        if waiting["left"] == 0:
            waiting["done"].set_result(None)

    for _, transport in connections:
        transport.on_write = on_write

    def step():
        waiting["left"] = len(connections)
        waiting["done"] = loop.create_future()
        for protocol, _ in connections:
            protocol.data_received(request_bytes(next(counter)))
        loop.run_until_complete(waiting["done"])

    benchmark(step)
    loop.run_until_complete(service.stop(1.0))
    loop.close()
