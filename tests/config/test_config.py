"""Config loading (SPEC section 3) and the units it reads: pure functions over real files."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

import pytest

from fastwebhook.config.loader import load_config, parse_listen
from fastwebhook.core.errors import ConfigError, ConfigErrors
from fastwebhook.core.units import parse_duration, parse_size

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def load(tmp_path: Path, text: str, environ: dict | None = None, name: str = "config.toml"):
    path = tmp_path / name
    path.write_text(text)
    return load_config(str(path), environ if environ is not None else {})


def errors(tmp_path: Path, text: str, environ: dict | None = None) -> dict[str, str]:
    """TOML path -> message(s, joined by " | ") for every error the config has (it must have some)."""
    with pytest.raises(ConfigErrors) as info:
        load(tmp_path, text, environ)
    found: dict[str, str] = {}
    for error in info.value.errors:
        assert isinstance(error, ConfigError)
        found[error.path] = f"{found[error.path]} | {error.message}" if error.path in found else error.message
    return found


# --- units ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("250ms", 0.25), ("15s", 15.0), ("2m", 120.0), ("24h", 86400.0), ("7d", 604800.0),
    ("1.5s", 1.5), ("10", 10.0), (" 3s ", 3.0), ("0s", 0.0), (5, 5.0), (0.5, 0.5),
])
def test_durations(text, seconds):
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize("text", ["soon", "", "-1s", "1h30m", "1.2.3s", "5 fortnights", "s", -1, True, None, [1]])
def test_bad_durations_name_their_path(text):
    with pytest.raises(ConfigError) as info:
        parse_duration(text, "server.read_timeout")
    assert info.value.path == "server.read_timeout"
    assert str(info.value).startswith("server.read_timeout: ")


@pytest.mark.parametrize("text, size", [
    ("1MiB", MiB), ("16KiB", 16 * KiB), ("512", 512), (512, 512), ("1kb", 1000), ("1KB", 1000),
    ("2MB", 2_000_000), ("1GiB", GiB), ("2M", 2 * MiB), ("4k", 4 * KiB), ("0", 0), ("10 MiB", 10 * MiB),
    ("7b", 7),
])
def test_sizes(text, size):
    assert parse_size(text, "x") == size


@pytest.mark.parametrize("text", ["lots", "", "MiB", "-1", -1, "1TiB", "1.5.1MiB", True, None, 1.5])
def test_bad_sizes_name_their_path(text):
    with pytest.raises(ConfigError) as info:
        parse_size(text, "server.max_body_size")
    assert info.value.path == "server.max_body_size"


# --- defaults -------------------------------------------------------------------------------

def test_an_empty_config_has_the_documented_defaults(tmp_path):
    config = load(tmp_path, "")
    server = config.server
    assert server.listen == (("127.0.0.1", 8080),)
    assert (server.processes, server.max_body_size, server.max_header_size) == (1, MiB, 16 * KiB)
    assert (server.read_timeout, server.keepalive_timeout) == (15.0, 75.0)
    assert (server.trusted_proxies, server.tls_cert, server.tls_key) == ((), "", "")
    assert (config.storage.url, config.storage.durability, config.storage.retention) == (
        f"sqlite:///{tmp_path}/fastwebhook.db", "commit", 7 * 86400.0)
    assert (config.queue.capacity, config.queue.workers) == (10000, 64)
    assert config.metrics_path == "/metrics"
    assert config.admin_token == ""
    assert (config.log_level, config.log_format) == ("info", "json")
    assert dict(config.workflows) == {} and dict(config.env) == {}


def test_workflow_defaults(tmp_path):
    config = load(tmp_path, '[server]\nmax_body_size = "2MiB"\n[workflows.plain]\n'
                            '[workflows.gh.verify]\nscheme = "github"\nsecret = "s"\n')
    plain = config.workflows["plain"]
    assert plain.path == "/api/webhooks/plain"
    assert (plain.methods, plain.mode, plain.enabled) == (("POST",), "async", True)
    assert (plain.sync_timeout, plain.on_sync_timeout) == (30.0, "accept")
    assert plain.max_body_size == 2 * MiB, "a workflow inherits the server's limit"
    assert (plain.ip_allow, plain.content_types, plain.rate_limit, plain.concurrency) == ((), frozenset(), "", 0)
    assert plain.verify.scheme == "none" and plain.verify.secrets == ()
    assert plain.dedup.enabled is False, "scheme none has no default dedup key"
    assert plain.response.status == 200
    assert plain.nodes == ()
    gh = config.workflows["gh"]
    assert gh.verify.secrets == (b"s",)
    assert (gh.dedup.enabled, gh.dedup.key, gh.dedup.ttl) == (True, "", 86400.0), "github dedups by delivery"


def test_values_are_read(tmp_path):
    config = load(tmp_path, """
