"""deploy/: the production config and its systemd drop-in, checked the way docs/deployment.md
tells an operator to check them, before the service is enabled."""

from __future__ import annotations

import configparser
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cli_support import fastwebhook
from docs_support import REPO, block_under, commands
from systemd_support import systemd_analyze
from fastwebhook.cli.main import main as fastwebhook_main

CONFIG = REPO / "deploy" / "config.toml"
DROP_IN = REPO / "deploy" / "fastwebhook.service.d" / "production.conf"
DEPLOYMENT = REPO / "docs" / "deployment.md"
_OURS = ("FASTWEBHOOK_ADMIN_TOKEN", "FASTWEBHOOK_CONFIG", "FASTWEBHOOK_DEMO", "CREDENTIALS_DIRECTORY")


@pytest.fixture
def etc(tmp_path) -> Path:
    """/etc/fastwebhook as the install section leaves it: the config, a token, the credential."""
    folder = tmp_path / "etc-fastwebhook"
    (folder / "credentials").mkdir(parents=True)
    shutil.copy(CONFIG, folder / "config.toml")
    (folder / "fastwebhook.env").write_text(f"FASTWEBHOOK_ADMIN_TOKEN={secrets.token_hex(32)}\n")
    (folder / "credentials" / "github-webhook-secret").write_text(secrets.token_hex(32) + "\n")
    return folder


def environment(**extra: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if k not in _OURS}, **extra}


def test_the_install_section_checks_before_it_enables_and_the_check_passes(etc):
    lines = commands(block_under(DEPLOYMENT, "Install").text)
    check = next(i for i, line in enumerate(lines) if "fastwebhook check" in line)
    enable = next(i for i, line in enumerate(lines) if "systemctl enable --now" in line)
    assert check < enable
    assert any("install -m 640" in line and "deploy/config.toml" in line for line in lines[:check])
    # the documented line, as root would run it, against a copy of /etc/fastwebhook
    line = (lines[check].removeprefix("sudo ").replace("/etc/fastwebhook", str(etc))
            .replace("fastwebhook check", f"{shlex.quote(sys.executable)} -m fastwebhook check"))
    done = subprocess.run(["bash", "-c", line], env=environment(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ok: 1 workflow(s)" in done.stdout


def check(etc: Path, monkeypatch, capsys, **env: str) -> tuple[int, str]:
    """`fastwebhook check` on the installed config, with exactly `env` of ours set."""
    for name in _OURS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = fastwebhook_main(["check", "-c", str(etc / "config.toml")])
    return code, capsys.readouterr().err


def test_without_the_admin_token_check_fails_naming_it(etc, monkeypatch, capsys):
    code, err = check(etc, monkeypatch, capsys, CREDENTIALS_DIRECTORY=str(etc / "credentials"))
    assert code == 1
    assert "admin.token: environment variable FASTWEBHOOK_ADMIN_TOKEN is not set" in err


def test_the_server_does_not_start_with_the_published_demo_token(etc):
    done = fastwebhook("serve", "-c", str(etc / "config.toml"), text=True,
                       env=environment(CREDENTIALS_DIRECTORY=str(etc / "credentials"),
                                       FASTWEBHOOK_ADMIN_TOKEN="demo-admin-token"))
    assert done.returncode == 1
    assert "admin.token: is the demo token" in done.stderr


def test_without_the_credential_check_fails_naming_the_secret_file(etc, monkeypatch, capsys):
    (etc / "credentials" / "github-webhook-secret").unlink()
    code, err = check(etc, monkeypatch, capsys, CREDENTIALS_DIRECTORY=str(etc / "credentials"),
                      FASTWEBHOOK_ADMIN_TOKEN=secrets.token_hex(32))
    assert code == 1
    assert "workflows.github.verify.secret_file: no such file: github-webhook-secret" in err


def test_the_drop_in_gives_the_service_what_the_config_reads():
    config = tomllib.loads(CONFIG.read_text())
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string(DROP_IN.read_text())
    service = unit["Service"]
    credentials = dict(line.split(":", 1) for line in service["LoadCredential"].splitlines())
    for workflow in config["workflows"].values():
        name = workflow["verify"]["secret_file"]
        assert credentials[name] == f"/etc/fastwebhook/credentials/{name}"
    assert service["EnvironmentFile"] == "/etc/fastwebhook/fastwebhook.env"
    assert config["admin"]["token"] == "${FASTWEBHOOK_ADMIN_TOKEN}"     # no published fallback
    assert service["SupplementaryGroups"] == "fastwebhook-config"
    assert "/etc/fastwebhook/fastwebhook.env" in DEPLOYMENT.read_text()


def test_systemd_reads_the_drop_in_without_a_complaint(tmp_path):
    """The unit with the drop-in beside it, as installed (the binary's path made one that exists)."""
    systemd_analyze()
    unit = (REPO / "systemd" / "fastwebhook.service").read_text().replace("/usr/local/bin/fastwebhook", "/bin/true")
    (tmp_path / "fastwebhook.service").write_text(unit)
    (tmp_path / "fastwebhook.service.d").mkdir()
    shutil.copy(DROP_IN, tmp_path / "fastwebhook.service.d" / DROP_IN.name)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "fastwebhook.service")],
                          env=environment(SYSTEMD_UNIT_PATH=f"{tmp_path}:"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
