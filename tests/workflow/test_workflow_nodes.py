"""The runner and the collection / condition nodes through the real server, on real SQLite:
records created, upserted, updated, destroyed and queried; branches nested to any depth;
ignore_fail and end; templates keeping types; what `check` refuses at load."""

from __future__ import annotations

import sqlite3

import pytest

from fastwebhook.config.loader import load_config
from fastwebhook.core.errors import ConfigErrors

from client_support import admin, jobs_by_node, post_json, request, run_to_end, wait_for_execution
from conftest import write_config

CUSTOMERS = """
[env]
TEAM = "sales"

[collections.customers]
fields = { name = "string", email = "string", owner = "string", score = "integer", vip = "boolean", tags = "json" }
unique = [["email"]]
"""



def table(running, name: str) -> list[tuple]:
    with sqlite3.connect(running.db) as db:
        return db.execute(f'SELECT * FROM "records_{name}" ORDER BY id').fetchall()


# --- collections ----------------------------------------------------------------------------------

FORM = CUSTOMERS + """
[workflows.form]
[[workflows.form.nodes]]
key = "customer"
type = "create"
collection = "customers"
values = { name = "{{$context.data.name}}", email = "{{$context.data.email}}", score = "{{$context.data.score}}", vip = "{{$context.data.vip}}", tags = "{{$context.data.tags}}" }
"""


def test_create_writes_a_real_row_and_returns_the_record(serve):
    running = serve(FORM)
    execution = run_to_end(running, "/api/webhooks/form",
                           {"name": "Ann", "email": "ann@example.com", "score": 7, "vip": True, "tags": ["a", "b"]})
    assert execution["status"] == "resolved", execution
    record = jobs_by_node(execution)["customer"]["result"]
    assert record["id"] == 1 and record["name"] == "Ann" and record["score"] == 7
    assert record["vip"] is True and record["tags"] == ["a", "b"] and record["created_at"].endswith("Z")
    rows = table(running, "customers")
    assert len(rows) == 1 and rows[0][1:5] == ("Ann", "ann@example.com", None, 7)


def test_a_unique_violation_fails_the_node_and_writes_nothing(serve):
    running = serve(FORM)
    first = run_to_end(running, "/api/webhooks/form", {"name": "Ann", "email": "a@x.org", "score": 1})
    again = run_to_end(running, "/api/webhooks/form", {"name": "Other", "email": "a@x.org", "score": 2})
    assert first["status"] == "resolved"
    assert again["status"] == "failed"
    job = jobs_by_node(again)["customer"]
    assert job["status"] == "failed" and "UNIQUE" in job["error"] and "email" in job["error"]
    assert [row[1] for row in table(running, "customers")] == ["Ann"]


def test_a_value_of_the_wrong_type_fails_the_node_with_the_field(serve):
    running = serve(FORM)
    execution = run_to_end(running, "/api/webhooks/form", {"name": "Ann", "email": "a@x.org", "score": "lots"})
    assert execution["status"] == "failed"
    assert "'score' holds integer values, not 'lots'" in execution["jobs"][0]["error"]
    assert table(running, "customers") == []


UPSERT = CUSTOMERS + """
[workflows.upsert]
[[workflows.upsert.nodes]]
key = "customer"
type = "create"
collection = "customers"
values = { name = "{{$context.data.name}}", email = "{{$context.data.email}}" }
upsert_on = ["email"]
"""


def test_upsert_on_updates_the_record_holding_the_unique_field(serve):
    running = serve(UPSERT)
    first = run_to_end(running, "/api/webhooks/upsert", {"name": "Ann", "email": "a@x.org"})
    second = run_to_end(running, "/api/webhooks/upsert", {"name": "Ann B.", "email": "a@x.org"})
    assert first["status"] == second["status"] == "resolved"
    assert jobs_by_node(second)["customer"]["result"]["id"] == jobs_by_node(first)["customer"]["result"]["id"]
    assert [(row[1], row[2]) for row in table(running, "customers")] == [("Ann B.", "a@x.org")]


