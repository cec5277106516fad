"""The seed's two scenarios, end to end, on the repo's own config.toml (the demo `make run`
serves), with its outside world made real: an SMTP server (aiosmtpd), a deploy endpoint and a
team-chat hook (a recording HTTP server), signed GitHub requests."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import urlencode

import orjson
import pytest

from client_support import request, wait_for_execution
from conftest import start_server

CONFIG = Path(__file__).resolve().parents[2] / "config.toml"
SECRET = "scenario-secret"


@pytest.fixture
def demo(tmp_path, monkeypatch, smtp_servers, endpoint):
    inbox, smtp_port = smtp_servers()
    for name, value in {
        "FASTWEBHOOK_LISTEN": "127.0.0.1:0", "FASTWEBHOOK_STORAGE": f"sqlite:///{tmp_path / 'demo.db'}",
        "FASTWEBHOOK_ADMIN_TOKEN": "test-token", "SMTP_PORT": str(smtp_port),
        "DEPLOY_URL": f"{endpoint.url}/deploy", "TEAM_CHAT_URL": f"{endpoint.url}/chat",
        "GITHUB_WEBHOOK_SECRET": SECRET,
    }.items():
        monkeypatch.setenv(name, value)
    running = start_server(CONFIG)
    yield running, inbox, endpoint
    running.stop()


def records(running, table: str) -> list[dict]:
    with sqlite3.connect(running.db) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(f'SELECT * FROM "records_{table}" ORDER BY id')]


def submit_form(running, fields: dict) -> dict:
    answer = request(running, "POST", "/api/webhooks/contact-form", urlencode(fields).encode(),
                     {"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status == 202, answer.body
    return wait_for_execution(running, answer.json()["execution_id"])


def test_a_form_submission_creates_the_customer_assigns_an_owner_and_emails_a_confirmation(demo):
    running, inbox, _ = demo
    execution = submit_form(running, {"name": "Ann Lee", "email": "ann@example.com", "company": "Acme",
                                      "message": "Please call me"})
    assert execution["status"] == "resolved", execution
    jobs = {job["node"]: job for job in execution["jobs"]}
    assert list(jobs) == ["customer", "pick_owner", "assign", "confirm"]
    owner = jobs["pick_owner"]["result"]
    assert owner in ("alice@example.com", "bob@example.com", "carol@example.com")
    assert jobs["pick_owner"]["logs"] == [f"owner for ann@example.com is {owner}"]
    [customer] = records(running, "customers")
    assert (customer["name"], customer["email"], customer["company"], customer["owner"]) == \
        ("Ann Lee", "ann@example.com", "Acme", owner)
    [mail] = inbox.mails
    assert mail.rcpt_tos == ["ann@example.com"] and mail.mail_from == "welcome@example.com"
    assert mail.message["Subject"] == "Thanks for getting in touch, Ann Lee"
    body = mail.message.get_content()
    assert "Hello Ann Lee," in body and f"{owner} will get back to you shortly" in body

    # the same person again: the record is updated, the owner stays
    again = submit_form(running, {"name": "Ann Lee", "email": "ann@example.com", "company": "Acme Ltd"})
    assert again["status"] == "resolved"
    [customer] = records(running, "customers")
    assert customer["company"] == "Acme Ltd" and customer["owner"] == owner
    assert len(inbox.mails) == 2


def deliver(running, event: str, payload: dict) -> dict:
    body = orjson.dumps(payload)
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = request(running, "POST", "/api/webhooks/github-deploy", body,
                     {"Content-Type": "application/json", "X-Hub-Signature-256": signature,
                      "X-GitHub-Delivery": str(uuid.uuid4()), "X-GitHub-Event": event})
    assert answer.status == 202, answer.body
    return wait_for_execution(running, answer.json()["execution_id"])


def push(running, ref: str) -> dict:
    return deliver(running, "push", {"ref": ref, "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                                     "repository": {"full_name": "octo/app"}, "pusher": {"name": "octocat"}})


def test_a_push_to_main_calls_the_deploy_endpoint_and_tells_the_team(demo):
    running, _, endpoint = demo
    execution = push(running, "refs/heads/main")
    assert execution["status"] == "resolved", execution
    assert [job["node"] for job in execution["jobs"]] == ["branch", "is_main", "deploy", "record", "tell_team"]
    deploy, chat = endpoint.received
    assert (deploy.method, deploy.path) == ("POST", "/deploy")
    assert orjson.loads(deploy.body) == {"commit": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                                         "pusher": "octocat", "repository": "octo/app"}
    assert deploy.headers["idempotency-key"] == f"{execution['id']}.deploy"
    assert chat.path == "/chat"
    assert orjson.loads(chat.body) == {
        "text": "Deploying 6113728f27ae82c7b1a177c8d03f9e96e0adf246 to production (pushed by octocat)"}
    [deployment] = records(running, "deployments")
    assert (deployment["pusher"], deployment["status"]) == ("octocat", 200)


def test_a_push_to_another_branch_deploys_nothing(demo):
    running, _, endpoint = demo
    execution = push(running, "refs/heads/feature/x")
    assert execution["status"] == "resolved"
    assert [job["node"] for job in execution["jobs"]] == ["branch", "is_main"]
    assert execution["jobs"][1]["result"] is False
    assert endpoint.received == [] and records(running, "deployments") == []


def test_githubs_ping_ends_resolved_and_calls_nothing(demo):
    """The first delivery GitHub sends a new webhook has no `ref`: it must not fail."""
    running, _, endpoint = demo
    execution = deliver(running, "ping", {"zen": "Design for failure.", "hook_id": 1})
    assert execution["status"] == "resolved", execution
    assert [(job["node"], job["result"]) for job in execution["jobs"]] == [("branch", None), ("is_main", False)]
    assert endpoint.received == [] and records(running, "deployments") == []


def test_a_wrongly_signed_push_is_refused_and_runs_nothing(demo):
    running, _, endpoint = demo
    answer = request(running, "POST", "/api/webhooks/github-deploy", b'{"ref": "refs/heads/main"}',
                     {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "0" * 64,
                      "X-GitHub-Delivery": str(uuid.uuid4())})
    assert answer.status == 401 and endpoint.received == []
