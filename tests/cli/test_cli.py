"""`fastwebhook` as users run it: a child process (`python -m fastwebhook ...`) reading real
config files and the SQLite file a real server wrote (SPEC sections 1-3 and 8)."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cli_support import fastwebhook
from conftest import RunningServer, write_config
from wait_support import wait_for

WORKFLOWS = """
[workflows.hook]
title = "Plain hook"
[[workflows.hook.nodes]]
key = "answer"
type = "response"
body = { got = "{{$context.data.n}}" }

[workflows.gh]
path = "/hooks/github"
methods = ["POST", "PUT"]
[workflows.gh.verify]
scheme = "github"
secret = "gh-secret"
[[workflows.gh.nodes]]
key = "answer"
type = "response"

[workflows.fails]
mode = "sync"
enabled = false
[[workflows.fails.nodes]]
key = "stop"
type = "end"
status = "failed"
"""

FINAL = ("resolved", "failed", "error", "aborted")


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("FASTWEBHOOK_CONFIG", "CREDENTIALS_DIRECTORY")}
    environ.update(env or {})
    return fastwebhook(*args, env=environ, cwd=cwd, text=True)


def cli_json(*args: str, **kw):
    done = cli(*args, "--json", **kw)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def post(server: RunningServer, path: str, body: bytes = b"{}", headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def wait_final(db: str, count: int) -> None:
    def statuses() -> list[str]:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return [row[0] for row in conn.execute("SELECT status FROM executions")]
        finally:
            conn.close()
    wait_for(lambda: (found := statuses()) and len(found) == count and all(s in FINAL for s in found), 10,
             failure=lambda: f"executions did not finish: {statuses()}")


@pytest.fixture
def history(serve, tmp_path):
    """A server that ran five `hook` executions and one signed `gh` one; ids oldest first."""
    body = WORKFLOWS.replace("enabled = false", "enabled = true").replace('mode = "sync"', 'mode = "async"')
    server = serve(body)
    ids = []
    for n in range(5):
        status, answer = post(server, "/api/webhooks/hook", json.dumps({"n": n}).encode())
        assert status == 202
        ids.append(answer["execution_id"])
    raw = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(b"gh-secret", raw, hashlib.sha256).hexdigest()
    status, answer = post(server, "/hooks/github", raw, {
        "X-Hub-Signature-256": signature, "X-GitHub-Delivery": "delivery-1",
        "Authorization": "Bearer sender-token", "X-Custom": "kept"})
    assert status == 202
    ids.append(answer["execution_id"])
    for _ in range(2):
        assert post(server, "/api/webhooks/fails")[0] == 202
    wait_final(server.db, 8)
    return {"server": server, "config": tmp_path / "config.toml", "ids": ids, "signature": signature}


# --- check ----------------------------------------------------------------------------------

def test_check_valid_config_prints_one_summary_line(tmp_path):
    config = write_config(tmp_path, WORKFLOWS)
    done = cli("check", "-c", str(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    assert "ok" in lines[0] and "3 workflow(s)" in lines[0]


BROKEN = """
[server]
listen = ["127.0.0.1:0"]
read_timeout = "soon"
listn = "127.0.0.1:1"

[storage]
url = "sqlite:///{db}"

[env]
CRM_URL = "${FWH_TEST_UNSET_VAR}"

[workflows.x]
[[workflows.x.nodes]]
key = "fine"
type = "response"
[[workflows.x.nodes]]
key = "odd"
type = "teleport"

[workflows.y.verify]
scheme = "rot13"
secret = "s"

[workflows.first]
path = "/hooks/shared"
[workflows.second]
path = "/hooks/shared"
methods = ["PUT", "POST"]

[workflows.g.verify]
scheme = "github"

[workflows.z]
ip_allow = ["10.0.0.0/8", "300.1.2.3/8"]
"""


def test_check_reports_every_error_with_its_toml_path(tmp_path):
    config = write_config(tmp_path, BROKEN)
    done = cli("check", "-c", str(config))
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).splitlines()
    prefix = f"{config}: "
    assert all(line.startswith(prefix) for line in lines), lines
    messages = [line[len(prefix):] for line in lines]
    assert messages[-1] == "8 error(s)"
    paths = sorted(m.split(": ", 1)[0] for m in messages[:-1])
    assert paths == sorted([
        "server.read_timeout", "server.listn", "env.CRM_URL", "workflows.x.nodes[1].type",
        "workflows.y.verify.scheme", "workflows.second.path", "workflows.g.verify.secret",
        "workflows.z.ip_allow[1]"])
    text = "\n".join(messages)
    assert "'soon'" in text and "'teleport'" in text and "'rot13'" in text and "'300.1.2.3/8'" in text
    assert "FWH_TEST_UNSET_VAR" in text and "workflows.first" in text


def test_env_substitution_with_and_without_defaults(tmp_path):
    config = write_config(tmp_path, """