LIFECYCLE = CUSTOMERS + """
[workflows.lifecycle]
[[workflows.lifecycle.nodes]]
key = "a"
type = "create"
collection = "customers"
values = { name = "A", email = "a@x", score = 3 }
[[workflows.lifecycle.nodes]]
key = "b"
type = "create"
collection = "customers"
values = { name = "B", email = "b@x", score = 9 }
[[workflows.lifecycle.nodes]]
key = "c"
type = "create"
collection = "customers"
values = { name = "C", email = "c@x", score = 5 }
[[workflows.lifecycle.nodes]]
key = "top"
type = "query"
collection = "customers"
filter = { score = { gte = 4 } }
sort = ["-score"]
[[workflows.lifecycle.nodes]]
key = "listed"
type = "query"
collection = "customers"
filter = { email = { in = ["a@x", "c@x"] } }
sort = ["name"]
multiple = true
[[workflows.lifecycle.nodes]]
key = "liked"
type = "query"
collection = "customers"
filter = { name = { like = "%B%" } }
multiple = true
limit = 5
[[workflows.lifecycle.nodes]]
key = "none"
type = "query"
collection = "customers"
filter = { email = "nobody@x" }
[[workflows.lifecycle.nodes]]
key = "assign"
type = "update"
collection = "customers"
filter = { score = { lt = 6 } }
values = { owner = "{{$env.TEAM}}" }
[[workflows.lifecycle.nodes]]
key = "drop"
type = "destroy"
collection = "customers"
filter = { email = "b@x" }
"""


def test_query_update_destroy_with_the_filter_operators(serve):
    running = serve(LIFECYCLE)
    execution = run_to_end(running, "/api/webhooks/lifecycle", {})
    assert execution["status"] == "resolved", execution
    jobs = jobs_by_node(execution)
    assert jobs["top"]["result"]["name"] == "B"                       # sort -score, limit 1
    assert [r["name"] for r in jobs["listed"]["result"]] == ["A", "C"]  # in, sort name, multiple
    assert [r["name"] for r in jobs["liked"]["result"]] == ["B"]
    assert jobs["none"]["result"] is None
    assert jobs["assign"]["result"] == 2 and jobs["drop"]["result"] == 1
    rows = {row[1]: row for row in table(running, "customers")}
    assert set(rows) == {"A", "C"} and rows["A"][3] == rows["C"][3] == "sales"


def test_records_are_listed_by_the_admin_api_newest_first_with_a_filter(serve):
    running = serve(LIFECYCLE)
    run_to_end(running, "/api/webhooks/lifecycle", {})
    page = admin(running, "/collections/customers/records?limit=1").json()
    assert [r["name"] for r in page["items"]] == ["C"] and page["next"]
    rest = admin(running, f"/collections/customers/records?cursor={page['next']}").json()
    assert [r["name"] for r in rest["items"]] == ["A"] and rest["next"] is None
    filtered = admin(running, '/collections/customers/records?filter={"score":{"gt":4}}').json()
    assert [r["name"] for r in filtered["items"]] == ["C"]
    assert request(running, "GET", "/api/admin/collections/nope/records",
                   headers={"Authorization": "Bearer test-token"}).status == 404
    bad = request(running, "GET", '/api/admin/collections/customers/records?filter={"nope":1}',
                  headers={"Authorization": "Bearer test-token"})
    assert bad.status == 400 and "no field 'nope'" in bad.json()["error"]


# --- conditions and branches ------------------------------------------------------------------------

