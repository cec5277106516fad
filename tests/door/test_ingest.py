"""SPEC section 4 (HTTP behaviour) and section 5 (`$context`) through the real server: port 0,
real sockets, a real SQLite file."""

from __future__ import annotations

import base64
import gzip
import hashlib
import shutil
import subprocess
import time

import orjson
import pytest

from burst_support import wait_until
from client_support import Answer, post_json, request
from conftest import base_config
from wait_support import wait_for
from fastwebhook.admin.api import list_executions
from fastwebhook.verify import sign

SECRET = "s3cret-for-tests"
ADMIN = {"Authorization": "Bearer test-token"}

CONFIG = base_config(server="""
read_timeout = "2s"
keepalive_timeout = "2s"
""") + """
[workflows.plain]
path = "/plain"

[workflows.gh]
path = "/gh"
  [workflows.gh.verify]
  scheme = "github"
  secret = "%(secret)s"

[workflows.custom]
path = "/custom"
  [workflows.custom.dedup]
  key = "{{$context.data.id}}"
  ttl = "1h"

[workflows.sync-default]
path = "/sync-default"
mode = "sync"
  [workflows.sync-default.response]
  status = 203
  headers = { "Content-Type" = "application/json", "X-Custom" = "yes" }
  body = '{"ok": true, "execution": "{{$execution.id}}"}'

[workflows.sync-node]
path = "/sync/{name}"
mode = "sync"
  [[workflows.sync-node.nodes]]
  key = "answer"
  type = "response"
  status = 201
  headers = { "X-Name" = "{{$context.params.name}}" }
  body = { x = "{{$context.data.x}}", name = "{{$context.params.name}}", greeting = "hi {{$context.params.name}}" }

[workflows.sync-fail]
path = "/sync-fail"
mode = "sync"
  [[workflows.sync-fail.nodes]]
  key = "stop"
  type = "end"
  status = "failed"

[workflows.echo]
path = "/echo"
mode = "sync"
methods = ["POST", "PUT"]
  [[workflows.echo.nodes]]
  key = "reply"
  type = "response"
    [workflows.echo.nodes.body]
    data = "{{$context.data}}"
    query = "{{$context.query}}"
    headers = "{{$context.headers}}"
    raw = "{{$context.raw}}"
    method = "{{$context.method}}"
    path = "{{$context.path}}"
    ip = "{{$context.ip}}"
    params = "{{$context.params}}"

[workflows.denied]
path = "/denied"
ip_allow = ["10.0.0.0/8"]

[workflows.allowed]
path = "/allowed"
ip_allow = ["10.0.0.0/8", "127.0.0.0/8"]

[workflows.off]
path = "/off"
enabled = false

[workflows.json-only]
path = "/json-only"
content_types = ["application/json"]

[workflows.tiny]
path = "/tiny"
max_body_size = "64"
""" % {"secret": SECRET}


@pytest.fixture
def server(serve):
    return serve(CONFIG)


# --- helpers ----------------------------------------------------------------------------------

def admin(running, path: str) -> Answer:
    return request(running, "GET", f"/api/admin{path}", headers=ADMIN)


def wait_for_execution(running, execution_id: str, status: str = "resolved", timeout: float = 5.0) -> dict:
    def reached():
        answer = admin(running, f"/executions/{execution_id}")
        return answer.status == 200 and answer.json()["status"] == status and answer.json()
    return wait_for(reached, timeout, failure=lambda: f"execution {execution_id} never {status}: "
                                                     f"{admin(running, f'/executions/{execution_id}').body!r}")


def request_log(running, predicate, timeout: float = 5.0) -> dict:
    def found():
        return next((item for item in admin(running, "/requests?limit=1000").json()["items"] if predicate(item)), None)
    return wait_for(found, timeout, failure=lambda: f"no such request log entry in "
                                                   f"{admin(running, '/requests?limit=1000').json()['items']}")


def execution_count(running) -> int:
    service = running.server.service
    running.call(service.drain)
    return len(running.call(lambda: list_executions(service.store, limit=1000))["items"])


def github_headers(body: bytes, delivery: str, secret: str = SECRET) -> dict:
    return {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
            **sign("github", body, secret.encode(), time.time())}


# --- accepted, async -------------------------------------------------------------------------

