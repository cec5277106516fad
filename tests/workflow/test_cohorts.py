"""Cohort execution: executions of one workflow walk the nodes together, each node once for the
cohort (one V8 call, one collection write), and every execution keeps its own outcome.

Two levels: the runner's `run_cohort` on a real SQLite store and real V8, handed a cohort it can
be sure of; and the real server, where concurrent deliveries are claimed and run in cohorts.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from burst_support import burst, wait_until
from client_support import post_json
from conftest import write_config

from fastwebhook.config.loader import load_config
from fastwebhook.door.context import context_of
from fastwebhook.core.errors import ConstraintError
from fastwebhook.core.ids import to_text
from fastwebhook.store import open_store
from fastwebhook.store.rows import Effect, Job, StoredRequest
from fastwebhook.store.sqlite import SqliteStore
from fastwebhook.store.sqlite_connector import SqliteConnector
from fastwebhook.workflow.collections import Collection
from fastwebhook.workflow.effects import MAX_BATCH, Effects
from fastwebhook.workflow.resources import Resources
from fastwebhook.workflow.runner import Run, job_rows, run_cohort, run_workflow
from fastwebhook.workflow.script_pool import ScriptPool
from fastwebhook.workflow.scripts import EVERYTHING, Script, ScriptError

PUSHES = """
[collections.pushes]
fields = { delivery = "string", branch = "string" }
unique = [["delivery"]]

[workflows.push]
[[workflows.push.nodes]]
key = "is_main"
type = "condition"
all = [["{{$context.data.ref}}", "==", "refs/heads/main"]]

  [[workflows.push.nodes.then]]
  key = "summary"
  type = "script"
  code = '''
console.log("summing up", $context.data.id);
if ($context.data.bad) throw new Error("bad push " + $context.data.id);
return { branch: $context.data.ref.replace("refs/heads/", ""), delivery: $context.data.delivery };
'''

  [[workflows.push.nodes.then]]
  key = "record"
  type = "create"
  collection = "pushes"
  values = { delivery = "{{$nodes.summary.delivery}}", branch = "{{$nodes.summary.branch}}" }