BRANCHES = """
[workflows.route]
[[workflows.route.nodes]]
key = "kind"
type = "condition"
any = [["{{$context.data.kind}}", "==", "order"], ["{{$context.data.kind}}", "starts_with", "ord"]]
  [[workflows.route.nodes.then]]
  key = "big"
  type = "condition"
  all = [["{{$context.data.total}}", ">=", 100], ["{{$context.data.tags}}", "contains", "rush"]]
    [[workflows.route.nodes.then.then]]
    key = "vip"
    type = "condition"
    all = [["{{$context.data.customer}}", "matches", "^acme-"]]
      [[workflows.route.nodes.then.then.then]]
      key = "deepest"
      type = "response"
      body = "vip {{$context.data.customer}}"
    [[workflows.route.nodes.then.else]]
    key = "small"
    type = "response"
    body = "small"
  [[workflows.route.nodes.else]]
  key = "other"
  type = "response"
  body = "other"
[[workflows.route.nodes]]
key = "after"
type = "response"
body = "after"
"""


@pytest.mark.parametrize("data, ran", [
    ({"kind": "order", "total": 150, "tags": ["rush"], "customer": "acme-1"}, ["kind", "big", "vip", "deepest", "after"]),
    ({"kind": "ordinal", "total": 150, "tags": ["rush"], "customer": "zeta"}, ["kind", "big", "vip", "after"]),
    ({"kind": "order", "total": "99", "tags": ["rush"]}, ["kind", "big", "small", "after"]),
    ({"kind": "refund"}, ["kind", "other", "after"]),
])
def test_branches_nest_to_any_depth(serve, data, ran):
    running = serve(BRANCHES)
    execution = run_to_end(running, "/api/webhooks/route", data)
    assert execution["status"] == "resolved"
    assert [job["node"] for job in execution["jobs"]] == ran


GATE = """
[workflows.gate]
[[workflows.gate.nodes]]
key = "only_main"
type = "condition"
all = [["{{$context.data.ref}}", "==", "refs/heads/main"]]
[[workflows.gate.nodes]]
key = "afterwards"
type = "response"
body = "ran"
"""


def test_a_false_condition_without_branches_ends_the_execution_resolved(serve):
    running = serve(GATE)
    stopped = run_to_end(running, "/api/webhooks/gate", {"ref": "refs/heads/dev"})
    assert stopped["status"] == "resolved" and [j["node"] for j in stopped["jobs"]] == ["only_main"]
    assert stopped["jobs"][0]["result"] is False
    went_on = run_to_end(running, "/api/webhooks/gate", {"ref": "refs/heads/main"})
    assert [j["node"] for j in went_on["jobs"]] == ["only_main", "afterwards"]


OPERATORS = """
[workflows.ops]
[[workflows.ops.nodes]]
key = "check"
type = "condition"
all = [
  ["{{$context.data.n}}", "!=", 4],
  ["{{$context.data.n}}", "<", 10],
  ["{{$context.data.n}}", "<=", 3],
  ["{{$context.data.n}}", ">", "2"],
  ["{{$context.data.n}}", "in", [1, 2, 3]],
  ["{{$context.data.n}}", "not_in", [7]],
  ["{{$context.data.name}}", "ends_with", "son"],
  ["{{$context.data.empty}}", "empty"],
  ["{{$context.data.missing}}", "empty"],
  ["{{$context.data.name}}", "not_empty"],
  ["{{$context.headers.x-mode}}", "==", "test"],
]
"""


def test_every_comparison_operator(serve):
    running = serve(OPERATORS)
    good = {"n": 3, "name": "Jackson", "empty": []}
    answer = post_json(running, "/api/webhooks/ops", good, {"X-Mode": "test"})
    assert wait_for_execution(running, answer.json()["execution_id"])["jobs"][0]["result"] is True
    for change in ({"n": 4}, {"name": "Jack"}, {"empty": [1]}):
        answer = post_json(running, "/api/webhooks/ops", {**good, **change}, {"X-Mode": "test"})
        assert wait_for_execution(running, answer.json()["execution_id"])["jobs"][0]["result"] is False, change


