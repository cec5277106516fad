"""Packaging (issue 9): the wheel `pip wheel .` builds installs into a fresh venv outside the
checkout and serves from there — the SQL it needs inside the package, the console script in
place — with a config in a directory of its own."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from cli_support import fastwebhook
from conftest import log_entries
from wait_support import wait_for

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///./installed.db"
[log]
level = "info"
[admin]
token = "installed"
[workflows.hook]
path = "/hook"
[[workflows.hook.nodes]]
key = "double"
type = "script"
code = "return $context.data.n * 2;"
"""


def test_the_wheel_installs_in_a_fresh_venv_and_serves_without_the_checkout(tmp_path):
    dist, venv, site = tmp_path / "dist", tmp_path / "venv", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                   check=True, timeout=600)
    wheel = next(dist.glob("fastwebhook-*.whl"))
    # A venv without pip of its own (ensurepip costs seconds): this pip installs into it, the
    # wheel and every dependency it declares, nothing else.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", str(wheel)],
                   check=True, timeout=900)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import fastwebhook; print(fastwebhook.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(REPO)

    site.mkdir()
    (site / "config.toml").write_text(CONFIG)
    log = site / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(venv / "bin" / "fastwebhook"), "serve", "-c", "config.toml"], cwd=site,
                                   env=dict(env, PYTHONUNBUFFERED="1"), stdout=out, stderr=subprocess.STDOUT)
    try:
        def listening() -> int | None:
            assert process.poll() is None, log.read_text()
            return next((int(entry["address"].rpartition(":")[2]) for entry in log_entries(log)
                         if entry.get("msg") == "listening"), None)
        port = wait_for(listening, 60, failure=log.read_text)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/hook", body=b'{"n": 21}', headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        assert answer.status == 202
        execution = orjson.loads(answer.read())["execution_id"]
        for asset in ("/admin/", "/admin/app.js", "/admin/app.css"):   # the page's files are in the wheel
            connection.request("GET", asset)
            served = connection.getresponse()
            assert served.status == 200 and served.read(), asset
        connection.close()
        # its record, read back with the installed CLI
        def final() -> dict | None:
            shown = subprocess.run([str(venv / "bin" / "fastwebhook"), "execution", execution, "--json",
                                    "-c", "config.toml"], cwd=site, env=env, capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0, shown.stderr
            record = orjson.loads(shown.stdout)
            return record if record["status"] not in ("queued", "started") else None
        record = wait_for(final, 30, step=0.2, failure=f"execution {execution} never finished")
        assert record["status"] == "resolved"
        assert [(job["node"], job["result"]) for job in record["jobs"]] == [("double", 42)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert (site / "installed.db").exists()


# --- the repo's config.toml and its demo admin token (issue 18, item 9) ----------------------

def _fastwebhook(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m fastwebhook ARGS` on the repo's own config.toml, as the README's install
    section copies it: nothing set in the environment but a port and a database of the test's."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("FASTWEBHOOK_ADMIN_TOKEN", "FASTWEBHOOK_DEMO", "FASTWEBHOOK_CONFIG", "CREDENTIALS_DIRECTORY")}
    base.update(FASTWEBHOOK_LISTEN="127.0.0.1:0", FASTWEBHOOK_STORAGE=f"sqlite:///{tmp_path / 'demo.db'}", **env)
    return fastwebhook(*args, "-c", str(REPO / "config.toml"), cwd=tmp_path, env=base, text=True, timeout=20)


def test_a_server_with_the_demo_admin_token_does_not_start(tmp_path):
    for env in ({}, {"FASTWEBHOOK_ADMIN_TOKEN": "demo-admin-token"}, {"FASTWEBHOOK_DEMO": "yes"}):
        refused = _fastwebhook(tmp_path, "serve", **env)
        assert refused.returncode == 1, (env, refused.stderr)
        assert "admin.token: is the demo token of the repo's config.toml" in refused.stderr, refused.stderr
        assert "FASTWEBHOOK_ADMIN_TOKEN" in refused.stderr
    assert not (tmp_path / "demo.db").exists()      # refused before anything was opened


def test_a_token_of_ones_own_or_the_demo_switch_passes_and_make_run_sets_it(tmp_path):
    assert _fastwebhook(tmp_path, "check", FASTWEBHOOK_ADMIN_TOKEN="x" * 32).returncode == 0
    demo = _fastwebhook(tmp_path, "check", FASTWEBHOOK_DEMO="1")
    assert demo.returncode == 0, demo.stderr
    # `make run` is the demo: it says so
    # (--no-print-directory: under `make test` this make is a sub-make, which would add its own lines)
    run = subprocess.run(["make", "--no-print-directory", "-n", "run"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    serve = [line for line in run.stdout.splitlines() if "serve -c config.toml" in line]
    assert serve and "FASTWEBHOOK_DEMO=1" in serve[-1], run.stdout