"""


class Counted:
    """How often a part of ours was called (the part itself runs as always)."""

    def __init__(self, target, name: str):
        self.calls = 0
        original = getattr(target, name)

        async def counted(*args, **kwargs):
            self.calls += 1
            return await original(*args, **kwargs)

        setattr(target, name, counted)


def run_with(tmp_path, body: str, test):
    """`test(config, resources, store)` on a real SQLite store, with the effects writer running."""
    config = load_config(str(write_config(tmp_path, body)))

    async def main():
        store = open_store(config.storage)
        resources = Resources(store, config.channels, config.collections)
        await store.open()
        writer = None
        try:
            await store.ensure_collections(config.collections.values())
            writer = asyncio.ensure_future(resources.effects.run())
            return await test(config, resources, store)
        finally:
            if writer is not None:
                writer.cancel()
            await resources.scripts.close()
            await store.close()

    return asyncio.run(main())


def runs_of(config, resources, workflow: str, payloads: list, committed: dict | None = None) -> list[Run]:
    spec = config.workflows[workflow]
    runs = []
    for n, payload in enumerate(payloads):
        request = StoredRequest("POST", "/hook", "", [("content-type", "application/json")], {}, "127.0.0.1",
                                time.time(), f"r-{n}")
        context = context_of(request, orjson.dumps(payload), spec.max_body_size)
        execution = (n + 1).to_bytes(16, "big")
        runs.append(Run(execution, spec, context, config.env, resources,
                        committed=(committed or {}).get(n)))
    return runs


def push(n: int, **extra) -> dict:
    return {"id": n, "ref": "refs/heads/main", "delivery": f"d-{n}", **extra}


def summary(outcome) -> tuple:
    """What an outcome says, without timings."""
    return (outcome.status, outcome.error,
            [(j.node, j.type, j.status, j.result if j.type != "create" else bool(j.result), j.error, j.logs,
              j.position, j.committed) for j in outcome.jobs])


# --- the runner, handed a cohort ----------------------------------------------------------------

def test_a_refused_row_fails_its_run_alone_in_one_write_and_one_v8_call(tmp_path):
    payloads = [push(n) for n in range(40)]
    payloads[17]["delivery"] = "d-3"   # the 18th takes the 4th's unique delivery

    async def test(config, resources, store):
        await run_cohort(runs_of(config, resources, "push", [push(1000)]))   # the script known short now
        writes = Counted(store, "write_effects")
        calls = Counted(resources.scripts.of("push"), "_call")
        runs = runs_of(config, resources, "push", payloads)
        outcomes = await run_cohort(runs)
        stored = await store.read_records('SELECT delivery FROM "records_pushes" ORDER BY id', ())
        return runs, outcomes, writes.calls, calls.calls, stored

    runs, outcomes, writes, v8_calls, stored = run_with(tmp_path, PUSHES, test)
    assert writes == 1 and v8_calls == 1
    for n, outcome in enumerate(outcomes):
        nodes = [(j.node, j.status) for j in outcome.jobs]
        if n == 17:
            assert outcome.status == "failed" and "record" in outcome.error and "UNIQUE" in outcome.error
            assert nodes == [("is_main", "resolved"), ("summary", "resolved"), ("record", "failed")]
            assert [j.committed for j in outcome.jobs] == [False, False, False]
        else:
            assert outcome.status == "resolved", (n, outcome.error)
            assert nodes == [("is_main", "resolved"), ("summary", "resolved"), ("record", "resolved")]
            assert outcome.jobs[2].committed and outcome.jobs[2].result["delivery"] == f"d-{n}"
        assert outcome.jobs[1].logs == [f"summing up {n}"]
        # what the execution still writes: every job not committed with its record
        assert [row.node for row in job_rows(runs[n].execution_id, outcome.jobs)] == \
            (["is_main", "summary", "record"] if n == 17 else ["is_main", "summary"])
    assert [row[0] for row in stored] == ["d-1000"] + [f"d-{n}" for n in range(40) if n != 17]


def test_a_script_that_throws_for_one_payload_fails_that_run_alone(tmp_path):
    payloads = [push(n, bad=(n == 5)) for n in range(12)]

    async def test(config, resources, store):
        await run_cohort(runs_of(config, resources, "push", [push(100)]))
        runs = runs_of(config, resources, "push", payloads)
        return await run_cohort(runs)

    outcomes = run_with(tmp_path, PUSHES, test)
    failed = outcomes[5]
    assert failed.status == "failed" and "bad push 5" in failed.error and "'summary'" in failed.error
    assert [(j.node, j.status) for j in failed.jobs] == [("is_main", "resolved"), ("summary", "failed")]
    assert failed.jobs[1].logs == ["summing up 5"]   # what it printed before it threw
    assert all(o.status == "resolved" and len(o.jobs) == 3 for n, o in enumerate(outcomes) if n != 5)


BRANCHES = """
[collections.seen]
fields = { n = "integer", side = "string" }

[workflows.split]
[[workflows.split.nodes]]
key = "big"
type = "condition"
all = [["{{$context.data.n}}", ">=", 10]]

  [[workflows.split.nodes.then]]
  key = "double"
  type = "script"
  code = "return $context.data.n * 2;"

  [[workflows.split.nodes.then]]
  key = "huge"
  type = "condition"
  expression = "$jobsMapByNodeKey.double > 100"

    [[workflows.split.nodes.then.then]]
    key = "stop"
    type = "end"
    status = "failed"

  [[workflows.split.nodes.else]]
  key = "small"
  type = "create"
  collection = "seen"
  values = { n = "{{$context.data.n}}", side = "small" }

[[workflows.split.nodes]]
key = "odd"
type = "condition"
expression = "$context.data.n % 2 === 1"

