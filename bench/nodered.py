"""Node-RED as a peer in the workflow benchmark: the same verify → branch → result flow, no records.

bench/nodered/ pins one Node-RED release (package.json + package-lock.json) and holds its
settings.js and flows.json; see bench/nodered/README.md. From Python:

    proc = start_nodered(port, secret, cpu=1)   # installs on first use, waits until ready
    ...                                         # POST /hook: 202 + JSON, or 401 if badly signed
    stop_nodered(proc)

As a script it starts Node-RED, shows the signature check and both branches working, and stops it:

    python bench/nodered.py [--port 18090] [--cpu N] [--wrk SECONDS]   # --wrk: load.py's signed wrk run
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

NODERED_DIR = Path(__file__).resolve().parent / "nodered"
USER_DIR = NODERED_DIR / ".node-red-data"  # settings.js's userDir; git-ignored
LOG_FILE = USER_DIR / "node-red.log"  # Node-RED's console output (level warn) of the last start
RED_JS = NODERED_DIR / "node_modules" / "node-red" / "red.js"
HOOK_PATH = "/hook"
START_TIMEOUT = 60.0  # seconds


def version() -> str:
    """The pinned Node-RED release (bench/nodered/package.json)."""
    return json.loads((NODERED_DIR / "package.json").read_text())["dependencies"]["node-red"]


def ensure_installed() -> None:
    """Install the pinned Node-RED into bench/nodered/node_modules unless it is there already."""
    if RED_JS.is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH: the Node-RED peer needs Node.js (>= 18.5) and npm")
    lock = (NODERED_DIR / "package-lock.json").is_file()
    command = [npm, "ci" if lock else "install", "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run(command, cwd=NODERED_DIR, check=True, stdout=sys.stderr)
    if not RED_JS.is_file():
        raise RuntimeError(f"{' '.join(command)} ran but {RED_JS} is missing")


def _post(port: int, body: bytes, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", HOOK_PATH, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _log_tail(lines: int = 30) -> str:
    try:
        return "\n".join(LOG_FILE.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_nodered(port: int, secret: str, cpu: int | None = None) -> subprocess.Popen:
    """Start Node-RED with bench/nodered's flow on 127.0.0.1:``port``; return once it answers.

    ``secret`` is the GitHub webhook secret the flow verifies X-Hub-Signature-256 with. With
    ``cpu`` the process is pinned to that core (taskset -c). Runs ``npm ci`` first if
    node_modules is missing. Ready means an unsigned POST /hook gets the flow's own 401 (a 404
    would be the server up before the flow is); waits up to 60 s, else stops it and raises
    RuntimeError with the end of its log (bench/nodered/.node-red-data/node-red.log).
    """
    if not secret:
        raise ValueError("secret must be non-empty")
    ensure_installed()
    USER_DIR.mkdir(exist_ok=True)
    command = ["node", str(RED_JS), "--settings", str(NODERED_DIR / "settings.js")]
    if cpu is not None:
        command = ["taskset", "-c", str(int(cpu)), *command]  # taskset execs: proc.pid is node's
    env = {**os.environ, "PORT": str(port), "SECRET": secret}
    with open(LOG_FILE, "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(command, cwd=NODERED_DIR, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    status = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Node-RED exited with {proc.returncode} while starting:\n{_log_tail()}")
        try:
            status, _ = _post(port, b"{}", {}, timeout=2.0)
        except OSError:
            status = None
        if status == 401:
            return proc
        time.sleep(0.2)
    stop_nodered(proc)
    raise RuntimeError(f"Node-RED did not answer POST {HOOK_PATH} with 401 within {START_TIMEOUT:.0f} s "
                       f"(last status {status}):\n{_log_tail()}")


def stop_nodered(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop Node-RED (SIGTERM, its clean shutdown; SIGKILL after ``timeout`` s) and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the script: a demonstration ----------------------------------------------------------------

def _demo(port: int) -> bool:
    import payload

    push = json.loads(payload.BODY)
    other_body = json.dumps({**push, "ref": "refs/heads/feature/x"}, separators=(",", ":")).encode()
    tampered = payload.BODY.replace(b'"octocat"', b'"octodog"', 1)
    sign = payload.github_signature
    base = {name: value for name, value in payload.HEADERS.items() if name != "X-Hub-Signature-256"}
    cases = [  # (what, body, signature header or None, expected status, expected "path")
        ("main branch, signed", payload.BODY, sign(payload.BODY), 202, "main"),
        ("other branch, signed", other_body, sign(other_body), 202, "other"),
        ("wrong signature", payload.BODY, "sha256=" + "0" * 64, 401, None),
        ("body changed after signing", tampered, sign(payload.BODY), 401, None),
        ("no signature", payload.BODY, None, 401, None),
    ]
    ok = True
    for i, (what, body, signature, want_status, want_path) in enumerate(cases):
        headers = {**base, "X-GitHub-Delivery": f"6e1f0000-0000-4000-8000-{i:012x}"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        status, answer = _post(port, body, headers)
        path = json.loads(answer).get("path") if status == 202 else None
        good = status == want_status and path == want_path
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {what:28} -> {status} {answer.decode(errors='replace')}")
    return ok


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import payload

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--secret", default=payload.SECRET)
    parser.add_argument("--cpu", type=int, help="pin Node-RED to this core (taskset -c)")
    parser.add_argument("--wrk", type=int, metavar="SECONDS",
                        help="after the checks, load it as bench/load.py does (wrk -t1 -c64, signed pushes)")
    args = parser.parse_args()

    started = time.monotonic()
    proc = start_nodered(args.port, args.secret, args.cpu)
    try:
        node_red = json.loads((RED_JS.parent / "package.json").read_text())["version"]
        print(f"Node-RED {node_red} answering on 127.0.0.1:{args.port}{HOOK_PATH} "
              f"after {time.monotonic() - started:.1f} s (pid {proc.pid})")
        ok = _demo(args.port)
        if args.wrk:
            import tempfile  # noqa: PLC0415
            from load import run_wrk  # noqa: PLC0415 - the benchmark's own loader and signed requests

            with tempfile.NamedTemporaryFile(suffix=".json") as body:
                body.write(payload.BODY)
                body.flush()
                print(run_wrk(args.port, args.wrk, Path(body.name), payload.signed_request("github", time.time())))
    finally:
        stop_nodered(proc)
    print("stopped:", "exit code", proc.returncode)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
