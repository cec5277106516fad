"""Workflows created, replaced, enabled, disabled and deleted through the admin API (SPEC section
9), on a real server over real sockets with a real SQLite file: each change answers at once,
survives a restart, is checked like the file's workflows, and leaves the file's alone."""

from __future__ import annotations

import json
import os

import pytest

from admin_support import TOKEN, admin, call, send
from cli_support import fastwebhook
from conftest import base_config

FILE_WORKFLOWS = """
[workflows.filed]
path = "/filed"
mode = "sync"
[workflows.filed.response]
body = "from the file"
"""
GREETER = {"key": "greeter", "path": "/greet/{who}", "mode": "sync",
           "response": {"status": 201, "body": {"hello": "{{$context.params.who}}"}}}


def write(server, method: str, path: str, body=None, headers: dict | None = TOKEN):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    return call(server, method, path, raw, {"Content-Type": "application/json", **(headers or {})})


@pytest.fixture
def server(serve):
    return serve(FILE_WORKFLOWS)


def test_a_created_workflow_answers_at_once_and_is_listed(server):
    status, _, created = write(server, "POST", "/api/admin/workflows", GREETER)
    assert status == 201, created
    assert created["key"] == "greeter" and created["origin"] == "api" and created["enabled"] is True
    assert created["definition"]["path"] == "/greet/{who}" and "key" not in created["definition"]
    assert send(server, "/greet/ada")[0:3:2] == (201, {"hello": "ada"})
    items = admin(server, "/api/admin/workflows")[2]["items"]
    assert [(w["key"], w["origin"]) for w in items] == [("filed", "file"), ("greeter", "api")]
    status, _, one = admin(server, "/api/admin/workflows/greeter")
    assert status == 200 and one["definition"] == created["definition"] and one["version"] == created["version"]


def test_put_replaces_or_creates(server):
    assert write(server, "PUT", "/api/admin/workflows/greeter", GREETER)[0] == 201
    changed = {**GREETER, "response": {"body": {"bye": "{{$context.params.who}}"}}}
    status, _, saved = write(server, "PUT", "/api/admin/workflows/greeter", changed)
    assert status == 200 and saved["definition"]["response"] == changed["response"]
    assert send(server, "/greet/bob")[0:3:2] == (200, {"bye": "bob"})
    status, _, error = write(server, "PUT", "/api/admin/workflows/greeter", {**GREETER, "key": "other"})
    assert status == 400 and "'other'" in error["error"]


def test_disable_enable_and_delete(server):
    write(server, "POST", "/api/admin/workflows", GREETER)
    status, _, disabled = write(server, "POST", "/api/admin/workflows/greeter/disable")
    assert status == 200 and disabled["enabled"] is False
    assert send(server, "/greet/ada")[0] == 404
    assert write(server, "POST", "/api/admin/workflows/greeter/enable")[2]["enabled"] is True
    assert send(server, "/greet/ada")[0] == 201
    assert write(server, "DELETE", "/api/admin/workflows/greeter")[0:3:2] == (200, {"key": "greeter", "deleted": True})
    assert send(server, "/greet/ada")[0] == 404
    assert admin(server, "/api/admin/workflows/greeter")[0] == 404
    assert write(server, "DELETE", "/api/admin/workflows/greeter")[0] == 404
    assert write(server, "POST", "/api/admin/workflows/greeter/enable")[0] == 404


def test_the_files_workflows_are_read_only(server):
    for method, path, body in (("POST", "/api/admin/workflows", {**GREETER, "key": "filed"}),
                               ("PUT", "/api/admin/workflows/filed", {**GREETER, "key": "filed"}),
                               ("DELETE", "/api/admin/workflows/filed", None),
                               ("POST", "/api/admin/workflows/filed/disable", None)):
        status, _, error = write(server, method, path, body)
        assert status == 409 and "config.toml: change it there" in error["error"], (method, path)
    assert admin(server, "/api/admin/workflows/filed")[2]["enabled"] is True


def test_a_key_taken_twice_is_409(server):
    assert write(server, "POST", "/api/admin/workflows", GREETER)[0] == 201
    status, _, error = write(server, "POST", "/api/admin/workflows", GREETER)
    assert status == 409 and "PUT /api/admin/workflows/greeter" in error["error"]