[[workflows.split.nodes]]
key = "after"
type = "script"
code = "return [$context.data.n, $jobsMapByNodeKey.double === undefined ? null : $jobsMapByNodeKey.double];"
"""


def expected_branch_path(n: int) -> tuple[str, list[str]]:
    if n >= 10 and n * 2 > 100:
        return "failed", ["big", "double", "huge", "stop"]
    if n >= 10:
        nodes = ["big", "double", "huge", "odd"]
    else:
        nodes = ["big", "small", "odd"]
    return "resolved", nodes + (["after"] if n % 2 else [])


def test_branches_split_a_cohort_and_each_run_ends_its_own_way(tmp_path):
    numbers = [1, 2, 12, 13, 60, 61, 4, 33, 0, 99]

    async def test(config, resources, store):
        cohort = await run_cohort(runs_of(config, resources, "split", [{"n": n} for n in numbers]))
        alone = [await run_workflow(run) for run in runs_of(config, resources, "split", [{"n": n} for n in numbers])]
        return cohort, alone

    cohort, alone = run_with(tmp_path, BRANCHES, test)
    for n, outcome in zip(numbers, cohort):
        status, nodes = expected_branch_path(n)
        assert outcome.status == status and [j.node for j in outcome.jobs] == nodes, (n, outcome)
        assert [j.position for j in outcome.jobs] == list(range(len(nodes)))
        if "after" in nodes:
            assert outcome.jobs[-1].result == [n, n * 2 if n >= 10 else None]
    # a cohort's outcomes are exactly what each run by itself gives
    assert [summary(o) for o in cohort] == [summary(o) for o in alone]


def test_a_resumed_run_takes_its_committed_jobs_in_a_cohort_with_fresh_ones(tmp_path):
    """A second attempt's committed create is not done again; the fresh runs beside it write."""
    payloads = [push(n) for n in range(6)]

    async def test(config, resources, store):
        first = runs_of(config, resources, "push", payloads[:1])
        await run_cohort(first)
        committed = await store.committed_jobs(first[0].execution_id)
        again = runs_of(config, resources, "push", payloads, committed={0: committed})
        outcomes = await run_cohort(again)
        rows = await store.read_records('SELECT delivery FROM "records_pushes" ORDER BY id', ())
        return committed, outcomes, rows

    committed, outcomes, rows = run_with(tmp_path, PUSHES, test)
    assert set(committed) == {"record"}   # the create committed with its job
    assert all(o.status == "resolved" for o in outcomes)
    assert outcomes[0].jobs[2].committed and outcomes[0].jobs[2].logs == []   # taken, not run
    assert [r[0] for r in rows] == [f"d-{n}" for n in range(6)]   # d-0 once


def test_ignore_fail_skips_the_node_for_the_failing_run_only(tmp_path):
    body = PUSHES.replace('  key = "record"\n  type = "create"', '  key = "record"\n  type = "create"\n  ignore_fail = true') + """
  [[workflows.push.nodes.then]]
  key = "last"
  type = "script"
  code = "return $jobsMapByNodeKey.record === undefined ? 'skipped' : 'written';"
"""
    payloads = [push(n) for n in range(5)]
    payloads[3]["delivery"] = "d-1"

    async def test(config, resources, store):
        return await run_cohort(runs_of(config, resources, "push", payloads))

    outcomes = run_with(tmp_path, body, test)
    assert all(o.status == "resolved" for o in outcomes)
    assert [o.jobs[-1].result for o in outcomes] == ["written", "written", "written", "skipped", "written"]
    assert outcomes[3].jobs[2].status == "failed"


# --- the script pool and the effects writer, for a cohort ------------------------------------

STEP = Script.function_body("""
if ($context.n === 3) throw new Error("three");
const until = Date.now() + ($context.slow ? 10000 : 0);
while (Date.now() < until) {}
console.log("n", $context.n);
return $context.n * 2;
""")


def scope_of(n: int, **extra) -> dict:
    return {"$context": {"n": n, **extra}, "$jobsMapByNodeKey": {}}


def in_pool(body):
    async def main():
        pool = ScriptPool()
        await pool.start()
        try:
            await pool.run(STEP, scope_of(0), 1.0, 64 << 20)   # known short from now on
            return await body(pool)
        finally:
            await pool.close()
    return asyncio.run(main())


def test_run_many_is_one_v8_call_per_batch_and_a_throw_fails_its_run_alone():
    async def body(pool):
        calls = Counted(pool, "_call")
        outcomes = await pool.run_many(STEP, [scope_of(n) for n in range(300)], 1.0, 64 << 20)
        return calls.calls, outcomes

    calls, outcomes = in_pool(body)
    assert calls == 2   # 256 + 44 (COHORT_CHUNK a call: these runs are far from their timeout)
    assert isinstance(outcomes[3], ScriptError) and outcomes[3].reason == "exception" and "three" in outcomes[3].message
    assert [o for n, o in enumerate(outcomes) if n != 3] == [(2 * n, [f"n {n}"]) for n in range(300) if n != 3]


BUSY = Script.function_body("""
const until = Date.now() + 2;
while (Date.now() < until) {}
return $context.n * 2;
""")


