"""`python -m fastwebhook ...` as a child process, with its imports paid ahead of time.

A cold `python -m fastwebhook` spends about 0.6 s importing the package (aiohttp, the config
loader, the admin API) before it reads its arguments; the CLI tests run it some 150 times. So one
child is always kept waiting with `fastwebhook.cli.main` imported, started while the previous call
ran. A call hands it the argv, environment and working directory on a pipe of its own; it then
runs `fastwebhook.__main__` exactly as `-m` would, so stdin, stdout, stderr and the exit code are a
real process's, and the environment and the working directory are the call's (the package reads
both when a command runs, never at import).
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

# Run in the waiting child: import, then block on the pipe for the call's argv, env and cwd.
_CHILD = """
import json, os, runpy, sys
import fastwebhook.cli.main
with os.fdopen(int(sys.argv[1])) as pipe:
    call = json.load(pipe)
if call["output"] is not None:      # a server's log: its stdout and stderr go to the file
    log = os.open(call["output"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
os.environ.clear()
os.environ.update(call["env"])
if call["cwd"] is not None:
    os.chdir(call["cwd"])
    sys.path[0] = call["cwd"]
sys.argv = [sys.argv[0], *call["args"]]
runpy.run_module("fastwebhook", run_name="__main__", alter_sys=True)
"""


class _Waiting:
    """A child that has imported the package and waits for its call."""

    def __init__(self) -> None:
        read, self.pipe = os.pipe()
        try:
            # unbuffered, so that a server's log lines reach its file as they are written
            self.process = subprocess.Popen([sys.executable, "-c", _CHILD, str(read)], pass_fds=(read,),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        finally:
            os.close(read)

    def call(self, args, env: dict, cwd: str | None, output: str | None = None) -> subprocess.Popen:
        try:
            with os.fdopen(self.pipe, "w") as pipe:
                json.dump({"args": list(args), "env": env, "cwd": cwd, "output": output}, pipe)
        except BrokenPipeError:
            pass                       # the child died importing: its stderr says why
        return self.process

    def run(self, args, env: dict, cwd: str | None, stdin: bytes | None, timeout: float):
        self.call(args, env, cwd)
        try:
            out, err = self.process.communicate(stdin, timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise
        return self.process.returncode, out, err

    def discard(self) -> None:
        os.close(self.pipe)            # the child reads no call and exits
        self.process.kill()
        self.process.communicate()


_lock = threading.Lock()
_next: list[_Waiting] = []


def _take() -> _Waiting:
    with _lock:
        child = _next.pop() if _next else _Waiting()
        _next.append(_Waiting())       # imports while this call runs
    return child


@atexit.register
def _discard_waiting() -> None:
    while _next:
        _next.pop().discard()


def fastwebhook(*args: str, env: dict | None = None, cwd: Path | str | None = None, input: bytes | str | None = None,
                text: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
    """`python -m fastwebhook *args` with `env` (the whole environment; this process's when None)
    in `cwd`; like subprocess.run(..., capture_output=True)."""
    environ = dict(os.environ if env is None else env)
    if isinstance(input, str):
        input = input.encode()
    code, out, err = _take().run(args, environ, None if cwd is None else str(cwd), input, timeout)
    if text:
        out, err = out.decode(), err.decode()
    return subprocess.CompletedProcess([sys.executable, "-m", "fastwebhook", *args], code, out, err)


def start_server(config: Path | str, log: Path | str, env: dict | None = None) -> subprocess.Popen:
    """`python -m fastwebhook serve -c config` in the background, its stdout and stderr
    appended to `log`, like Popen(..., stdout=log, stderr=STDOUT)."""
    Path(log).touch()              # there to be read at once, as Popen's opened file would be
    environ = dict(os.environ if env is None else env)
    process = _take().call(("serve", "-c", str(config)), environ, None, str(log))
    for stream in (process.stdin, process.stdout, process.stderr):
        stream.close()             # the child writes to the log and reads nothing
    return process
