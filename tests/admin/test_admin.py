"""The admin API (SPEC section 9) over real sockets against a real server and SQLite file, and
the CLI reading the same store: one code path, the same objects."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import re

import pytest

from admin_support import TOKEN, admin, call, send
from cli_support import fastwebhook
from wait_support import wait_for

WORKFLOWS = """
[workflows.hook]
[[workflows.hook.nodes]]
key = "answer"
type = "response"
status = 201
body = { got = "{{$context.data.n}}", path = "{{$context.params.name}}" }

[workflows.named]
path = "/hooks/{name}"
[[workflows.named.nodes]]
key = "answer"
type = "response"

[workflows.gh]
[workflows.gh.verify]
scheme = "github"
secret = "gh-secret"

[workflows.fails]
[[workflows.fails.nodes]]
key = "stop"
type = "end"
status = "failed"
"""
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FINAL = ("resolved", "failed", "error", "aborted")


@pytest.fixture
def server(serve):
    return serve(WORKFLOWS)


@pytest.fixture
def history(server):
    """Four `hook`, one `named` and two `fails` executions, all finished; ids oldest first."""
    ids = []
    for n in range(4):
        status, headers, body = send(server, "/api/webhooks/hook", {"n": n})
        assert status == 202 and headers["x-execution-id"] == body["execution_id"]
        ids.append(body["execution_id"])
    ids.append(send(server, "/hooks/acme?x=1&x=2", {"n": 9})[2]["execution_id"])
    ids += [send(server, "/api/webhooks/fails")[2]["execution_id"] for _ in range(2)]

    def finished():
        items = admin(server, "/api/admin/executions")[2]["items"]
        return len(items) == 7 and all(e["status"] in FINAL for e in items)

    wait_for(finished, failure="executions did not finish")
    return ids


# --- the token ------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-token"},
                                     {"Authorization": "Bearer test-token-and-more"},
                                     {"Authorization": "Basic dGVzdC10b2tlbg=="}])
def test_missing_or_wrong_token_is_401(server, headers):
    for path in ("/api/admin/executions", "/api/admin/executions/x", "/api/admin/requests",
                 "/api/admin/workflows", "/api/admin/nothing-here"):
        status, answer_headers, body = admin(server, path, headers)
        assert status == 401, path
        assert "error" in body
        assert answer_headers["www-authenticate"].startswith("Bearer")


def test_admin_api_is_absent_without_a_token(serve, tmp_path):
    server = serve("""
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///{db}"
[admin]
token = ""
""" + WORKFLOWS)
    for headers in ({}, TOKEN, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}):
        status, _, body = admin(server, "/api/admin/executions", headers)
        assert (status, body) == (404, {"error": "not found"})
    assert send(server, "/api/webhooks/hook")[0] == 202, "webhooks still work"


# --- executions -----------------------------------------------------------------------------

def test_list_executions_newest_first_with_filters(server, history):
    status, _, page = admin(server, "/api/admin/executions")
    assert status == 200
    assert [e["id"] for e in page["items"]] == history[::-1]
    assert page["next"] is None
    assert [e["workflow"] for e in page["items"]] == ["fails", "fails", "named", "hook", "hook", "hook", "hook"]

    fails = admin(server, "/api/admin/executions?workflow=fails")[2]
    assert [e["id"] for e in fails["items"]] == history[:4:-1]
    assert admin(server, "/api/admin/executions?status=failed")[2] == fails
    resolved = admin(server, "/api/admin/executions?status=resolved")[2]["items"]
    assert [e["id"] for e in resolved] == history[4::-1]
    assert admin(server, "/api/admin/executions?workflow=hook&status=failed")[2] == {"items": [], "next": None}
    assert admin(server, "/api/admin/executions?workflow=nobody")[2] == {"items": [], "next": None}


def test_cursor_paging_walks_every_execution_once(server, history):
    seen, url = [], "/api/admin/executions?limit=2"
    while True:
        status, _, page = admin(server, url)
        assert status == 200 and len(page["items"]) <= 2
        seen += [e["id"] for e in page["items"]]
        if page["next"] is None:
            break
        url = f"/api/admin/executions?limit=2&cursor={page['next']}"
    assert seen == history[::-1]

    filtered, url = [], "/api/admin/executions?workflow=hook&limit=3"
    while url:
        page = admin(server, url)[2]
        filtered += [e["id"] for e in page["items"]]
        url = page["next"] and f"/api/admin/executions?workflow=hook&limit=3&cursor={page['next']}"
    assert filtered == history[3::-1]


@pytest.mark.parametrize("query, message", [
    ("limit=1001", "limit must be between 1 and 1000"),
    ("limit=0", "limit must be between 1 and 1000"),
    ("limit=ten", "limit must be a whole number"),
    ("status=sleeping", "status must be one of"),
    ("cursor=not-a-cursor", "not a cursor"),
])
def test_bad_list_queries_are_400(server, query, message):
    status, _, body = admin(server, f"/api/admin/executions?{query}")
    assert status == 400
    assert message in body["error"]


def test_limit_1000_is_allowed(server, history):
    status, _, page = admin(server, "/api/admin/executions?limit=1000")
    assert status == 200 and len(page["items"]) == 7


def test_execution_detail_has_the_spec_shape(server, history):
    execution_id = history[4]
    status, _, record = admin(server, f"/api/admin/executions/{execution_id}")
    assert status == 200
    spec_keys = {"id", "workflow", "status", "dedup_key", "created_at", "started_at", "finished_at",
                 "request", "jobs"}
    assert spec_keys <= set(record), f"missing {spec_keys - set(record)}"
    assert record["id"] == execution_id
    assert (record["workflow"], record["status"], record["dedup_key"]) == ("named", "resolved", None)
    for key in ("created_at", "started_at", "finished_at"):
        assert ISO.match(record[key]), (key, record[key])
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]

    request = record["request"]
    assert set(request) == {"method", "path", "headers", "query", "params", "ip", "data"}
    assert request["method"] == "POST"
    assert request["path"] == "/hooks/acme"
    assert request["query"] == {"x": ["1", "2"]}
    assert request["params"] == {"name": "acme"}
    assert request["ip"] == "127.0.0.1"
    assert request["data"] == {"n": 9}
    assert request["headers"]["content-type"] == "application/json"

    [job] = record["jobs"]
    assert set(job) == {"node", "type", "status", "result", "error", "logs", "duration_ms"}
    assert (job["node"], job["type"], job["status"], job["error"], job["logs"]) == (
        "answer", "response", "resolved", None, [])
    assert job["result"]["status"] == 200
    assert isinstance(job["duration_ms"], float) and job["duration_ms"] >= 0


def test_failed_execution_detail_records_the_failing_node(server, history):
    record = admin(server, f"/api/admin/executions/{history[-1]}")[2]
    assert record["status"] == "failed"
    assert [(j["node"], j["type"]) for j in record["jobs"]] == [("stop", "end")]


def test_templated_response_node_result_is_recorded(server, history):
    record = admin(server, f"/api/admin/executions/{history[2]}")[2]
    assert record["jobs"][0]["result"] == {"status": 201, "headers": {}, "body": {"got": 2, "path": None}}


def test_unknown_or_malformed_execution_is_404(server, history):
    assert admin(server, "/api/admin/executions/01900000-0000-7000-8000-000000000000")[0] == 404
    assert admin(server, "/api/admin/executions/not-an-id")[0] == 404


def test_write_methods_on_read_endpoints_are_405(server):
    status, headers, _ = call(server, "DELETE", "/api/admin/executions", headers=TOKEN)
    assert status == 405 and headers["allow"] == "GET"


# --- the request log ------------------------------------------------------------------------

def test_request_log_lists_rejected_requests_too(server):
    raw = b'{"zen": "x"}'
    good = "sha256=" + hmac.new(b"gh-secret", raw, hashlib.sha256).hexdigest()
    sent = [
        call(server, "POST", "/api/webhooks/gh", raw, {"X-Hub-Signature-256": good, "Content-Type": "application/json"}),
        call(server, "POST", "/api/webhooks/gh", raw, {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
        call(server, "POST", "/nowhere", b"abc"),
        call(server, "GET", "/api/webhooks/hook"),
    ]
    assert [s for s, _, _ in sent] == [202, 401, 404, 405]

    def logged():  # the webhook rows; the admin API's own requests are in the log too
        items = [i for i in admin(server, "/api/admin/requests")[2]["items"]
                 if not i["path"].startswith("/api/admin")]
        return items if len(items) >= 4 else None

    items = wait_for(logged, failure="the request log stayed empty")
    assert [(i["method"], i["path"], i["workflow"], i["status"]) for i in items] == [
        ("GET", "/api/webhooks/hook", "hook", 405),
        ("POST", "/nowhere", None, 404),
        ("POST", "/api/webhooks/gh", "gh", 401),
        ("POST", "/api/webhooks/gh", "gh", 202),
    ]
    assert [i["request_id"] for i in items] == [h["x-request-id"] for _, h, _ in reversed(sent)]
    assert items[3]["execution_id"] == sent[0][2]["execution_id"]
    assert items[2]["execution_id"] is None
    assert "signature" in items[2]["reason"] or "scheme=github" in items[2]["reason"]
    assert "gh-secret" not in json.dumps(items)
    assert items[1]["body_size"] == 3 and items[3]["body_size"] == len(raw)
    assert all(ISO.match(i["at"]) and i["ip"] == "127.0.0.1" for i in items)

    first = admin(server, "/api/admin/requests?limit=3")[2]
    assert len(first["items"]) == 3 and first["next"] is not None
    rest = admin(server, f"/api/admin/requests?limit=3&cursor={first['next']}")[2]
    # lines logged since are newer: the listing from the first page's top is what paged
    everything = [i["request_id"] for i in admin(server, "/api/admin/requests?limit=1000")[2]["items"]]
    top = everything.index(first["items"][0]["request_id"])
    assert [i["request_id"] for i in first["items"] + rest["items"]] == everything[top:top + 6]
    assert admin(server, "/api/admin/requests?limit=5000")[0] == 400


def test_reserved_endpoints_are_in_the_request_log(server):
    def get(path: str) -> tuple[int, str]:  # /metrics is text, not JSON
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status, response.getheader("x-request-id")
        finally:
            conn.close()

    answers = [get(path) for path in ("/healthz", "/readyz", "/metrics", "/api/admin/executions")]
    assert [status for status, _ in answers] == [200, 200, 200, 401]  # no admin token: 401
    ids = dict((request_id, status) for status, request_id in answers)

    def logged():
        items = admin(server, "/api/admin/requests?limit=1000")[2]["items"]
        found = {i["request_id"]: i for i in items if i["request_id"] in ids}
        return found if len(found) == len(ids) else None

    found = wait_for(logged, failure="the reserved endpoints' requests never reached the request log")
    assert {request_id: entry["status"] for request_id, entry in found.items()} == ids
    assert all(entry["workflow"] is None and entry["method"] == "GET" for entry in found.values())


def test_workflows_endpoint(server):
    status, _, page = admin(server, "/api/admin/workflows")
    assert status == 200 and page["next"] is None
    assert [w["key"] for w in page["items"]] == ["hook", "named", "gh", "fails"]
    status, _, one = admin(server, "/api/admin/workflows/named")
    assert status == 200 and one["path"] == "/hooks/{name}" and one["verify"] == "none"
    assert admin(server, "/api/admin/workflows/nobody")[0] == 404
    assert "gh-secret" not in json.dumps(page)


# --- the CLI answers with the API's objects --------------------------------------------------

def cli_json(server, *args: str):
    config = os.path.join(os.path.dirname(server.db), "config.toml")
    done = fastwebhook(*args, "-c", config, "--json", text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_cli_prints_the_same_objects_as_the_api(server, history):
    # The server keeps running: WAL lets the CLI read beside it.
    assert cli_json(server, "executions") == admin(server, "/api/admin/executions")[2]
    assert cli_json(server, "executions", "--workflow", "hook", "--limit", "2") == \
        admin(server, "/api/admin/executions?workflow=hook&limit=2")[2]
    for execution_id in (history[0], history[-1]):
        assert cli_json(server, "execution", execution_id) == \
            admin(server, f"/api/admin/executions/{execution_id}")[2]
    # from a fixed cursor: the admin API's own requests keep adding rows at the top
    cursor = admin(server, "/api/admin/requests?limit=2")[2]["next"]
    assert cli_json(server, "requests", "--limit", "5", "--cursor", cursor) == \
        admin(server, f"/api/admin/requests?limit=5&cursor={cursor}")[2]


def test_cli_workflows_json_matches_the_api(server):
    assert cli_json(server, "workflows") == admin(server, "/api/admin/workflows")[2]


# --- stored request headers (issue 18, item 8) ----------------------------------------------

def test_credential_headers_are_not_stored_and_the_set_is_configurable(serve):
    server = serve("""
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///{db}"
redact_headers = ["X-Tenant-Pass"]
[log]
level = "warning"
[admin]
token = "test-token"
""" + WORKFLOWS)
    credentials = {"X-Api-Key": "k1", "Api-Key": "k2", "X-Auth-Token": "k3", "X-Access-Token": "k4",
                   "Authorization": "Bearer k5", "Cookie": "s=k6", "X-Tenant-Pass": "k7"}
    execution_id = send(server, "/api/webhooks/hook", {"n": 1}, {**credentials, "X-Plain": "kept"})[2]["execution_id"]
    headers = admin(server, f"/api/admin/executions/{execution_id}")[2]["request"]["headers"]
    assert {name: headers[name.lower()] for name in credentials} == dict.fromkeys(credentials, "[redacted]")
    assert headers["x-plain"] == "kept"
