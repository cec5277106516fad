"""The door under a full queue, over real sockets and a real SQLite file: a request that finds
its workflow without room is held (its connection not read), admitted in arrival order as the
work frees slots, and refused with 503 + Retry-After only after `[queue] hold`; a held or refused
request is not verified; one workflow's flood holds that workflow only; a steady stream above
capacity keeps the work going.

The slow workflow's executions wait on a real HTTP endpoint that answers only when the test
lets it (`Valve`), so "the queue is full" is a state the test holds, not a race.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import sqlite3
import threading
import time

import orjson
import pytest

from burst_support import burst, wait_until
from client_support import admin, metric, post_json, request
from wait_support import wait_for

HOLD = 10.0           # long: a held request must be admitted well before its hold runs out


class Valve:
    """An HTTP endpoint whose answers wait until `open()` (at most 30 s, so nothing hangs)."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.waiting = 0
        valve = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                valve.waiting += 1
                valve.opened.wait(30)
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.opened.set()
        self.server.shutdown()


@pytest.fixture
def valve():
    valve = Valve()
    yield valve
    valve.close()


def config(valve: Valve, hold: str = f"{HOLD:g}s", capacity: int = 100) -> str:
    return f"""
[queue]
capacity = {capacity}
hold = "{hold}"

[workflows.slow]
path = "/slow"
max_queued = 2

[[workflows.slow.nodes]]
key = "call"
type = "request"
method = "POST"
url = "{valve.url}"
timeout = "30s"

[workflows.signed]
path = "/signed"
max_queued = 1

[workflows.signed.verify]
scheme = "github"
secret = "s3cret"

[[workflows.signed.nodes]]
key = "call"
type = "request"
method = "POST"
url = "{valve.url}"
timeout = "30s"

[workflows.fast]
path = "/fast"
"""


class Sender(threading.Thread):
    """One request on its own connection, in the background: its answer and when it came."""

    def __init__(self, running, path: str, value, headers: dict | None = None):
        super().__init__(daemon=True)
        self.args = (running, path, value, headers)
        self.answer = None
        self.seconds = None
        self.start()

    def run(self) -> None:
        started = time.monotonic()
        self.answer = post_json(*self.args)
        self.seconds = time.monotonic() - started


def held(running) -> float:
    return metric(running, "fastwebhook_queue_held")


def fill_slow(running, valve: Valve) -> None:
    """Two slow executions running (the workflow's share): the next one has no room."""
    for n in range(2):
        assert post_json(running, "/slow", {"n": n}).status == 202
    assert wait_until(lambda: valve.waiting == 2, timeout=10), "the slow executions did not start"


def test_a_held_request_is_admitted_when_room_appears_within_its_hold(serve, valve):
    running = serve(config(valve, capacity=2))   # the slow workflow's share is the whole queue
    fill_slow(running, valve)
    first, second = Sender(running, "/slow", {"n": "first"}), None
    assert wait_until(lambda: held(running) == 1, timeout=5), "the request was not held"
    second = Sender(running, "/slow", {"n": "second"})
    assert wait_until(lambda: held(running) == 2, timeout=5)
    assert first.answer is None and second.answer is None, "a held request is not answered while held"
    ready = request(running, "GET", "/readyz")
    assert ready.status == 503 and "queue full" in ready.json()["problems"]

    valve.opened.set()   # the running executions finish: their slots admit the held, oldest first
    first.join(HOLD)
    second.join(HOLD)
    assert first.answer.status == 202 and second.answer.status == 202
    assert first.seconds < HOLD and second.seconds < HOLD
    ids = [first.answer.json()["execution_id"], second.answer.json()["execution_id"]]
    assert ids == sorted(ids), "admitted in arrival order (execution ids are time-ordered)"
    assert held(running) == 0
    assert metric(running, "fastwebhook_rejected_total", workflow="slow", reason="queue_full") == 0