[workflows.sub]
title = "${FWH_TITLE}"
path = "/hooks/${FWH_NAME:-default-name}"
""")
    listed = cli_json("workflows", "-c", str(config), env={"FWH_TITLE": "From env"})["items"]
    assert [(w["title"], w["path"]) for w in listed] == [("From env", "/hooks/default-name")]
    listed = cli_json("workflows", "-c", str(config), env={"FWH_TITLE": "T", "FWH_NAME": "given"})["items"]
    assert listed[0]["path"] == "/hooks/given"
    missing = cli("check", "-c", str(config))
    assert missing.returncode == 1
    assert f"{config}: workflows.sub.title: environment variable FWH_TITLE is not set" in missing.stderr


def test_secret_file_is_looked_up_in_credentials_directory(tmp_path):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "gh-secret").write_text("s3cret\n")
    config = write_config(tmp_path, """
[workflows.g.verify]
scheme = "github"
secret_file = "gh-secret"
""")
    done = cli("check", "-c", str(config), env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert done.returncode == 0, done.stderr
    absent = cli("check", "-c", str(config), cwd=tmp_path)
    assert absent.returncode == 1
    assert f"{config}: workflows.g.verify.secret_file: no such file: gh-secret" in absent.stderr


def test_config_lookup_flag_then_env_then_working_directory(tmp_path):
    named = write_config(tmp_path, "[workflows.one]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_env = cli("check", env={"FASTWEBHOOK_CONFIG": str(named)}, cwd=elsewhere)
    assert by_env.returncode == 0, by_env.stderr
    assert by_env.stdout.startswith(f"{named}: ok: 1 workflow(s)")

    (elsewhere / "config.toml").write_text(named.read_text().replace("[workflows.one]", "[workflows.a]\n[workflows.b]"))
    by_cwd = cli("check", cwd=elsewhere)
    assert by_cwd.returncode == 0, by_cwd.stderr
    assert "2 workflow(s)" in by_cwd.stdout
    env_beats_cwd = cli("check", env={"FASTWEBHOOK_CONFIG": str(named)}, cwd=elsewhere)
    assert "1 workflow(s)" in env_beats_cwd.stdout
    flag_beats_env = cli("check", "-c", "config.toml", env={"FASTWEBHOOK_CONFIG": str(named)}, cwd=elsewhere)
    assert "2 workflow(s)" in flag_beats_env.stdout


def test_missing_config_file_is_an_error(tmp_path):
    done = cli("check", "-c", str(tmp_path / "nope.toml"))
    assert done.returncode == 1
    assert "cannot read" in done.stderr and "nope.toml" in done.stderr


def test_check_reaches_the_database_and_does_not_print_its_password(tmp_path):
    # (trust auth on the test machines: the password is not checked, only kept out of sight)
    postgres = os.environ.get("FASTWEBHOOK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    url = postgres.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    config = tmp_path / "pg.toml"
    config.write_text(f'[storage]\nurl = "{url}"\n')
    done = cli("check", "-c", str(config))
    if done.returncode and "cannot reach the server" in done.stderr and not os.environ.get("FASTWEBHOOK_REQUIRE_POSTGRES"):
        pytest.skip(f"no PostgreSQL at {postgres}")
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr and "ok:" in done.stdout


def test_check_says_so_when_the_database_server_cannot_be_reached(tmp_path):
    config = tmp_path / "pg.toml"
    config.write_text('[storage]\nurl = "postgresql://app:hunter2@127.0.0.1:1/hooks"\n')
    done = cli("check", "-c", str(config))
    assert done.returncode == 1
    assert "PostgreSQL connection to postgresql://127.0.0.1:1/hooks failed: cannot reach the server" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr and "Traceback" not in done.stderr


# --- workflows ------------------------------------------------------------------------------

def test_workflows_table_and_json(tmp_path):
    config = write_config(tmp_path, WORKFLOWS)
    table = cli("workflows", "-c", str(config))
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["key", "path", "methods", "mode", "enabled", "verify", "origin"]
    assert [row.split() for row in rows] == [
        ["hook", "/api/webhooks/hook", "POST", "async", "True", "none", "file"],
        ["gh", "/hooks/github", "POST,PUT", "async", "True", "github", "file"],
        ["fails", "/api/webhooks/fails", "POST", "sync", "False", "none", "file"],
    ]
    listed = cli_json("workflows", "-c", str(config))["items"]
    assert [{k: w[k] for k in ("key", "path", "methods", "mode", "enabled", "verify")} for w in listed] == [
        {"key": "hook", "path": "/api/webhooks/hook", "methods": ["POST"], "mode": "async", "enabled": True, "verify": "none"},
        {"key": "gh", "path": "/hooks/github", "methods": ["POST", "PUT"], "mode": "async", "enabled": True, "verify": "github"},
        {"key": "fails", "path": "/api/webhooks/fails", "methods": ["POST"], "mode": "sync", "enabled": False, "verify": "none"},
    ]
    assert listed[0]["title"] == "Plain hook"
    assert "gh-secret" not in table.stdout + json.dumps(listed)


# --- executions -----------------------------------------------------------------------------

def test_executions_table_newest_first(history):
    done = cli("executions", "-c", str(history["config"]))
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["id", "workflow", "status", "created_at", "finished_at", "dedup_key"]
    assert len(rows) == 8
    assert [row.split()[1:3] for row in rows] == [["fails", "failed"]] * 2 + [["gh", "resolved"]] + [["hook", "resolved"]] * 5
    assert [row.split()[0] for row in rows[2:]] == history["ids"][5::-1]
    assert rows[2].split()[-1] == "delivery-1"


def test_executions_json_filters(history):
    config = str(history["config"])
    page = cli_json("executions", "-c", config)
    assert [e["id"] for e in page["items"]][2:] == history["ids"][5::-1] and page["next"] is None
    fails = cli_json("executions", "-c", config, "--workflow", "fails")
    assert [(e["workflow"], e["status"]) for e in fails["items"]] == [("fails", "failed")] * 2
    failed = cli_json("executions", "-c", config, "--status", "failed")
    assert failed["items"] == fails["items"]
    both = cli_json("executions", "-c", config, "--workflow", "hook", "--status", "failed")
    assert both == {"items": [], "next": None}


def test_executions_limit_and_cursor_paging(history):
    config = str(history["config"])
    seen, cursor, pages = [], None, 0
    while True:
        args = ["executions", "-c", config, "--limit", "3"] + (["--cursor", cursor] if cursor else [])
        page = cli_json(*args)
        pages += 1
        seen += [e["id"] for e in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
        assert cursor == page["items"][-1]["id"]
    assert pages == 3 and len(seen) == 8 and len(set(seen)) == 8
    assert seen[2:] == history["ids"][5::-1]
    table = cli("executions", "-c", config, "--limit", "3")
    assert table.stdout.splitlines()[-1] == f"(more: --cursor {seen[2]})"


def test_executions_bad_queries_fail(history):
    config = str(history["config"])
    too_many = cli("executions", "-c", config, "--limit", "5000")
    assert too_many.returncode != 0 and "limit must be between 1 and 1000" in too_many.stderr
    bad_status = cli("executions", "-c", config, "--status", "sleeping")
    assert bad_status.returncode != 0 and "status must be one of" in bad_status.stderr
    bad_cursor = cli("executions", "-c", config, "--cursor", "not-an-id")
    assert bad_cursor.returncode != 0 and "not a cursor" in bad_cursor.stderr


def test_execution_json_redacts_signature_and_credentials(history):
    gh_id = history["ids"][5]
    record = cli_json("execution", gh_id, "-c", str(history["config"]))
    assert record["id"] == gh_id and record["workflow"] == "gh" and record["status"] == "resolved"
    headers = record["request"]["headers"]
    assert headers["x-hub-signature-256"] == "[redacted]"
    assert headers["authorization"] == "[redacted]"
    assert headers["x-custom"] == "kept" and headers["x-github-delivery"] == "delivery-1"
    assert record["request"]["data"] == {"ref": "refs/heads/main"}
    assert record["dedup_key"] == "delivery-1"
    assert [(j["node"], j["type"], j["status"]) for j in record["jobs"]] == [("answer", "response", "resolved")]
    text = json.dumps(record)
    assert history["signature"][7:] not in text and "sender-token" not in text


def test_execution_table_shows_request_and_jobs(history):
    gh_id = history["ids"][5]
    done = cli("execution", gh_id, "-c", str(history["config"]))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[0] == f"execution  {gh_id}"
    assert "POST /hooks/github from 127.0.0.1" in out
    assert "x-hub-signature-256: [redacted]" in out and "authorization: [redacted]" in out
    assert history["signature"][7:] not in out and "sender-token" not in out
    assert "answer (response) resolved" in out


def test_execution_unknown_or_malformed_id_exits_1(history):
    config = str(history["config"])
    unknown = cli("execution", "01900000-0000-7000-8000-000000000000", "-c", config)
    assert unknown.returncode == 1 and "no execution" in unknown.stderr
    malformed = cli("execution", "nope", "-c", config)
    assert malformed.returncode == 1 and "no execution" in malformed.stderr


def test_check_compiles_every_script_and_names_the_line(tmp_path):
    config = write_config(tmp_path, """
