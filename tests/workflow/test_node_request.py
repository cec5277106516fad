"""The `request` node through the real server: a real HTTP endpoint on port 0 records every call
it gets (method, path, query, headers, body) and answers as a test scripts it (500 a few times,
slowly, with Retry-After ...)."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import orjson
import pytest

from client_support import jobs_by_node, run_to_end
from http_support import RecordingServer, Reply
from conftest import free_port
from fastwebhook.config.loader import load_config
from fastwebhook.core.errors import ConfigErrors
from fastwebhook.verify import VerificationError, build_verifier

SECRET = "whsec_" + base64.b64encode(b"outgoing-signing-key-32-bytes!!!").decode()


def workflow(nodes: str, extra: str = "") -> str:
    return f"{extra}\n[workflows.w]\npath = \"/api/webhooks/w\"\n{nodes}"


# --- what is sent, what comes back ---------------------------------------------------------------

def test_a_json_call_carries_headers_query_and_the_idempotency_key_and_its_answer_is_the_result(serve, endpoint):
    endpoint.replies.append(Reply(201, b'{"id": 7, "tags": ["a"]}',
                                  {"Content-Type": "application/json; charset=utf-8", "X-Answer": "yes"}))
    running = serve(workflow(f"""
[[workflows.w.nodes]]
key = "call"
type = "request"
url = "{endpoint.url}/hooks/{{{{$context.data.name}}}}?fixed=1"
headers = {{ "X-Token" = "{{{{$context.data.token}}}}" }}
query = {{ user = "{{{{$context.data.name}}}}", tag = ["x", "y"] }}
body = {{ name = "{{{{$context.data.name}}}}", n = "{{{{$context.data.n}}}}", greeting = "hi {{{{$context.data.name}}}}" }}

[[workflows.w.nodes]]
key = "follow"
type = "request"
method = "PUT"
url = "{endpoint.url}/records/{{{{$jobsMapByNodeKey.call.data.id}}}}"
body = "tag={{{{$nodes.call.data.tags.0}}}}"
"""))
    record = run_to_end(running, "/api/webhooks/w", {"name": "ada", "n": 3, "token": "t0k"})
    assert record["status"] == "resolved", record
    first, second = endpoint.received
    assert first.method == "POST" and first.path == "/hooks/ada"
    assert first.query == {"fixed": ["1"], "user": ["ada"], "tag": ["x", "y"]}
    assert first.headers["x-token"] == "t0k"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["idempotency-key"] == f"{record['id']}.call"
    assert orjson.loads(first.body) == {"name": "ada", "n": 3, "greeting": "hi ada"}
    assert jobs_by_node(record)["call"]["result"] == {
        "status": 201, "data": {"id": 7, "tags": ["a"]},
        "headers": {**jobs_by_node(record)["call"]["result"]["headers"], "x-answer": "yes",
                    "content-type": "application/json; charset=utf-8"}}
    assert all(name == name.lower() for name in jobs_by_node(record)["call"]["result"]["headers"])
    # The second call is built from the first one's result; a string body goes as it is.
    assert (second.method, second.path, second.body) == ("PUT", "/records/7", b"tag=a")
    assert second.headers["content-type"] == "text/plain; charset=utf-8"
    assert second.headers["idempotency-key"] == f"{record['id']}.follow"
    assert jobs_by_node(record)["follow"]["result"]["data"] == {"ok": True}
    assert second.peer_port == first.peer_port      # one shared pool: the connection was kept


def test_a_text_answer_is_the_result_as_text_and_a_get_sends_no_body(serve, endpoint):
    endpoint.replies.append(Reply(200, b"pong", {"Content-Type": "text/plain"}))
    running = serve(workflow("""
[[workflows.w.nodes]]
key = "ping"
type = "request"
method = "GET"
url = "{{$env.TARGET}}/ping"
""", extra=f'[env]\nTARGET = "{endpoint.url}"'))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "resolved", record
    (call,) = endpoint.received
    assert (call.method, call.path, call.body) == ("GET", "/ping", b"")
    assert jobs_by_node(record)["ping"]["result"]["data"] == "pong"


# --- retries, timeouts, failures -----------------------------------------------------------------

def test_5xx_answers_are_retried_with_exponential_backoff_and_the_same_idempotency_key(serve, endpoint):
    endpoint.replies += [Reply(500, b"boom"), Reply(503, b"busy")]
    running = serve(workflow(f"""
