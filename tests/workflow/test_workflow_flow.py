"""Sync answers, order_key and concurrency through the real server: a recording endpoint that
answers slowly stands in for a slow workflow step (the request node calls it)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import orjson

from client_support import post_json, wait_for_execution
from conftest import write_config
from http_support import Reply
from durability_support import query, terminate
from burst_support import wait_until



def slow_call(url: str, key: str = "call") -> str:
    return f"""
[[workflows.w.nodes]]
key = "{key}"
type = "request"
url = "{url}/slow"
body = {{ seq = "{{{{$context.data.seq}}}}", account = "{{{{$context.data.account}}}}" }}
"""


# --- sync mode ---------------------------------------------------------------------------------

def test_the_response_node_answers_at_once_while_the_workflow_goes_on(serve, endpoint):
    released = threading.Event()
    endpoint.replies = [Reply(hold=released)]   # the call after the answer is held until it came
    running = serve("""
[workflows.w]
mode = "sync"
[[workflows.w.nodes]]
key = "answer"
type = "response"
status = 201
headers = { "X-Order" = "{{$context.data.seq}}" }
body = "got {{$context.data.seq}}"
""" + slow_call(endpoint.url))
    answer = post_json(running, "/api/webhooks/w", {"seq": 7})   # had it waited for the call, it would hang
    released.set()
    assert answer.status == 201 and answer.body == b"got 7" and answer.headers["x-order"] == "7"
    assert answer.headers["content-type"].startswith("text/plain")
    record = wait_for_execution(running, answer.headers["x-execution-id"])
    assert record["status"] == "resolved" and [j["node"] for j in record["jobs"]] == ["answer", "call"]


def test_past_sync_timeout_the_caller_gets_202_and_the_execution_goes_on(serve, endpoint):
    released = threading.Event()
    endpoint.replies = [Reply(hold=released)]   # the call answers only once the caller has its answer
    running = serve("""
[workflows.w]
mode = "sync"
sync_timeout = "200ms"
""" + slow_call(endpoint.url))
    answer = post_json(running, "/api/webhooks/w", {"seq": 1})
    released.set()
    assert answer.status == 202
    body = answer.json()
    assert body["status"] == "started" and answer.headers["x-execution-id"] == body["execution_id"]
    assert wait_for_execution(running, body["execution_id"])["status"] == "resolved"
    assert len(endpoint.received) == 1


def test_on_sync_timeout_error_answers_504(serve, endpoint):
    released = threading.Event()
    endpoint.replies = [Reply(hold=released)]
    running = serve("""
[workflows.w]
mode = "sync"
sync_timeout = "150ms"
on_sync_timeout = "error"
""" + slow_call(endpoint.url))
    answer = post_json(running, "/api/webhooks/w", {"seq": 1})
    released.set()
    assert answer.status == 504 and answer.json()["status"] == "started"
    assert wait_for_execution(running, answer.json()["execution_id"])["status"] == "resolved"


def test_without_a_response_node_the_response_table_answers_a_table_body(serve, endpoint):
    running = serve("""
[workflows.w]
mode = "sync"
[workflows.w.response]
status = 200
headers = { "X-Seen" = "{{$jobsMapByNodeKey.call.status}}" }
body = { ok = true, echoed = "{{$jobsMapByNodeKey.call.data}}" }
""" + slow_call(endpoint.url))
    answer = post_json(running, "/api/webhooks/w", {"seq": 3})
    assert answer.status == 200 and answer.headers["x-seen"] == "200"
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"ok": True, "echoed": {"ok": True}}


def test_a_failed_sync_execution_is_500_naming_the_node(serve, endpoint):
    endpoint.replies = [Reply(status=502)]
    running = serve("""
[workflows.w]
mode = "sync"
""" + slow_call(endpoint.url))
    answer = post_json(running, "/api/webhooks/w", {"seq": 1})
    assert answer.status == 500
    body = answer.json()
    assert body["status"] == "failed" and "'call'" in body["error"] and "502" in body["error"]


# --- order_key and concurrency -------------------------------------------------------------------

def intervals(received) -> list[tuple[int, str, float]]:
    return [(int(orjson.loads(r.body)["seq"]), orjson.loads(r.body)["account"], r.at) for r in received]


def test_order_key_runs_one_key_at_a_time_in_arrival_order_and_keys_in_parallel(serve, endpoint):
    delay = 0.08
    endpoint.replies = [Reply(delay=delay) for _ in range(30)]
    running = serve("""