@pytest.mark.alone   # 20 ms a run, timed on a nice-19 V8 thread: a busy neighbour stretches it
def test_a_cohort_of_runs_that_together_pass_their_timeout_is_split_so_none_is_failed_for_it():
    # 60 runs of 1-2 ms each, 20 ms each allowed: one call for all would be held to 20 ms and
    # stop an innocent run; the calls take as many as fit a quarter of it.
    async def body(pool):
        await pool.run(BUSY, scope_of(0), 0.02, 64 << 20)   # how long a run takes, known
        calls = Counted(pool, "_call")
        outcomes = await pool.run_many(BUSY, [scope_of(n) for n in range(60)], 0.02, 64 << 20)
        return calls.calls, outcomes

    calls, outcomes = in_pool(body)
    assert outcomes == [(2 * n, []) for n in range(60)]
    assert calls >= 60 // 5   # 5 runs a call at most (a median of 1 ms), fewer on a busy machine


def test_a_timeout_in_the_middle_of_a_cohort_serves_the_runs_that_finished():
    async def body(pool):
        scopes = [scope_of(n, slow=(n == 5)) for n in range(10)]
        outcomes = await pool.run_many(STEP, scopes, 0.3, 64 << 20)
        after = await pool.run_many(STEP, [scope_of(n) for n in range(4, 7)], 1.0, 64 << 20)
        return outcomes, after, pool.size

    outcomes, after, size = in_pool(body)
    assert outcomes[:3] == [(0, ["n 0"]), (2, ["n 1"]), (4, ["n 2"])] and outcomes[4] == (8, ["n 4"])
    assert outcomes[5].reason == "timeout"
    # the runs behind it had not begun: they run after it, their time their own
    assert outcomes[6:] == [(2 * n, [f"n {n}"]) for n in range(6, 10)]
    assert after == [(8, ["n 4"]), (10, ["n 5"]), (12, ["n 6"])]
    assert size == 2   # the stopped context was closed, never used again: a fresh one took its slot


def test_commit_many_past_one_batch_keeps_each_outcome_in_order(tmp_path):
    customers = Collection("customers", {"email": "string"}, (("email",),))
    count = MAX_BATCH + 44

    async def main():
        store = SqliteStore(SqliteConnector(str(tmp_path / "effects.db"), synchronous="FULL"))
        await store.open()
        try:
            await store.ensure_collections([customers])
            effects = Effects(store)
            writer = asyncio.ensure_future(effects.run())
            writes = Counted(store, "write_effects")

            def effect(n: int) -> Effect:
                job = Job(n.to_bytes(16, "big"), 0, "customer", "create", "resolved", None, None, None, 1.0)
                email = "taken@x" if n in (10, MAX_BATCH + 5) else f"{n}@x"
                return Effect([customers.insert({"email": email})], "row", job, customers.decode)

            outcomes = await effects.commit_many([effect(n) for n in range(count)])
            writer.cancel()
            return outcomes, writes.calls
        finally:
            await store.close()

    outcomes, writes = asyncio.run(main())
    assert writes == 2 and len(outcomes) == count
    assert isinstance(outcomes[MAX_BATCH + 5], ConstraintError)   # the second to take taken@x
    assert [o["email"] for n, o in enumerate(outcomes) if n != MAX_BATCH + 5] == \
        [("taken@x" if n == 10 else f"{n}@x") for n in range(count) if n != MAX_BATCH + 5]


# --- the real server ----------------------------------------------------------------------------

SERVER = """
[queue]
workers = 4

[collections.items]
fields = { key = "string", parity = "string" }
unique = [["key"]]

[workflows.hook]
[[workflows.hook.nodes]]
key = "even"
type = "condition"
all = [["{{$context.data.d}}", "matches", "[02468]$"]]

  [[workflows.hook.nodes.then]]
  key = "name"
  type = "script"
  code = "const d = $context.data.d; if (d === 'c-8') throw new Error('no ' + d); return d === 'c-6' ? 'c-4' : d;"

  [[workflows.hook.nodes.else]]
  key = "name_odd"
  type = "script"
  code = "return $context.data.d;"

[[workflows.hook.nodes]]
key = "record"
type = "create"
collection = "items"
values = { key = "{{$nodes.name}}{{$nodes.name_odd}}", parity = "{{$nodes.even}}" }
"""