def test_async_accepted_is_202_and_the_execution_resolves(server):
    answer = post_json(server, "/plain", {"hello": "world"})
    assert answer.status == 202
    body = answer.json()
    assert set(body) == {"execution_id", "status"}
    assert body["status"] == "queued"
    assert answer.headers["x-execution-id"] == body["execution_id"]
    assert answer.headers["x-request-id"]
    record = wait_for_execution(server, body["execution_id"])
    assert record["id"] == body["execution_id"]
    assert record["workflow"] == "plain"
    assert record["request"]["method"] == "POST"
    assert record["request"]["path"] == "/plain"
    assert record["request"]["data"] == {"hello": "world"}
    assert record["request"]["ip"] == "127.0.0.1"
    assert record["created_at"] and record["finished_at"]


def test_every_response_carries_a_request_id(server):
    for method, path in (("POST", "/plain"), ("POST", "/nowhere"), ("GET", "/plain"), ("GET", "/healthz")):
        answer = request(server, method, path, b"{}" if method == "POST" else None)
        assert answer.headers.get("x-request-id"), (method, path, answer.status)


# --- dedup ------------------------------------------------------------------------------------

def test_github_duplicate_within_ttl_is_200_with_the_original_id(server):
    body = orjson.dumps({"ref": "refs/heads/main"})
    first = request(server, "POST", "/gh", body, github_headers(body, "delivery-1"))
    assert first.status == 202
    original = first.json()["execution_id"]
    again = request(server, "POST", "/gh", body, github_headers(body, "delivery-1"))
    assert again.status == 200
    assert again.json() == {"execution_id": original, "status": "duplicate"}
    other = request(server, "POST", "/gh", body, github_headers(body, "delivery-2"))
    assert other.status == 202
    assert other.json()["execution_id"] != original
    assert execution_count(server) == 2


def test_custom_dedup_key_template(server):
    first = post_json(server, "/custom", {"id": "evt_1", "n": 1})
    assert first.status == 202
    original = first.json()["execution_id"]
    again = post_json(server, "/custom", {"id": "evt_1", "n": 2})  # same key, other content
    assert (again.status, again.json()) == (200, {"execution_id": original, "status": "duplicate"})
    assert post_json(server, "/custom", {"id": "evt_2"}).status == 202
    # no key (the template renders empty): no dedup at all
    assert post_json(server, "/custom", {"n": 3}).status == 202
    assert post_json(server, "/custom", {"n": 3}).status == 202
    record = wait_for_execution(server, original)
    assert record["dedup_key"] == "evt_1"


def test_a_repeat_the_door_window_no_longer_holds_ends_duplicate_at_the_claim(server):
    """The door's window is a cache (SPEC: "the door's check may be a cache"): a repeat it no
    longer holds is acknowledged, and the claim's unique index ends that execution `duplicate`,
    naming the original; it runs no node, and its queue slot is given back."""
    first = post_json(server, "/custom", {"id": "evt_store"})
    original = first.json()["execution_id"]
    wait_for_execution(server, original)   # claimed: its key is in the unique index now
    service = server.server.service

    async def forget():   # what a busy server's window does to a key in a few seconds
        service.intake.cache.clear()

    server.call(forget)
    again = post_json(server, "/custom", {"id": "evt_store"})
    assert again.status == 202
    repeat = again.json()["execution_id"]
    assert repeat != original
    record = wait_for_execution(server, repeat, status="duplicate")
    assert record["duplicate_of"] == original and record["jobs"] == []

    async def depth():
        return service.intake.depth

    # the record is readable as soon as the claim commits; the loop then hands the claim's
    # duplicates back (the window told of the original, the slot given back) in one step
    wait_for(lambda: server.call(depth) == 0, failure="the repeat's queue slot was never given back")
    # the window holds the key again: the next repeat is answered at the door
    third = post_json(server, "/custom", {"id": "evt_store"})
    assert (third.status, third.json()) == (200, {"execution_id": original, "status": "duplicate"})
    assert execution_count(server) == 2
    assert server.call(depth) == 0   # answered at the door: it took no slot


def test_duplicate_survives_a_restart(serve):
    body = orjson.dumps({"ref": "refs/heads/main"})
    first_server = serve(CONFIG)
    first = request(first_server, "POST", "/gh", body, github_headers(body, "delivery-restart"))
    assert first.status == 202
    original = first.json()["execution_id"]
    wait_for_execution(first_server, original)
    first_server.stop()

    second_server = serve(CONFIG)  # same tmp_path, same SQLite file
    again = request(second_server, "POST", "/gh", body, github_headers(body, "delivery-restart"))
    assert again.status == 200
    assert again.json() == {"execution_id": original, "status": "duplicate"}
    assert execution_count(second_server) == 1


# --- sync mode --------------------------------------------------------------------------------

