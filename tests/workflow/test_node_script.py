"""SPEC section 7, the `script` node (and the condition's `expression`), through the real server:
port 0, real sockets, a real SQLite file, real V8."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from client_support import request, wait_for_execution, wait_until_started
from conftest import write_config
from fastwebhook.config.loader import load_config
from fastwebhook.core.errors import ConfigErrors

JSON = {"Content-Type": "application/json"}

CONFIG = """
[env]
GREETING = "hi"

[workflows.w]
path = "/api/webhooks/w"
[[workflows.w.nodes]]
key = "branch"
type = "script"
code = "console.log('ref', $context.data.ref); return $context.data.ref.replace('refs/heads/', '');"
[[workflows.w.nodes]]
key = "seen"
type = "script"
code = '''
return {
  branch: $jobsMapByNodeKey.branch,
  alias: $nodes.branch,
  event: $context.headers['x-github-event'],
  page: $context.query.page,
  greeting: $env.GREETING,
  now: $system.now,
  workflow: $workflow.key,
  execution: $execution.id,
};
'''

[workflows.echo]
path = "/api/webhooks/echo"
mode = "sync"
[[workflows.echo.nodes]]
key = "branch"
type = "script"
code = "return $context.data.ref.replace('refs/heads/', '');"
[[workflows.echo.nodes]]
key = "answer"
type = "response"
body = "{{$jobsMapByNodeKey.branch}}"

[workflows.throws]
path = "/api/webhooks/throws"
[[workflows.throws.nodes]]
key = "check"
type = "script"
code = '''
console.log('checking');
if (!$context.data.id) {
  throw new Error('no id in the payload');
}
return $context.data.id;
'''
[[workflows.throws.nodes]]
key = "after"
type = "script"
code = "return 'never';"

[workflows.tolerant]
path = "/api/webhooks/tolerant"
[[workflows.tolerant.nodes]]
key = "shaky"
type = "script"
ignore_fail = true
code = "return $context.data.missing.field;"
[[workflows.tolerant.nodes]]
key = "after"
type = "script"
code = "return 'shaky' in $jobsMapByNodeKey ? 'odd' : 'went on';"

[workflows.decide]
path = "/api/webhooks/decide"
mode = "sync"
[[workflows.decide.nodes]]
key = "big"
type = "condition"
expression = "$context.data.n > 2"
  [[workflows.decide.nodes.then]]
  key = "yes"
  type = "response"
  body = "big"
  [[workflows.decide.nodes.else]]
  key = "no"
  type = "response"
  body = "small"

[workflows.spin]
path = "/api/webhooks/spin"
[[workflows.spin.nodes]]
key = "forever"
type = "script"
timeout = "1s"     # past STARTED_AFTER: "started" is written while it spins
code = "while (true) {}"

[workflows.bomb]
path = "/api/webhooks/bomb"
[[workflows.bomb.nodes]]
key = "grow"
type = "script"
memory_limit = "32MiB"
code = "let a = []; while (true) a.push(new Array(1e6).fill(1));"

[workflows.promises]
path = "/api/webhooks/promises"
[[workflows.promises.nodes]]
key = "loop"
type = "script"
timeout = "500ms"
code = "(async () => { for (;;) await null; })(); return 'x';"

[workflows.tamper]
path = "/api/webhooks/tamper"
mode = "sync"
[[workflows.tamper.nodes]]
key = "spoil"
type = "script"
code = '''
const seen = globalThis.left || null;
globalThis.left = 'by tamper';
Array.prototype.map = function () { return ['tampered']; };
return {seen, driver: typeof __fastwebhook};
'''
[[workflows.tamper.nodes]]
key = "answer"
type = "response"
body = "{{$jobsMapByNodeKey.spoil}}"

[workflows.mapper]
path = "/api/webhooks/mapper"
mode = "sync"
[[workflows.mapper.nodes]]
key = "map"
type = "script"
code = '''
const own = Object.getOwnPropertyNames(globalThis).filter((name) => /fastwebhook|batch|finished/i.test(name));
return {mapped: [1, 2].map((n) => n * 2), left: typeof globalThis.left, own};
'''
[[workflows.mapper.nodes]]
key = "answer"
type = "response"
body = "{{$jobsMapByNodeKey.map}}"