[server]
listen = ["0.0.0.0:9000", "[::1]:8443"]
processes = 0
read_timeout = "250ms"
trusted_proxies = ["10.0.0.0/8", "::1"]
[storage]
durability = "memory"
retention = "24h"
[queue]
capacity = 5
workers = 2
[log]
level = "DEBUG"
format = "text"
[env]
PORT = 8080
[workflows.k]
methods = ["post", "PUT"]
content_types = ["Application/JSON"]
ip_allow = ["192.168.1.0/24"]
sync_timeout = "2s"
mode = "sync"
on_sync_timeout = "error"
""")
    assert config.server.listen == (("0.0.0.0", 9000), ("::1", 8443))
    assert config.server.processes == 0 and config.server.read_timeout == 0.25
    assert [str(n) for n in config.server.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert (config.storage.durability, config.storage.retention) == ("memory", 86400.0)
    assert (config.queue.capacity, config.queue.workers) == (5, 2)
    assert (config.log_level, config.log_format) == ("debug", "text")
    assert config.env["PORT"] == "8080"
    k = config.workflows["k"]
    assert k.methods == ("POST", "PUT")
    assert k.content_types == frozenset({"application/json"})
    assert [str(n) for n in k.ip_allow] == ["192.168.1.0/24"]
    assert (k.mode, k.sync_timeout, k.on_sync_timeout) == ("sync", 2.0, "error")


def test_section_errors_are_all_reported(tmp_path):
    found = errors(tmp_path, """
[server]
processes = "two"
keepalive_timeout = "forever"
max_header_size = "big"
[storage]
url = "mysql://x"
durability = "eventually"
retention = "a while"
[queue]
capacity = 0
workers = true
[log]
level = "loud"
format = "xml"
[bogus]
""")
    assert set(found) == {
        "server.processes", "server.keepalive_timeout", "server.max_header_size", "storage.url",
        "storage.durability", "storage.retention", "queue.capacity", "queue.workers", "log.level",
        "log.format", "bogus"}
    assert found["server.processes"] == "must be an integer, not str"
    assert found["queue.workers"] == "must be an integer, not bool"
    assert found["bogus"] == "unknown setting"


def test_invalid_toml_is_one_error(tmp_path):
    with pytest.raises(ConfigErrors) as info:
        load(tmp_path, "[server\nlisten = 1")
    [error] = info.value.errors
    assert "invalid TOML" in error.message


def test_an_unreadable_file_is_an_error(tmp_path):
    with pytest.raises(ConfigErrors) as info:
        load_config(str(tmp_path / "absent.toml"))
    assert "cannot read" in info.value.errors[0].message


# --- ${VAR} and secret_file -----------------------------------------------------------------

def test_environment_substitution(tmp_path):
    config = load(tmp_path, """
[admin]
token = "${TOKEN}"
[env]
A = "x-${NAME:-fallback}-y"
B = "${EMPTY:-}"
C = "${SET_EMPTY:-unused}"
D = "${NAME}${NAME}"
[workflows.k]
title = "${TITLE:-untitled}"
""", {"TOKEN": "t0k", "SET_EMPTY": "", "NAME": "n"})
    assert config.admin_token == "t0k"
    assert dict(config.env) == {"A": "x-n-y", "B": "", "C": "", "D": "nn"}
    assert config.workflows["k"].title == "untitled"


def test_unset_variable_without_default_is_an_error_at_its_path(tmp_path):
    found = errors(tmp_path, """
[env]
LIST = ["ok", "${MISSING_ONE}"]
[workflows.k.verify]
scheme = "github"
secret = "${GITHUB_SECRET}"
""")
    assert set(found) >= {"env.LIST[1]", "workflows.k.verify.secret"}
    assert "MISSING_ONE" in found["env.LIST[1]"]
    assert "GITHUB_SECRET is not set" in found["workflows.k.verify.secret"]


def test_secret_file_honours_credentials_directory(tmp_path, monkeypatch):
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "gh").write_text("from-credentials\n")
    absolute = tmp_path / "abs-secret"
    absolute.write_text("  from-absolute  \n")
    config = load(tmp_path, environ={"CREDENTIALS_DIRECTORY": str(credentials)}, text=f"""