def test_concurrent_deliveries_run_in_cohorts_and_fail_alone(serve):
    running = serve(SERVER)
    sizes: list[int] = []
    pool = running.server.service.pool
    execute_cohort = pool.execute_cohort

    async def observed(deliveries):
        sizes.append(len(deliveries))
        await execute_cohort(deliveries)

    pool.execute_cohort = observed
    count = 300
    acked, statuses = burst(running.host, running.port, count, connections=8, depth=64, prefix="c")
    assert statuses == {202: count}

    def final() -> list[tuple]:
        with sqlite3.connect(f"file:{running.db}?mode=ro", uri=True, timeout=10) as db:
            return db.execute("SELECT id, status, error FROM executions WHERE status NOT IN ('queued', 'started')") \
                .fetchall()

    assert wait_until(lambda: len(final()) == count, timeout=60), "not every execution ended"
    rows = final()
    by_delivery = {delivery: next(r for r in rows if to_text(r[0]) == id_text) for delivery, id_text in acked.items()}
    failed = {delivery: row[2] for delivery, row in by_delivery.items() if row[1] != "resolved"}
    assert set(failed) in ({"c-8", "c-4"}, {"c-8", "c-6"}), failed
    assert "no c-8" in failed["c-8"]
    loser = ({"c-4", "c-6"} & set(failed)).pop()
    assert "'record'" in failed[loser] and "UNIQUE" in failed[loser]
    assert max(sizes) > 1, f"no cohort of more than one execution: {sizes}"
    with sqlite3.connect(f"file:{running.db}?mode=ro", uri=True, timeout=10) as db:
        jobs = {}
        for execution, node, status in db.execute("SELECT execution, node, status FROM jobs ORDER BY position"):
            jobs.setdefault(to_text(execution), []).append((node, status))
        [(records,)] = db.execute('SELECT count(*) FROM "records_items"').fetchall()
    assert records == count - 2
    for delivery, id_text in acked.items():
        n = int(delivery.split("-")[1])
        middle = "name" if n % 2 == 0 else "name_odd"
        if delivery == "c-8":
            expected = [("even", "resolved"), ("name", "failed")]
        elif delivery == loser:
            expected = [("even", "resolved"), (middle, "resolved"), ("record", "failed")]
        else:
            expected = [("even", "resolved"), (middle, "resolved"), ("record", "resolved")]
        assert jobs.get(id_text) == expected, (delivery, jobs.get(id_text))


def test_sync_answers_come_per_execution_from_a_cohort(serve):
    """Sync senders each get their own execution's answer, whatever cohort it ran in."""
    running = serve(SERVER.replace("[workflows.hook]", '[workflows.hook]\nmode = "sync"') + """
[workflows.hook.response]
body = "{{$context.data.d}} {{$nodes.record.key}}"
""")
    deliveries = [f"c-{n}" for n in range(40)]
    with ThreadPoolExecutor(len(deliveries)) as senders:
        answers = dict(zip(deliveries, senders.map(lambda d: post_json(running, "/api/webhooks/hook", {"d": d}),
                                                   deliveries)))
    failed = {d for d, answer in answers.items() if answer.status == 500}
    assert failed in ({"c-8", "c-4"}, {"c-8", "c-6"}), {d: a.status for d, a in answers.items()}
    for delivery, answer in answers.items():
        if delivery in failed:
            assert answer.json()["status"] == "failed"
        else:
            key = "c-4" if delivery == "c-6" else delivery
            assert answer.status == 200 and answer.body.decode() == f"{delivery} {key}"


# --- what a script's scope holds ----------------------------------------------------------------

SCOPE = """
[env]
REGION = "eu-1"

[workflows.scope]
[[workflows.scope.nodes]]
key = "first"
type = "script"
code = "return 7;"
[[workflows.scope.nodes]]
key = "named"
type = "script"
code = "return [$context.raw, $context.headers['content-type'], $context.method, $env.REGION, $nodes.first, $jobsMapByNodeKey.first, $execution.id.length, $workflow.key, typeof $system.now];"
[[workflows.scope.nodes]]
key = "listed"
type = "script"
code = "return Object.keys($context).sort();"
[[workflows.scope.nodes]]
key = "through_arguments"
type = "script"
code = "return [arguments[0].raw.length, arguments[3].REGION, arguments[1].first, arguments[6].key];"
[[workflows.scope.nodes]]
key = "through_eval"
type = "script"
code = "return eval('$e' + 'nv').REGION + eval('$con' + 'text').method;"
[[workflows.scope.nodes]]
key = "escaped"
type = "script"
code = "return [\\u0024env.REGION, $context.r\\u0061w.length];"
[[workflows.scope.nodes]]
key = "plain"
type = "script"
code = "return Object.keys($context.data);"
"""