FAILING = CUSTOMERS + """
[workflows.careful]
[[workflows.careful.nodes]]
key = "first"
type = "create"
collection = "customers"
values = { name = "x", email = "same@x" }
[[workflows.careful.nodes]]
key = "again"
type = "create"
collection = "customers"
values = { name = "y", email = "same@x" }
ignore_fail = true
[[workflows.careful.nodes]]
key = "stop"
type = "end"
status = "{{$context.data.end}}"
"""


def test_ignore_fail_records_the_failure_and_goes_on_and_end_sets_the_status(serve, tmp_path):
    text = FAILING.replace('status = "{{$context.data.end}}"', 'status = "failed"')
    running = serve(text)
    execution = run_to_end(running, "/api/webhooks/careful", {})
    jobs = jobs_by_node(execution)
    assert jobs["first"]["status"] == "resolved" and jobs["again"]["status"] == "failed"
    assert jobs["stop"]["status"] == "resolved"
    assert execution["status"] == "failed" and execution["error"] == "ended by an end node"


TYPES = """
[workflows.types]
mode = "sync"
[[workflows.types.nodes]]
key = "answer"
type = "response"
headers = { "X-Pusher" = "{{$context.data.pusher.name}}" }
body = { whole = "{{$context.data.items}}", count = "{{$context.data.count}}", text = "n={{$context.data.count}} {{$context.data.items}}", missing = "{{$context.data.nope.deeper}}", missing_text = "[{{$context.data.nope}}]", agent = "{{$context.headers.user-agent}}" }
"""


def test_templates_keep_types_stringify_inside_text_and_never_raise(serve):
    running = serve(TYPES)
    answer = post_json(running, "/api/webhooks/types", {"items": [1, {"a": 2}], "count": 2, "pusher": {"name": "octo"}},
                  {"User-Agent": "GitHub-Hookshot/1"})
    assert answer.status == 200 and answer.headers["x-pusher"] == "octo"
    assert answer.json() == {"whole": [1, {"a": 2}], "count": 2, "text": 'n=2 [1,{"a":2}]', "missing": None,
                             "missing_text": "[]", "agent": "GitHub-Hookshot/1"}


# --- what check refuses ----------------------------------------------------------------------------

@pytest.mark.parametrize("nodes, path, message", [
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "response"\nbody = "{{$contex.data}}"',
     "workflows.w.nodes[0].body", "unknown root '$contex'"),
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "response"\nbody = "{{$jobsMapByNodeKey.b}}"\n'
     '[[workflows.w.nodes]]\nkey = "b"\ntype = "response"\nbody = "x"',
     "workflows.w.nodes[0].body", "names node 'b', which does not run before this one"),
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "condition"\nall = [[1, "==", 1]]\n'
     '  [[workflows.w.nodes.then]]\n  key = "t"\n  type = "response"\n  body = "x"\n'
     '  [[workflows.w.nodes.else]]\n  key = "e"\n  type = "response"\n  body = "{{$nodes.t}}"',
     "workflows.w.nodes[0].else[0].body", "names node 't'"),
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "response"\nbody = "{{$env.NOPE}}"',
     "workflows.w.nodes[0].body", "[env] table does not hold"),
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "create"\ncollection = "nope"\nvalues = {}',
     "workflows.w.nodes[0].collection", "no collection 'nope'"),
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "create"\ncollection = "customers"\nvalues = { nope = 1 }',
     "workflows.w.nodes[0].values.nope", "has no field 'nope'"),
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "create"\ncollection = "customers"\nvalues = { name = "x" }\nupsert_on = ["name"]',
     "workflows.w.nodes[0].upsert_on", "unique constraints"),
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "update"\ncollection = "customers"\nfilter = {}\nvalues = { name = "x" }',
     "workflows.w.nodes[0].filter", "must not be empty"),
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "condition"\nall = [["x", "≈", 1]]',
     "workflows.w.nodes[0].all[0][1]", "unknown operator"),
    ('[[workflows.w.nodes]]\nkey = "a"\ntype = "response"\nbody = "x"\n  [[workflows.w.nodes.then]]\n  key = "b"\n  type = "end"',
     "workflows.w.nodes[0].then", "only a condition has branches"),
    ('order_key = "{{$nodes.a}}"\n[[workflows.w.nodes]]\nkey = "a"\ntype = "end"',
     "workflows.w.order_key", "unknown root '$nodes'"),
])
def test_check_rejects_bad_references_with_their_toml_path(tmp_path, nodes, path, message):
    text = CUSTOMERS + '[workflows.w]\n' + nodes + "\n"
    with pytest.raises(ConfigErrors) as caught:
        load_config(str(write_config(tmp_path, text)))
    found = [(e.path, e.message) for e in caught.value.errors]
    assert any(p == path and message in m for p, m in found), found