def test_past_its_hold_a_request_gets_503_with_retry_after_and_nothing_is_kept(serve, valve):
    running = serve(config(valve, hold="200ms"))
    fill_slow(running, valve)
    answer = post_json(running, "/slow", {"n": "late"})
    assert answer.status == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["error"] == "queue full"
    assert metric(running, "fastwebhook_rejected_total", workflow="slow", reason="queue_full") == 1
    assert metric(running, "fastwebhook_requests_total", code="503", workflow="slow") == 1
    # not verified before admission: with room a forged signature is 401; with /signed's share
    # (1) taken by a signed request, a forged one is held and refused as full, never verified
    forged = {"X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert post_json(running, "/signed", {"n": 0}, forged).status == 401
    body = orjson.dumps({"n": 1})
    good = {"X-Hub-Signature-256": "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()}
    assert request(running, "POST", "/signed", body, {"Content-Type": "application/json", **good}).status == 202
    assert wait_until(lambda: valve.waiting == 3, timeout=10)
    assert post_json(running, "/signed", {"n": 2}, forged).status == 503
    assert metric(running, "fastwebhook_rejected_total", workflow="signed", reason="signature") == 1

    valve.opened.set()
    assert wait_until(lambda: metric(running, "fastwebhook_queue_depth") == 0, timeout=10)
    executions = admin(running, "/executions?workflow=slow").json()["items"]
    assert len(executions) == 2, "the refused request left no execution behind"

    # the request log sums the refusals: one line per workflow per second, with the count
    def summary():
        lines = admin(running, "/requests?limit=50").json()["items"]
        return [line for line in lines if line["status"] == 503 and line["workflow"] in ("slow", "signed")]
    # The two refusals may be summed up in different periods: wait for both lines, not the first.
    lines = wait_for(lambda: {line["workflow"] for line in summary()} == {"slow", "signed"} and summary(), 5,
                     failure=lambda: f"not one summary line for each workflow: {summary()}")
    assert all("queue full: 1 request refused" in line["reason"] for line in lines)


def test_hold_0s_refuses_at_once(serve, valve):
    running = serve(config(valve, hold="0s"))
    fill_slow(running, valve)
    started = time.monotonic()
    answer = post_json(running, "/slow", {"n": "now"})
    assert answer.status == 503 and answer.headers["retry-after"] == "1"
    assert time.monotonic() - started < 2.0
    assert held(running) == 0


def test_a_held_request_whose_commit_fails_gets_503_and_gives_its_slot_back(serve, valve):
    """Admitted when room appears, then its append fails (the intake refuses inserts: a trigger
    another connection puts on it, as a full disk would): the sender gets 503 "store
    unavailable", never a 2xx, and the slot it took is free again once the store is."""
    running = serve(config(valve, capacity=2))
    fill_slow(running, valve)
    waiting = Sender(running, "/slow", {"n": "held"})
    assert wait_until(lambda: held(running) == 1, timeout=5), "the request was not held"
    outside = sqlite3.connect(running.db, isolation_level=None, timeout=10)
    try:
        outside.execute("CREATE TRIGGER refuse BEFORE INSERT ON intake BEGIN SELECT RAISE(ABORT, 'no space'); END")
        valve.opened.set()   # the running executions finish: the held one is admitted, its commit fails
        waiting.join(HOLD)
        assert waiting.answer.status == 503 and waiting.answer.headers["retry-after"] == "1"
        assert waiting.answer.json() == {"error": "store unavailable"}
        assert held(running) == 0
    finally:
        outside.execute("DROP TRIGGER IF EXISTS refuse")
        outside.close()
    wait_for(lambda: metric(running, "fastwebhook_queue_depth") == 0, failure="a slot stayed taken")
    after = post_json(running, "/slow", {"n": "after"})
    assert after.status == 202, after.body
    record = wait_for(lambda: (lambda r: r if r["status"] == "resolved" else None)(
        admin(running, f"/executions/{after.json()['execution_id']}").json()), failure="the next one never ran")
    assert record["status"] == "resolved"


def test_a_flood_on_one_workflow_neither_holds_nor_refuses_another(serve, valve):
    running = serve(config(valve))
    fill_slow(running, valve)
    senders = [Sender(running, "/slow", {"n": n}) for n in range(3)]
    assert wait_until(lambda: held(running) == 3, timeout=5)
    for n in range(20):
        started = time.monotonic()
        answer = post_json(running, "/fast", {"n": n})
        assert answer.status == 202, answer.body
        assert time.monotonic() - started < HOLD / 2, "the other workflow's request was held"
    assert held(running) == 3, "the slow workflow's senders still wait"
    assert metric(running, "fastwebhook_rejected_total", workflow="fast", reason="queue_full") == 0
    valve.opened.set()
    for sender in senders:
        sender.join(HOLD)
        assert sender.answer.status == 202


def test_parked_order_key_deliveries_do_not_stall_other_claims(serve, valve):
    running = serve(f"""
[queue]
capacity = 2000

[workflows.lane]
path = "/lane"
order_key = "{{{{$workflow.key}}}}"

[[workflows.lane.nodes]]
key = "call"
type = "request"
method = "POST"
url = "{valve.url}"
timeout = "30s"

[workflows.other]
path = "/other"

[[workflows.other.nodes]]
key = "check"
type = "condition"
all = [["{{{{$context.data.n}}}}", ">=", 0]]
""")
    # one lane: the first runs (waiting on the valve), the rest park behind it (once past 16,384
    # parked, claims stalled for everyone: today nothing parked counts against the claim)
    acked, statuses = burst(running.host, running.port, 120, path="/lane", connections=8, depth=15, prefix="k")
    assert statuses == {202: 120}
    assert wait_until(lambda: valve.waiting == 1, timeout=10)
    # ... and the other workflow's executions are claimed and run meanwhile
    answers = [post_json(running, "/other", {"n": n}) for n in range(50)]
    assert all(answer.status == 202 for answer in answers)
    assert wait_until(lambda: metric(running, "fastwebhook_executions_total", status="resolved",
                                     workflow="other") == 50, timeout=10), "claims stalled behind the parked lane"
    assert valve.waiting == 1, "the lane still runs one at a time"
    valve.opened.set()
    assert wait_until(lambda: metric(running, "fastwebhook_executions_total", status="resolved",
                                     workflow="lane") == 120, timeout=30)


def test_a_steady_stream_above_capacity_keeps_resolving_work(serve):
    capacity = 50
    running = serve(f"""
[queue]
capacity = {capacity}

[workflows.hook]
path = "/api/webhooks/hook"

[[workflows.hook.nodes]]
key = "check"
type = "condition"
all = [["{{{{$context.data.d}}}}", "not_empty"]]
""")
    statuses: dict = {}
    halt = threading.Event()
    sender = threading.Thread(target=burst, kwargs=dict(
        host=running.host, port=running.port, count=1_000_000, connections=64, depth=1, seconds=30.0, halt=halt,
        statuses=statuses), daemon=True)
    sender.start()
    resolved = lambda: metric(running, "fastwebhook_executions_total", status="resolved", workflow="hook")  # noqa: E731
    assert wait_until(lambda: held(running) > 0, timeout=5), "64 senders never filled a queue of 50"
    last = resolved()
    for _ in range(3):   # the work goes on while the door is full: more resolved at every look
        assert metric(running, "fastwebhook_queue_depth") <= capacity
        assert wait_until(lambda: resolved() > last, timeout=1.5), "the work starved"
        last = resolved()
    # and the stream goes on through many turns of the full queue before it stops
    assert wait_until(lambda: statuses.get(202, 0) > capacity * 10, timeout=10), statuses
    halt.set()
    sender.join(15)
    assert statuses.get(202, 0) > capacity * 3
    assert statuses.get(503, 0) == 0, "senders were held, not refused, within their hold"
    assert wait_until(lambda: metric(running, "fastwebhook_queue_depth") == 0, timeout=15)
    assert resolved() == statuses[202]
