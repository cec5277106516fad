"""Workflow benchmarks (issue 8), on the two-core machine as bench/load.py measures: the server
pinned to CPU 0, wrk (`-t1 -c64`, signed 1160-byte GitHub pushes, a unique delivery each) on CPU 1.

1. workflow: bench/fastwebhook-workflow.toml (verify, dedup, commit, then condition -> script in
   V8 -> create a record) under --seconds of load, then the drain, as load.py's sustained run:
   executions finished per second of load + drain.  Beside it, in the same session, Node-RED
   (bench/nodered, pinned release) running the same flow (http in -> function verifying the
   HMAC -> switch -> function -> http response) under the same load; it keeps no records.
   And the floors: the same load on fastwebhook with no nodes, on condition -> create, and on
   bench/peers/floor_workflow.py, the same work done the cheapest way these parts allow (an
   upper bound for the workflow row on this machine).
2. isolation: bench/fastwebhook-isolation.toml: ingest (workflow "bench", no nodes) measured
   alone, then while another workflow's scripts spin to their 250 ms timeout (`while (true) {}`;
   enough of them posted and claimed before the run to keep every context of the script pool
   spinning through it): its p99 with them as a multiple of its p99 without them.

    .venv/bin/python bench/workflow_load.py [--seconds 20] [--isolation-seconds 10] [--isolation-runs 3] [--only workflow|floor-...|nodered|isolation]

The tables go to stdout and bench/results/workflow.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import sys
import tempfile
import time
from pathlib import Path

import nodered
import payload
from load import (BENCH_DIR, FLOOR_WORKFLOW, SERVER_CPU, Receiver, ReceiverError, fastwebhook, measure_sustained,
                  read_metrics, run_wrk, running, say, wait_for_drain)

WORKFLOW = Receiver("workflow", "fastwebhook-commit: verify, dedup, commit; condition -> script (V8) -> create",
                    fastwebhook("workflow"), verifies=True, metrics=True)
FLOORS = [  # measured beside it, same load: what the workflow costs over the log-first intake alone
    Receiver("floor-intake", "fastwebhook-commit, a workflow with no nodes (the log-first sustained run)",
             fastwebhook("commit"), verifies=True, metrics=True),
    Receiver("floor-noscript", "fastwebhook-commit: condition -> create (no script)",
             fastwebhook("workflow-noscript"), verifies=True, metrics=True),
    FLOOR_WORKFLOW,  # the same work done the cheapest way: an upper bound for the workflow row, same run
]
ISOLATION = Receiver("isolation", "fastwebhook-commit: ingest of workflow bench beside spinning scripts",
                     fastwebhook("isolation"), verifies=True, metrics=True)
KEEPS = {"floor-intake": "executions, request log",
         "floor-noscript": "executions, jobs, request log, a record per push",
         "floor-workflow": "executions, jobs, a record per push (no request log)"}
WORKFLOW_TARGET = 5000.0      # executions/s, sustained
ISOLATION_TARGET = 2.0        # ingest p99 with spinning scripts / without, at most
_SPIN_FAILED = re.compile(r'^fastwebhook_executions_total\{[^}]*status="failed"[^}]*workflow="spin"[^}]*\} (\S+)|'
                          r'^fastwebhook_executions_total\{[^}]*workflow="spin"[^}]*status="failed"[^}]*\} (\S+)', re.M)


def spin_failures(port: int) -> int:
    return sum(int(float(a or b)) for a, b in _SPIN_FAILED.findall(read_metrics(port)))


def post_spins(port: int, count: int) -> None:
    """`count` requests to /spin, pipelined on one connection, each answered 202 at once."""
    request = b"POST /spin HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request * count)
        for _ in range(count):
            head = await reader.readuntil(b"\r\n\r\n")
            if int(head.split(b" ", 2)[1]) != 202:
                raise ReceiverError(f"/spin answered {head.split(b' ', 2)[1].decode()}")
            await reader.readexactly(int(re.search(rb"(?i)content-length: (\d+)", head).group(1)))
        writer.close()

    asyncio.run(main())


def measure_workflow(args, body_file: Path, session: Path, receiver: Receiver = WORKFLOW) -> dict:
    say(f"[{receiver.name}] {receiver.description}: {args.seconds} s of load, then the drain ...")
    result = measure_sustained(receiver, session, args.port, args.seconds, args.drain_timeout, body_file)
    load = result.load
    say(f"  load: {load.ok_per_second:,.0f} req/s acked  p99 {load.p99_ms:.2f} ms  non-2xx {load.non_2xx_3xx}; "
        f"drain {result.drain_seconds:.1f} s; {result.executed:,} executions in {result.seconds:.1f} s = "
        f"{result.per_second:,.0f}/s  other processes {100 * load.others_cpu_share:.0f} % CPU")
    if result.thread_us:
        say("  CPU per execution: " + ", ".join(f"{name} {us:.1f} us" for name, us in result.thread_us))
    return {"rate": result.per_second, "acked": load.ok_per_second, "p99": load.p99_ms, "executed": result.executed,
            "seconds": result.seconds, "drain": result.drain_seconds, "non_2xx": load.non_2xx_3xx,
            "others": load.others_cpu_share, "cpu": result.thread_us}


def measure_nodered(args, body_file: Path) -> dict:
    say(f"[nodered] Node-RED {nodered.version()}: {args.seconds} s of the same load ...")
    process = nodered.start_nodered(args.port, payload.SECRET, cpu=SERVER_CPU)
    try:
        request = payload.signed_request("github", time.time())
        run_wrk(args.port, 1, body_file, request)
        load = run_wrk(args.port, args.seconds, body_file, request)
    finally:
        nodered.stop_nodered(process)
    say(f"  {load.ok_per_second:,.0f} req/s  p99 {load.p99_ms:.2f} ms  non-2xx {load.non_2xx_3xx}")
    return {"rate": load.ok_per_second, "p99": load.p99_ms, "non_2xx": load.non_2xx_3xx}


def measure_isolation(args, body_file: Path, session: Path) -> dict:
    """Ingest alone; then the same with enough runaway scripts claimed and waiting for the
    script pool to keep every context spinning through the run (posted while the intake is
    idle, so they are claimed before the load and not queued behind it).  --isolation-runs such
    pairs on one server, the spins drained between them: a p99 on this shared machine swings by
    several times from one run to the next, so the verdict is the median pair's ratio."""
    say(f"[isolation] ingest alone, then beside scripts spinning to their timeouts ({args.isolation_seconds} s each, "
        f"{args.isolation_runs} pairs) ...")
    pairs = []
    with running(ISOLATION, session, args.port, body_file) as (process, request):
        deadline = time.monotonic() + args.drain_timeout
        wait_for_drain(process, args.port, deadline, "the warm-up")
        for _ in range(args.isolation_runs):
            alone = run_wrk(args.port, args.isolation_seconds, body_file, request)
            wait_for_drain(process, args.port, deadline, "the run alone")
            # 6 contexts x 4 timeouts a second: this many keep them all spinning past the run's end
            spins = int(6 * 4 * (args.isolation_seconds + 3))
            post_spins(args.port, spins)
            time.sleep(0.5)   # claimed, and the pool spinning
            failed_before = spin_failures(args.port)
            beside = run_wrk(args.port, args.isolation_seconds, body_file, request)
            timed_out = spin_failures(args.port) - failed_before
            if process.poll() is not None:
                raise ReceiverError(f"exited with {process.returncode} during the run")
            ratio = beside.p99_ms / alone.p99_ms
            say(f"  alone:  {alone.ok_per_second:,.0f} req/s  p99 {alone.p99_ms:.2f} ms")
            say(f"  beside: {beside.ok_per_second:,.0f} req/s  p99 {beside.p99_ms:.2f} ms ({ratio:.2f}x); "
                f"{timed_out} scripts ended at their timeout during it ({spins} posted before it)")
            pairs.append({"alone": alone, "beside": beside, "ratio": ratio, "timed_out": timed_out, "sent": spins})
            wait_for_drain(process, args.port, time.monotonic() + args.drain_timeout, "the spinning scripts")
    pairs.sort(key=lambda pair: pair["ratio"])
    return {**pairs[len(pairs) // 2], "ratios": [pair["ratio"] for pair in pairs]}


def report(results: dict, args) -> str:
    lines = [f"# Workflow benchmarks ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"Server pinned to CPU {SERVER_CPU}, wrk -t1 -c64 on the other; signed 1160-byte GitHub pushes.", ""]
    if any(name in results for name in ("workflow", "nodered", *(f.name for f in FLOORS))):
        lines += ["| receiver | executions/s | acked req/s | p99 ms (load) | records kept |", "|---|--:|--:|--:|---|"]
        if "workflow" in results:
            w = results["workflow"]
            lines.append(f"| fastwebhook: condition + script (V8) + create, commit durability, {args.seconds} s load "
                         f"+ {w['drain']:.1f} s drain | {w['rate']:,.0f} | {w['acked']:,.0f} | {w['p99']:.2f} | "
                         f"executions, jobs, request log, a record per push |")
        for floor in FLOORS:
            if floor.name in results:
                f = results[floor.name]
                lines.append(f"| {floor.name}: {floor.description}, {args.seconds} s load + {f['drain']:.1f} s drain | "
                             f"{f['rate']:,.0f} | {f['acked']:,.0f} | {f['p99']:.2f} | {KEEPS[floor.name]} |")
        if "nodered" in results:
            n = results["nodered"]
            lines.append(f"| Node-RED {nodered.version()}: http in -> function (HMAC) -> switch -> function -> "
                         f"http response | {n['rate']:,.0f} (answered) | {n['rate']:,.0f} | {n['p99']:.2f} | none |")
        if "workflow" in results:
            rate = results["workflow"]["rate"]
            verdict = "met" if rate >= WORKFLOW_TARGET else "NOT met"
            lines += ["", f"Target >= {WORKFLOW_TARGET:,.0f} executions/s: {verdict} ({rate:,.0f}/s)."]
            if "floor-workflow" in results:
                ceiling = results["floor-workflow"]["rate"]
                lines.append(f"floor-workflow, the same work done the cheapest way, same run: {ceiling:,.0f}/s "
                             f"({'above' if ceiling >= WORKFLOW_TARGET else 'below'} the target); "
                             f"fastwebhook / floor-workflow: {rate / ceiling:.2f}x.")
            if "nodered" in results and results["nodered"]["rate"]:
                lines.append(f"fastwebhook / Node-RED: {rate / results['nodered']['rate']:.2f}x.")
            if results["workflow"]["cpu"]:
                lines.append("CPU per execution: " + ", ".join(f"{n} {us:.1f} us" for n, us in results["workflow"]["cpu"]))
    if "isolation" in results:
        i = results["isolation"]
        verdict = "met" if i["ratio"] < ISOLATION_TARGET else "NOT met"
        lines += ["", "| ingest (workflow bench, no nodes) | req/s | p50 ms | p99 ms |", "|---|--:|--:|--:|",
                  f"| alone | {i['alone'].ok_per_second:,.0f} | {i['alone'].p50_ms:.2f} | {i['alone'].p99_ms:.2f} |",
                  f"| beside scripts spinning to their 250 ms timeout ({i['timed_out']} timed out during the run) | "
                  f"{i['beside'].ok_per_second:,.0f} | {i['beside'].p50_ms:.2f} | {i['beside'].p99_ms:.2f} |",
                  "", f"p99 beside / alone = {i['ratio']:.2f}x, the median of {len(i['ratios'])} pairs "
                  f"({', '.join(f'{r:.2f}x' for r in i['ratios'])}; the table shows that pair); "
                  f"target below {ISOLATION_TARGET:.0f}x: {verdict}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="seconds of load in the workflow runs")
    parser.add_argument("--isolation-seconds", type=int, default=10)
    parser.add_argument("--isolation-runs", type=int, default=3, help="pairs (alone, beside) in the isolation run")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--port", type=int, default=18080)
    names = ("workflow", *(f.name for f in FLOORS), "nodered", "isolation")
    parser.add_argument("--only", action="append", choices=names)
    args = parser.parse_args(argv)
    wanted = args.only or list(names)
    results: dict = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="fastwebhook-wbench-") as session:
        body_file = Path(session) / "body.json"
        body_file.write_bytes(payload.BODY)
        floors = [(f.name, lambda f=f: measure_workflow(args, body_file, Path(tempfile.mkdtemp(dir=session)), f))
                  for f in FLOORS]
        for name, run in (("workflow", lambda: measure_workflow(args, body_file, Path(tempfile.mkdtemp(dir=session)))),
                          *floors,
                          ("nodered", lambda: measure_nodered(args, body_file)),
                          ("isolation", lambda: measure_isolation(args, body_file, Path(tempfile.mkdtemp(dir=session))))):
            if name not in wanted:
                continue
            try:
                results[name] = run()
            except (ReceiverError, RuntimeError) as error:
                say(f"  FAILED: {error}")
                failed = True
    text = report(results, args)
    print(text)
    out = BENCH_DIR / "results" / "workflow.md"
    out.write_text(text)
    say(f"written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