@pytest.mark.parametrize("body, paths", [
    ({"key": "bad", "nodes": [{"key": "n", "type": "teleport"}]}, ["workflows.bad.nodes[0].type"]),
    ({"key": "bad", "path": "/filed"}, ["workflows.bad.path"]),         # the file's route
    ({"key": "bad", "mode": "later", "verify": {"scheme": "github"}}, ["workflows.bad.mode", "workflows.bad.verify.secret"]),
    ({"key": "bad slash"}, ["workflows.bad slash", "workflows.bad slash.path"]),
    ({"key": "bad", "colour": "red"}, ["workflows.bad.colour"]),
])
def test_a_workflow_that_does_not_load_is_422_with_its_key_paths(server, body, paths):
    status, _, error = write(server, "POST", "/api/admin/workflows", body)
    assert status == 422, error
    assert [e["path"] for e in error["errors"]] == paths
    assert admin(server, "/api/admin/workflows/bad")[0] == 404      # nothing was saved


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"), (b"[1, 2]", '"key"'), (b'{"path": "/x"}', '"key"')])
def test_malformed_bodies_are_400(server, body, message):
    status, _, error = write(server, "POST", "/api/admin/workflows", body)
    assert status == 400 and message in error["error"]


def test_secrets_are_not_shown(server):
    signed = {"key": "signed", "verify": {"scheme": "github", "secret": "s3cret", "secrets": ["old-one"]}}
    status, _, created = write(server, "POST", "/api/admin/workflows", signed)
    assert status == 201
    shown = json.dumps([created, admin(server, "/api/admin/workflows/signed")[2]])
    assert "s3cret" not in shown and "old-one" not in shown
    assert created["definition"]["verify"] == {"scheme": "github", "secret": "***", "secrets": ["***"]}


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/admin/workflows"), ("PUT", "/api/admin/workflows/greeter"),
    ("DELETE", "/api/admin/workflows/greeter"), ("POST", "/api/admin/workflows/greeter/enable"),
    ("POST", "/api/admin/workflows/greeter/disable"), ("GET", "/api/admin/workflows/greeter")])