[workflows.w]
[[workflows.w.nodes]]
key = "fine"
type = "script"
code = "return 1;"
[[workflows.w.nodes]]
key = "gate"
type = "condition"
expression = "$context.data.n >"
  [[workflows.w.nodes.then]]
  key = "broken"
  type = "script"
  code = \"\"\"
const a = 1;
const b = ;
return a;
\"\"\"
""")
    done = cli("check", "-c", str(config))
    assert done.returncode == 1, done.stdout
    lines = [line.split(": ", 1)[1] for line in done.stderr.splitlines()]
    assert lines[-1] == "2 error(s)"
    # lines of the config file (issue 21, item 5), not of the script
    written = config.read_text().splitlines()
    expression = [line for line in lines if line.startswith("workflows.w.nodes[1].expression:")]
    at = written.index('expression = "$context.data.n >"') + 1
    assert expression and "script does not compile" in expression[0] and f"(line {at})" in expression[0], lines
    broken = [line for line in lines if line.startswith("workflows.w.nodes[1].then[0].code:")]
    at = written.index("const b = ;") + 1
    assert broken and broken[0].endswith(f"(line {at})"), lines


def test_workflows_are_listed_from_the_file_when_the_store_cannot_be_read(tmp_path):
    config = tmp_path / "config.toml"
    (tmp_path / "junk.db").write_bytes(b"not a database, " * 8)
    config.write_text('[storage]\nurl = "sqlite:///junk.db"\n[workflows.a]\n')
    done = cli("workflows", "-c", str(config))
    assert done.returncode == 0
    assert done.stdout.splitlines()[1].split() == ["a", "/api/webhooks/a", "POST", "async", "True", "none", "file"]
    assert f"the config file's workflows only: SQLite open of {tmp_path / 'junk.db'} failed" in done.stderr


# --- the store, wherever the CLI runs from (issue 21, item 4) ---------------------------------

SITE = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///./data/hooks.db"
[log]
level = "warning"
[admin]
token = "test-token"
[collections.notes]
fields = { text = "string" }
[workflows.hook]
[workflows.gh.verify]
scheme = "github"
secret_file = "gh-secret"
"""