def test_sync_finished_answers_the_configured_response(server):
    answer = post_json(server, "/sync-default", {"a": 1})
    assert answer.status == 203
    assert answer.headers["x-custom"] == "yes"
    assert answer.headers["content-type"] == "application/json"
    execution_id = answer.headers["x-execution-id"]
    assert answer.json() == {"ok": True, "execution": execution_id}
    wait_for_execution(server, execution_id)


def test_sync_response_node_answer_with_templates_and_path_params(server):
    answer = post_json(server, "/sync/octocat", {"x": 42})
    assert answer.status == 201
    assert answer.headers["x-name"] == "octocat"
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"x": 42, "name": "octocat", "greeting": "hi octocat"}
    record = wait_for_execution(server, answer.headers["x-execution-id"])
    assert record["request"]["params"] == {"name": "octocat"}
    assert [job["node"] for job in record["jobs"]] == ["answer"]


def test_sync_failed_execution_is_500_with_the_error(server):
    answer = post_json(server, "/sync-fail", {})
    assert answer.status == 500
    body = answer.json()
    assert set(body) == {"execution_id", "status", "error"}
    assert body["status"] == "failed"
    assert body["error"]
    assert answer.headers["x-execution-id"] == body["execution_id"]
    wait_for_execution(server, body["execution_id"], status="failed")


def test_sync_request_log_records_the_status_actually_sent(server):
    answer = post_json(server, "/sync/logged", {"x": 1})
    assert answer.status == 201
    entry = request_log(server, lambda item: item["path"] == "/sync/logged")
    assert entry["status"] == 201


# --- refusals ---------------------------------------------------------------------------------

def test_invalid_json_is_400_saying_what_and_where(server):
    answer = request(server, "POST", "/plain", b'{"a": 1,,}', {"Content-Type": "application/json"})
    assert answer.status == 400
    error = answer.json()["error"]
    assert error.startswith("invalid JSON body: ")
    assert "line 1 column 9" in error or "char 8" in error, error
    assert execution_count(server) == 0


def test_wrong_or_missing_signature_is_401(server):
    body = orjson.dumps({"ref": "x"})
    missing = request(server, "POST", "/gh", body, {"Content-Type": "application/json", "X-GitHub-Delivery": "d1"})
    assert missing.status == 401
    assert "X-Hub-Signature-256" in missing.json()["error"]
    wrong = request(server, "POST", "/gh", body, github_headers(body, "d2", secret="not-the-secret"))
    assert wrong.status == 401
    assert wrong.json() == {"error": "invalid signature"}
    # signed over other bytes than those sent
    tampered = request(server, "POST", "/gh", body + b" ", github_headers(body, "d3"))
    assert tampered.status == 401
    assert execution_count(server) == 0


def test_ip_allow(server):
    denied = post_json(server, "/denied", {})
    assert (denied.status, denied.json()) == (403, {"error": "forbidden"})
    assert post_json(server, "/allowed", {}).status == 202


def test_unknown_path_and_disabled_workflow_are_404(server):
    for path in ("/nowhere", "/off", "/api/webhooks/off"):
        answer = post_json(server, path, {})
        assert (answer.status, answer.json()) == (404, {"error": "not found"}), path


def test_method_not_allowed_is_405_with_allow(server):
    answer = request(server, "GET", "/plain")
    assert answer.status == 405
    assert answer.headers["allow"] == "POST"
    answer = request(server, "DELETE", "/echo")
    assert answer.status == 405
    assert answer.headers["allow"] == "POST, PUT"
    assert request(server, "PUT", "/echo", b"{}", {"Content-Type": "application/json"}).status == 200


def test_body_over_the_workflow_limit_is_413(server):
    answer = post_json(server, "/tiny", "x" * 100)
    assert answer.status == 413
    assert "64" in answer.json()["error"]
    assert post_json(server, "/tiny", "x" * 10).status == 202


