"""Failure workflows (issue 20, SPEC section 9): `[workflows.K] on_failure = "W"` queues exactly
one execution of W per execution of K that ends failed, through the intake, with what failed in
its `$context.data`; an alert's own failure queues nothing; a kill -9 between a failure and its
alert loses the alert neither nor doubles it.  On real SQLite and real PostgreSQL: the store's
own rule (the alert goes in with its failed execution's final status, or not at all), a real
server over real sockets, and real `fastwebhook serve` processes killed with SIGKILL.
PostgreSQL as in tests/store/test_store_dialects.py ($FASTWEBHOOK_TEST_POSTGRES; a schema per
test; $FASTWEBHOOK_REQUIRE_POSTGRES makes its absence a failure)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from burst_support import wait_until
from client_support import ADMIN, exchange, request
from conftest import start_server
from fastwebhook.config.model import StorageConfig
from fastwebhook.core.ids import new_id
from fastwebhook.store import open_store
from fastwebhook.store.rows import Delivery, Final, Records, Status, StoredRequest
from fastwebhook.store.reads import Reads
from http_support import Reply
import store_support
from store_support import none_in_memory, runs_something

url = store_support.url   # the fixture: a SQLite file, or a fresh PostgreSQL schema
FINAL = ("resolved", "failed", "error", "aborted")


# -- the store's rule ----------------------------------------------------------------------------

def _delivery(workflow: str, failure_of: bytes | None = None) -> Delivery:
    request = StoredRequest("POST", f"/{workflow}", "", [("content-type", "application/json")], {}, "127.0.0.1",
                            time.time(), "r")
    return Delivery(new_id(), workflow, "v1", request, b'{"n": 1}', None, None, 0.0, failure_of=failure_of)


def test_an_alert_goes_in_with_the_status_that_makes_its_execution_failed_and_only_then(url):
    async def scenario():
        store = open_store(StorageConfig(url=url))
        await store.open()
        try:
            now = time.time()
            await store.append([_delivery("k"), _delivery("k")])
            claim = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
            first, second = claim.run
            # the first failure and its alert: both go in, in one transaction
            alert = _delivery("alerts", failure_of=first.id)
            records = Records()
            records.change(Final(first.id, Status.FAILED, now, now, "boom"))
            records.alerts.append(alert)
            assert [d.id for d in await store.record(records)] == [alert.id]
            # the same failure recorded again (another attempt, late): no second alert
            late = Records()
            late.change(Final(first.id, Status.FAILED, now, now, "boom again"))
            late.alerts.append(_delivery("alerts", failure_of=first.id))
            assert await store.record(late) == []
            # records without alerts are untouched by all this
            plain = Records()
            plain.change(Final(second.id, Status.RESOLVED, now, now))
            assert await store.record(plain) == []
            taken = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
            assert [(d.id, d.workflow, d.failure_of) for d in taken.run] == [(alert.id, "alerts", first.id)]
            shown = await Reads(store).get_execution(alert.id)
            assert shown.failure_of == first.id and shown.body == b'{"n": 1}'
            assert (await Reads(store).get_execution(first.id)).error == "boom"   # the first final stands
        finally:
            await store.close()

    asyncio.run(scenario())


# -- a real server --------------------------------------------------------------------------------

def _config(url: str, workflows: str) -> str:
    return f"""
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "{url}"
[queue]
lease = "2s"
[log]
level = "info"
[admin]
token = "test-token"
""" + workflows


FAILING = """
[workflows.orders]
path = "/orders"
on_failure = "alerts"
[[workflows.orders.nodes]]
key = "check"
type = "script"
code = "if ($context.data.ok) return 'fine'; throw new Error('no such order ' + $context.data.n);"

[workflows.alerts]
path = "/alerts"
on_failure = "alerts"   # its own failure must not queue another alert
[[workflows.alerts.nodes]]
key = "page"
type = "script"
code = "console.log('alert', $context.data.execution_id); return $context.data;"
[[workflows.alerts.nodes]]
key = "stop"
type = "end"
status = "failed"
"""


def _executions(running, workflow: str) -> list[dict]:
    answer = request(running, "GET", f"/api/admin/executions?workflow={workflow}&limit=1000", headers=ADMIN)
    assert answer.status == 200, answer.body
    return answer.json()["items"]


def _all_final(running, workflow: str, count: int) -> list[dict] | None:
    found = _executions(running, workflow)
    return found if len(found) >= count and all(x["status"] in FINAL for x in found) else None


def test_each_failure_queues_exactly_one_alert_and_an_alert_failing_queues_none(url, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(_config(url, FAILING))
    running = start_server(config)
    try:
        sent = {}
        for n in range(4):
            status, body = exchange(running, "POST", "/orders", json.dumps({"n": n, "ok": n == 3}).encode())
            assert status == 202, body
            sent[json.loads(body)["execution_id"]] = n
        orders = wait_until(lambda: _all_final(running, "orders", 4), 20, 0.05)
        assert orders, _executions(running, "orders")
        failed = {x["id"] for x in orders if x["status"] == "failed"}
        assert len(failed) == 3 and {x["status"] for x in orders} == {"failed", "resolved"}
        alerts = wait_until(lambda: _all_final(running, "alerts", 3), 20, 0.05)
        assert alerts, _executions(running, "alerts")
        # An alert ends failed (its end node) in the same transaction that would have queued a
        # fourth: with every alert final, whatever they queued is in the store already.
        assert len(_executions(running, "alerts")) == 3
        assert all(x["status"] == "failed" for x in alerts)
        assert sorted(x["failure_of"] for x in alerts) == sorted(failed)
        for alert in alerts:
            shown = request(running, "GET", f"/api/admin/executions/{alert['id']}", headers=ADMIN).json()
            reported = shown["failure_of"]
            n = sent[reported]
            assert shown["request"]["data"] == {
                "execution_id": reported, "workflow": "orders", "status": "failed", "node": "check",
                "error": f"node 'check' (workflows.orders.nodes[0]): Error: no such order {n} (line 1)",
                "request": {"method": "POST", "path": "/orders", "ip": "127.0.0.1"}}
            assert shown["jobs"][0]["result"] == shown["request"]["data"]    # what the workflow saw
        # the alert was no HTTP request: the request log has the four webhooks only
        log = request(running, "GET", "/api/admin/requests?limit=100", headers=ADMIN).json()["items"]
        assert sorted(line["path"] for line in log if line["workflow"]) == ["/orders"] * 4
    finally:
        running.stop()


def test_a_failure_error_message_is_exactly_what_the_node_said(url, tmp_path):
    """`error` and `node` of an end node's failure: the end node, and the runner's words."""
    config = tmp_path / "config.toml"
    config.write_text(_config(url, """
