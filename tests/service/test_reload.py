"""SIGHUP reload (issue 9): the config file read again and swapped in on a real child server —
a workflow's answer changed under keep-alive load with no failed request and no connection
dropped; a broken config refused with its key paths logged and the old one kept; an execution
running across the reload finishing on its own version; workflows added and removed; [server]
changes left for the next start."""

from __future__ import annotations

import http.client
import signal
import threading

from burst_support import wait_until
from client_support import jobs_by_node, post_json, request, wait_for_execution, wait_until_started
from conftest import base_config, log_entries, wait_for_entry, write_config

CONFIG = base_config(log='level = "info"') + """
[workflows.greet]
path = "/greet"
mode = "sync"
[workflows.greet.response]
body = "GREETING"
[workflows.slow]
path = "/slow"
[[workflows.slow.nodes]]
key = "work"
type = "script"
code = "const t = Date.now(); while (Date.now() - t < 800) {} return 'ANSWER';"
"""


def configure(tmp_path, greeting: str, answer: str = "v1", extra: str = "") -> None:
    write_config(tmp_path, CONFIG.replace("GREETING", greeting).replace("ANSWER", answer) + extra)


def hang_up(child, expect: str, timeout: float = 15.0) -> dict:
    """SIGHUP, then the log line saying how it went (the first one after this call)."""
    seen = len(log_entries(child.log))
    child.process.send_signal(signal.SIGHUP)
    return wait_for_entry(child.log, lambda entry: entry.get("msg", "").startswith(expect), after=seen,
                          process=child.process, timeout=timeout)


class KeepAliveClient(threading.Thread):
    """POST /greet again and again on ONE connection, noting each answer and the local port."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.answers: list[tuple[int, bytes]] = []
        self.ports: set[int] = set()
        self.failures: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.connection.request("POST", "/greet", body=b"{}", headers={"Content-Type": "application/json"})
                response = self.connection.getresponse()
                self.answers.append((response.status, response.read()))
                self.ports.add(self.connection.sock.getsockname()[1])
            except (OSError, http.client.HTTPException) as error:
                self.failures.append(error)
                return


def test_a_changed_answer_comes_in_under_keep_alive_load_with_nothing_failed_or_dropped(tmp_path, spawn):
    configure(tmp_path, "v1")
    child = spawn(tmp_path / "config.toml", tmp_path / "server.log")
    clients = [KeepAliveClient(child.port) for _ in range(3)]
    for client in clients:
        client.start()
    assert wait_until(lambda: all(len(client.answers) >= 20 or client.failures for client in clients))
    configure(tmp_path, "v2")
    entry = hang_up(child, "SIGHUP: config reloaded")
    assert entry["changed"] == ["greet"] and entry["added"] == [] and entry["removed"] == []
    assert wait_until(lambda: all(client.answers.count((200, b"v2")) >= 20 or client.failures for client in clients))
    for client in clients:
        client.stop.set()
        client.join(10)
    for client in clients:
        assert client.failures == []
        assert len(client.ports) == 1                       # the same connection throughout
        statuses = {status for status, _ in client.answers}
        bodies = [body for _, body in client.answers]
        assert statuses == {200}
        assert bodies[0] == b"v1" and bodies[-1] == b"v2"
        first_new = bodies.index(b"v2")
        assert set(bodies[first_new:]) == {b"v2"}           # once the new answer came, only it


def test_a_broken_config_is_refused_with_its_key_path_and_the_old_one_stays(tmp_path, spawn):
    configure(tmp_path, "v1")
    child = spawn(tmp_path / "config.toml", tmp_path / "server.log")
    (tmp_path / "config.toml").write_text((tmp_path / "config.toml").read_text().replace(
        'path = "/greet"', 'path = "/greet"\nbogus = 1'))
    entry = hang_up(child, "SIGHUP: the config was not reloaded")
    assert entry["level"] == "error"
    assert any("workflows.greet.bogus" in error for error in entry["errors"]), entry["errors"]
    answer = post_json(child, "/greet", {})
    assert (answer.status, answer.body) == (200, b"v1")
    # and a good one after it is taken
    configure(tmp_path, "v3")
    hang_up(child, "SIGHUP: config reloaded")
    assert post_json(child, "/greet", {}).body == b"v3"


def test_a_running_execution_finishes_on_its_version_and_the_next_gets_the_new_one(tmp_path, spawn):
    configure(tmp_path, "v1", answer="old")
    child = spawn(tmp_path / "config.toml", tmp_path / "server.log")
    before = post_json(child, "/slow", {})
    assert before.status == 202
    wait_until_started(child, before.json()["execution_id"])   # its script is spinning now
    configure(tmp_path, "v1", answer="new")
    entry = hang_up(child, "SIGHUP: config reloaded")
    assert entry["changed"] == ["slow"]
    record = wait_for_execution(child, before.json()["execution_id"])
    assert record["status"] == "resolved" and jobs_by_node(record)["work"]["result"] == "old"
    after = post_json(child, "/slow", {})
    record = wait_for_execution(child, after.json()["execution_id"])
    assert jobs_by_node(record)["work"]["result"] == "new"


def test_workflows_added_and_removed_and_server_changes_left_for_the_next_start(tmp_path, spawn):
    configure(tmp_path, "v1")
    child = spawn(tmp_path / "config.toml", tmp_path / "server.log")
    assert request(child, "POST", "/added", b"{}").status == 404
    text = (tmp_path / "config.toml").read_text()
    text = text[:text.index("[workflows.slow]")]   # slow removed
    text = text.replace('listen = ["127.0.0.1:0"]', 'listen = ["127.0.0.1:0"]\nmax_body_size = "512KiB"')   # [server]
    (tmp_path / "config.toml").write_text(text + '[workflows.added]\npath = "/added"\n')
    seen = len(log_entries(child.log))
    entry = hang_up(child, "SIGHUP: config reloaded")
    assert entry["added"] == ["added"] and entry["removed"] == ["slow"] and entry["changed"] == []
    assert request(child, "POST", "/added", b"{}", {"Content-Type": "application/json"}).status == 202
    assert request(child, "POST", "/slow", b"{}", {"Content-Type": "application/json"}).status == 404
    later = [e for e in log_entries(child.log)[seen:] if e.get("msg", "").startswith("SIGHUP: these sections")]
    assert later and later[0]["sections"] == ["server"]