def test_upstream_references_are_accepted(tmp_path):
    text = CUSTOMERS + """
[workflows.w]
[[workflows.w.nodes]]
key = "a"
type = "condition"
all = [[1, "==", 1]]
  [[workflows.w.nodes.then]]
  key = "t"
  type = "response"
  body = "{{$nodes.a}}"
[[workflows.w.nodes]]
key = "b"
type = "response"
body = "{{$jobsMapByNodeKey.t}} {{$nodes.a}} {{$env.TEAM}} {{$system.now}} {{$execution.id}} {{$workflow.key}}"
"""
    config = load_config(str(write_config(tmp_path, text)))
    assert [n.key for n in config.workflows["w"].nodes] == ["a", "b"]


DESTROY_BY_EMAIL = CUSTOMERS + """
[workflows.seed]
[[workflows.seed.nodes]]
key = "a"
type = "create"
collection = "customers"
values = { name = "A", email = "a@x" }
[[workflows.seed.nodes]]
key = "b"
type = "create"
collection = "customers"
values = { name = "B" }

[workflows.drop]
[[workflows.drop.nodes]]
key = "gone"
type = "destroy"
collection = "customers"
filter = { email = "{{$context.data.email}}" }
"""


@pytest.mark.parametrize("data", [{"email": {}}, {"email": {"like": "%"}}, {"email": {"ne": "x"}}, {}, {"email": None}])
def test_webhook_data_is_only_ever_a_filter_value_never_an_operator(serve, data):
    running = serve(DESTROY_BY_EMAIL)
    run_to_end(running, "/api/webhooks/seed", {})
    execution = run_to_end(running, "/api/webhooks/drop", data)
    removed = jobs_by_node(execution)["gone"]
    assert removed["result"] == 0 or removed["status"] == "failed", execution
    assert len(table(running, "customers")) == 2       # neither the NULL-email record nor the other went
    exact = run_to_end(running, "/api/webhooks/drop", {"email": "a@x"})
    assert jobs_by_node(exact)["gone"]["result"] == 1 and len(table(running, "customers")) == 1


def test_admin_filters_may_ask_for_null_and_ne_keeps_records_without_the_field(serve):
    running = serve(DESTROY_BY_EMAIL)
    run_to_end(running, "/api/webhooks/seed", {})
    nulls = admin(running, '/collections/customers/records?filter={"email":null}').json()["items"]
    assert [r["name"] for r in nulls] == ["B"]
    others = admin(running, '/collections/customers/records?filter={"email":{"ne":"a@x"}}').json()["items"]
    assert [r["name"] for r in others] == ["B"]


def test_javascript_is_not_read_as_templates_and_a_whole_root_may_be_named(tmp_path):
    text = """
[workflows.w]
[[workflows.w.nodes]]
key = "s"
type = "script"
code = "return 'Hi {{name}}';"
[[workflows.w.nodes]]
key = "c"
type = "condition"
expression = "'{{x}}'.length > 0"
[[workflows.w.nodes]]
key = "r"
type = "response"
body = { all = "{{$jobsMapByNodeKey}}" }
"""
    config = load_config(str(write_config(tmp_path, text)))
    assert [n.key for n in config.workflows["w"].nodes] == ["s", "c", "r"]
