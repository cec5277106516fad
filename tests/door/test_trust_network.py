"""Who may knock, and how often (SPEC sections 3, 4, 5, 10), through the real server over real
sockets: `ip_allow` judged from several loopback source addresses (127.0.0.0/8 is all loopback on
Linux, so a client socket bound to 127.0.0.2 or 127.0.0.3 really comes from there), the client
address behind `trusted_proxies` (and forwarding headers from anyone else ignored), IPv6, then
`rate_limit`, `content_types`, `schema`, and the `rejected_total` metric counting each refusal.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid

import pytest

from client_support import Answer, admin, log_entry, post_json, request, wait_for_execution
from fastwebhook.verify import sign

SECRET = "net-github-Secret-5e0b77"

BASE = """
[server]
listen = ["{listen}"]
{server_extra}

[storage]
url = "sqlite:///{{db}}"

[log]
level = "warning"

[admin]
token = "test-token"
"""

ECHO = """
  [[workflows.{key}.nodes]]
  key = "echo"
  type = "response"
  body = {{ ip = "{{{{$context.ip}}}}", forwarded = "{{{{$context.headers.x-forwarded-for}}}}" }}
"""

PLAIN = BASE.format(listen="127.0.0.1:0", server_extra="") + f"""
[workflows.only-two]
path = "/n/only-two"
ip_allow = ["127.0.0.2/32"]

[workflows.echo]
path = "/n/echo"
mode = "sync"
{ECHO.format(key="echo")}
[workflows.limited]
path = "/n/limited"
rate_limit = "2/s"

[workflows.slow]
path = "/n/slow"
rate_limit = "30/m"

[workflows.json-only]
path = "/n/json-only"
content_types = ["application/json"]

[workflows.orders]
path = "/n/orders"
schema = "order.schema.json"

[workflows.gh]
path = "/n/gh"
  [workflows.gh.verify]
  scheme = "github"
  secret = "{SECRET}"
"""

PROXIED = BASE.format(listen="127.0.0.1:0", server_extra='trusted_proxies = ["127.0.0.2/32"]') + f"""
[workflows.echo]
path = "/n/echo"
mode = "sync"
{ECHO.format(key="echo")}
[workflows.from-ten]
path = "/n/from-ten"
ip_allow = ["10.1.2.0/24"]
max_body_size = "1KiB"
"""

IPV6 = BASE.format(listen="[::1]:0", server_extra="") + """
[workflows.v6]
path = "/n/v6"
ip_allow = ["::1/128"]