[queue]
workers = 16
[workflows.w]
order_key = "{{$context.data.account}}"
""" + slow_call(endpoint.url))
    ids = []
    for seq in range(30):   # sent one by one: arrival order is seq order
        ids.append(post_json(running, "/api/webhooks/w", {"seq": seq, "account": "abc"[seq % 3]}).json()["execution_id"])
    for execution_id in ids:
        assert wait_for_execution(running, execution_id)["status"] == "resolved"
    calls = intervals(endpoint.received)
    for account in "abc":
        mine = [(seq, at) for seq, who, at in calls if who == account]
        assert [seq for seq, _ in mine] == sorted(seq for seq, _ in mine), f"{account} ran out of order: {mine}"
        gaps = [b - a for (_, a), (_, b) in zip(mine, mine[1:])]
        assert min(gaps) >= delay * 0.9, f"two executions of {account} overlapped: {gaps}"
    # Keys side by side: some call of one key came while another key's call was held, which a
    # one-at-a-time run never shows (a total time would also grow with a loaded machine's delays).
    assert any(a != b and abs(at - other) < delay for (_, a, at), (_, b, other) in zip(calls, calls[1:])), \
        f"keys did not run in parallel: {calls}"


def test_concurrency_caps_the_executions_running_at_once(serve, endpoint):
    delay = 0.15
    endpoint.replies = [Reply(delay=delay) for _ in range(8)]
    running = serve("""
[workflows.w]
concurrency = 2
""" + slow_call(endpoint.url))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda seq: post_json(running, "/api/webhooks/w", {"seq": seq, "account": "x"}), range(8)))
    for answer in answers:
        assert wait_for_execution(running, answer.json()["execution_id"])["status"] == "resolved"
    starts = sorted(r.at for r in endpoint.received)
    most = max(sum(1 for s in starts if s <= t < s + delay * 0.95) for t in starts)
    assert most == 2, f"{most} ran at once under concurrency = 2"


ORDERED_CHILD = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///{db}"
[queue]
workers = 8
[log]
level = "info"
[workflows.w]
order_key = "{{$context.data.account}}"
"""


def test_order_key_holds_across_a_kill_9_and_restart(spawn, tmp_path, endpoint):
    delay = 0.1
    endpoint.replies = [Reply(delay=delay) for _ in range(40)]
    config = write_config(tmp_path, ORDERED_CHILD + slow_call(endpoint.url))
    child = spawn(config, tmp_path / "first.log")
    for seq in range(12):
        answer = post_json(child, "/api/webhooks/w", {"seq": seq, "account": "only"})
        assert answer.status == 202
    assert wait_until(lambda: len(endpoint.received) >= 3, 10, 0.01)
    child.process.kill()
    child.process.wait(10)
    restarted = spawn(config, tmp_path / "second.log")
    try:
        def finished() -> bool:
            [(left,)] = query(tmp_path / "fastwebhook.db",
                              "SELECT count(*) FROM executions WHERE status IN ('queued', 'started')")
            [(done,)] = query(tmp_path / "fastwebhook.db", "SELECT count(*) FROM executions WHERE status = 'resolved'")
            return left == 0 and done == 12
        assert wait_until(finished, 30, 0.05)
    finally:
        assert terminate(restarted) == 0
    seqs = [seq for seq, _, _ in intervals(endpoint.received)]
    first_seen = list(dict.fromkeys(seqs))           # at least once: the one cut short may repeat
    assert first_seen == list(range(12)), seqs
    repeats = len(seqs) - len(first_seen)
    assert repeats <= 1, f"more than the interrupted call was sent again: {seqs}"


def test_a_header_rendered_from_webhook_data_cannot_add_headers_of_its_own(serve):
    running = serve("""
[workflows.w]
mode = "sync"
[[workflows.w.nodes]]
key = "answer"
type = "response"
headers = { "X-Name" = "{{$context.data.name}}" }
body = "hi"
""")
    fine = post_json(running, "/api/webhooks/w", {"name": "octo"})
    assert fine.status == 200 and fine.headers["x-name"] == "octo"
    for name in ("a\r\nSet-Cookie: evil=1", "€uro"):
        answer = post_json(running, "/api/webhooks/w", {"name": name})
        assert answer.status == 500, answer.headers
        assert "set-cookie" not in answer.headers
        body = answer.json()
        assert body["status"] == "failed" and "x-name" in body["error"].lower()
