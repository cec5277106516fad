"""Replay and records from the admin API and the CLI: the stored request runs again as a new
execution (same $context, no dedup), and a collection's records are listed newest first."""

from __future__ import annotations

import json
import os

import orjson

from cli_support import fastwebhook
from client_support import ADMIN, request, wait_for_execution

CONFIG = """
[collections.seen]
fields = { delivery = "string", note = "string", received = "string" }

[workflows.hook]
[workflows.hook.dedup]
key = "{{$context.headers.x-delivery}}"
[[workflows.hook.nodes]]
key = "remember"
type = "create"
collection = "seen"
values = { delivery = "{{$context.headers.x-delivery}}", note = "{{$context.data.note}}", received = "{{$context.received_at}}" }
"""


def send(running, delivery: str, note: str) -> str:
    answer = request(running, "POST", "/api/webhooks/hook", orjson.dumps({"note": note}),
                     {"Content-Type": "application/json", "X-Delivery": delivery})
    assert answer.status == 202, answer.body
    return answer.json()["execution_id"]


def cli(running, *args: str):
    config = os.path.join(os.path.dirname(running.db), "config.toml")
    done = fastwebhook(*args, "-c", config, "--json", text=True)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


def test_replay_through_the_api_runs_the_stored_request_again_as_a_new_execution(serve):
    running = serve(CONFIG)
    original = send(running, "d-1", "first")
    first = wait_for_execution(running, original)
    # a resend of the same delivery is a duplicate; a replay is asked for, so it runs
    assert request(running, "POST", "/api/webhooks/hook", b'{"note": "first"}',
                   {"Content-Type": "application/json", "X-Delivery": "d-1"}).status == 200
    answer = request(running, "POST", f"/api/admin/executions/{original}/replay", b"", ADMIN)
    assert answer.status == 202, answer.body
    body = answer.json()
    assert body["status"] == "queued" and body["replay_of"] == original and body["execution_id"] != original
    replayed = wait_for_execution(running, body["execution_id"])
    assert replayed["status"] == "resolved" and replayed["dedup_key"] is None
    assert replayed["request"] == first["request"]          # the same $context, headers and all
    records = request(running, "GET", "/api/admin/collections/seen/records", headers=ADMIN).json()["items"]
    assert [(r["delivery"], r["note"]) for r in records] == [("d-1", "first"), ("d-1", "first")]
    assert records[0]["received"] == records[1]["received"]  # $context.received_at is the stored one


def test_replay_of_an_unknown_execution_is_404_and_get_is_405(serve):
    running = serve(CONFIG)
    assert request(running, "POST", "/api/admin/executions/0190a6e4-0000-7000-8000-000000000000/replay",
                   b"", ADMIN).status == 404
    original = send(running, "d-2", "x")
    answer = request(running, "GET", f"/api/admin/executions/{original}/replay", headers=ADMIN)
    assert answer.status == 405 and answer.headers["allow"] == "POST"


def test_the_cli_replays_and_lists_records_beside_the_running_server(serve):
    running = serve(CONFIG)
    original = send(running, "d-3", "from the cli")
    wait_for_execution(running, original)
    # the CLI cannot reach this server (port 0): it never appends beside it, whose queue would
    # then release a delivery it never counted
    code, _, err = cli(running, "replay", original)
    assert code == 1 and "a server is serving" in err and "admin API" in err
    running.stop()
    code, answer, err = cli(running, "replay", original)   # no server: into the store
    assert code == 0, err
    assert answer["replay_of"] == original
    running = serve(CONFIG)   # the next server's claim finds it
    replayed = wait_for_execution(running, answer["execution_id"], timeout=15)
    assert replayed["status"] == "resolved"
    assert request(running, "GET", "/readyz").json()["queue_depth"] == 0
    code, page, err = cli(running, "records", "seen", "--filter", '{"note": "from the cli"}')
    assert code == 0, err
    assert [r["delivery"] for r in page["items"]] == ["d-3", "d-3"]
    assert page == request(running, "GET", '/api/admin/collections/seen/records?filter={"note":"from%20the%20cli"}',
                           headers=ADMIN).json()
    code, _, err = cli(running, "records", "nope")
    assert code == 1 and "no collection 'nope'" in err
    code, _, err = cli(running, "replay", "0190a6e4-0000-7000-8000-000000000000")
    assert code == 1 and "no execution" in err


def test_the_cli_shows_each_job_of_an_execution(serve):
    running = serve(CONFIG)
    original = send(running, "d-4", "shown")
    wait_for_execution(running, original)
    config = os.path.join(os.path.dirname(running.db), "config.toml")
    done = fastwebhook("execution", original, "-c", config, text=True)
    assert done.returncode == 0, done.stderr
    assert "remember (create) resolved" in done.stdout and '"note":"shown"' in done.stdout


def test_the_cli_replays_through_a_running_server_so_its_queue_counts_it(serve, tmp_path):
    from conftest import free_port
    port = free_port()
    running = serve(f"""
[server]
listen = ["127.0.0.1:{port}"]
[storage]
url = "sqlite:///{tmp_path / 'own.db'}"
[admin]
token = "test-token"
[log]
level = "warning"
""" + CONFIG)
    original = send(running, "d-5", "through the api")
    wait_for_execution(running, original)
    code, answer, err = cli(running, "replay", original)
    assert code == 0, err
    assert wait_for_execution(running, answer["execution_id"])["status"] == "resolved"
    # taken by the server's own intake: counted in and out, so the queue is back to empty
    assert request(running, "GET", "/readyz").json()["queue_depth"] == 0
    log = request(running, "GET", "/api/admin/requests", headers=ADMIN).json()["items"]
    assert any(line["path"] == f"/api/admin/executions/{original}/replay" for line in log)