def test_gzip_body_decoding_to_more_than_the_limit_is_413(server):
    body = gzip.compress(orjson.dumps("x" * 1000))
    assert len(body) < 64
    answer = request(server, "POST", "/tiny", body,
                     {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert answer.status == 413


def test_media_type_not_in_content_types_is_415(server):
    answer = request(server, "POST", "/json-only", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status == 415
    with_charset = {"Content-Type": "application/json; charset=utf-8"}
    assert request(server, "POST", "/json-only", b"{}", with_charset).status == 202
    assert request(server, "POST", "/json-only", b"{}").status == 415  # no Content-Type at all


def test_queue_full_is_503_with_retry_after_and_nothing_accepted(server):
    intake = server.server.service.intake

    async def fill():
        intake.depth = intake.capacity

    async def drain():
        intake.depth = 0

    server.call(fill)
    try:
        answer = post_json(server, "/plain", {"n": 1})
        assert answer.status == 503
        assert answer.headers["retry-after"]
        assert "queue" in answer.json()["error"]
        ready = request(server, "GET", "/readyz")
        assert ready.status == 503
        assert "queue full" in ready.json()["problems"]
        assert execution_count(server) == 0
    finally:
        server.call(drain)
    assert post_json(server, "/plain", {"n": 2}).status == 202
    assert request(server, "GET", "/readyz").status == 200


# --- what a workflow sees ---------------------------------------------------------------------

def echo(running, body: bytes | None, headers: dict | list, path: str = "/echo", method: str = "POST") -> dict:
    answer = request(running, method, path, body, headers)
    assert answer.status == 200, answer.body
    return answer.json()


def test_json_data_query_method_path_ip(server):
    seen = echo(server, b'{"a": {"b": [1, 2]}}', {"Content-Type": "application/json"},
                path="/echo?tag=x&tag=y&single=1&empty=")
    assert seen["data"] == {"a": {"b": [1, 2]}}
    assert seen["query"] == {"tag": ["x", "y"], "single": "1", "empty": ""}
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo"
    assert seen["ip"] == "127.0.0.1"
    assert seen["params"] == {}


def test_empty_body_is_null(server):
    assert echo(server, b"", {"Content-Type": "application/json"})["data"] is None


def test_headers_are_lower_cased_and_repeats_joined(server):
    seen = echo(server, b"{}", [("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b"),
                                ("X-Mixed-Case", "Value")])
    headers = seen["headers"]
    assert headers["x-multi"] == "a, b"
    assert headers["x-mixed-case"] == "Value"
    assert headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in headers)


def test_the_live_run_sees_the_stored_request_the_record_shows(server):
    """$context is built once, from the stored request: what the run saw (echoed back) is what
    the execution record holds, headers and query included, secrets redacted in both."""
    answer = request(server, "POST", "/echo?tag=x&tag=y&n=1", b'{"k": 1}',
                     [("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b"),
                      ("Authorization", "Bearer s3cret")])
    seen = answer.json()
    record = wait_for_execution(server, answer.headers["x-execution-id"])
    assert seen["headers"] == record["request"]["headers"]
    assert seen["query"] == record["request"]["query"] == {"tag": ["x", "y"], "n": "1"}
    assert seen["headers"]["authorization"] == "[redacted]" and seen["headers"]["x-multi"] == "a, b"
    assert seen["data"] == record["request"]["data"] == {"k": 1}


def test_raw_is_the_body_as_received(server):
    body = b'{"b": 2,   "a": 1}'
    assert echo(server, body, {"Content-Type": "application/json"})["raw"] == body.decode()
    binary = bytes(range(256))
    seen = echo(server, binary, {"Content-Type": "application/octet-stream"})
    assert seen["raw"] == base64.b64encode(binary).decode()
    assert seen["data"] == base64.b64encode(binary).decode()


def test_form_urlencoded_lands_in_data(server):
    seen = echo(server, b"a=1&b=2&b=3&c=hello+world%21&d=%C3%A9",
                {"Content-Type": "application/x-www-form-urlencoded"})
    assert seen["data"] == {"a": "1", "b": ["2", "3"], "c": "hello world!", "d": "é"}


def test_multipart_form_lands_in_data(server):
    file_bytes = b"line one\nline two\n\x00\x01"
    boundary = "----fastwebhook-test-boundary"
    body = ((
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\none\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\ntwo\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"notes.bin\"\r\n"
        f"Content-Type: application/octet-stream\r\n\r\n").encode()
        + file_bytes + f"\r\n--{boundary}--\r\n".encode())
    seen = echo(server, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert seen["data"] == {
        "field": "value",
        "tag": ["one", "two"],
        "upload": {"filename": "notes.bin", "content_type": "application/octet-stream", "size": len(file_bytes),
                   "sha256": hashlib.sha256(file_bytes).hexdigest(),
                   "base64": base64.b64encode(file_bytes).decode()},
    }


def test_gzip_content_encoding_is_decoded(server):
    value = {"compressed": True, "items": list(range(50))}
    body = gzip.compress(orjson.dumps(value))
    seen = echo(server, body, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert seen["data"] == value


def test_raw_of_a_gzip_body_is_the_bytes_received(server):
    body = gzip.compress(b'{"a": 1}')
    seen = echo(server, body, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert seen["raw"] == base64.b64encode(body).decode()


def test_text_body_is_a_string(server):
    assert echo(server, "héllo".encode(), {"Content-Type": "text/plain; charset=utf-8"})["data"] == "héllo"


# --- reserved endpoints -----------------------------------------------------------------------

def test_healthz_and_readyz(server):
    health = request(server, "GET", "/healthz")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    ready = request(server, "GET", "/readyz")
    assert ready.status == 200
    assert ready.json()["status"] == "ready"


def test_metrics_exposition(server):
    body = orjson.dumps({"x": 1})
    assert request(server, "POST", "/gh", body, github_headers(body, "m1")).status == 202
    assert request(server, "POST", "/gh", body, github_headers(body, "m1")).status == 200
    assert request(server, "POST", "/gh", body, {"Content-Type": "application/json"}).status == 401
    executed = post_json(server, "/plain", {})
    wait_for_execution(server, executed.json()["execution_id"])
    # a claim that resolves a delivery itself (no nodes) counts it just after its commit, which
    # the record shows first: wait for the count, not the record alone
    resolved = 'fastwebhook_executions_total{status="resolved",workflow="plain"} 1.0'

    def counted():
        answer = request(server, "GET", "/metrics")
        return answer if resolved in answer.body.decode() else None
    answer = wait_until(counted, timeout=5, step=0.02)
    assert answer is not None, "the resolved execution was never counted"
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.body.decode()
    assert 'fastwebhook_requests_total{code="202",workflow="gh"} 1.0' in text
    assert 'fastwebhook_rejected_total{reason="signature",workflow="gh"} 1.0' in text
    assert 'fastwebhook_duplicates_total{workflow="gh"} 1.0' in text
    assert 'fastwebhook_executions_total{status="resolved",workflow="plain"} 1.0' in text
    for name in ("fastwebhook_queue_depth", "fastwebhook_queue_capacity 10000.0",
                 "fastwebhook_request_duration_seconds_bucket", "fastwebhook_store_commit_seconds_count",
                 "fastwebhook_store_batch_size_bucket", "fastwebhook_connections_open"):
        assert name in text, name
    # Prometheus' own linter (Debian's prometheus package; .ci/run installs it)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    checked = subprocess.run([promtool, "check", "metrics"], input=answer.body, capture_output=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout == b"" and checked.stderr == b"", checked.stdout + checked.stderr


# --- records of what happened ------------------------------------------------------------------

def test_request_log_shows_a_rejected_request_with_status_and_reason(server):
    body = orjson.dumps({"x": 1})
    assert request(server, "POST", "/gh?why=nosig", body, {"Content-Type": "application/json"}).status == 401
    entry = request_log(server, lambda item: item["status"] == 401)
    assert entry["workflow"] == "gh"
    assert entry["method"] == "POST"
    assert entry["path"] == "/gh"
    assert entry["ip"] == "127.0.0.1"
    assert entry["reason"]
    assert "X-Hub-Signature-256" in entry["reason"]
    assert entry["body_size"] == len(body)
    assert SECRET not in entry["reason"]
    assert post_json(server, "/nowhere", {}).status == 404
    assert request_log(server, lambda item: item["status"] == 404)["path"] == "/nowhere"


def test_request_log_says_the_signature_header_was_missing(server):
    body = orjson.dumps({"x": 1})
    assert request(server, "POST", "/gh", body, {"Content-Type": "application/json"}).status == 401
    entry = request_log(server, lambda item: item["status"] == 401)
    assert "missing" in entry["reason"]


def test_signature_and_authorization_headers_are_redacted_in_executions(server):
    body = orjson.dumps({"x": 1})
    headers = {**github_headers(body, "redact-1"), "Authorization": "Bearer sender-token"}
    answer = request(server, "POST", "/gh", body, headers)
    assert answer.status == 202
    record = wait_for_execution(server, answer.json()["execution_id"])
    stored = record["request"]["headers"]
    assert stored["x-hub-signature-256"] == "[redacted]"
    assert stored["authorization"] == "[redacted]"
    assert stored["x-github-delivery"] == "redact-1"
    assert record["request"]["data"] == {"x": 1}
    assert "sender-token" not in admin(server, f"/executions/{record['id']}").body.decode()


def test_admin_api_needs_the_token(server):
    assert request(server, "GET", "/api/admin/executions").status == 401
    assert request(server, "GET", "/api/admin/executions", headers={"Authorization": "Bearer nope"}).status == 401
    assert admin(server, "/executions").status == 200
