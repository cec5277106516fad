"""Bulk replay (SPEC section 9, operator's tools) over the real server, on SQLite and on
PostgreSQL: exactly the executions the filter matches are replayed, once; the same
Idempotency-Key again (even after a restart) replays nothing more; a dry run replays nothing;
each replay names what it replays; the CLI takes the same path."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import orjson

from burst_support import wait_until
from cli_support import fastwebhook
from client_support import ADMIN, admin, post_json, request, wait_for_execution
import store_support

SERVER = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "{url}"
[log]
level = "warning"
[admin]
token = "test-token"
"""
WORKFLOWS = """
[workflows.flaky]
[[workflows.flaky.nodes]]
key = "check"
type = "condition"
all = [["{{$context.data.ok}}", "==", "yes"]]
  [[workflows.flaky.nodes.else]]
  key = "stop"
  type = "end"
  status = "failed"

[workflows.other]
[[workflows.other.nodes]]
key = "stop"
type = "end"
status = "failed"
"""


url = store_support.url   # the fixture: a SQLite file, or a fresh PostgreSQL schema


def config_text(url: str) -> str:
    return SERVER.replace("{url}", url) + WORKFLOWS


def run(running, workflow: str, ok: str, n: int) -> str:
    answer = post_json(running, f"/api/webhooks/{workflow}", {"ok": ok, "n": n})
    assert answer.status == 202, answer.body
    return wait_for_execution(running, answer.json()["execution_id"])["id"]


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def next_millisecond() -> float:
    """A time no execution made so far has (ids count milliseconds), once the clock is past it."""
    mark = time.time() + 0.002
    assert wait_until(lambda: time.time() > mark + 0.002, 2, step=0.001)
    return mark