def test_read_commands_from_another_folder_read_the_servers_database(serve, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "gh-secret").write_text("beside the config\n")
    server = serve(SITE)
    assert Path(server.db) == tmp_path / "data" / "hooks.db"       # the server resolves it so too
    status, answer = post(server, "/api/webhooks/hook", b'{"n": 1}')
    assert status == 202
    wait_final(server.db, 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for config in (str(tmp_path / "config.toml"), "../config.toml"):
        listed = cli_json("executions", "-c", config, cwd=elsewhere)
        assert [e["id"] for e in listed["items"]] == [answer["execution_id"]]
        shown = cli_json("execution", answer["execution_id"], "-c", config, cwd=elsewhere)
        assert shown["status"] == "resolved"
        checked = cli("check", "-c", config, cwd=elsewhere)          # the secret_file beside the config
        assert checked.returncode == 0, checked.stderr
    assert list(elsewhere.iterdir()) == [], "nothing created in the working directory"


@pytest.mark.parametrize("command", [("executions",), ("execution", "01900000-0000-7000-8000-000000000000"),
                                     ("requests",), ("records", "notes"),
                                     ("replay", "01900000-0000-7000-8000-000000000000")])
def test_a_read_command_without_a_database_says_so_and_creates_none(tmp_path, command):
    config = tmp_path / "config.toml"
    config.write_text(SITE.replace('secret_file = "gh-secret"', 'secret = "s"'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = cli(*command, "-c", str(config), cwd=elsewhere)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"fastwebhook: no database at {tmp_path}/data/hooks.db: no server has run with {config} yet "
        "(a relative storage.url is relative to that file's folder)"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.toml", "elsewhere"]


def test_workflows_without_a_database_lists_the_files_and_creates_none(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(SITE.replace('secret_file = "gh-secret"', 'secret = "s"'))
    done = cli("workflows", "-c", str(config), cwd=tmp_path.parent)
    assert done.returncode == 0
    assert [row.split()[0] for row in done.stdout.splitlines()[1:]] == ["hook", "gh"]
    assert done.stderr == (f"fastwebhook: no database at {tmp_path}/data/hooks.db: no server has run with {config} "
                           "yet (a relative storage.url is relative to that file's folder), so these are the "
                           "config file's workflows only\n")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.toml"]


def test_serve_says_so_when_the_database_server_cannot_be_reached(tmp_path):
    config = tmp_path / "pg.toml"
    config.write_text('[server]\nlisten = ["127.0.0.1:0"]\n[storage]\nurl = "postgresql://app:hunter2@127.0.0.1:1/hooks"\n')
    done = cli("serve", "-c", str(config))
    assert done.returncode == 1
    assert "PostgreSQL connection to postgresql://127.0.0.1:1/hooks failed: cannot reach the server" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