def test_every_script_gets_whatever_of_the_scope_it_can_name(tmp_path):
    payloads = [{"n": n, "text": 'a "quoted" value'} for n in range(3)]

    async def test(config, resources, store):
        return await run_cohort(runs_of(config, resources, "scope", payloads))

    outcomes = run_with(tmp_path, SCOPE, test)
    for payload, outcome in zip(payloads, outcomes):
        assert outcome.status == "resolved", outcome.error
        results = {job.node: job.result for job in outcome.jobs}
        body = orjson.dumps(payload).decode()
        assert results["named"] == [body, "application/json", "POST", "eu-1", 7, 7, 36, "scope", "string"]
        assert results["listed"] == sorted(["data", "headers", "ip", "method", "params", "path", "query", "raw",
                                            "received_at"])
        assert results["through_arguments"] == [len(body), "eu-1", 7, "scope"]
        assert results["through_eval"] == "eu-1POST"
        assert results["escaped"] == ["eu-1", len(body)]
        assert results["plain"] == ["n", "text"]


def test_a_run_hands_a_script_only_what_it_names(tmp_path):
    """The scope V8 is handed; what a script cannot name never crosses (the raw body above all)."""
    request = StoredRequest("POST", "/hook", "a=1", [("content-type", "application/json"), ("x-event", "push")],
                            {}, "127.0.0.1", time.time(), "r-1")
    context = context_of(request, b'{"ref": "main"}', 1 << 20)
    config = load_config(str(write_config(tmp_path, "[workflows.hook]")))
    run = Run((1).to_bytes(16, "big"), config.workflows["hook"], context, {"REGION": "eu-1"}, None)

    def scope(body):
        return run.script_scope(Script.function_body(body).reads)

    assert scope("return $context.data.ref;") == {"$context": {"data": {"ref": "main"}}}
    assert scope("return [$context.headers, $context.nothing, $env];") == {
        "$context": {"headers": {"content-type": "application/json", "x-event": "push"}}, "$env": {"REGION": "eu-1"}}
    assert scope("return 1;") == {}
    whole = scope("return $context[key];")["$context"]
    assert whole["raw"] == '{"ref": "main"}' and whole["query"] == {"a": "1"}
    assert set(scope("return arguments.length;")) == {"$context", "$jobsMapByNodeKey", "$env", "$system",
                                                      "$execution", "$workflow"}


@pytest.mark.parametrize("body, parameters, keys", [
    ("const push = $context.data;\nreturn push.ref;", {"$context"}, {"data"}),
    ("return $context.headers['x-event'] + $context . query.page + $context.rawish;", {"$context"},
     {"headers", "query", "rawish"}),
    ("return $context.raw;", {"$context"}, {"raw"}),
    ("return $context . raw.length;", {"$context"}, {"raw"}),
    ("return $context['raw'];", {"$context"}, None),
    ("return $context?.raw;", {"$context"}, None),
    ("return $context/* a comment */.raw;", {"$context"}, None),
    ("const {raw} = $context; return raw;", {"$context"}, None),
    ("return JSON.stringify($context);", {"$context"}, None),
    ("return $nodes.a + $jobsMapByNodeKey.b + $workflow.key;", {"$jobsMapByNodeKey", "$workflow"}, set()),
    ("return `${$env.A}` + $system.now + $execution.id;", {"$env", "$system", "$execution"}, set()),
    ("return my$env + $environment + $env_2;", set(), set()),
    ("return '$env';", {"$env"}, set()),
    ("return $context.\\u0072aw;", EVERYTHING.parameters, None),
    ("return \\u0024env.A;", EVERYTHING.parameters, None),
    ("return arguments[0].raw;", EVERYTHING.parameters, None),
    ("return eval('$con' + 'text').raw;", EVERYTHING.parameters, None),
])
def test_a_script_reads_the_names_it_holds_and_nothing_else(body, parameters, keys):
    reads = Script.function_body(body).reads
    assert reads.parameters == parameters
    assert reads.context_keys == (None if keys is None else frozenset(keys))