def bulk(running, filter: dict, key: str | None = None):
    headers = {**ADMIN, "Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    return request(running, "POST", "/api/admin/executions/replay", orjson.dumps(filter), headers)


def listed(running, workflow: str) -> list[dict]:
    return admin(running, f"/executions?workflow={workflow}&limit=1000").json()["items"]


def test_a_bulk_replay_replays_exactly_the_matching_executions_once_per_key(serve, url):
    running = serve(config_text(url))
    before = run(running, "flaky", "no", 1)                    # failed, before the range
    since = next_millisecond()
    failed = [run(running, "flaky", "no", 2), run(running, "flaky", "no", 3)]
    run(running, "flaky", "yes", 4)                            # resolved: not matched
    run(running, "other", "no", 5)                             # another workflow: not matched
    until = next_millisecond()
    run(running, "flaky", "no", 6)                             # failed, after the range
    filter = {"workflow": "flaky", "status": "failed", "since": rfc3339(since), "until": rfc3339(until)}
    count = len(listed(running, "flaky"))

    dry = bulk(running, {**filter, "dry_run": True}, key="k-1")
    assert dry.status == 202, dry.body
    assert dry.json()["dry_run"] is True and dry.json()["replayed"] == 0 and dry.json()["matched"] == 2
    assert [item["replay_of"] for item in dry.json()["items"]] == failed
    assert len(listed(running, "flaky")) == count              # a dry run replays nothing (nor takes the key)

    first = bulk(running, filter, key="k-1")
    assert first.status == 202, first.body
    answer = first.json()
    assert answer["replayed"] == 2 and answer["matched"] == 2 and answer["not_replayed"] == []
    assert [item["replay_of"] for item in answer["items"]] == failed      # oldest first
    for item in answer["items"]:
        record = wait_for_execution(running, item["id"])
        assert record["replay_of"] == item["replay_of"] and record["status"] == "failed"
        assert record["request"] == admin(running, f"/executions/{item['replay_of']}").json()["request"]
    assert len(listed(running, "flaky")) == count + 2
    assert "replay_of" not in admin(running, f"/executions/{before}").json()

    again = bulk(running, filter, key="k-1")
    assert again.status == 202 and again.json() == answer                 # the first answer, nothing more
    assert bulk(running, {**filter, "until": rfc3339(time.time())}, key="k-1").json() == answer   # the key decides
    assert len(listed(running, "flaky")) == count + 2

    running.stop()                                                         # the key outlives the process
    running = serve(config_text(url))
    assert bulk(running, filter, key="k-1").json() == answer
    assert len(listed(running, "flaky")) == count + 2


def test_a_single_replay_names_what_it_replays(serve, url):
    running = serve(config_text(url))
    original = run(running, "other", "no", 1)
    answer = request(running, "POST", f"/api/admin/executions/{original}/replay", b"", ADMIN)
    assert answer.status == 202, answer.body
    record = wait_for_execution(running, answer.json()["execution_id"])
    assert record["replay_of"] == original
    listed_record = next(r for r in listed(running, "other") if r["id"] == record["id"])
    assert listed_record["replay_of"] == original


def test_what_does_not_fit_the_queue_is_reported_not_dropped(serve, tmp_path):
    running = serve(config_text(f"sqlite:///{tmp_path / 'small.db'}") + "[queue]\ncapacity = 2\nhold = \"0s\"\n")
    failed = [run(running, "other", "no", n) for n in range(5)]
    answer = bulk(running, {"workflow": "other"}).json()
    assert answer["matched"] == 5
    assert answer["replayed"] + len(answer["not_replayed"]) == 5 and answer["not_replayed"]
    assert {item["reason"] for item in answer["not_replayed"]} == {"queue full"}
    named = [item["replay_of"] for item in answer["items"]] + [item["replay_of"] for item in answer["not_replayed"]]
    assert sorted(named) == sorted(failed)
    for item in answer["items"]:
        assert wait_for_execution(running, item["id"])["replay_of"] == item["replay_of"]


def test_a_bad_filter_is_400_and_get_is_405(serve, tmp_path):
    running = serve(config_text(f"sqlite:///{tmp_path / 'x.db'}"))
    for filter, word in (({"status": "lost"}, "status"), ({"limit": 10001}, "limit"),
                         ({"since": "yesterday"}, "RFC 3339"), ({"since": "2026-12-01T10:00:00"}, "offset"),
                         ({"workflow": "flaky", "colour": "red"}, "colour")):
        answer = bulk(running, filter)
        assert answer.status == 400 and word in answer.json()["error"], (filter, answer.body)
    answer = request(running, "GET", "/api/admin/executions/replay", headers=ADMIN)
    assert answer.status == 405 and answer.headers["allow"] == "POST"


def test_the_cli_replays_in_bulk_with_the_same_filter(serve, url, tmp_path):
    running = serve(config_text(url))
    failed = [run(running, "other", "no", 1), run(running, "other", "no", 2)]
    run(running, "flaky", "no", 3)
    config = str(tmp_path / "config.toml")

    dry = fastwebhook("replay", "--workflow", "other", "--status", "failed", "--since", "1h", "--dry-run",
                      "-c", config, "--json", text=True)
    assert dry.returncode == 0, dry.stderr
    assert [item["replay_of"] for item in json.loads(dry.stdout)["items"]] == failed

    until = rfc3339(time.time() + 1)
    if url.startswith("sqlite"):   # unreachable here (port 0): never appended beside a server
        refused = fastwebhook("replay", "--workflow", "other", "--since", "1h", "--until", until,
                              "--idempotency-key", "cli-0", "-c", config, "--json", text=True)
        assert refused.returncode == 1 and "a server is serving" in refused.stderr
        running.stop()
    done = fastwebhook("replay", "--workflow", "other", "--since", "1h", "--until", until,
                       "--idempotency-key", "cli-1", "-c", config, "--json", text=True)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["replayed"] == 2 and [item["replay_of"] for item in answer["items"]] == failed
    if url.startswith("sqlite"):
        running = serve(config_text(url))   # the next server's claim finds them
    for item in answer["items"]:   # in the store: a server's claim finds them
        assert wait_for_execution(running, item["id"], timeout=15)["replay_of"] == item["replay_of"]
    # (on PostgreSQL other hosts append too: each server counts its queue's depth again every second)
    assert wait_until(lambda: request(running, "GET", "/readyz").json()["queue_depth"] == 0, 5, 0.05)
    again = fastwebhook("replay", "--workflow", "other", "--since", "1h", "--until", rfc3339(time.time() + 1),
                        "--idempotency-key", "cli-1", "-c", config, "--json", text=True)
    assert again.returncode == 0 and json.loads(again.stdout) == answer

    both = fastwebhook("replay", failed[0], "--workflow", "other", "-c", config, text=True)
    assert both.returncode == 2 and "not both" in both.stderr
    single = fastwebhook("replay", failed[0], "-c", config, "--json", text=True)   # the single form still works
    if url.startswith("sqlite"):   # ... and is refused beside the server it cannot reach, as the bulk one
        assert single.returncode == 1 and "a server is serving" in single.stderr
    else:
        assert single.returncode == 0, single.stderr
        assert json.loads(single.stdout)["replay_of"] == failed[0]


def test_replays_the_queue_cannot_take_at_once_wait_their_turn_within_the_hold(serve, tmp_path):
    running = serve(config_text(f"sqlite:///{tmp_path / 'held.db'}") + "[queue]\ncapacity = 2\nhold = \"10s\"\n")
    failed = [run(running, "other", "no", n) for n in range(6)]
    answer = bulk(running, {"workflow": "other"}).json()
    assert answer["replayed"] == 6 and answer["not_replayed"] == []     # admitted as the work freed room
    assert [item["replay_of"] for item in answer["items"]] == failed
    for item in answer["items"]:
        assert wait_for_execution(running, item["id"])["replay_of"] == item["replay_of"]
    assert request(running, "GET", "/readyz").json()["queue_depth"] == 0


def test_the_cli_replays_in_bulk_through_a_running_server(serve, tmp_path):
    from conftest import free_port
    port = free_port()
    running = serve(config_text(f"sqlite:///{tmp_path / 'own.db'}").replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"'))
    failed = run(running, "other", "no", 1)
    done = fastwebhook("replay", "--workflow", "other", "--since", "1h", "-c", str(tmp_path / "config.toml"),
                       text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("replayed 1 of 1 matching execution(s)") and failed in done.stdout
    log = admin(running, "/requests").json()["items"]                  # it went through the admin API
    assert any(line["path"] == "/api/admin/executions/replay" and line["status"] == 202 for line in log)
    replay = [x for x in listed(running, "other") if x.get("replay_of") == failed]
    assert len(replay) == 1 and wait_for_execution(running, replay[0]["id"])["status"] == "failed"
    assert request(running, "GET", "/readyz").json()["queue_depth"] == 0