[workflows.a.verify]
scheme = "github"
secret_file = "gh"
[workflows.b.verify]
scheme = "github"
secret_file = "{absolute}"
[workflows.c.verify]
scheme = "github"
secret = "one"
secrets = ["two", "three"]
""")
    assert config.workflows["a"].verify.secrets == (b"from-credentials",)
    assert config.workflows["b"].verify.secrets == (b"from-absolute",)
    assert config.workflows["c"].verify.secrets == (b"one", b"two", b"three")


def test_missing_secret_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    found = errors(tmp_path, '[workflows.a.verify]\nscheme = "github"\nsecret_file = "/nonexistent/secret"\n')
    assert found["workflows.a.verify.secret_file"] == "no such file: /nonexistent/secret"


def test_relative_files_are_relative_to_the_config_file_not_the_working_directory(tmp_path, monkeypatch):
    """The database and a secret_file, as tls_cert and schema: a server and the CLI's reads
    run from any folder find the same files."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    (etc / "gh").write_text("beside-the-config\n")
    (elsewhere / "gh").write_text("in-the-working-directory\n")
    monkeypatch.chdir(elsewhere)
    for url, expected in (("sqlite:///./data/hooks.db", f"sqlite:///{etc}/data/hooks.db"),
                          ("sqlite:///hooks.db", f"sqlite:///{etc}/hooks.db"),
                          (f"sqlite:///{tmp_path}/abs.db", f"sqlite:///{tmp_path}/abs.db"),
                          ("sqlite:///:memory:", "sqlite:///:memory:")):
        config = load(etc, f'[storage]\nurl = "{url}"\n[workflows.a.verify]\nscheme = "github"\nsecret_file = "gh"\n')
        assert config.storage.url == expected
        assert config.workflows["a"].verify.secrets == (b"beside-the-config",)
    (etc / "gh").unlink()
    found = errors(etc, '[workflows.a.verify]\nscheme = "github"\nsecret_file = "gh"\n')
    assert found["workflows.a.verify.secret_file"] == f"no such file: gh (looked for {etc / 'gh'})"


def test_secret_file_uses_the_given_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "gh").write_text("s")
    config = load(tmp_path, '[workflows.a.verify]\nscheme = "github"\nsecret_file = "gh"\n',
                  {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert config.workflows["a"].verify.secrets == (b"s",)


# --- listen ---------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, parsed", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:8443", ("::1", 8443)), ("[::]:8443", ("::", 8443)),
    ("localhost:0", ("localhost", 0)), (":9000", ("0.0.0.0", 9000)), ("host.example:65535", ("host.example", 65535)),
])
def test_listen_entries(entry, parsed):
    assert parse_listen(entry) == parsed


@pytest.mark.parametrize("entry", ["8080", "host:http", "host:65536", "host:", "[::1]", 8080, None, "host:-1"])
def test_bad_listen_entries(entry):
    with pytest.raises(ValueError):
        parse_listen(entry)


def test_bad_listen_entry_is_reported_with_its_index(tmp_path):
    found = errors(tmp_path, '[server]\nlisten = ["127.0.0.1:80", "[::1]:8443", "nowhere"]\n')
    assert set(found) == {"server.listen[2]"}


