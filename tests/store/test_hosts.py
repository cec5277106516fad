"""Several hosts on one PostgreSQL database (issue 10): real `fastwebhook serve` processes on
distinct ports sharing a schema of their own.  Load spread over them loses nothing acknowledged;
a delivery sent to two hosts at once runs once; a host killed with kill -9 in the middle of long
executions has them finished by another once their lease lapses; a workflow created through one
host's admin API answers on the others.  PostgreSQL as in test_store_dialects.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from burst_support import wait_until
from cli_support import start_server
from client_support import exchange, metric
from conftest import free_port, log_entries, wait_for_entry
from store_support import POSTGRES, require_postgres

CONFIG = """
[server]
listen = ["127.0.0.1:{port}"]
[storage]
url = "{url}"
[queue]
lease = "2s"
[log]
level = "info"
[admin]
token = "test-token"
[collections.people]
fields = { email = "string", hits = "integer" }
unique = [["email"]]
[workflows.hook]
path = "/hook"
[workflows.person]
path = "/person"
[[workflows.person.nodes]]
key = "save"
type = "create"
collection = "people"
values = { email = "{{$context.data.email}}", hits = "{{$context.data.hits}}" }
upsert_on = ["email"]
[workflows.once]
path = "/once"
[workflows.once.dedup]
key = "{{$context.headers.x-delivery}}"
[workflows.slow]
path = "/slow"
[[workflows.slow.nodes]]
key = "spin"
type = "script"
code = "const t = Date.now(); while (Date.now() - t < 1500) {} return 'done';"
timeout = "5s"
"""
TOKEN = {"Authorization": "Bearer test-token"}


class Host:
    def __init__(self, folder: Path, url: str):
        folder.mkdir()
        self.host, self.port = "127.0.0.1", free_port()
        self.log = folder / "server.log"
        config = folder / "config.toml"
        config.write_text(CONFIG.replace("{port}", str(self.port)).replace("{url}", url))
        self.process = start_server(config, self.log, dict(os.environ, PYTHONUNBUFFERED="1"))
        wait_for_entry(self.log, lambda e: e.get("msg") == "ready", process=self.process)

    def request(self, method: str, path: str, body: bytes = b"{}", headers: dict | None = None):
        return exchange(self, method, path, body, headers)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture
def cluster(tmp_path):
    """start(n) -> n hosts on a fresh schema; query(sql) reads it."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    hosts: list[Host] = []

    class Cluster:
        def start(self, count: int) -> list[Host]:
            for _ in range(count):
                hosts.append(Host(tmp_path / f"host{len(hosts)}", f"{POSTGRES}?schema={schema}"))
            return hosts[-count:]

        def query(self, sql: str, *args) -> list:
            async def read():
                connection = await asyncpg.connect(POSTGRES, server_settings={"search_path": schema})
                try:
                    return [tuple(row) for row in await connection.fetch(sql, *args)]
                finally:
                    await connection.close()
            return asyncio.run(read())

    yield Cluster()
    for host in hosts:
        if host.process.poll() is None:
            host.process.kill()
            host.process.wait(10)

    async def drop():
        connection = await asyncpg.connect(POSTGRES)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()
    asyncio.run(drop())


