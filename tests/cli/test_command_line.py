"""The command line itself (issue 21, item 8): --version, help for every option, one table of
exit codes (0 ok, 1 not found or refused, 2 usage), and a server that cannot start says so in
one line and exits 1 at once (a busy port, an unreadable certificate)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from importlib import metadata

import pytest

from cli_support import fastwebhook
from conftest import write_config
from fastwebhook.cli.main import EXIT_CODES, _parser

START_WAIT = 20.0   # seconds: a server that cannot bind must be gone long before this


def cli(*args: str, cwd=None, timeout: float = 30) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("FASTWEBHOOK_CONFIG", "CREDENTIALS_DIRECTORY")}
    return fastwebhook(*args, env=environ, cwd=cwd, text=True, timeout=timeout)


def test_version_prints_the_installed_version():
    done = cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"fastwebhook {metadata.version('fastwebhook')}"


def test_every_option_and_argument_has_help_and_every_help_shows_the_exit_codes():
    parser = _parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) >= {"serve", "check", "workflows", "executions", "execution", "replay",
                                     "records", "requests", "send"}
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        assert sub.epilog == EXIT_CODES, name
    top = cli("--help")
    assert top.returncode == 0 and EXIT_CODES in top.stdout
    executions = cli("executions", "--help").stdout
    assert EXIT_CODES in executions
    for status in ("queued", "started", "resolved", "failed", "error", "aborted", "duplicate"):
        assert status in executions        # --status names its values


@pytest.mark.parametrize("command", ["serve", "check"])
def test_options_that_did_nothing_are_gone(command, tmp_path):
    done = cli(command, "--json", "-c", str(write_config(tmp_path, "")))
    assert done.returncode == 2 and "unrecognized arguments: --json" in done.stderr


def test_exit_codes_ok_refused_usage(tmp_path):
    config = str(write_config(tmp_path, "[workflows.a]\n"))
    assert cli("check", "-c", config).returncode == 0
    assert cli("nonsense").returncode == 2
    assert cli("executions", "--bogus", "-c", config).returncode == 2
    assert cli("execution", "-c", config).returncode == 2                      # the id is missing
    broken = write_config(tmp_path, "[workflows.a]\nmode = 3\n")
    assert cli("check", "-c", str(broken)).returncode == 1                   # a config with errors
    assert cli("workflows", "-c", str(tmp_path / "absent.toml")).returncode == 1


def test_a_config_that_is_not_toml_names_its_file_once(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[server\n")
    done = cli("check", "-c", str(config))
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"{config}: invalid TOML: ") and line.count("config.toml") == 1, line
    missing = cli("check", "-c", str(tmp_path / "nope.toml"))
    [line] = missing.stderr.splitlines()
    assert line == f"{tmp_path / 'nope.toml'}: cannot read the file: No such file or directory"


# --- a server that cannot start ----------------------------------------------------------------

def _serve_config(tmp_path, port: int, processes: int = 1, extra: str = ""):
    return write_config(tmp_path, f"""
[server]
listen = ["127.0.0.1:{port}"]
processes = {processes}
{extra}
[storage]
url = "sqlite:///{{db}}"
[admin]
token = "test-token"
[workflows.a]
""")


@pytest.mark.parametrize("processes, reuse_port", [(1, False), (2, False), (2, True)])
def test_a_busy_port_is_one_line_and_exit_1_at_once(tmp_path, processes, reuse_port):
    # (2, True): a holder that allows sharing the port, as a second fastwebhook's workers do;
    # the workers would share it with it silently, and half the webhooks would go there.
    holder = socket.socket()
    try:
        if reuse_port:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = _serve_config(tmp_path, port, processes)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "fastwebhook", "serve", "-c", str(config)],
                              capture_output=True, text=True, timeout=START_WAIT)
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < START_WAIT
    lines = done.stderr.splitlines()
    assert lines == [f"fastwebhook: cannot listen on 127.0.0.1:{port}: Address already in use "
                     f"(another process holds the port: `ss -ltnp 'sport = :{port}'` names it)"], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "fastwebhook.db").exists(), "nothing opened before the port"


def test_an_unreadable_certificate_is_one_line_and_exit_1_at_once(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = tmp_path / "server.key"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert = tmp_path / "server.crt"
    cert.mkdir()                       # root reads any file: a folder is unreadable to anyone
    config = _serve_config(tmp_path, 0, extra=f'tls_cert = "{cert}"\ntls_key = "{key}"')
    done = subprocess.run([sys.executable, "-m", "fastwebhook", "serve", "-c", str(config)],
                          capture_output=True, text=True, timeout=START_WAIT)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{config}: server.tls_cert: cannot read {cert}: Is a directory"]
    assert not (tmp_path / "fastwebhook.db").exists()