[workflows.busy]
path = "/api/webhooks/busy"
mode = "sync"
[[workflows.busy.nodes]]
key = "work"
type = "script"
# well past the 100 ms of V8's CPU after which busy contexts count as stuck and the pool grows
code = '''
const started = Date.now();
while (Date.now() - started < 300) {}
return {n: $context.data.n, started, ended: Date.now()};
'''
[[workflows.busy.nodes]]
key = "answer"
type = "response"
body = "{{$jobsMapByNodeKey.work}}"
"""


@pytest.fixture
def server(serve):
    return serve(CONFIG)


def post(server, name: str, data, headers: dict | None = None, query: str = ""):
    return request(server, "POST", f"/api/webhooks/{name}{query}", body=orjson.dumps(data),
                   headers={**JSON, **(headers or {})})


def execution(server, name: str, data, **extra) -> dict:
    answer = post(server, name, data, **extra)
    assert answer.status == 202, answer.body
    return wait_for_execution(server, answer.json()["execution_id"])


def jobs(record: dict) -> dict:
    return {job["node"]: job for job in record["jobs"]}


def test_the_result_is_the_job_result_and_later_nodes_see_it_with_the_whole_scope(server):
    record = execution(server, "w", {"ref": "refs/heads/main"}, headers={"X-GitHub-Event": "push"},
                       query="?page=2")
    assert record["status"] == "resolved", record
    branch, seen = jobs(record)["branch"], jobs(record)["seen"]
    assert (branch["type"], branch["status"], branch["result"]) == ("script", "resolved", "main")
    assert branch["logs"] == ["ref refs/heads/main"]
    result = seen["result"]
    assert result.pop("now").endswith("Z")
    assert result == {"branch": "main", "alias": "main", "event": "push", "page": "2", "greeting": "hi",
                      "workflow": "w", "execution": record["id"]}


def test_a_later_node_answers_with_the_script_result(server):
    answer = post(server, "echo", {"ref": "refs/heads/release"})
    assert (answer.status, answer.body) == (200, b"release")


def test_a_thrown_error_fails_the_node_with_its_message(server):
    record = execution(server, "throws", {"other": 1})
    assert record["status"] == "failed"
    check = jobs(record)["check"]
    assert check["status"] == "failed"
    assert "Error: no id in the payload (line 3)" in check["error"]
    assert check["logs"] == ["checking"]
    assert "after" not in jobs(record)
    assert "no id in the payload" in record["error"]


def test_ignore_fail_records_the_failure_and_goes_on(server):
    record = execution(server, "tolerant", {})
    assert record["status"] == "resolved", record
    shaky, after = jobs(record)["shaky"], jobs(record)["after"]
    assert shaky["status"] == "failed" and "Cannot read properties of undefined" in shaky["error"]
    assert after["result"] == "went on"   # a failed node leaves no result behind


def test_a_condition_expression_picks_its_branch(server):
    assert post(server, "decide", {"n": 5}).body == b"big"
    assert post(server, "decide", {"n": 1}).body == b"small"


@pytest.mark.alone   # the run's CPU timeout (nice 19) and the answer's wait, timed by the clock
def test_an_endless_loop_ends_at_its_timeout_while_ingest_goes_on(server):
    spinning = post(server, "spin", {})
    assert spinning.status == 202
    wait_until_started(server, spinning.json()["execution_id"])   # the script is spinning now
    started = time.perf_counter()
    other = post(server, "echo", {"ref": "refs/heads/main"})   # ingest and a script beside it
    answered_in = time.perf_counter() - started
    assert (other.status, other.body) == (200, b"main")
    assert answered_in < 0.5
    record = wait_for_execution(server, spinning.json()["execution_id"])
    forever = jobs(record)["forever"]
    assert record["status"] == "failed"
    assert forever["status"] == "failed" and "script timed out after 1s" in forever["error"]
    assert 950 < forever["duration_ms"] < 2500


def test_a_promise_loop_fails_its_node_and_no_later_script_or_webhook_pays_for_it(server):
    # Before: the script "resolved" with 'x', its loop went on in a shared context, and every
    # later script on it, whatever its workflow, failed "script timed out" (or the event loop
    # blocked behind it, and the server took seconds to stop).
    record = execution(server, "promises", {})
    loop = jobs(record)["loop"]
    assert record["status"] == "failed"
    assert loop["status"] == "failed" and "script left work running after it returned" in loop["error"]
    for n in range(3):
        started = time.perf_counter()
        answer = post(server, "echo", {"ref": f"refs/heads/after-{n}"})
        assert (answer.status, answer.body) == (200, f"after-{n}".encode())
        assert time.perf_counter() - started < 0.5
    assert jobs(execution(server, "promises", {}))["loop"]["status"] == "failed"   # each time, alone


def test_a_workflow_never_sees_what_another_workflows_scripts_did_to_their_context(server):
    # Before: one pool of contexts for all workflows; a replaced Array.prototype.map and a global
    # left by one workflow's script reached the next script of another.
    first = post(server, "tamper", {}).json()
    assert first == {"seen": None, "driver": "undefined"}
    for _ in range(3):
        assert post(server, "mapper", {}).json() == {"mapped": [2, 4], "left": "undefined", "own": []}
    # runs of one workflow share its contexts (the README says so): the global is still there
    assert post(server, "tamper", {}).json() == {"seen": "by tamper", "driver": "undefined"}


def test_a_memory_bomb_ends_with_the_memory_error_and_scripts_keep_working(server):
    record = execution(server, "bomb", {})
    grow = jobs(record)["grow"]
    assert record["status"] == "failed"
    assert "script exceeded its memory limit of 32 MiB" in grow["error"]
    assert post(server, "echo", {"ref": "refs/heads/after-the-bomb"}).body == b"after-the-bomb"
    assert jobs(execution(server, "w", {"ref": "refs/heads/x"}))["branch"]["result"] == "x"


def test_several_scripts_run_at_once(server):
    answers: dict[int, dict] = {}

    def send(n: int) -> None:
        answer = post(server, "busy", {"n": n})
        assert answer.status == 200, answer.body
        answers[n] = answer.json()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(answers) == list(range(6))
    assert all(answers[n]["n"] == n for n in answers)
    spans = sorted((a["started"], a["ended"]) for a in answers.values())
    assert any(later_start < earlier_end for (_, earlier_end), (later_start, _) in zip(spans, spans[1:]))


# --- load-time checks ----------------------------------------------------------------------------

def config_errors(tmp_path, node: str) -> dict[str, str]:
    text = f"""