def test_server_listens_on_ipv6_loopback(serve):
    try:
        socket.socket(socket.AF_INET6).close()
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = serve('[server]\nlisten = ["[::1]:0"]\n[storage]\nurl = "sqlite:///{db}"\n[workflows.k]\n')
    assert server.host == "::1"
    conn = http.client.HTTPConnection("::1", server.port, timeout=5)
    conn.request("POST", "/api/webhooks/k", body=b"{}", headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 202 and json.loads(response.read())["status"] == "queued"
    conn.close()


# --- workflows_dir --------------------------------------------------------------------------

def test_workflows_dir_loads_one_workflow_per_file(tmp_path):
    folder = tmp_path / "conf.d" / "workflows"
    folder.mkdir(parents=True)
    (folder / "alpha.toml").write_text('path = "/alpha"\n[[nodes]]\nkey = "r"\ntype = "response"\n')
    (folder / "beta-hook.toml").write_text('title = "${BETA_TITLE:-Beta}"\nmethods = ["PUT"]\n')
    (folder / "notes.txt").write_text("not a workflow")
    config = load(tmp_path, 'workflows_dir = "conf.d/workflows"\n[workflows.inline]\n')
    assert sorted(config.workflows) == ["alpha", "beta-hook", "inline"]
    assert config.workflows["alpha"].path == "/alpha"
    assert [n.key for n in config.workflows["alpha"].nodes] == ["r"]
    assert config.workflows["beta-hook"].title == "Beta"
    assert config.workflows["beta-hook"].path == "/api/webhooks/beta-hook"


def test_workflows_dir_is_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "etc" / "wf").mkdir(parents=True)
    (tmp_path / "etc" / "wf" / "one.toml").write_text("")
    (tmp_path / "etc" / "config.toml").write_text('workflows_dir = "wf"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/config.toml", {})
    assert list(config.workflows) == ["one"]


def test_workflows_dir_errors_name_the_workflow(tmp_path):
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "broken.toml").write_text("nodes = [\n")
    (folder / "odd.toml").write_text('[[nodes]]\nkey = "x"\ntype = "nope"\n')
    (folder / "sub.toml").write_text('title = "${WF_UNSET}"\n')
    found = errors(tmp_path, 'workflows_dir = "wf"\n')
    assert set(found) == {"workflows.broken", "workflows.odd.nodes[0].type", "workflows.sub.title"}
    assert "broken.toml" in found["workflows.broken"]


def test_missing_workflows_dir_is_an_error(tmp_path):
    found = errors(tmp_path, 'workflows_dir = "nowhere"\n')
    assert set(found) == {"workflows_dir"}


def test_a_workflow_defined_twice_is_an_error(tmp_path):
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "dup.toml").write_text('path = "/from-file"\n')
    errors(tmp_path, 'workflows_dir = "wf"\n[workflows.dup]\npath = "/inline"\n')


# --- paths and limits -----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/api/admin", "/api/admin/executions"])
def test_reserved_paths_are_refused(tmp_path, path):
    found = errors(tmp_path, f'[workflows.k]\npath = "{path}"\n')
    assert found == {"workflows.k.path": f"{path} is reserved"}


@pytest.mark.parametrize("path, ok", [
    ("/api/administer", True), ("/metricsx", True), ("/hooks/{id}/events", True),
    ("hooks", False), ("/hooks/{bad-name}", False), ("/a b", False),
])
def test_path_shapes(tmp_path, path, ok):
    text = f'[workflows.k]\npath = "{path}"\n'
    if ok:
        assert load(tmp_path, text).workflows["k"].path == path
    else:
        assert set(errors(tmp_path, text)) == {"workflows.k.path"}


def test_a_workflow_on_the_configured_metrics_path_is_refused(tmp_path):
    found = errors(tmp_path, '[metrics]\npath = "/hooks/stats"\n[workflows.k]\npath = "/hooks/stats"\n')
    assert set(found) == {"workflows.k.path"}


def test_two_workflows_on_one_path_and_method(tmp_path):
    found = errors(tmp_path, """
[workflows.a]
path = "/same"
methods = ["POST", "PUT"]
[workflows.b]
path = "/same"
methods = ["GET"]
[workflows.c]
path = "/same"
methods = ["PUT"]
""")
    assert found == {"workflows.c.path": "PUT /same is already claimed by workflows.a"}


def test_parameter_routes_that_differ_only_in_names_clash(tmp_path):
    found = errors(tmp_path, '[workflows.a]\npath = "/p/{a}"\n[workflows.b]\npath = "/p/{b}"\n')
    assert set(found) == {"workflows.b.path"}


def test_workflow_body_limit_may_only_lower_the_servers(tmp_path):
    found = errors(tmp_path, '[server]\nmax_body_size = "1MiB"\n[workflows.big]\nmax_body_size = "2MiB"\n')
    assert set(found) == {"workflows.big.max_body_size"}
    assert "1048576" in found["workflows.big.max_body_size"]
    config = load(tmp_path, '[server]\nmax_body_size = "1MiB"\n[workflows.small]\nmax_body_size = "256KiB"\n'
                            '[workflows.same]\nmax_body_size = 1048576\n')
    assert config.workflows["small"].max_body_size == 256 * KiB
    assert config.workflows["same"].max_body_size == MiB


# --- workflow fields and nodes --------------------------------------------------------------