[[workflows.w.nodes]]
key = "deploy"
type = "request"
url = "{endpoint.url}/deploy"
body = {{ commit = "abc" }}
retries = 3
retry_backoff = "50ms"
"""))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "resolved", record
    assert len(endpoint.received) == 3
    assert {r.headers["idempotency-key"] for r in endpoint.received} == {f"{record['id']}.deploy"}
    assert {r.body for r in endpoint.received} == {b'{"commit":"abc"}'}
    first, second, third = (r.at for r in endpoint.received)
    # 50 ms, then 100 ms: as the loop's timers keep them (libuv reads its clock once per loop turn,
    # so a timer set late in a busy turn fires that much early: a few ms under load)
    assert second - first >= 0.04 and third - second >= 0.08
    logs = jobs_by_node(record)["deploy"]["logs"]
    attempts = [orjson.loads(line.split(" ", 2)[2]) for line in logs if line.startswith("attempt ")]
    assert [a.get("status") for a in attempts] == [500, 503, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["ms"] >= 0 for a in attempts)
    assert attempts[0]["retry_in_ms"] == 50 and attempts[1]["retry_in_ms"] == 100


def test_a_4xx_fails_the_node_at_once_without_a_retry(serve, endpoint):
    endpoint.replies.append(Reply(404, b"no such hook", {"Content-Type": "text/plain"}))
    running = serve(workflow(f"""
[[workflows.w.nodes]]
key = "call"
type = "request"
url = "{endpoint.url}/missing"
retries = 3
retry_backoff = "10ms"

[[workflows.w.nodes]]
key = "after"
type = "request"
url = "{endpoint.url}/never"
"""))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "failed"
    assert len(endpoint.received) == 1
    failed = jobs_by_node(record)["call"]
    assert failed["status"] == "failed"
    assert "404" in failed["error"] and "no such hook" in failed["error"] and "'call'" in failed["error"]
    assert "404" in record["error"]
    assert [j["node"] for j in record["jobs"]] == ["call"]


def test_a_slow_answer_times_out_and_the_retry_gets_through(serve, endpoint):
    released = threading.Event()
    endpoint.replies.append(Reply(200, hold=released))   # answers only after the test: past any timeout
    running = serve(workflow(f"""
[[workflows.w.nodes]]
key = "call"
type = "request"
url = "{endpoint.url}/slow"
timeout = "150ms"
retries = 1
retry_backoff = "10ms"
"""))
    record = run_to_end(running, "/api/webhooks/w", {})
    released.set()
    assert record["status"] == "resolved", record
    assert len(endpoint.received) == 2
    logs = jobs_by_node(record)["call"]["logs"]
    assert "no answer within 0.15s" in logs[1] and '"status":200' in logs[2]


def test_a_refused_connection_is_retried_then_fails_the_node_and_ignore_fail_lets_the_workflow_go_on(serve, endpoint):
    closed = free_port()
    running = serve(workflow(f"""
[[workflows.w.nodes]]
key = "down"
type = "request"
url = "http://127.0.0.1:{closed}/x?token=secret-in-query"
retries = 2
retry_backoff = "10ms"
ignore_fail = true

[[workflows.w.nodes]]
key = "still"
type = "request"
url = "{endpoint.url}/still"
body = {{ previous = "{{{{$jobsMapByNodeKey.down}}}}" }}
"""))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "resolved", record
    down = jobs_by_node(record)["down"]
    assert down["status"] == "failed"
    assert "failed (attempt 3 of 3)" in down["error"] and f"127.0.0.1:{closed}" in down["error"]
    assert "secret-in-query" not in down["error"] and "secret-in-query" not in str(down["logs"])
    assert sum(line.startswith("attempt ") for line in down["logs"]) == 3
    (call,) = endpoint.received
    assert orjson.loads(call.body) == {"previous": None}
    assert jobs_by_node(record)["still"]["status"] == "resolved"


def test_a_429_retry_after_is_waited_for(serve, endpoint):
    endpoint.replies.append(Reply(429, b"slow down", {"Retry-After": "1"}))
    running = serve(workflow(f"""
[[workflows.w.nodes]]
key = "call"
type = "request"
url = "{endpoint.url}/limited"
retries = 1
retry_backoff = "10ms"
"""))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "resolved", record
    first, second = endpoint.received
    assert second.at - first.at >= 0.95


def test_a_non_2xx_after_every_retry_fails_with_its_status(serve, endpoint):
    endpoint.replies += [Reply(502, b"bad gateway"), Reply(502, b"bad gateway")]
    running = serve(workflow(f"""
[[workflows.w.nodes]]
key = "call"
type = "request"
url = "{endpoint.url}/x"
retries = 1
retry_backoff = "10ms"
"""))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "failed"
    assert "answered 502 (attempt 2 of 2): bad gateway" in jobs_by_node(record)["call"]["error"]


# --- signing -------------------------------------------------------------------------------------

def test_a_signed_call_verifies_as_standard_webhooks_with_the_idempotency_key_as_its_id(serve, endpoint):
    endpoint.replies.append(Reply(500))
    running = serve(workflow(f"""
