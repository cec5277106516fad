"""`on_failure` as config (issue 20): `fastwebhook check` names one that points at no workflow by
its TOML path; the admin API refuses to store such a workflow (422, the same path) and takes one
naming a workflow that exists, whose failures then queue their alerts like the file's."""

from __future__ import annotations

import json
import os

from burst_support import wait_until
from cli_support import fastwebhook
from client_support import ADMIN, exchange, request
from conftest import write_config

DANGLING = """
[workflows.orders]
path = "/orders"
on_failure = "alerst"
[workflows.alerts]
path = "/alerts"
[workflows.other]
path = "/other"
on_failure = 7
"""


def test_check_names_an_on_failure_that_points_at_no_workflow(tmp_path):
    config = write_config(tmp_path, DANGLING)
    environ = {k: v for k, v in os.environ.items() if k != "FASTWEBHOOK_CONFIG"}
    done = fastwebhook("check", "-c", str(config), env=environ, text=True)
    assert done.returncode == 1, done.stdout
    lines = done.stderr.splitlines()
    assert f"{config}: workflows.orders.on_failure: no workflow 'alerst' to run when this one fails" in lines
    assert f"{config}: workflows.other.on_failure: must be a string, not int" in lines
    assert lines[-1] == f"{config}: 2 error(s)"
    fixed = write_config(tmp_path, DANGLING.replace("alerst", "alerts").replace("on_failure = 7", "on_failure = 'orders'"))
    done = fastwebhook("check", "-c", str(fixed), env=environ, text=True)
    assert done.returncode == 0, done.stderr


def test_a_stored_workflow_must_name_a_workflow_that_exists_and_then_alerts(serve):
    running = serve('[workflows.alerts]\npath = "/alerts"\n')
    failing = {"key": "stored", "path": "/stored", "on_failure": "nowhere",
               "nodes": [{"key": "stop", "type": "end", "status": "failed"}]}
    answer = request(running, "POST", "/api/admin/workflows", json.dumps(failing).encode(),
                     {"Content-Type": "application/json", **ADMIN})
    assert answer.status == 422, answer.body
    assert answer.json()["errors"] == [{"path": "workflows.stored.on_failure",
                                        "message": "no workflow 'nowhere' to run when this one fails"}]
    answer = request(running, "POST", "/api/admin/workflows", json.dumps({**failing, "on_failure": "alerts"}).encode(),
                     {"Content-Type": "application/json", **ADMIN})
    assert answer.status == 201, answer.body
    status, body = exchange(running, "POST", "/stored")
    assert status == 202, body
    failed = json.loads(body)["execution_id"]

    def alerted():
        items = request(running, "GET", "/api/admin/executions?workflow=alerts", headers=ADMIN).json()["items"]
        return items if items and items[0]["status"] == "resolved" else None
    alerts = wait_until(alerted, 20, 0.05)
    assert alerts and [x["failure_of"] for x in alerts] == [failed]
    assert alerts[0]["request"]["data"]["workflow"] == "stored"
