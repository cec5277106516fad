"""`fastwebhook replay` (cli/replays.py) against a real server over real sockets: a replay whose
request reached a server is never made a second time from the store, whatever became of the
answer; only a refused connection (nothing listens) sends the CLI to the store; a bulk replay
must name a filter; its --status help names the statuses."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest

from cli_support import fastwebhook
from client_support import metric, post_json, wait_for_execution
from conftest import free_port, write_config
from http_support import Reply
from wait_support import wait_for

STATUSES = ("queued", "started", "resolved", "failed", "error", "aborted", "duplicate")

# One slot in the queue: while `slow` waits on its call, a replay is held at the door.
SERVER = """
[server]
listen = ["127.0.0.1:{port}"]
processes = 1
[storage]
url = "sqlite:///{db}"
durability = "commit"
[queue]
capacity = 1
hold = "60s"
[log]
level = "info"
[admin]
token = "test-token"

[workflows.other]
[[workflows.other.nodes]]
key = "stop"
type = "end"
status = "failed"

[workflows.slow]
[[workflows.slow.nodes]]
key = "call"
type = "request"
url = "{url}/slow"
"""


def replays_stored(config, workflow: str) -> list[dict]:
    """The executions of `workflow` that are replays, read from the store by the CLI."""
    listed = fastwebhook("executions", "--workflow", workflow, "--limit", "1000", "--json", "-c", str(config), text=True)
    assert listed.returncode == 0, listed.stderr
    return [item for item in json.loads(listed.stdout)["items"] if item.get("replay_of")]


def failed_executions(server, count: int) -> list[str]:
    ids = []
    for n in range(count):
        answer = post_json(server, "/api/webhooks/other", {"n": n})
        assert answer.status == 202, answer.body
        ids.append(wait_for_execution(server, answer.json()["execution_id"])["id"])
    return ids


def test_a_bulk_replay_whose_answer_is_lost_is_not_made_again_from_the_store(spawn, endpoint, tmp_path):
    released = threading.Event()
    endpoint.replies = [Reply(hold=released)]
    port = free_port()
    config = write_config(tmp_path, SERVER.replace("{port}", str(port)).replace("{url}", endpoint.url))
    server = spawn(config, tmp_path / "server.log")
    try:
        failed = failed_executions(server, 2)
        assert post_json(server, "/api/webhooks/slow", {}).status == 202
        wait_for(lambda: endpoint.received, failure="the slow execution never made its call")   # the queue is full

        done: dict = {}
        cli = threading.Thread(target=lambda: done.update(result=fastwebhook(
            "replay", "--workflow", "other", "-c", str(config), text=True, timeout=60)))
        cli.start()
        wait_for(lambda: metric(server, "fastwebhook_queue_held") >= 1, 20,
                 failure="the replays were never held at the door")
        server.process.kill()                  # the request went out; its answer never comes
        server.process.wait(10)
        cli.join(60)
    finally:
        released.set()
    lost = done["result"]
    assert lost.returncode == 1, (lost.stdout, lost.stderr)
    assert "may have replayed" in lost.stderr and "fastwebhook executions --workflow other" in lost.stderr
    assert replays_stored(config, "other") == []                      # not appended from here

    # The key the CLI made up went with the request: the server took it, so a retry with it
    # replays nothing (the replay was cut short: a new key replays again, knowingly).
    key = re.search(r"--idempotency-key (\S+)", lost.stderr).group(1)
    retry = fastwebhook("replay", "--workflow", "other", "--idempotency-key", key, "-c", str(config), text=True)
    assert retry.returncode == 1 and "cut short" in retry.stderr, retry.stderr
    assert replays_stored(config, "other") == []

    # Nothing listens now (the connection is refused): the CLI replays into the store itself.
    fresh = fastwebhook("replay", "--workflow", "other", "--json", "-c", str(config), text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert sorted(item["replay_of"] for item in json.loads(fresh.stdout)["items"]) == sorted(failed)
    assert sorted(item["replay_of"] for item in replays_stored(config, "other")) == sorted(failed)


class DroppingPeer:
    """What listens at the server's address reads each request whole, then closes without an
    answer: a connection lost after the request went out."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                received = b""
                while b"\r\n\r\n" not in received:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                self.requests.append(received)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dropping_peer():
    peer = DroppingPeer()
    yield peer
    peer.close()


def test_a_single_replay_whose_answer_is_lost_is_not_made_again_from_the_store(serve, dropping_peer, tmp_path):
    running = serve(SERVER.replace("{port}", "0").replace("{url}", "http://127.0.0.1:9"))
    [original] = failed_executions(running, 1)
    running.stop()                     # the store is free: nothing but the answer stops an append
    config = tmp_path / "config.toml"
    config.write_text(config.read_text().replace('"127.0.0.1:0"', f'"127.0.0.1:{dropping_peer.port}"'))

    lost = fastwebhook("replay", original, "-c", str(config), text=True)
    assert lost.returncode == 1, (lost.stdout, lost.stderr)
    assert "may have replayed" in lost.stderr and original in lost.stderr
    assert [r.split(b" ")[1] for r in dropping_peer.requests] == [f"/api/admin/executions/{original}/replay".encode()]
    assert replays_stored(config, "other") == []


def test_replay_without_an_id_or_a_filter_is_a_usage_error_and_replays_nothing(serve, tmp_path):
    running = serve(SERVER.replace("{port}", "0").replace("{url}", "http://127.0.0.1:9"))
    failed_executions(running, 1)
    running.stop()
    config = str(tmp_path / "config.toml")
    for options in ((), ("--limit", "5"), ("--until", "1h"), ("--dry-run",), ("--idempotency-key", "k")):
        done = fastwebhook("replay", *options, "-c", config, text=True)
        assert done.returncode == 2, (options, done.stdout, done.stderr)
        assert done.stderr.startswith("usage: fastwebhook replay") and "--workflow, --since, --status" in done.stderr
    assert replays_stored(config, "other") == []
    bad = fastwebhook("replay", "--status", "lost", "-c", config, text=True)     # mapped once, in main
    assert bad.returncode == 2 and "status must be one of" in bad.stderr, bad.stderr
    since = fastwebhook("replay", "--since", "1h", "--dry-run", "-c", config, "--json", text=True)
    assert since.returncode == 0 and json.loads(since.stdout)["matched"] == 1, since.stderr


def test_replay_status_help_names_every_status():
    done = fastwebhook("replay", "--help", text=True)
    assert done.returncode == 0
    words = " ".join(done.stdout.split())
    assert all(status in words for status in STATUSES), words
    assert f"--status STATUS bulk: executions ending so: {', '.join(STATUSES)}" in words
