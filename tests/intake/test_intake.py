"""The log-first intake end to end (issue 7): real child servers, real sockets, real SQLite.

A burst absorbed by the durable queue with bounded memory; kill -9 in the middle of a burst;
a duplicate racing its original past the door into another process; a store that faults and
recovers; a commit callback that raises.
"""

from __future__ import annotations

import http.client
import sqlite3
import threading
import uuid

from burst_support import burst, rss_kib, wait_until
from client_support import request
from conftest import base_config, write_config
from fastwebhook.store.sqlite_connector import CACHE_KIB
from durability_support import child_config, executions_by_delivery, post, query, terminate, unfinished, wait_all_final

QUEUED_CONFIG = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///{db}"
durability = "commit"
[queue]
capacity = 1000000
workers = %(workers)d
[log]
level = "info"
[workflows.hook]
[workflows.hook.dedup]
key = "{{$context.headers.x-delivery}}"
[[workflows.hook.nodes]]
key = "answer"
type = "response"
body = { ok = true }
"""


def test_kill_9_in_the_middle_of_a_burst_loses_nothing_and_runs_each_delivery_once(spawn, tmp_path):
    config = write_config(tmp_path, QUEUED_CONFIG % {"workers": 2})
    db = tmp_path / "fastwebhook.db"
    child = spawn(config, tmp_path / "first.log")
    acked: dict[str, str] = {}
    statuses: dict[int, int] = {}
    sender = threading.Thread(target=burst, args=(child.host, child.port, 200_000),
                              kwargs=dict(acked=acked, statuses=statuses, seconds=60, connections=32, depth=64),
                              daemon=True)
    sender.start()
    assert wait_until(lambda: len(acked) >= 30_000, 60, 0.02), f"the burst stalled: {statuses}"
    child.process.kill()
    child.process.wait(10)
    sender.join(30)
    acked = dict(acked)
    assert set(statuses) == {202}, statuses

    # Straight after the crash: every 2xx is on disk, most of them not yet run.
    stored = executions_by_delivery(db)
    missing = [d for d in acked if d not in stored]
    assert not missing, f"{len(missing)} acknowledged requests lost by kill -9, e.g. {missing[:3]}"
    left = unfinished(db)
    assert left >= 10_000, f"only {left} acknowledged executions were left to run: not a burst"

    restarted = spawn(config, tmp_path / "second.log")
    try:
        found = wait_all_final(db, acked, timeout=120)
        conn = http.client.HTTPConnection(restarted.host, restarted.port, timeout=10)
        for delivery in sorted(acked)[:: max(1, len(acked) // 5)]:
            assert post(conn, delivery) == (200, {"execution_id": acked[delivery], "status": "duplicate"})
        conn.close()
    finally:
        assert terminate(restarted) == 0
    for delivery, execution_id in acked.items():
        assert found[delivery] == [(execution_id, "resolved", found[delivery][0][2])], found[delivery]
    twice = query(db, "SELECT execution, position FROM jobs GROUP BY execution, position HAVING count(*) > 1")
    assert not twice, "an execution recorded the same node twice (it ran twice)"
    [(jobs,)] = query(db, "SELECT count(*) FROM jobs")
    [(resolved,)] = query(db, "SELECT count(*) FROM executions WHERE status = 'resolved'")
    # committed but killed before its 2xx left: it runs too (its sender's retry is a duplicate)
    assert jobs == resolved >= len(acked), "one job per execution that ran, and every acknowledged one ran"
    [(shared,)] = query(db, "SELECT count(*) FROM (SELECT dedup_key FROM executions WHERE status != 'duplicate' "
                            "GROUP BY dedup_key HAVING count(*) > 1)")
    assert shared == 0, "two executions share a dedup key"
    assert unfinished(db) == 0


def test_a_backlog_of_tens_of_thousands_waits_in_the_store_with_bounded_memory(spawn, tmp_path):
    config = write_config(tmp_path, QUEUED_CONFIG % {"workers": 1})
    child = spawn(config, tmp_path / "child.log")
    fast = dict(connections=32, depth=64)
    try:
        _, statuses = burst(child.host, child.port, 40_000, prefix="first", **fast)
        assert statuses == {202: 40_000}
        first = rss_kib(child.process.pid), request(child, "GET", "/readyz").json()["queue_depth"]
        _, statuses = burst(child.host, child.port, 40_000, prefix="second", **fast)
        second = rss_kib(child.process.pid), request(child, "GET", "/readyz").json()["queue_depth"]
        print(f"\nRSS {first[0] / 1024:.0f} MiB with {first[1]} queued, {second[0] / 1024:.0f} MiB with "
              f"{second[1]} queued")
        assert statuses == {202: 40_000}
        assert second[1] >= first[1] + 10_000, "the backlog is meant to grow and wait in the store"
        # Each queued delivery held in RAM would cost ~3 KiB (body and objects); what RAM holds is
        # a bounded window, the workers' ready queue, SQLite's page cache (bounded too) and the
        # door cache's keys (~200 B each).
        grown = second[0] - first[0]
        assert grown < (second[1] - first[1]) * 3 // 4 + CACHE_KIB, f"RSS grew by {grown / 1024:.0f} MiB"
    finally:
        child.process.kill()
        child.process.wait(10)


def test_a_duplicate_racing_its_original_into_another_process_runs_once(spawn, tmp_path):
    """Two processes on one database: each door misses the other's keys, so both accept; the
    claim's unique index ends the later one `duplicate`, naming the original, running nothing."""
    config, db = child_config(tmp_path, workers=4)
    first = spawn(config, tmp_path / "a.log")
    second = spawn(config, tmp_path / "b.log")
    answers: list = []
    lock = threading.Lock()

    def send(child, delivery):
        conn = http.client.HTTPConnection(child.host, child.port, timeout=10)
        result = post(conn, delivery)
        conn.close()
        with lock:
            answers.append((delivery, result))

    threads = [threading.Thread(target=send, args=(child, f"race-{n}"))
               for n in range(40) for child in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    try:
        assert len(answers) == 80 and all(status in (200, 202) for _, (status, _) in answers), answers
        assert wait_until(lambda: unfinished(db) == 0, 30), "accepted executions never finished"
        found = executions_by_delivery(db)
    finally:
        assert terminate(first) == 0 and terminate(second) == 0
    raced = 0
    for n in range(40):
        rows = found[f"race-{n}"]
        ran = [row for row in rows if row[1] == "resolved"]
        duplicates = [row for row in rows if row[1] == "duplicate"]
        assert len(ran) == 1 and len(ran) + len(duplicates) == len(rows), rows
        raced += len(duplicates)
        for (original,) in query(db, "SELECT duplicate_of FROM executions WHERE dedup_key = ? AND status = "
                                     "'duplicate'", (f"race-{n}",)):
            assert str(uuid.UUID(bytes=original)) == ran[0][0], "a duplicate names its original"
    [(jobs,)] = query(db, "SELECT count(*) FROM jobs")
    assert jobs == 40, "a duplicate ran a node"
    assert raced > 0, "no delivery raced past both doors: the test proved nothing"


STORE_CONFIG = base_config() + "[workflows.plain]\n"


def test_a_store_that_fails_its_commits_answers_503_then_the_server_recovers(serve):
    """A real fault: the intake's table taken away under the running server (by another
    connection, as an operator's mistake or a broken disk would), then given back."""
    server = serve(STORE_CONFIG)
    service = server.server.service
    outside = sqlite3.connect(server.db, isolation_level=None, timeout=10)
    outside.execute("ALTER TABLE intake RENAME TO intake_aside")
    try:
        refused = request(server, "POST", "/api/webhooks/plain", b"{}", {"Content-Type": "application/json"})
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "store unavailable"}
        ready = request(server, "GET", "/readyz")
        assert ready.status == 503
        assert any(p.startswith("writer failing: StoreError:") and "intake" in p for p in ready.json()["problems"])
    finally:
        outside.execute("ALTER TABLE intake_aside RENAME TO intake")
        outside.close()
    accepted = wait_until(lambda: (r := request(server, "POST", "/api/webhooks/plain", b"{}",
                                                {"Content-Type": "application/json"})).status == 202 and r, 5)
    assert accepted, "the writer never came back"
    assert wait_until(lambda: request(server, "GET", "/readyz").status == 200, 5)
    assert service.intake.depth <= 1, "the refused request gave its slot back"


def test_a_commit_callback_that_raises_stops_nothing(serve, caplog):
    server = serve(STORE_CONFIG)
    service = server.server.service
    real = service.intake.on_committed

    def failing():
        real()
        raise ValueError("a callback bug")

    async def install():
        service.intake.on_committed = failing

    server.call(install)
    for n in range(3):
        answer = request(server, "POST", "/api/webhooks/plain", b"{}", {"Content-Type": "application/json"})
        assert answer.status == 202
    execution = answer.json()["execution_id"]
    records = wait_until(lambda: (r := request(server, "GET", f"/api/admin/executions/{execution}",
                                                headers={"Authorization": "Bearer test-token"})).status == 200
                         and r.json()["status"] == "resolved" and r, 5)
    assert records, "the execution never ran"
    assert "a commit callback failed" in caplog.text
