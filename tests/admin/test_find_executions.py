"""Finding an execution by what it carried (SPEC section 9): GET /api/admin/executions with
dedup_key=, request_id= and data.<path>=<value>, and the CLI's `executions` with the same
filters, on SQLite and PostgreSQL: each finds its execution and only it."""

from __future__ import annotations

import json
from urllib.parse import quote

import orjson

from cli_support import fastwebhook
from client_support import admin, request, wait_for_execution
import store_support

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "{url}"
[log]
level = "warning"
[admin]
token = "test-token"

[workflows.orders]
[workflows.orders.dedup]
key = "{{$context.headers.x-delivery}}"
[[workflows.orders.nodes]]
key = "answer"
type = "response"

[workflows.other]
[workflows.other.dedup]
key = "{{$context.headers.x-delivery}}"
[[workflows.other.nodes]]
key = "answer"
type = "response"
"""
BODIES = [
    ("orders", "d-1", {"order": {"id": 42}, "note": "first", "items": [{"sku": "A-1"}]}),
    ("orders", "d-2", {"order": {"id": "42"}, "note": "second", "items": [{"sku": "B-2"}]}),
    ("orders", "d-3", {"order": {"id": 7}, "flag": True, "note": "third"}),
    ("other", "d-1", {"order": {"id": 1}, "flag": 1, "note": "fourth"}),
]


url = store_support.url   # the fixture: a SQLite file, or a fresh PostgreSQL schema


def send_all(running) -> list[tuple[str, str]]:
    """(execution id, X-Request-Id) of each of BODIES, once each has run."""
    sent = []
    for workflow, delivery, body in BODIES:
        answer = request(running, "POST", f"/api/webhooks/{workflow}", orjson.dumps(body),
                         {"Content-Type": "application/json", "X-Delivery": delivery})
        assert answer.status == 202, answer.body
        sent.append((answer.json()["execution_id"], answer.headers["x-request-id"]))
    for execution, _ in sent:
        wait_for_execution(running, execution)
    return sent


def found(running, query: str) -> list[str]:
    return [item["id"] for item in admin(running, f"/executions?{query}").json()["items"]]


def test_each_filter_finds_its_execution_and_only_it(serve, url, tmp_path):
    running = serve(CONFIG.replace("{url}", url))
    (first, first_rid), (second, _), (third, third_rid), (fourth, _) = send_all(running)

    assert found(running, "dedup_key=d-2") == [second]
    assert found(running, "dedup_key=d-1") == [fourth, first]                 # one key, two workflows
    assert found(running, "dedup_key=d-1&workflow=orders") == [first]
    assert found(running, f"request_id={third_rid}") == [third]
    assert found(running, f"request_id={first_rid}&status=resolved") == [first]
    assert found(running, f"request_id={first_rid}&status=failed") == []
    assert found(running, "data.order.id=42") == [first]                      # the number, as JSON
    assert found(running, "data.order.id=" + quote('"42"')) == [second]       # the string
    assert found(running, "data.flag=true") == [third]                        # true is not 1
    assert found(running, "data.flag=1") == [fourth]
    assert found(running, "data.note=third") == [third]                      # not JSON: a string
    assert found(running, "data.items.0.sku=B-2") == [second]
    assert found(running, "data.order.id=42&dedup_key=d-2") == []            # all must hold
    assert found(running, "data.missing=1") == []
    record = admin(running, f"/executions?request_id={third_rid}").json()["items"][0]
    assert record["request"]["data"]["note"] == "third" and record["dedup_key"] == "d-3"

    config = str(tmp_path / "config.toml")
    for args, expected in ((["--dedup-key", "d-2"], [second]), (["--request-id", third_rid], [third]),
                           (["--data", "order.id=42"], [first]), (["--data", "flag=true", "--data", "note=third"], [third])):
        done = fastwebhook("executions", *args, "-c", config, "--json", text=True)
        assert done.returncode == 0, done.stderr
        assert [item["id"] for item in json.loads(done.stdout)["items"]] == expected, args


def test_a_scan_pages_with_next_until_nothing_older_is_stored(serve, url):
    running = serve(CONFIG.replace("{url}", url))
    (first, _), (second, _), (third, _), _ = send_all(running)
    page = admin(running, "/executions?workflow=orders&data.note=" + quote('"first"') + "&limit=1").json()
    assert [item["id"] for item in page["items"]] == [first]
    page = admin(running, "/executions?workflow=orders&dedup_key=d-3&limit=1").json()
    assert [item["id"] for item in page["items"]] == [third] and page["next"]   # where the scan stopped
    after = admin(running, f"/executions?workflow=orders&dedup_key=d-3&limit=1&cursor={page['next']}").json()
    assert after == {"items": [], "next": None}
    for bad in ("1.\u00b2", "99999999999999999999.0", "1.2.zz", "1.2.3.4"):   # a 400, never our 500
        answer = request(running, "GET", f"/api/admin/executions?workflow=orders&dedup_key=d-3&cursor={quote(bad)}",
                         headers={"Authorization": "Bearer test-token"})
        assert answer.status == 400 and "not a cursor" in answer.json()["error"], bad
    assert "a data filter names a field" in request(running, "GET", "/api/admin/executions?data.=1",
                                                   headers={"Authorization": "Bearer test-token"}).json()["error"]
