"""Logs (issue 9): one JSON object per line on stdout; a line per request only with
`[log] access = true`; refused requests summed up in one line per period, not one each."""

from __future__ import annotations

import logging
import signal

import orjson

from client_support import post_json, request
from conftest import base_config, wait_for_entry, write_config

CONFIG = base_config(log='level = "info"\n{access}') + """
[workflows.hook]
path = "/hook"
[workflows.gh]
path = "/gh"
[workflows.gh.verify]
scheme = "github"
secret = "s3cret"
"""


def entries(log) -> list[dict]:
    lines = log.read_text().splitlines()
    parsed = [orjson.loads(line) for line in lines if line.strip()]   # every line is one JSON object
    assert len(parsed) == len([line for line in lines if line.strip()])
    return parsed


def test_with_access_on_every_request_gets_a_line(tmp_path, spawn):
    child = spawn(write_config(tmp_path, CONFIG.replace("{access}", "access = true")), tmp_path / "server.log")
    assert post_json(child, "/hook", {"n": 1}).status == 202
    assert request(child, "GET", "/nowhere").status == 404
    assert post_json(child, "/gh", {"n": 1}).status == 401
    refused = wait_for_entry(child.log, lambda e: e.get("msg") == "request" and e.get("status") == 401)
    requests = [e for e in entries(child.log) if e.get("msg") == "request"]
    seen = {(e["method"], e["path"], e["status"], e["workflow"]) for e in requests}
    assert {("POST", "/hook", 202, "hook"), ("GET", "/nowhere", 404, None), ("POST", "/gh", 401, "gh")} <= seen
    for entry in requests:
        assert entry["logger"] == "fastwebhook.access" and entry["request_id"] and entry["duration_ms"] >= 0
    assert refused["ip"] == "127.0.0.1"


def test_without_access_requests_get_no_line_of_their_own(tmp_path, spawn):
    child = spawn(write_config(tmp_path, CONFIG.replace("{access}", "")), tmp_path / "server.log")
    assert post_json(child, "/hook", {"n": 1}).status == 202
    assert request(child, "GET", "/nowhere").status == 404
    # A barrier, not a pause: the reload's line is written after any line those requests wrote.
    child.process.send_signal(signal.SIGHUP)
    wait_for_entry(child.log, lambda e: e.get("msg") == "SIGHUP: config reloaded", process=child.process)
    logged = entries(child.log)
    assert [e["msg"] for e in logged if e.get("msg") in ("listening", "ready")] == ["listening", "ready"]
    assert not [e for e in logged if e.get("msg") == "request"]


def test_refused_requests_are_summed_up_in_one_line(serve, caplog):
    running = serve(CONFIG.replace("{access}", ""))
    caplog.set_level(logging.INFO, logger="fastwebhook")
    for _ in range(3):
        assert post_json(running, "/gh", {"n": 1}).status == 401   # no signature
    summarize = running.server.service.report_rejections

    def summaries() -> list[logging.LogRecord]:
        return [record for record in caplog.records if record.getMessage() == "rejected requests"]

    running.call(summarize)
    assert [(r.total, r.by_workflow_and_reason) for r in summaries()] == [(3, {"gh/signature": 3})]
    running.call(summarize)                      # nothing new: no line
    assert len(summaries()) == 1
    assert post_json(running, "/gh", {"n": 1}).status == 401
    running.call(summarize)
    assert [(r.total, r.by_workflow_and_reason) for r in summaries()][-1] == (1, {"gh/signature": 1})