[workflows.w]
path = "/w"
[[workflows.w.nodes]]
key = "s"
type = "script"
{node}
"""
    with pytest.raises(ConfigErrors) as info:
        load_config(str(write_config(tmp_path, text)))
    return {error.path: error.message for error in info.value.errors}


@pytest.mark.parametrize("node, path, told", [
    ("", "workflows.w.nodes[0].code", "must be a JavaScript function body"),
    ("code = ''", "workflows.w.nodes[0].code", "must be a JavaScript function body"),
    ("code = 3", "workflows.w.nodes[0].code", "must be a JavaScript function body"),
    ("code = 'return 1'\ntimeout = 'soon'", "workflows.w.nodes[0].timeout", "not a duration"),
    ("code = 'return 1'\ntimeout = '0s'", "workflows.w.nodes[0].timeout", "must be more than 0"),
    ("code = 'return 1'\nmemory_limit = 'lots'", "workflows.w.nodes[0].memory_limit", "not a size"),
    ("code = 'return 1'\nmemory_limit = '1MiB'", "workflows.w.nodes[0].memory_limit", "at least 4MiB"),
    ("code = 'return 1'\nmemory = '1MiB'", "workflows.w.nodes[0].memory", ""),
])
def test_bad_settings_are_reported_at_load(tmp_path, node, path, told):
    found = config_errors(tmp_path, node)
    assert path in found and told in found[path], found


def test_defaults_are_one_second_and_64_mib(tmp_path):
    config = load_config(str(write_config(tmp_path, """
[workflows.w]
path = "/w"
[[workflows.w.nodes]]
key = "s"
type = "script"
code = "return 1"
""")))
    prepared = config.workflows["w"].nodes[0].prepared
    assert (prepared.timeout, prepared.memory) == (1.0, 64 << 20)
