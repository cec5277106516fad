"""systemd (issue 9): both units pass `systemd-analyze verify`; a real `fastwebhook serve` talks
the notify protocol to a datagram socket the test owns (READY=1 with STATUS=, WATCHDOG=1 at half
of WATCHDOG_USEC, RELOADING=1 / READY=1 around SIGHUP, STOPPING=1 on SIGTERM); and it serves the
listening sockets handed to it through LISTEN_FDS (socket activation), several of them."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from burst_support import wait_until
from cli_support import start_server
from client_support import metric
from conftest import base_config, log_entries, wait_for_entry, write_config
from fastwebhook.config.loader import load_config
from systemd_support import NotifySocket, systemd_analyze

REPO = Path(__file__).resolve().parents[2]
CONFIG = base_config(log='level = "info"') + """
[workflows.hook]
path = "/hook"
"""


def post(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/hook", body=b'{"n": 1}', headers={"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def wait_for_log(log: Path, process: subprocess.Popen, message: str) -> list[dict]:
    """Every entry of the log, once one says `message`."""
    wait_for_entry(log, lambda entry: entry.get("msg") == message, process=process)
    return log_entries(log)


# --- the units -------------------------------------------------------------------------------

def test_both_units_pass_systemd_analyze_verify(tmp_path):
    systemd_analyze()
    # verify checks that ExecStart's program exists: the installed one stands in for /usr/local/bin
    executable = Path(sys.executable).parent / "fastwebhook"
    assert executable.exists()
    for unit in ("fastwebhook.service", "fastwebhook.socket"):
        text = (REPO / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/fastwebhook", str(executable)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "fastwebhook.socket"),
                           str(tmp_path / "fastwebhook.service")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""   # a warning (an unknown key) is a failure too
    service = (REPO / "systemd" / "fastwebhook.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=", "DynamicUser=yes",
                 "StateDirectory=fastwebhook", "LimitNOFILE="):
        assert line in service


def test_the_socket_unit_listens_where_the_config_does_by_default_on_loopback(tmp_path):
    """Socket activation must not open the admin API and /metrics to the network: the address
    is read the way systemd reads it (verify's debug output dumps the loaded unit)."""
    systemd_analyze()
    executable = Path(sys.executable).parent / "fastwebhook"
    for unit in ("fastwebhook.service", "fastwebhook.socket"):
        text = (REPO / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/fastwebhook", str(executable)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "fastwebhook.socket")],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, SYSTEMD_LOG_LEVEL="debug"))
    assert done.returncode == 0, done.stderr[-2000:]
    dump = done.stdout.split("-> Unit fastwebhook.socket:", 1)[1].split("-> Unit ", 1)[0]
    listening = [line.split(":", 1)[1].strip() for line in dump.splitlines() if line.strip().startswith("ListenStream:")]
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    default = load_config(str(empty)).server.listen
    assert listening == [f"{host}:{port}" for host, port in default] == ["127.0.0.1:8080"], dump


# --- notify ----------------------------------------------------------------------------------

def test_the_server_tells_systemd_ready_status_watchdog_reloading_and_stopping(tmp_path):
    config = write_config(tmp_path, CONFIG)
    notify = NotifySocket(tmp_path / "notify")
    log = tmp_path / "server.log"
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000", PYTHONUNBUFFERED="1")
    env.pop("WATCHDOG_PID", None)
    process = start_server(config, log, env)
    try:
        ready = notify.wait_for("READY", "1")
        entries = wait_for_log(log, process, "listening")
        address = next(e["address"] for e in entries if e.get("msg") == "listening")
        assert f"listening on {address}" in ready["STATUS"] and "queue depth 0" in ready["STATUS"]

        # WATCHDOG=1 every 100 ms (half of WATCHDOG_USEC) while the loop turns
        started = time.monotonic()
        notify.wait_for("WATCHDOG", "1")
        for _ in range(4):
            notify.wait_for("WATCHDOG", "1", timeout=2.0)
        assert time.monotonic() - started < 2.0

        served = SimpleNamespace(host="127.0.0.1", port=int(address.rpartition(":")[2]))
        assert post(served.port) == 202
        assert wait_until(lambda: metric(served, "fastwebhook_executions_total", status="resolved", workflow="hook")
                          == 1, timeout=10)   # resolved by the claim (no nodes)
        process.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING", "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        again = notify.wait_for("READY", "1")
        assert "1 executions finished" in again["STATUS"]

        process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", "1")
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        notify.close()


def test_without_notify_socket_the_server_runs_as_before(tmp_path, spawn):
    config = write_config(tmp_path, CONFIG)
    child = spawn(config, tmp_path / "server.log")   # the test environment has no NOTIFY_SOCKET
    assert "NOTIFY_SOCKET" not in os.environ
    assert post(child.port) == 202
    child.process.send_signal(signal.SIGTERM)
    assert child.process.wait(30) == 0


# --- socket activation -----------------------------------------------------------------------

def start_activated(tmp_path, listeners: list[socket.socket]) -> tuple[subprocess.Popen, Path]:
    """`fastwebhook serve` handed `listeners` as systemd does: descriptors 3, 4, ... and
    LISTEN_PID its own pid (an exec keeps the pid, so a small launcher moves them there, sets
    it, and becomes the server).  The test's copies are closed: the server holds them now."""
    config = write_config(tmp_path, CONFIG)   # its listen (port 0) is not used
    high = [os.dup2(sock.fileno(), 60 + i) for i, sock in enumerate(listeners)]
    moves = "; ".join(f"os.dup2({fd}, {3 + i}); os.close({fd})" for i, fd in enumerate(high))
    launcher = ("import os, sys\n"
                f"{moves}\n"
                f"os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='{len(high)}')\n"
                "os.execv(sys.executable, [sys.executable, '-m', 'fastwebhook', 'serve', '-c', sys.argv[1]])\n")
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", launcher, str(config)], pass_fds=high,
                                   stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for fd in high:
        os.close(fd)
    for sock in listeners:
        sock.close()
    return process, log


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_the_server_serves_every_socket_passed_through_listen_fds(tmp_path):
    listeners = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        listeners.append(sock)
    ports = [sock.getsockname()[1] for sock in listeners]
    process, log = start_activated(tmp_path, listeners)
    try:
        entries = wait_for_log(log, process, "ready")
        listening = sorted(int(e["address"].rpartition(":")[2]) for e in entries if e.get("msg") == "listening")
        assert listening == sorted(ports)
        assert any(e.get("msg", "").startswith("listening on the sockets systemd passed") and e.get("sockets") == 2
                   for e in entries)
        assert [post(port) for port in ports] == [202, 202]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        stop(process)


def test_a_unix_socket_passed_in_is_served_too(tmp_path):
    path = tmp_path / "fastwebhook.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(64)
    process, log = start_activated(tmp_path, [sock])
    try:
        entries = wait_for_log(log, process, "ready")
        assert [e["address"] for e in entries if e.get("msg") == "listening"] == [str(path)]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(path))
            client.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 8\r\nConnection: close\r\n\r\n{\"n\": 1}")
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 202")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        stop(process)


def test_sockets_for_another_process_are_not_taken(tmp_path, spawn, monkeypatch):
    """LISTEN_PID names another process (a parent that did not hand them on): listen as configured."""
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "2")
    config = write_config(tmp_path, CONFIG)
    child = spawn(config, tmp_path / "server.log")
    assert post(child.port) == 202
    assert "sockets systemd passed" not in child.log.read_text()
