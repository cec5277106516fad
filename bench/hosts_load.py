"""Sustained ingest on PostgreSQL with one host and with two, beside SQLite's, in one run (issue 10).

Each case starts afresh (a new SQLite file, or a new PostgreSQL schema dropped after): its hosts
(`fastwebhook serve` on bench/fastwebhook-hosts.toml, a workflow with no nodes, the signed push of
bench/payload.py), a probe and a 1 s warm-up per host, then --seconds of load (one wrk per host,
64 connections shared out, at once), then the drain: until every acknowledged delivery is
resolved.  Its rate is the executions resolved over load + drain.  CPU per execution is counted
apart for the fastwebhook processes and for PostgreSQL's (every `postgres` process of the
machine), from /proc; the group-commit batch sizes from each host's /metrics.

Nothing is pinned: the hosts, PostgreSQL and wrk share this machine's two cores, as they would
not on bigger ones; the CPU per execution is what projects.

    .venv/bin/python bench/hosts_load.py [--seconds 20] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import load  # noqa: E402 - the load benchmark's wrk, probe and signing
import payload  # noqa: E402

CASES = (("sqlite, 1 host", "sqlite", 1), ("postgres, 1 host", "postgres", 1), ("postgres, 2 hosts", "postgres", 2))
_SERIES = re.compile(r'^fastwebhook_(requests_total\{code="202",workflow="bench"\}|'
                     r'executions_total\{status="resolved",workflow="bench"\}|store_batch_size_sum|store_batch_size_count) '
                     r'([0-9.e+]+)$', re.MULTILINE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> list[int]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                found.append(int(comm.parent.name))
        except OSError:
            continue
    return found


def figures(ports: list[int]) -> dict[str, float]:
    """The bench workflow's 202s and resolved executions, and the batch sizes, over all hosts."""
    summed: dict[str, float] = {}
    for port in ports:
        for name, value in _SERIES.findall(load.read_metrics(port)):
            key = name.split("{")[0]
            summed[key] = summed.get(key, 0.0) + float(value)
    return summed


def run_case(label: str, dialect: str, hosts: int, seconds: int, postgres: str, workdir: Path) -> dict:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    storage = f"sqlite:///{workdir}/bench.db" if dialect == "sqlite" else f"{postgres}?schema={schema}"
    template = (BENCH / "fastwebhook-hosts.toml").read_text()
    processes, ports = [], []
    try:
        for n in range(hosts):
            port = free_port()
            config = workdir / f"host{n}.toml"
            config.write_text(template.replace("${BENCH_PORT}", str(port)).replace("${BENCH_STORAGE}", storage)
                              .replace("${BENCH_SECRET}", payload.RECEIVER_SECRETS["github"]))
            log = open(workdir / f"host{n}.log", "wb")
            processes.append(subprocess.Popen([str(Path(sys.executable).parent / "fastwebhook"), "serve", "-c", str(config)],
                                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                              env={**os.environ, "PYTHONUNBUFFERED": "1"}))
            ports.append(port)
            load.wait_until_serving(processes[-1], port)   # one by one: the first makes the schema
        request = payload.signed_request("github", time.time())
        body_file = workdir / "body.json"
        body_file.write_bytes(payload.BODY)
        for port in ports:
            load.probe(port, request, True, time.monotonic() + load.STARTUP_TIMEOUT)
        run_wrk_all(ports, 1, body_file, request)
        drain(ports)
        before = figures(ports)
        pids = [p.pid for p in processes]
        host_cpu, pg_cpu = cpu_seconds(pids), cpu_seconds(postgres_pids())
        started = time.monotonic()
        results = run_wrk_all(ports, seconds, body_file, request)
        loaded = time.monotonic() - started
        drain(ports)
        elapsed = time.monotonic() - started
        after = figures(ports)
        executed = after["executions_total"] - before["executions_total"]
        batches = after["store_batch_size_count"] - before["store_batch_size_count"]
        return {
            "case": label, "executions": executed,
            "per_second": executed / elapsed, "acked_per_second": sum(r.ok_per_second for r in results),
            "p99_ms": max(r.p99_ms for r in results), "non_2xx": sum(r.non_2xx_3xx for r in results),
            "drain_s": elapsed - loaded,
            "rows_per_commit": (after["store_batch_size_sum"] - before["store_batch_size_sum"]) / batches if batches else 0,
            "host_us": (cpu_seconds(pids) - host_cpu) / executed * 1e6,
            "postgres_us": (cpu_seconds(postgres_pids()) - pg_cpu) / executed * 1e6 if dialect == "postgres" else None,
        }
    finally:
        for process in processes:
            load.stop(process)
        if dialect == "postgres":
            asyncio.run(drop_schema(postgres, schema))


def run_wrk_all(ports: list[int], seconds: int, body_file: Path, request) -> list:
    """One wrk per host, all at once, the 64 connections shared out."""
    running = []
    for port in ports:
        argv = ["wrk", "-t1", f"-c{load.CONNECTIONS // len(ports)}", f"-d{seconds}s", "--latency",
                "-s", str(load.LUA_SCRIPT), f"http://127.0.0.1:{port}/hook"]
        env = {**os.environ, "WRK_BODY_FILE": str(body_file),
               "WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in request.headers.items()),
               "WRK_UNIQUE_HEADER": request.unique_header, "WRK_DELIVERY_PREFIX": str(uuid.uuid4())[:23]}
        running.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [load.parse_wrk_output(process.communicate(timeout=seconds + 60)[0]) for process in running]


def drain(ports: list[int], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summed = figures(ports)
        if summed.get("executions_total", 0) >= summed.get("requests_total", 0):
            return
        time.sleep(0.1)
    raise SystemExit(f"the drain did not end within {timeout:.0f} s: {figures(ports)}")


async def drop_schema(postgres: str, schema: str) -> None:
    connection = await asyncpg.connect(postgres)
    await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--postgres", default=os.environ.get("FASTWEBHOOK_TEST_POSTGRES",
                                                             "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    rows = []
    for label, dialect, hosts in CASES:
        workdir = Path(tempfile.mkdtemp(prefix="fastwebhook-hosts-"))
        try:
            print(f"{label}: {args.seconds} s of load, then the drain ...", flush=True)
            rows.append(run_case(label, dialect, hosts, args.seconds, args.postgres, workdir))
            print(f"  {rows[-1]}", flush=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    lines = ["| case | executions/s (load + drain) | acked req/s | p99 ms | non-2xx | drain s | rows per commit "
             "| fastwebhook CPU us/execution | PostgreSQL CPU us/execution |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        pg = f"{r['postgres_us']:.0f}" if r["postgres_us"] is not None else "-"
        lines.append(f"| {r['case']} | {r['per_second']:,.0f} | {r['acked_per_second']:,.0f} | {r['p99_ms']:.2f} | "
                     f"{r['non_2xx']} | {r['drain_s']:.1f} | {r['rows_per_commit']:.1f} | {r['host_us']:.0f} | {pg} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