def test_every_workflow_endpoint_wants_the_token(server, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, response_headers, _ = write(server, method, path, GREETER, headers)
        assert status == 401 and response_headers["www-authenticate"].startswith("Bearer")
    assert send(server, "/greet/ada")[0] == 404        # nothing was created


@pytest.mark.parametrize("method, path, allow", [
    ("DELETE", "/api/admin/workflows", "GET, POST"), ("POST", "/api/admin/workflows/filed", "GET, PUT, DELETE"),
    ("GET", "/api/admin/workflows/filed/enable", "POST")])
def test_wrong_methods_are_405(server, method, path, allow):
    status, headers, _ = write(server, method, path)
    assert status == 405 and headers["allow"] == allow


def test_stored_workflows_survive_a_restart_and_the_cli_lists_them(serve, tmp_path):
    first = serve(FILE_WORKFLOWS)
    assert write(first, "POST", "/api/admin/workflows", GREETER)[0] == 201
    assert write(first, "POST", "/api/admin/workflows", {"key": "off", "enabled": False})[0] == 201
    accepted = send(first, "/greet/before")
    first.stop()
    second = serve(FILE_WORKFLOWS)
    assert send(second, "/greet/after")[0:3:2] == (201, {"hello": "after"})
    listed = admin(second, "/api/admin/workflows")[2]
    assert [(w["key"], w["enabled"]) for w in listed["items"]] == [("filed", True), ("greeter", True), ("off", False)]
    done = fastwebhook("workflows", "--json", "-c", os.path.join(tmp_path, "config.toml"), text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == listed
    assert accepted[0] == 201


def test_a_stored_workflow_the_file_now_contradicts_is_left_out_alone(serve, tmp_path):
    first = serve(FILE_WORKFLOWS)
    assert write(first, "POST", "/api/admin/workflows", {"key": "mine", "path": "/mine"})[0] == 201
    assert write(first, "POST", "/api/admin/workflows", GREETER)[0] == 201
    first.stop()
    # the file now claims /mine for a workflow of its own: the server still starts
    second = serve(FILE_WORKFLOWS + '[workflows.takes]\npath = "/mine"\nmode = "sync"\n')
    assert send(second, "/greet/x")[0] == 201
    keys = [w["key"] for w in admin(second, "/api/admin/workflows")[2]["items"]]
    assert keys == ["filed", "takes", "greeter"]
    status, _, shown = admin(second, "/api/admin/workflows/mine")
    assert status == 200 and shown["in_force"] is False and shown["definition"] == {"path": "/mine"}
    assert write(second, "DELETE", "/api/admin/workflows/mine")[0] == 200


def test_a_stored_workflow_the_file_hides_can_still_be_deleted(serve, tmp_path):
    first = serve(FILE_WORKFLOWS)
    assert write(first, "POST", "/api/admin/workflows", {"key": "later", "path": "/later"})[0] == 201
    first.stop()
    second = serve(FILE_WORKFLOWS + '[workflows.later]\npath = "/later-in-the-file"\n')
    assert write(second, "DELETE", "/api/admin/workflows/later")[0] == 200
    assert write(second, "DELETE", "/api/admin/workflows/later")[2]["error"].startswith("workflow 'later' is defined in")


def test_a_failure_workflow_named_by_another_is_not_deleted(server):
    assert write(server, "POST", "/api/admin/workflows", {"key": "alerts", "path": "/alerts"})[0] == 201
    for key in ("orders", "refunds"):
        body = {"key": key, "path": f"/{key}", "on_failure": "alerts", "enabled": key == "orders"}
        assert write(server, "POST", "/api/admin/workflows", body)[0] == 201
    status, _, error = write(server, "DELETE", "/api/admin/workflows/alerts")
    assert status == 409, error
    assert error["error"] == ("workflow 'alerts' is the failure workflow of 'orders', 'refunds': "
                              "change their on_failure first")
    assert [e["path"] for e in error["errors"]] == ["workflows.orders.on_failure", "workflows.refunds.on_failure"]
    assert send(server, "/alerts")[0] == 202 and admin(server, "/api/admin/workflows/alerts")[0] == 200
    assert write(server, "PUT", "/api/admin/workflows/orders", {"path": "/orders"})[0] == 200
    assert write(server, "DELETE", "/api/admin/workflows/refunds")[0] == 200
    assert write(server, "DELETE", "/api/admin/workflows/alerts")[0] == 200
    assert admin(server, "/api/admin/workflows/alerts")[0] == 404


def test_a_stored_workflow_the_file_hides_is_deleted_though_the_file_names_its_key_on_failure(serve):
    first = serve(FILE_WORKFLOWS)
    assert write(first, "POST", "/api/admin/workflows", {"key": "alerts", "path": "/stored-alerts"})[0] == 201
    first.stop()
    # the file's own alerts is the one its orders name: deleting the stored one leaves it in force
    second = serve(FILE_WORKFLOWS + '[workflows.alerts]\npath = "/alerts"\n'
                   '[workflows.orders]\npath = "/orders"\non_failure = "alerts"\n')
    assert write(second, "DELETE", "/api/admin/workflows/alerts")[0] == 200
    assert admin(second, "/api/admin/workflows/alerts")[2]["origin"] == "file"


def test_a_stored_workflow_takes_no_environment_variables(server, monkeypatch):
    body = {"key": "leaky", "path": "/leaky", "mode": "sync", "response": {"body": {"home": "${HOME}"}}}
    assert write(server, "POST", "/api/admin/workflows", body)[0] == 201
    assert send(server, "/leaky")[0:3:2] == (200, {"home": "${HOME}"})


# --- files a stored workflow may name (issue 18, item 7) -------------------------------------

SECRETS_CONFIG = base_config(admin='secrets_dir = "secrets"')


def signed_by_file(name: str) -> dict:
    return {"key": "filed-secret", "path": "/filed-secret", "mode": "sync",
            "verify": {"scheme": "token", "header": "X-Token", "secret_file": name}}


@pytest.fixture
def secrets(serve, tmp_path):
    """A server whose [admin] secrets_dir holds `hook-secret`; beside the folder, files it must not
    give away: the config, one reached by a symlink from inside, one that does not exist."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "hook-secret").write_text("from-the-secrets-dir\n")
    (tmp_path / "outside").write_text("not-for-the-api\n")
    (folder / "escape").symlink_to(tmp_path / "outside")
    return serve(SECRETS_CONFIG)


def test_a_stored_workflow_reads_a_secret_file_under_the_secrets_dir(secrets):
    status, _, created = write(secrets, "POST", "/api/admin/workflows", signed_by_file("hook-secret"))
    assert status == 201, created
    assert created["definition"]["verify"]["secret_file"] == "hook-secret"
    assert send(secrets, "/filed-secret", headers={"X-Token": "from-the-secrets-dir"})[0] == 200
    assert send(secrets, "/filed-secret", headers={"X-Token": "wrong"})[0] == 401


@pytest.mark.parametrize("name", ["/etc/hostname", "/proc/self/environ", "../../etc/passwd", "../config.toml",
                                  "../outside", "escape", "no-such-file", "/nowhere/at/all", ".", ""])
def test_a_stored_workflow_may_not_name_files_elsewhere_and_learns_nothing_of_them(secrets, name):
    status, _, error = write(secrets, "POST", "/api/admin/workflows", signed_by_file(name))
    assert status == 422, error
    problems = {problem["path"]: problem["message"] for problem in error["errors"]}
    # one message whether the file exists or not, allowed or not: nothing to probe the disk with
    assert problems["workflows.filed-secret.verify.secret_file"] == ("not a file this workflow may read: a stored workflow names files "
                                  "under $CREDENTIALS_DIRECTORY or [admin] secrets_dir only")
    assert admin(secrets, "/api/admin/workflows/filed-secret")[0] == 404


def test_credentials_directory_is_a_secrets_dir_for_stored_workflows(server, tmp_path, monkeypatch):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "hook-secret").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert write(server, "POST", "/api/admin/workflows", signed_by_file("hook-secret"))[0] == 201
    assert send(server, "/filed-secret", headers={"X-Token": "from-systemd"})[0] == 200
    refused = write(server, "POST", "/api/admin/workflows", {**signed_by_file("/etc/hostname"), "key": "other",
                                                            "path": "/other"})
    assert refused[0] == 422


def test_a_stored_workflow_names_no_schema_outside_the_secrets_dir(secrets):
    status, _, error = write(secrets, "POST", "/api/admin/workflows",
                             {"key": "schemed", "schema": "../config.toml"})
    assert status == 422 and [e["path"] for e in error["errors"]] == ["workflows.schemed.schema"], error
    assert "config.toml" not in json.dumps(error)


def test_the_files_workflows_still_name_any_file(serve, tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "anywhere").write_text("file-secret")
    server = serve(SECRETS_CONFIG + f"""
[workflows.own]
path = "/own"
mode = "sync"
[workflows.own.verify]
scheme = "token"
header = "X-Token"
secret_file = "{tmp_path / 'anywhere'}"
""")
    assert send(server, "/own", headers={"X-Token": "file-secret"})[0] == 200


# --- what GET shows of a stored workflow (issue 18, item 8) -----------------------------------

def test_every_secret_bearing_field_is_redacted_by_its_name(server):
    """Secrets in every place a workflow holds them: verify options, a request node's headers,
    query, body and signing secret, a URL's password; names that only point at one stay."""
    workflow = {
        "key": "leaky", "path": "/leaky",
        "verify": {"scheme": "basic", "username": "hook", "password": "basic-pass"},
        "response": {"headers": {"Set-Cookie": "session=resp-cookie", "Content-Type": "application/json"}},
        "nodes": [{
            "key": "call", "type": "request", "url": "https://user:url-pass@example.com/x",
            "headers": {"Authorization": "Bearer auth-value", "X-Api-Key": "api-key-value",
                        "Cookie": "c=cookie-value", "X-Auth-Token": "auth-token-value",
                        "Private-Token": "gitlab-value", "Accept": "application/json"},
            "query": {"api_key": "query-key", "access_token": "query-token", "page": "1"},
            "body": {"user": {"password": "body-pass", "client_secret": "body-secret", "name": "ada"},
                     "credentials": ["list-credential"]},
            "sign": {"scheme": "standard", "secret": "whsec_c2lnbi1zZWNyZXQtdmFsdWU="}}]}
    status, _, created = write(server, "POST", "/api/admin/workflows", workflow)
    assert status == 201, created
    secrets = ("basic-pass", "resp-cookie", "url-pass", "auth-value", "api-key-value", "cookie-value",
               "auth-token-value", "gitlab-value", "query-key", "query-token", "body-pass", "body-secret",
               "list-credential", "whsec_")
    for shown in (created, admin(server, "/api/admin/workflows/leaky")[2]):
        text = json.dumps(shown)
        assert [secret for secret in secrets if secret in text] == []
        definition = shown["definition"]
        node = definition["nodes"][0]
        assert definition["verify"] == {"scheme": "basic", "username": "hook", "password": "***"}
        assert node["headers"]["Accept"] == "application/json" and node["headers"]["X-Api-Key"] == "***"
        assert node["query"] == {"api_key": "***", "access_token": "***", "page": "1"}
        assert node["body"] == {"user": {"password": "***", "client_secret": "***", "name": "ada"},
                                "credentials": ["***"]}
        assert node["sign"] == {"scheme": "standard", "secret": "***"}
        assert node["url"] == "https://user:***@example.com/x"
        assert definition["response"]["headers"]["Content-Type"] == "application/json"


def test_a_header_named_in_redact_headers_is_redacted_in_definitions_too(serve):
    server = serve(SECRETS_CONFIG.replace('secrets_dir = "secrets"\n', '').replace(
        'url = "sqlite:///{db}"', 'url = "sqlite:///{db}"\nredact_headers = ["X-Tenant-Pass"]'))
    workflow = {"key": "tenant", "nodes": [{"key": "call", "type": "request", "url": "https://example.com/",
                                             "headers": {"X-Tenant-Pass": "tenant-value"}}]}
    status, _, created = write(server, "POST", "/api/admin/workflows", workflow)
    assert status == 201 and created["definition"]["nodes"][0]["headers"] == {"X-Tenant-Pass": "***"}