[[workflows.w.nodes]]
key = "notify"
type = "request"
url = "{endpoint.url}/in"
body = {{ event = "order.paid", order = "{{{{$context.data.order}}}}" }}
sign = {{ scheme = "standard", secret = "{SECRET}" }}
retries = 1
retry_backoff = "10ms"

[[workflows.w.nodes]]
key = "as_github"
type = "request"
url = "{endpoint.url}/github"
body = {{ ref = "refs/heads/main" }}
sign = {{ scheme = "github", secret = "gh-secret" }}
"""))
    record = run_to_end(running, "/api/webhooks/w", {"order": 42})
    assert record["status"] == "resolved", record
    *standard, github = endpoint.received
    assert build_verifier("github", {}, (b"gh-secret",), "receiver").verify(
        github.body, github.headers, time.time(), None) == github.body
    verifier = build_verifier("standard", {}, (SECRET.encode(),), "receiver")
    assert len(standard) == 2
    for call in standard:   # every attempt is signed
        assert call.headers["webhook-id"] == call.headers["idempotency-key"] == f"{record['id']}.notify"
        assert call.headers["webhook-signature"].startswith("v1,")
        assert abs(int(call.headers["webhook-timestamp"]) - time.time()) < 10
        assert verifier.verify(call.body, call.headers, time.time(), None) == call.body
    with pytest.raises(VerificationError):   # the signature covers the exact bytes sent
        verifier.verify(call.body + b" ", call.headers, time.time(), None)


# --- config --------------------------------------------------------------------------------------

def config_errors(tmp_path: Path, nodes: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(workflow(nodes, extra='[env]\nBAD = "ftp://files.example.com"'))
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path), {})
    return {error.path: error.message for error in info.value.errors}


def test_bad_request_settings_are_refused_at_load_with_their_toml_paths(tmp_path):
    found = config_errors(tmp_path, """
[[workflows.w.nodes]]
key = "a"
type = "request"
url = "not a url"
timeout = "10 parsecs"
retries = -1
retry_backoff = "soon"
method = "BREW"
headers = { "Bad Header" = "x" }
body = 3

[[workflows.w.nodes]]
key = "b"
type = "request"
url = "{{$env.BAD}}/in"
timeout = "0s"
sign = { scheme = "standard", secret = "whsec_%%%" }

[[workflows.w.nodes]]
key = "c"
type = "request"
sign = { scheme = "magic", secret = "x" }
verb = "POST"
""")
    p = "workflows.w.nodes"
    assert "not a valid URL template" in found[f"{p}[0].url"]
    assert "not a duration" in found[f"{p}[0].timeout"]
    assert "from 0 to 10" in found[f"{p}[0].retries"]
    assert "not a duration" in found[f"{p}[0].retry_backoff"]
    assert "BREW" in found[f"{p}[0].method"]
    assert "Bad Header" in found[f"{p}[0].headers"]
    assert "table" in found[f"{p}[0].body"]
    assert "ftp://files.example.com/in" in found[f"{p}[1].url"]
    assert "more than 0s" in found[f"{p}[1].timeout"]
    assert "whsec_%%%" not in found[f"{p}[1].sign.secret"]     # a secret is never echoed
    assert "needs a url" in found[f"{p}[2].url"]
    assert "magic" in found[f"{p}[2].sign.scheme"]
    assert found[f"{p}[2].verb"] == "unknown setting"


def test_a_templated_url_is_checked_when_it_is_rendered(serve, endpoint):
    running = serve(workflow("""
[[workflows.w.nodes]]
key = "call"
type = "request"
url = "{{$context.data.target}}"
"""))
    record = run_to_end(running, "/api/webhooks/w", {"target": "file:///etc/passwd"})
    assert record["status"] == "failed"
    assert "not an http:// or https:// URL" in jobs_by_node(record)["call"]["error"]
    assert endpoint.received == []


# --- redirects and [outbound] deny ---------------------------------------------------------------

@pytest.fixture
def other():
    """A second recording endpoint on another port: another origin."""
    server = RecordingServer()
    yield server
    server.close()


def credentials_node(key: str, url: str, extra: str = "") -> str:
    return f"""