[workflows.k]
path = "/k"
on_failure = "w"
[[workflows.k.nodes]]
key = "gate"
type = "condition"
all = [["{{$context.data.go}}", "==", true]]
  [[workflows.k.nodes.else]]
  key = "give_up"
  type = "end"
  status = "failed"
[workflows.w]
path = "/w"
"""))
    running = start_server(config)
    try:
        status, body = exchange(running, "POST", "/k", b'{"go": false}')
        assert status == 202
        failed = json.loads(body)["execution_id"]
        alerts = wait_until(lambda: _all_final(running, "w", 1), 20, 0.05)
        assert alerts and alerts[0]["status"] == "resolved" and alerts[0]["failure_of"] == failed
        assert alerts[0]["request"]["data"]["node"] == "give_up"
        assert alerts[0]["request"]["data"]["error"] == "ended by an end node"
    finally:
        running.stop()


# -- kill -9 --------------------------------------------------------------------------------------

KILLED = """
[workflows.fast]
path = "/fast"
on_failure = "alerts"
[[workflows.fast.nodes]]
key = "boom"
type = "end"
status = "failed"

[workflows.slow]
path = "/slow"
on_failure = "alerts"
[[workflows.slow.nodes]]
key = "call"
type = "request"
method = "POST"
url = "{slow}/slow"
timeout = "60s"

[workflows.alerts]
path = "/alerts"
[[workflows.alerts.nodes]]
key = "page"
type = "request"
method = "POST"
url = "{pager}/page"
body = { execution_id = "{{$context.data.execution_id}}" }
timeout = "60s"
"""


def _store_rows(url: str, sql: str) -> list[tuple]:
    """The store read directly, beside (or after) the server."""
    async def read():
        store = open_store(StorageConfig(url=url))
        await store.open()
        try:
            return await store.db.read_alone(sql)
        finally:
            await store.close()
    return asyncio.run(read())


def test_a_kill_9_between_a_failure_and_its_alert_leaves_exactly_one_alert(url, tmp_path, spawn):
    from http_support import RecordingServer  # noqa: PLC0415

    pager, slow = RecordingServer(), RecordingServer()
    try:
        pager.replies = [Reply(delay=60)]                               # the first alert hangs
        slow.replies = [Reply(status=500, delay=60), Reply(status=500)]  # the slow one fails, late
        config = tmp_path / "config.toml"
        workflows = KILLED.replace("{pager}", pager.url).replace("{slow}", slow.url)
        config.write_text(_config(url, workflows))
        child = spawn(config, tmp_path / "first.log")
        fast = json.loads(exchange(child, "POST", "/fast")[1])["execution_id"]
        slow_id = json.loads(exchange(child, "POST", "/slow")[1])["execution_id"]
        # The fast one failed and its alert is running (its call is held); the slow one is
        # still running.  Then the server is killed.
        assert wait_until(lambda: len(pager.received) == 1 and len(slow.received) == 1, 20, 0.05), \
            (pager.received, slow.received)
        child.process.kill()
        child.process.wait(10)
        first = pager.received[0]
        assert json.loads(first.body)["execution_id"] == fast
        statuses = dict((uuid.UUID(bytes=bytes(i)).hex, s) for i, s in _store_rows(url, "SELECT id, status FROM executions"))
        assert statuses[uuid.UUID(fast).hex] == "failed" and statuses[uuid.UUID(slow_id).hex] != "failed"

        restarted = spawn(config, tmp_path / "second.log")

        def settled():
            alerts = _executions(restarted, "alerts")
            slow_done = [x for x in _executions(restarted, "slow") if x["status"] in FINAL]
            return alerts if slow_done and len(alerts) >= 2 and all(x["status"] in FINAL for x in alerts) else None
        alerts = wait_until(settled, 40, 0.1)
        assert alerts, (_executions(restarted, "alerts"), _executions(restarted, "slow"))
        assert len(_executions(restarted, "alerts")) == 2
        assert sorted(x["failure_of"] for x in alerts) == sorted([fast, slow_id])
        assert all(x["status"] == "resolved" for x in alerts)
        # the held alert ran again after the restart: the same execution, its second attempt
        again = [x for x in alerts if x["failure_of"] == fast][0]
        assert again["attempts"] == 2
        assert sorted(json.loads(r.body)["execution_id"] for r in pager.received[1:]) == sorted([fast, slow_id])
    finally:
        pager.close()
        slow.close()
