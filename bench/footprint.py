"""Footprint (issue 9): the server's RSS holding --idle keep-alive connections, and the latency
of a request on a fresh connection beside them, on the two-core machine as bench/load.py
measures (the server pinned to CPU 0; the clients on CPU 1).

bench/fastwebhook-commit.toml is served; each idle connection sends one signed push and keeps
the connection open (well inside the 75 s keep-alive timeout).  A request on a fresh
connection (connect, signed push, 202, close), --probes times, is timed before the idle
connections are opened and again while they are held.

    .venv/bin/python bench/footprint.py [--idle 10000] [--probes 300]

The table goes to stdout and bench/results/footprint.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import payload
from load import BENCH_DIR, LOADER_CPU, Receiver, fastwebhook, memory_kib, running, say

RECEIVER = Receiver("footprint", "fastwebhook-commit", fastwebhook("commit"), verifies=True, metrics=True)
TARGET_MIB = 150


def signed(request: payload.SignedRequest, delivery: str) -> bytes:
    headers = "".join(f"{name}: {value}\r\n" for name, value in request.headers.items())
    return (f"POST /hook HTTP/1.1\r\nHost: bench\r\n{headers}{request.unique_header}: {delivery}\r\n"
            f"Content-Length: {len(payload.BODY)}\r\n\r\n").encode() + payload.BODY


async def one_request(port: int, data: bytes, keep: list | None = None) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 202"):
        raise RuntimeError(f"answered {head[:40]!r}")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    await reader.readexactly(length)
    elapsed = time.perf_counter() - started
    if keep is None:
        writer.close()
    else:
        keep.append(writer)
    return elapsed


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] * 1000


async def measure(port: int, request: payload.SignedRequest, idle: int, probes: int, pid: int) -> dict:
    tag = os.urandom(4).hex()
    alone = [await one_request(port, signed(request, f"p-{tag}-{i}")) for i in range(probes)]
    rss_before = memory_kib(pid, "VmRSS")
    held: list = []
    for start in range(0, idle, 500):   # 500 at a time: the backlog is 4096
        await asyncio.gather(*(one_request(port, signed(request, f"i-{tag}-{n}"), held)
                               for n in range(start, min(idle, start + 500))))
    await asyncio.sleep(2.0)   # commits, claims and the workers' runs over
    rss_held = memory_kib(pid, "VmRSS")
    beside = [await one_request(port, signed(request, f"q-{tag}-{i}")) for i in range(probes)]
    for writer in held:
        writer.close()
    return {"alone": alone, "beside": beside, "rss_before": rss_before, "rss_held": rss_held, "held": len(held)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < args.idle + 1000:
        say(f"  FAILED: the open-files limit ({hard}) is below {args.idle + 1000}")
        return 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # the server inherits it
    os.sched_setaffinity(0, {LOADER_CPU})
    with tempfile.TemporaryDirectory(prefix="fastwebhook-footprint-") as session:
        workdir = Path(session)
        body_file = workdir / "body.json"
        body_file.write_bytes(payload.BODY)
        say(f"[footprint] {args.idle:,} idle keep-alive connections ...")
        with running(RECEIVER, workdir, args.port, body_file) as (process, request):
            result = asyncio.run(measure(args.port, request, args.idle, args.probes, process.pid))
    held_mib = result["rss_held"] / 1024
    lines = [f"# Footprint ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"Server pinned to CPU 0 (bench/fastwebhook-commit.toml), the clients on CPU {LOADER_CPU}.", "",
             "| | RSS MiB | fresh-connection request p50 ms | p99 ms |", "|---|--:|--:|--:|",
             f"| no idle connection | {result['rss_before'] / 1024:.1f} | {statistics.median(result['alone']) * 1000:.2f} | "
             f"{p99(result['alone']):.2f} |",
             f"| {result['held']:,} idle keep-alive connections held | {held_mib:.1f} | "
             f"{statistics.median(result['beside']) * 1000:.2f} | {p99(result['beside']):.2f} |", "",
             f"Target <= {TARGET_MIB} MiB with {args.idle:,} held: {'met' if held_mib <= TARGET_MIB else 'NOT met'} "
             f"({held_mib:.1f} MiB); fresh-connection p99 beside them / alone: "
             f"{p99(result['beside']) / p99(result['alone']):.2f}x."]
    text = "\n".join(lines) + "\n"
    print(text)
    (BENCH_DIR / "results" / "footprint.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