[[workflows.w.nodes]]
key = "{key}"
type = "request"
url = "{url}"
headers = {{ "X-Api-Key" = "k-123", Authorization = "Bearer t-456", "X-Tenant" = "acme" }}
body = {{ order = 1 }}
{extra}
"""


def test_a_redirect_is_not_followed_by_default_it_is_the_answer_and_fails_the_node(serve, endpoint, other):
    endpoint.replies.append(Reply(302, b"moved", {"Location": f"{other.url}/steal"}))
    running = serve(workflow(credentials_node("call", "{{$context.data.target}}")))
    record = run_to_end(running, "/api/webhooks/w", {"target": f"{endpoint.url}/in"})
    assert record["status"] == "failed"
    error = jobs_by_node(record)["call"]["error"]
    assert "answered 302" in error and "follow_redirects" in error
    assert len(endpoint.received) == 1 and other.received == []


def test_a_followed_redirect_keeps_credentials_within_their_origin_and_hops_are_bounded(serve, endpoint, other):
    endpoint.replies += [Reply(307, b"", {"Location": "/again"}),
                         Reply(302, b"", {"Location": f"{other.url}/landing"})]
    other.replies.append(Reply(200, b'{"from": "other"}'))
    running = serve(workflow(credentials_node("call", f"{endpoint.url}/in", "follow_redirects = true")
                             + credentials_node("loop", f"{other.url}/loop", "follow_redirects = true\nignore_fail = true")))
    for n in range(6):
        other.replies.append(Reply(302, b"", {"Location": f"/loop/{n}"}))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "resolved", record
    first, again = endpoint.received
    # A 307 within the origin keeps the method, the body and every header.
    assert (again.method, again.path, again.body) == ("POST", "/again", b'{"order":1}')
    assert again.headers["x-api-key"] == "k-123" and again.headers["authorization"] == "Bearer t-456"
    # A 302 to another origin: a GET, none of the node's headers.
    landing, *loop = other.received
    assert (landing.method, landing.path, landing.body) == ("GET", "/landing", b"")
    assert not {"x-api-key", "authorization", "x-tenant", "cookie"} & set(landing.headers)
    assert jobs_by_node(record)["call"]["result"]["data"] == {"from": "other"}
    assert len(loop) == 6                                   # the first call and 5 hops
    assert "more than 5 redirects" in jobs_by_node(record)["loop"]["error"]


def deny_config(deny: str) -> str:
    return f"[outbound]\ndeny = {deny}\n"


def test_outbound_deny_refuses_an_address_by_literal_and_by_name_without_connecting(serve, endpoint):
    port = endpoint.url.rpartition(":")[2]
    running = serve(workflow(credentials_node("literal", f"{endpoint.url}/in", "ignore_fail = true")
                             + credentials_node("named", f"http://localhost:{port}/in"),
                             extra=deny_config('["10.0.0.0/8", "127.0.0.0/8", "::1/128"]')))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "failed"
    literal, named = jobs_by_node(record)["literal"], jobs_by_node(record)["named"]
    assert "127.0.0.1 is denied by [outbound] deny" in literal["error"]
    assert "localhost resolves to an address denied by [outbound] deny" in named["error"]
    assert endpoint.received == []


def test_a_redirect_into_a_denied_range_is_refused(serve, endpoint):
    elsewhere = RecordingServer("127.0.0.2")
    try:
        endpoint.replies.append(Reply(302, b"", {"Location": f"{elsewhere.url}/inside"}))
        running = serve(workflow(credentials_node("call", f"{endpoint.url}/in", "follow_redirects = true"),
                                 extra=deny_config('["127.0.0.2/32"]')))
        record = run_to_end(running, "/api/webhooks/w", {})
        assert record["status"] == "failed"
        assert "127.0.0.2 is denied by [outbound] deny" in jobs_by_node(record)["call"]["error"]
        assert len(endpoint.received) == 1 and elsewhere.received == []
    finally:
        elsewhere.close()


def test_the_default_deny_keeps_cloud_metadata_out_of_reach(serve):
    running = serve(workflow(credentials_node("imds", "http://169.254.169.254/latest/meta-data/",
                                              'timeout = "1s"\nignore_fail = true')
                             + credentials_node("alibaba", "http://100.100.100.200/latest/meta-data/", 'timeout = "1s"')))
    record = run_to_end(running, "/api/webhooks/w", {})
    for key in ("imds", "alibaba"):
        assert "is denied by [outbound] deny" in jobs_by_node(record)[key]["error"]


def test_outbound_deny_is_read_with_its_default_and_bad_entries_are_named_by_toml_path(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(workflow(""))
    deny = {str(n) for n in load_config(str(path), {}).outbound.deny}
    assert {"169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32"} <= deny
    path.write_text(workflow("", extra=deny_config('["10.0.0.0/8", "10.0.0.0/33", "nowhere"]\nallow = []')))
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path), {})
    found = {error.path: error.message for error in info.value.errors}
    assert "not a valid CIDR" in found["outbound.deny[1]"] and "nowhere" in found["outbound.deny[2]"]
    assert found["outbound.allow"] == "unknown setting"
    path.write_text(workflow("", extra=deny_config('"10.0.0.0/8"')))
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path), {})
    assert "list of CIDRs" in info.value.errors[0].message and info.value.errors[0].path == "outbound.deny"
    path.write_text(workflow("", extra=deny_config("[]")))
    assert load_config(str(path), {}).outbound.deny == ()