[workflows.v4-only]
path = "/n/v4-only"
ip_allow = ["127.0.0.0/8"]
"""

ORDER_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "qty"],
                "properties": {"id": {"type": "integer"}, "qty": {"type": "integer", "minimum": 1}},
            },
        },
    },
}


# --- client side -----------------------------------------------------------------------------------

def rejected(running, workflow: str, reason: str) -> float:
    text = request(running, "GET", "/metrics").body.decode()
    found = re.search(r'^fastwebhook_rejected_total\{reason="%s",workflow="%s"\} (\S+)$' % (reason, workflow),
                      text, re.M)
    return float(found[1]) if found else 0.0


def assert_forbidden(running, answer: Answer, ip: str, workflow: str) -> None:
    assert answer.status == 403, (answer.status, answer.body)
    assert answer.json() == {"error": "forbidden"}
    entry = log_entry(running, answer)
    assert (entry["status"], entry["ip"], entry["workflow"], entry["execution_id"]) == (403, ip, workflow, None)
    assert entry["reason"].startswith("forbidden") and ip in entry["reason"], entry["reason"]


@pytest.fixture
def plain(serve, tmp_path):
    (tmp_path / "order.schema.json").write_text(json.dumps(ORDER_SCHEMA))
    return serve(PLAIN)


@pytest.fixture
def proxied(serve):
    return serve(PROXIED)


# --- ip_allow from several loopback addresses ---------------------------------------------------

def test_ip_allow_lets_the_listed_address_in_and_forbids_another(plain):
    inside = post_json(plain, "/n/only-two", {"n": 1}, source="127.0.0.2")
    assert inside.status == 202, inside.body
    record = wait_for_execution(plain, inside.json()["execution_id"])
    assert (record["status"], record["request"]["ip"]) == ("resolved", "127.0.0.2")
    assert log_entry(plain, inside)["ip"] == "127.0.0.2"
    for source in ("127.0.0.3", "127.0.0.1"):
        assert_forbidden(plain, post_json(plain, "/n/only-two", {"n": 2}, source=source), source, "only-two")
    assert {item["id"] for item in admin(plain, "/executions?workflow=only-two").json()["items"]} == \
        {inside.json()["execution_id"]}


def test_without_trusted_proxies_forwarding_headers_are_ignored(plain):
    spoofed = {"X-Forwarded-For": "127.0.0.2", "Forwarded": "for=127.0.0.2"}
    assert_forbidden(plain, post_json(plain, "/n/only-two", {}, spoofed, source="127.0.0.3"), "127.0.0.3", "only-two")
    echo = post_json(plain, "/n/echo", {}, {"X-Forwarded-For": "10.1.2.3"}, source="127.0.0.2")
    assert echo.json() == {"ip": "127.0.0.2", "forwarded": "10.1.2.3"}


def test_trusted_proxy_forwarded_for_is_the_client(proxied):
    answer = post_json(proxied, "/n/echo", {}, {"X-Forwarded-For": "10.1.2.3"}, source="127.0.0.2")
    assert answer.status == 200, answer.body
    assert answer.json()["ip"] == "10.1.2.3"
    assert log_entry(proxied, answer)["ip"] == "10.1.2.3"
    # The same header from an untrusted peer is anyone's claim: ignored.
    for source in ("127.0.0.3", "127.0.0.1"):
        spoofed = post_json(proxied, "/n/echo", {}, {"X-Forwarded-For": "10.1.2.3"}, source=source)
        assert spoofed.json()["ip"] == source
        assert log_entry(proxied, spoofed)["ip"] == source


def test_ip_allow_judges_the_forwarded_client(proxied):
    through_proxy = post_json(proxied, "/n/from-ten", {"n": 1}, {"X-Forwarded-For": "10.1.2.3"}, source="127.0.0.2")
    assert through_proxy.status == 202, through_proxy.body
    record = wait_for_execution(proxied, through_proxy.json()["execution_id"])
    assert (record["status"], record["request"]["ip"]) == ("resolved", "10.1.2.3")
    assert log_entry(proxied, through_proxy)["ip"] == "10.1.2.3"
    # Spoofing from an untrusted address gets nowhere, and the log shows the real peer.
    spoofed = post_json(proxied, "/n/from-ten", {}, {"X-Forwarded-For": "10.1.2.3"}, source="127.0.0.3")
    assert_forbidden(proxied, spoofed, "127.0.0.3", "from-ten")
    # The proxy itself, forwarding nobody, is not in the allowlist.
    assert_forbidden(proxied, post_json(proxied, "/n/from-ten", {}, source="127.0.0.2"), "127.0.0.2", "from-ten")


@pytest.mark.parametrize("chain, client", [
    ("10.1.2.3, 127.0.0.2", "10.1.2.3"),        # trusted hops are skipped
    ("6.6.6.6, 10.1.2.3", "10.1.2.3"),          # the left part was written by the client: not believed
    ("10.1.2.3, 6.6.6.6", "6.6.6.6"),           # so a client cannot prepend an allowed address
    ("10.1.2.3:5123", "10.1.2.3"),              # a port is no part of the address
])
def test_forwarded_for_chains_are_walked_from_the_right(proxied, chain, client):
    answer = post_json(proxied, "/n/echo", {}, {"X-Forwarded-For": chain}, source="127.0.0.2")
    assert answer.json()["ip"] == client
    allowed = post_json(proxied, "/n/from-ten", {}, {"X-Forwarded-For": chain}, source="127.0.0.2")
    if client.startswith("10.1.2."):
        assert allowed.status == 202
    else:
        assert_forbidden(proxied, allowed, client, "from-ten")


@pytest.mark.parametrize("forwarded, client", [
    ("for=10.1.2.4;proto=https;by=127.0.0.2", "10.1.2.4"),
    ('for="10.1.2.5:4711"', "10.1.2.5"),
    ('for="[2001:db8::7]:4711";proto=http', "2001:db8::7"),
    ("for=10.1.2.9, for=127.0.0.2", "10.1.2.9"),
])
def test_rfc7239_forwarded_from_a_trusted_proxy(proxied, forwarded, client):
    answer = post_json(proxied, "/n/echo", {}, {"Forwarded": forwarded}, source="127.0.0.2")
    assert answer.json()["ip"] == client
    assert log_entry(proxied, answer)["ip"] == client
    spoofed = post_json(proxied, "/n/echo", {}, {"Forwarded": forwarded}, source="127.0.0.3")
    assert spoofed.json()["ip"] == "127.0.0.3"
    judged = post_json(proxied, "/n/from-ten", {}, {"Forwarded": forwarded}, source="127.0.0.2")
    assert judged.status == (202 if client.startswith("10.1.2.") else 403)


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/n/from-ten", None),            # 405
    ("POST", "/n/nowhere", b"{}"),           # 404
    ("POST", "/n/from-ten", b"x" * 2048),    # 413 (max_body_size 1KiB)
])
def test_every_request_log_entry_names_the_forwarded_client(proxied, method, path, body):
    answer = request(proxied, method, path, body, {"X-Forwarded-For": "10.1.2.3"}, source="127.0.0.2")
    assert answer.status in (404, 405, 413)
    assert log_entry(proxied, answer)["ip"] == "10.1.2.3"


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ipv6_client_and_ip_allow(serve):
    running = serve(IPV6)
    assert running.host == "::1"
    answer = post_json(running, "/n/v6", {"v": 6})
    assert answer.status == 202, answer.body
    record = wait_for_execution(running, answer.json()["execution_id"])
    assert (record["status"], record["request"]["ip"]) == ("resolved", "::1")
    assert log_entry(running, answer)["ip"] == "::1"
    assert_forbidden(running, post_json(running, "/n/v4-only", {}), "::1", "v4-only")


# --- rate_limit, content_types, schema ------------------------------------------------------------

def test_rate_limit_burst_gets_429_with_retry_after_then_recovers(plain):
    answers = [post_json(plain, "/n/limited", {"i": i}) for i in range(6)]
    statuses = [a.status for a in answers]
    # burst = one second's worth (2); six requests in a few ms cannot earn a third token... nearly.
    assert statuses[:2] == [202, 202], statuses
    limited = [a for a in answers if a.status == 429]
    assert len(limited) >= 3 and set(statuses) <= {202, 429}, statuses
    for answer in limited:
        assert answer.json() == {"error": "rate limit exceeded"}
        retry_after = answer.headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
        assert answer.headers.get("x-execution-id") is None
    entry = log_entry(plain, limited[0])
    assert (entry["status"], entry["workflow"], entry["execution_id"]) == (429, "limited", None)
    assert "rate limit" in entry["reason"]
    # The behaviour: waiting what Retry-After asks (whole seconds; a token every 0.5 s) is enough.
    time.sleep(int(limited[-1].headers["retry-after"]))
    again = post_json(plain, "/n/limited", {"i": "later"})
    assert again.status == 202, again.body
    accepted = {a.json()["execution_id"] for a in answers + [again] if a.status == 202}
    assert {item["id"] for item in admin(plain, "/executions?workflow=limited").json()["items"]} == accepted


def test_slow_rate_limit_retry_after_is_the_whole_seconds_until_a_token(plain):
    assert post_json(plain, "/n/slow", {}).status == 202
    refused = post_json(plain, "/n/slow", {})
    assert refused.status == 429
    assert refused.headers["retry-after"] == "2"  # 30/m: one token every two seconds


def test_content_types_refuses_other_media_types_with_415(plain):
    refused = request(plain, "POST", "/n/json-only", b"hello", {"Content-Type": "text/plain"})
    assert refused.status == 415
    assert "error" in refused.json()
    entry = log_entry(plain, refused)
    assert (entry["status"], entry["workflow"]) == (415, "json-only")
    assert "text/plain" in entry["reason"]
    untyped = request(plain, "POST", "/n/json-only", b"{}")
    assert untyped.status == 415
    ok = request(plain, "POST", "/n/json-only", b'{"a": 1}', {"Content-Type": "application/json; charset=utf-8"})
    assert ok.status == 202, ok.body


def test_schema_violation_is_422_with_the_json_pointer(tmp_path, plain):
    bad = post_json(plain, "/n/orders", {"items": [{"id": "A-1", "qty": 2}]})
    assert bad.status == 422, bad.body
    body = bad.json()
    assert set(body) == {"error", "path"} and body["error"]
    assert body["path"] == "/items/0/id"
    entry = log_entry(plain, bad)
    assert (entry["status"], entry["workflow"], entry["execution_id"]) == (422, "orders", None)
    assert "/items/0/id" in entry["reason"]
    second = post_json(plain, "/n/orders", {"items": [{"id": 1, "qty": 1}, {"id": 2, "qty": 0}]})
    assert (second.status, second.json()["path"]) == (422, "/items/1/qty")
    missing = post_json(plain, "/n/orders", {"items": []})
    assert (missing.status, missing.json()["path"]) == (422, "/items")
    good = post_json(plain, "/n/orders", {"items": [{"id": 7, "qty": 3}]})
    assert good.status == 202, good.body
    record = wait_for_execution(plain, good.json()["execution_id"])
    assert record["status"] == "resolved"
    assert {item["id"] for item in admin(plain, "/executions?workflow=orders").json()["items"]} == \
        {good.json()["execution_id"]}


# --- the rejected_total metric -------------------------------------------------------------------

def _github(running, body: bytes, secret: str = SECRET, **headers) -> Answer:
    return request(running, "POST", "/n/gh", body, {"Content-Type": "application/json",
                                                    "X-GitHub-Delivery": uuid.uuid4().hex,
                                                    **sign("github", body, secret.encode(), time.time()), **headers})


def test_rejected_total_counts_each_refusal_by_reason(plain):
    expected: dict[tuple[str, str], int] = {}

    def counted(workflow: str, reason: str, answer: Answer, status: int) -> None:
        assert answer.status == status, (workflow, reason, answer.status, answer.body)
        expected[workflow, reason] = expected.get((workflow, reason), 0) + 1
        assert rejected(plain, workflow, reason) == expected[workflow, reason], (workflow, reason)

    for _ in range(3):
        assert rejected(plain, "gh", "signature") == expected.get(("gh", "signature"), 0)
        counted("gh", "signature", _github(plain, b'{"a": 1}', "wrong-secret"), 401)
    counted("gh", "signature", request(plain, "POST", "/n/gh", b"{}", {"Content-Type": "application/json"}), 401)
    assert _github(plain, b'{"a": 2}').status == 202  # accepted: no count
    counted("only-two", "ip", post_json(plain, "/n/only-two", {}, source="127.0.0.3"), 403)
    counted("only-two", "ip", post_json(plain, "/n/only-two", {}, source="127.0.0.1"), 403)
    counted("json-only", "media_type", request(plain, "POST", "/n/json-only", b"x", {"Content-Type": "text/plain"}),
            415)
    counted("orders", "schema", post_json(plain, "/n/orders", {"items": [{"id": "x", "qty": 1}]}), 422)
    statuses = []
    for i in range(5):
        answer = post_json(plain, "/n/limited", {"i": i})
        statuses.append(answer.status)
        if answer.status == 429:
            expected["limited", "rate"] = expected.get(("limited", "rate"), 0) + 1
    assert statuses.count(429) >= 2, statuses
    assert rejected(plain, "limited", "rate") == expected["limited", "rate"]
    # Nothing else was counted as a rejection, and no rejection was counted twice.
    text = request(plain, "GET", "/metrics").body.decode()
    seen = {(m[1], m[0]): float(m[2]) for m in re.findall(
        r'^fastwebhook_rejected_total\{reason="([^"]*)",workflow="([^"]*)"\} (\S+)$', text, re.M)}
    assert {k: v for k, v in seen.items() if v} == {k: float(v) for k, v in expected.items()}
    assert 'fastwebhook_requests_total{code="403",workflow="only-two"} 2.0' in text
    assert 'fastwebhook_requests_total{code="422",workflow="orders"} 1.0' in text
    assert SECRET not in text