def test_workflow_field_errors(tmp_path):
    found = errors(tmp_path, """
[workflows.k]
mode = "later"
on_sync_timeout = "shrug"
enabled = "yes"
concurrency = -1
sync_timeout = "eventually"
ip_allow = "10.0.0.0/8"
colour = "blue"
[workflows.k.dedup]
enabled = true
[workflows.k.response]
status = 999
[workflows.v.verify]
scheme = "none"
secret = "pointless"
[workflows.e]
methods = []
""")
    assert set(found) == {
        "workflows.k.mode", "workflows.k.on_sync_timeout", "workflows.k.enabled", "workflows.k.concurrency",
        "workflows.k.sync_timeout", "workflows.k.ip_allow", "workflows.k.colour", "workflows.k.dedup.key",
        "workflows.k.response.status", "workflows.v.verify.secret", "workflows.e.methods"}


def test_method_errors_name_their_own_index(tmp_path):
    found = errors(tmp_path, '[workflows.k]\nmethods = [7, "FETCH"]\n')
    assert set(found) == {"workflows.k.methods[0]", "workflows.k.methods[1]"}


def test_node_errors_name_their_path(tmp_path):
    found = errors(tmp_path, """
[[workflows.k.nodes]]
key = "first"
type = "response"
status = 42
[[workflows.k.nodes]]
type = "end"
[[workflows.k.nodes]]
key = "first"
type = "end"
status = "maybe"
[[workflows.k.nodes]]
key = "extra"
type = "end"
colour = "red"
""")
    assert set(found) == {"workflows.k.nodes[0].status", "workflows.k.nodes[1].key",
                          "workflows.k.nodes[2].key", "workflows.k.nodes[2].status",
                          "workflows.k.nodes[3].colour"}
    assert "duplicate node key 'first'" in found["workflows.k.nodes[2].key"]


def test_version_follows_the_workflow_table(tmp_path):
    one = load(tmp_path, '[workflows.k]\ntitle = "a"\n[workflows.j]\ntitle = "a"\n').workflows
    two = load(tmp_path, '[workflows.k]\ntitle = "b"\n[workflows.j]\ntitle = "a"\n').workflows
    assert one["k"].version != two["k"].version
    assert one["j"].version == two["j"].version
    assert len(one["k"].version) == 12


def test_unknown_settings_in_small_sections_are_reported(tmp_path):
    found = errors(tmp_path, '[admin]\ntokn = "x"\n[log]\nlevle = "debug"\n[metrics]\npth = "/m"\n')
    assert set(found) == {"admin.tokn", "log.levle", "metrics.pth"}


# --- the queue's hold and each workflow's share ---------------------------------------------

def test_hold_and_max_queued_are_checked_with_their_paths(tmp_path):
    found = errors(tmp_path, '[queue]\nhold = "-1s"\n[workflows.k]\npath = "/k"\nmax_queued = -3\n')
    assert set(found) == {"queue.hold", "workflows.k.max_queued"}


def test_a_workflows_share_is_its_max_queued_or_a_fair_part_of_the_capacity(tmp_path):
    def shares(count: int, **max_queued: int) -> dict[str, int]:
        text = '[queue]\ncapacity = 1000\nhold = "0s"\n' + "".join(
            f'[workflows.w{n}]\npath = "/w{n}"\n' + (f"max_queued = {max_queued[f'w{n}']}\n" if f"w{n}" in max_queued
                                                      else "") for n in range(count))
        config = load(tmp_path, text)
        assert config.queue.hold == 0.0
        return {key: config.share(w) for key, w in config.workflows.items()}
    assert shares(1) == {"w0": 1000}                       # alone: the whole queue
    assert shares(2) == {"w0": 500, "w1": 500}
    assert set(shares(6).values()) == {250}                # four or more: a quarter each
    assert shares(2, w1=10) == {"w0": 500, "w1": 10}       # its own, when it says
    assert shares(1, w0=5000) == {"w0": 1000}              # never more than the queue
    assert load(tmp_path, '[workflows.k]\npath = "/k"\n').queue.hold == 2.0


def test_every_answer_is_bounded_by_the_hold_the_longest_sync_run_and_a_minute(tmp_path):
    """What the server waits for an answer before its 503, and what the CLI's replay waits past."""
    config = load(tmp_path, '[queue]\nhold = "5s"\n[workflows.a]\npath = "/a"\nmode = "sync"\nsync_timeout = "45s"\n'
                            '[workflows.b]\npath = "/b"\nsync_timeout = "10s"\n')
    assert config.answer_timeout() == 5 + 45 + 60
    assert load(tmp_path, '[queue]\nhold = "0s"\n').answer_timeout() == 60
