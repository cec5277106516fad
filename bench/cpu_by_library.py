"""Where a steady row's CPU goes, by library: fastwebhook beside floor-spec, the same minutes.

The steady report gives CPU per execution by thread; this splits the server's CPU per request by
the shared object it ran in (the interpreter, the kernel, SQLite, orjson, httptools, ...), for
fastwebhook's no-node steady row (bench/fastwebhook-steady.toml) and floor-spec
(bench/peers/floor_spec.py, the least a receiver that meets the SPEC can do), each at 64 and 256
connections, alternated.  It samples with `perf record -e cpu-clock` (a software clock: no
hardware counters needed, so it works in a VM) on the server's process, all threads.

    python bench/cpu_by_library.py [--seconds 6] [--connections 64 256] [--runs 1] [--baseline PATH]

With --baseline, an older checkout's code on the same config gets a column of its own, after ours.

Needs `perf` (Debian: linux-perf) and wrk.  The same CPUs as bench/load.py: the server on CPU 0,
wrk on CPU 1.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import load
import payload

# shared object (a substring of perf's dso column) -> the row it counts in, in the table's order
LIBRARIES = (
    ("libpython", "the interpreter (libpython)"),
    ("[kernel", "the kernel (sockets, epoll, files)"),
    ("libsqlite3", "SQLite"),
    ("libc.so", "libc (malloc, memcpy)"),
    ("orjson", "orjson"),
    ("parser.cpython", "httptools"),
    ("loop.cpython", "uvloop"),
    ("libcrypto", "OpenSSL (HMAC)"),
)
OTHER = "everything else"
EVENT_COUNT = re.compile(r"^# Event count \(approx\.\): (\d+)", re.MULTILINE)
DSO_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S.*?)\s*$", re.MULTILINE)


def receivers(baseline: Path | None) -> list[load.Receiver]:
    """Ours, the --baseline checkout's code on the same config, and floor-spec."""
    case = next(case for case in load.STEADY_CASES if case.name == "steady")
    return [case.receiver(None), *([case.receiver(None, baseline)] if baseline else []), load.FLOOR_SPEC]


def measure(receiver: load.Receiver, connections: int, seconds: int, port: int, session: Path,
            body_file: Path) -> tuple[float, Counter[str]]:
    """Requests per second, and the server's CPU microseconds per request by library."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{receiver.name}-", dir=session))
    data = workdir / "perf.data"
    with load.running(receiver, workdir, port, body_file) as (process, request):
        # perf and wrk start together and last as long: the samples and the requests share a window
        perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-p", str(process.pid),
                                 "-o", str(data), "--", "sleep", str(seconds)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = load.run_wrk(port, seconds, body_file, request, connections, timeout=10)
        if perf.wait(seconds + 30) != 0:
            raise load.ReceiverError(f"perf record exited with {perf.returncode}")
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso",
                             "-g", "none"], capture_output=True, text=True, check=True).stdout
    shutil.rmtree(workdir, ignore_errors=True)
    total_ns = int(EVENT_COUNT.search(report).group(1))
    per_request = total_ns / 1000 / result.requests
    split: Counter[str] = Counter()
    for percent, dso in DSO_LINE.findall(report):
        row = next((name for part, name in LIBRARIES if part in dso), OTHER)
        split[row] += float(percent) / 100 * per_request
    return result.requests / result.seconds, split


def table(columns: list[tuple[str, float, Counter[str]]]) -> str:
    rows = [name for _, name in LIBRARIES] + [OTHER]
    lines = ["| us per request | " + " | ".join(title for title, _, _ in columns) + " |",
             "|---|" + "--:|" * len(columns)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(f"{split[row]:.1f}" for _, _, split in columns) + " |")
    lines.append("| **all of the server's CPU** | "
                 + " | ".join(f"**{sum(split.values()):.1f}**" for _, _, split in columns) + " |")
    lines.append("| requests/s (wrk, while sampled) | "
                 + " | ".join(f"{rate:,.0f}" for _, rate, _ in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6, help="seconds sampled per row (default 6)")
    parser.add_argument("--connections", type=int, nargs="+", default=[64, load.MANY_CONNECTIONS])
    parser.add_argument("--runs", type=int, default=1, help="rows per receiver and count, alternated")
    parser.add_argument("--baseline", type=Path, metavar="PATH",
                        help="a checkout of older code, measured after ours on the same config")
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        sys.exit("needs perf (Debian: apt-get install linux-perf)")
    load.ensure_tools()
    columns = []
    with tempfile.TemporaryDirectory(prefix="fastwebhook-cpu-") as session:
        body_file = Path(session) / "body.json"
        body_file.write_bytes(payload.BODY)
        for connections in args.connections:
            for run in range(args.runs):
                for receiver in receivers(args.baseline):
                    load.say(f"[cpu] {receiver.name}, {connections} connections, {args.seconds} s sampled ...")
                    rate, split = measure(receiver, connections, args.seconds, args.port, Path(session), body_file)
                    title = f"{receiver.name} {connections}" + (f" #{run + 1}" if args.runs > 1 else "")
                    columns.append((title, rate, split))
    print(table(columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
