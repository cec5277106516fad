"""The README's commands, read from its markdown and run as a reader would: the quick start
against the demo config.toml, and each recipe's workflow with its `fastwebhook send` lines."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import free_port, start_server
from docs_support import REPO, block_under, commands
from wait_support import wait_for
from fastwebhook.cli.main import main as fastwebhook_main

README = REPO / "README.md"
PROGRAM = (".venv/bin/fastwebhook ", "fastwebhook ")
FINAL = ("resolved", "failed", "error", "aborted")
# The examples' curl fails on an HTTP error, as a reader would notice one.
CURL = "curl() { command curl --silent --show-error --fail-with-body \"$@\"; }\n"


class Reader:
    """Runs a doc's commands one by one against a server on `port`, stopping at the first that
    fails: `fastwebhook ...` through the CLI's own entry point, the rest in bash."""

    def __init__(self, port: int, db: str, capsys, cwd: Path):
        self.port, self.db, self.capsys, self.cwd = port, db, capsys, cwd
        self.outputs: list[str] = []

    def run(self, command: str) -> str:
        command = command.replace("localhost:8080", f"127.0.0.1:{self.port}")
        command = command.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")
        if "<ID>" in command:
            command = command.replace("<ID>", self.newest_execution())
        if command.startswith(PROGRAM):
            # the shell's part: $NAME from the environment, then the words
            args = shlex.split(os.path.expandvars(command.removeprefix(".venv/bin/")), comments=True)[1:]
            if args[0] != "send":
                self.wait_idle()              # what a reader reads has happened by then
            self.capsys.readouterr()
            code = fastwebhook_main(args)
            out, err = self.capsys.readouterr()
            assert code == 0, f"{command}\n{out}{err}"
            if args[0] == "send":
                assert re.match(r"HTTP/1\.1 2\d\d ", out), f"{command}\n{out}"
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", CURL + command], cwd=self.cwd,
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
            out = done.stdout
        self.outputs.append(out)
        return out

    def statuses(self) -> dict[str, list[str]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT workflow, status FROM executions").fetchall()
        finally:
            conn.close()
        found: dict[str, list[str]] = {}
        for workflow, status in rows:
            found.setdefault(workflow, []).append(status)
        return found

    def wait_idle(self) -> None:
        """Until every acknowledged request has an execution, and every execution is final."""
        def idle() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/readyz")
                depth = json.loads(conn.getresponse().read())["queue_depth"]
            finally:
                conn.close()
            return depth == 0 and all(s in FINAL for found in self.statuses().values() for s in found)
        wait_for(idle, 10, failure=lambda: f"executions did not finish: {self.statuses()}")

    def newest_execution(self) -> str:
        """The id of the execution the latest answer named (a reader copies it from there)."""
        for out in reversed(self.outputs):
            found = re.findall(r'"execution_id": ?"([0-9a-f-]{36})"', out)
            if found:
                return found[-1]
        raise AssertionError("no answer named an execution yet")


def test_the_quick_start_runs_against_the_demo_config(tmp_path, monkeypatch, capsys, smtp_servers):
    inbox, smtp_port = smtp_servers()
    port = free_port()
    db = tmp_path / "demo.db"
    environment = {"FASTWEBHOOK_DEMO": "1", "FASTWEBHOOK_LISTEN": f"127.0.0.1:{port}",
                   "FASTWEBHOOK_STORAGE": f"sqlite:///{db}", "SMTP_PORT": str(smtp_port),
                   # the demo's stand-ins, where this server listens
                   "DEPLOY_URL": f"http://127.0.0.1:{port}/demo/deploy",
                   "TEAM_CHAT_URL": f"http://127.0.0.1:{port}/demo/chat"}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FASTWEBHOOK_CONFIG", raising=False)
    monkeypatch.delenv("FASTWEBHOOK_ADMIN_TOKEN", raising=False)
    monkeypatch.chdir(REPO)                           # as `make run` does: ./config.toml
    server = start_server(REPO / "config.toml")
    try:
        reader = Reader(port, str(db), capsys, REPO)
        lines = commands(block_under(README, "Try it").text)
        assert any("github-deploy" in line for line in lines)
        for line in lines:
            reader.run(line)
        reader.wait_idle()
        statuses = reader.statuses()
    finally:
        server.stop()
    assert {s for found in statuses.values() for s in found} == {"resolved"}, statuses
    # the push to main called the deploy hook and the chat (the demo's stand-ins); the ping (and
    # its replay: the newest execution then) did not
    assert len(statuses["github-deploy"]) == 3
    assert len(statuses["stand-in"]) == 2
    assert [mail.rcpt_tos for mail in inbox.mails] == [["ann@example.com"]]


RECIPES = ("A minimal config of your own", "GitHub", "Stripe", "Slack")


@pytest.mark.parametrize("heading", RECIPES)
def test_each_recipe_answers_its_send_lines(heading, tmp_path, monkeypatch, capsys):
    toml = block_under(README, heading, "toml").text
    lines = commands(block_under(README, heading, "sh").text)
    assert any(" send " in f" {line} " for line in lines)
    # the secrets the recipe reads from the environment (a Stripe secret starts with whsec_)
    for name in set(re.findall(r"\$\{([A-Z_]+)\}", toml)):
        monkeypatch.setenv(name, f"whsec_{name.lower()}-for-the-test")
    db = tmp_path / "recipe.db"
    if "[storage]" in toml:                  # a whole config: its address and file made the test's
        assert '"127.0.0.1:8080"' in toml and "sqlite:///./fastwebhook.db" in toml
        text = toml.replace('"127.0.0.1:8080"', '"127.0.0.1:0"').replace("sqlite:///./fastwebhook.db", f"sqlite:///{db}")
    else:
        text = f'[server]\nlisten = ["127.0.0.1:0"]\n[storage]\nurl = "sqlite:///{db}"\n{toml}'
    names = {re.search(r"-c (\S+)", line)[1] for line in lines if re.search(r"-c (\S+)", line)}
    config = tmp_path / (names.pop() if names else "config.toml")
    config.write_text(text)
    monkeypatch.chdir(tmp_path)
    server = start_server(config)
    try:
        reader = Reader(server.port, server.db, capsys, tmp_path)
        for line in lines:
            if line.startswith("export "):    # the test set these (the recipe's ${NAME}s) above
                continue
            if " serve " in f" {line} ":       # the server is the one started above, from that file
                continue
            reader.run(line)
        reader.wait_idle()
        statuses = reader.statuses()
    finally:
        server.stop()
    assert statuses and {s for found in statuses.values() for s in found} == {"resolved"}, statuses
    if heading == "Slack":                   # the handshake is answered, not run
        assert '"challenge":"3eZbrw1a' in reader.outputs[0].replace(" ", "")
        assert sum(len(found) for found in statuses.values()) == 1