def test_load_spread_over_three_hosts_loses_nothing_acknowledged(cluster):
    hosts = cluster.start(3)
    acknowledged: list[str] = []

    def send(host: Host) -> None:
        for _ in range(40):
            status, body = host.request("POST", "/hook")
            assert status == 202
            acknowledged.append(json.loads(body)["execution_id"])

    threads = [threading.Thread(target=send, args=(host,)) for host in hosts for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(acknowledged) == 240

    def all_resolved():
        rows = dict(cluster.query("SELECT encode(id, 'hex'), status FROM executions WHERE workflow = 'hook'"))
        return rows if len(rows) == 240 and set(rows.values()) == {"resolved"} else None

    rows = wait_until(all_resolved)
    assert rows, cluster.query("SELECT status, count(*) FROM executions GROUP BY status")
    assert {execution.replace("-", "") for execution in acknowledged} == rows.keys()
    claimers = cluster.query("SELECT count(DISTINCT owner) FROM executions")   # resolved in the claim: no owner
    assert claimers == [(0,)]
    # each host's queue depth (its bound: 503 past it) is the shared queue's, now empty, whoever ran what
    depths = lambda: [metric(host, "fastwebhook_queue_depth") for host in hosts]  # noqa: E731
    assert wait_until(lambda: depths() == [0, 0, 0], timeout=10), depths()
    assert all(host.stop() == 0 for host in hosts)



def test_a_delivery_sent_to_two_hosts_at_once_runs_once(cluster):
    hosts = cluster.start(2)
    answers: list[int] = []

    def send(host: Host) -> None:
        answers.append(host.request("POST", "/once", headers={"X-Delivery": "same"})[0])

    threads = [threading.Thread(target=send, args=(hosts[i % 2],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    accepted = answers.count(202)
    assert len(answers) == 16 and set(answers) <= {200, 202} and accepted >= 1

    def settled():
        counts = dict(cluster.query("SELECT status, count(*) FROM executions WHERE workflow = 'once' GROUP BY status"))
        return counts if sum(counts.values()) == accepted and not counts.keys() & {"queued", "started"} else None

    # every repeat the other host's door did not answer itself was acknowledged, and its claim
    # found it a duplicate (none, when the doors answered all of them)
    expected = {"resolved": 1, "duplicate": accepted - 1} if accepted > 1 else {"resolved": 1}
    assert wait_until(settled) == expected
    assert all(host.stop() == 0 for host in hosts)


def test_a_host_killed_mid_execution_has_its_work_finished_by_another_after_the_lease(cluster):
    doomed, = cluster.start(1)    # alone: it claims them itself
    for _ in range(3):
        assert doomed.request("POST", "/slow")[0] == 202

    def started_on_doomed():
        rows = cluster.query("SELECT owner FROM executions WHERE workflow = 'slow' AND status = 'started'")
        return rows if rows and all(f":{doomed.process.pid}:" in owner for owner, in rows) else None

    assert wait_until(started_on_doomed, timeout=20)
    survivor, = cluster.start(1)
    doomed.process.kill()
    doomed.process.wait(10)
    killed_at = time.monotonic()

    def all_resolved():
        rows = cluster.query("SELECT status, attempts FROM executions WHERE workflow = 'slow'")
        return rows if len(rows) == 3 and {status for status, _ in rows} == {"resolved"} else None

    rows = wait_until(all_resolved, timeout=30)
    assert rows, cluster.query("SELECT status, error, attempts FROM executions")
    assert any(attempts == 2 for _, attempts in rows)      # taken over, not run by the dead host
    owners = cluster.query("SELECT count(*) FROM executions WHERE workflow = 'slow' AND owner IS NOT NULL")
    assert owners == [(0,)]
    assert time.monotonic() - killed_at < 20
    assert survivor.stop() == 0


def test_a_workflow_created_on_one_host_answers_on_the_others_within_a_second(cluster):
    first, second, third = cluster.start(3)
    body = json.dumps({"key": "made", "path": "/made", "mode": "sync", "response": {"body": {"ok": True}}}).encode()
    assert first.request("POST", "/api/admin/workflows", body, TOKEN)[0] == 201
    created = time.monotonic()
    for host in (second, third):
        assert wait_until(lambda: host.request("POST", "/made")[0] == 200, timeout=5)
    assert time.monotonic() - created < 1.5
    assert first.request("DELETE", "/api/admin/workflows/made", b"", TOKEN)[0] == 200
    for host in (second, third):
        assert wait_until(lambda: host.request("POST", "/made")[0] == 404, timeout=5)
    changed = [e["pid"] for h in (second, third) for e in log_entries(h.log) if e.get("msg") == "workflows changed: config reloaded"]
    assert len(changed) == 4     # each of the other two: once for the create, once for the delete
    assert all(host.stop() == 0 for host in (first, second, third))


class Load(threading.Thread):
    """POSTs on one host until stopped, noting each acknowledged execution id and each status."""

    def __init__(self, host: Host):
        super().__init__(daemon=True)
        self.host = host
        self.acknowledged: list[str] = []
        self.statuses: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            status, body = self.host.request("POST", "/hook")
            self.statuses.append(status)
            if status == 202:
                self.acknowledged.append(json.loads(body)["execution_id"])


def test_connections_cut_under_load_lose_nothing_acknowledged_and_the_hosts_reconnect(cluster):
    hosts = cluster.start(2)
    loads = [Load(host) for host in hosts for _ in range(2)]
    for load in loads:
        load.start()
    assert wait_until(lambda: all(len(load.acknowledged) >= 10 for load in loads), timeout=30)
    cut = cluster.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'fastwebhook' AND pid <> pg_backend_pid()")
    assert len(cut) >= 4         # each host's pool and its LISTEN connection
    before = [len(load.acknowledged) for load in loads]
    assert wait_until(lambda: all(len(load.acknowledged) >= n + 10 for load, n in zip(loads, before)), timeout=30), \
        [load.statuses[-5:] for load in loads]     # the load goes on: each host acknowledges again
    for load in loads:
        load.halt.set()
    for load in loads:
        load.join(30)
    statuses = [status for load in loads for status in load.statuses]
    assert set(statuses) <= {202, 503}, sorted(set(statuses))
    acknowledged = {execution.replace("-", "") for load in loads for execution in load.acknowledged}
    after = [host.request("POST", "/hook")[0] for host in hosts for _ in range(5)]
    assert after == [202] * 10                                # reconnected by themselves

    def all_resolved():
        rows = dict(cluster.query("SELECT encode(id, 'hex'), status FROM executions WHERE workflow = 'hook'"))
        return rows if acknowledged <= rows.keys() and set(rows.values()) == {"resolved"} else None

    assert wait_until(all_resolved), cluster.query("SELECT status, count(*) FROM executions GROUP BY status")
    listening = cluster.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fastwebhook' "
                              "AND query LIKE 'LISTEN%'")
    assert wait_until(lambda: cluster.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                            "'fastwebhook' AND query LIKE 'LISTEN%'")[0][0] == 2, timeout=10), listening
    assert all(host.stop() == 0 for host in hosts)


def test_records_written_on_every_host_go_to_one_collection(cluster):
    hosts = cluster.start(2)
    for n in range(20):
        body = json.dumps({"email": f"p{n % 5}@example.com", "hits": n}).encode()
        assert hosts[n % 2].request("POST", "/person", body)[0] == 202

    def settled():
        counts = dict(cluster.query("SELECT status, count(*) FROM executions WHERE workflow = 'person' GROUP BY status"))
        return counts if counts.get("resolved") == 20 else None

    assert wait_until(settled), cluster.query("SELECT status, error FROM executions WHERE workflow = 'person'")
    records = cluster.query('SELECT email FROM "records_people" ORDER BY email')
    assert records == [(f"p{n}@example.com",) for n in range(5)]          # upserted, once each
    jobs = cluster.query("SELECT count(*) FROM jobs WHERE node = 'save' AND status = 'resolved'")
    assert jobs == [(20,)]                                                 # each write with its job row
    status, body = hosts[1].request("GET", "/api/admin/collections/people/records?limit=10", b"", TOKEN)
    assert status == 200 and sorted(r["email"] for r in json.loads(body)["items"]) == [r for r, in records]
    assert all(host.stop() == 0 for host in hosts)


def test_a_door_checks_keys_it_has_not_seen_against_the_shared_index(cluster):
    first, second = cluster.start(2)
    status, body = first.request("POST", "/once", headers={"X-Delivery": "seen-elsewhere"})
    assert status == 202
    original = json.loads(body)["execution_id"]
    assert wait_until(lambda: cluster.query("SELECT status FROM executions WHERE workflow = 'once'") == [("resolved",)])
    status, body = second.request("POST", "/once", headers={"X-Delivery": "seen-elsewhere"})
    assert (status, json.loads(body)) == (200, {"execution_id": original, "status": "duplicate"})
    assert all(host.stop() == 0 for host in (first, second))
