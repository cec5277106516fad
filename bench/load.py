"""Load benchmark: fastwebhook against peer receivers, one at a time, on a two-core machine.

Each receiver is pinned to CPU 0 (`taskset -c 0`) and loaded from CPU 1 with
`wrk -t1 -c64 --latency -s bench/signed.lua`: the same signed 1160-byte GitHub push for everyone,
a unique X-GitHub-Delivery per request. Every start gets a fresh temporary directory (so
fastwebhook starts with an empty database), a signed probe (and, for receivers that verify, a
probe with a wrong signature that must get 401), a 1 s warm-up and then the measured run, during
which the CPU time of every other process on the machine is counted: a run where others took
more than 10 % is flagged as skewed. The table goes to stdout and to bench/results/latest.md.

After the peers and fastwebhook's two durabilities come the verification families: the
fastwebhook-commit workflow verified by another scheme (Standard Webhooks v1 HMAC with a
timestamp, its v1a ed25519, a token), the same body signed by that scheme's sender once per
receiver start, and a unique X-Delivery (their dedup key; webhook-id is signed, so constant) per
request. The report compares each with fastwebhook-commit (github, HMAC hex) of the same run.
fastwebhook rows also report duplicates from /metrics: a repeated dedup key is a bug here.

With --baseline PATH (a checkout of an older commit, e.g. `git worktree add /tmp/before 7747015`),
two more rows compare before and after in the same run: baseline-commit and baseline-memory run
that checkout's fastwebhook (`python -m fastwebhook serve` of this venv with PYTHONPATH=PATH, so
its package is imported instead of the editable install: checked before each start, the path is
printed) with this checkout's fastwebhook-commit.toml and fastwebhook-memory.toml, each measured
right after its fastwebhook row, run after run. The report gives each fastwebhook row's ratio to
its baseline row. Without --only, --families or --sustained they run with every row; with
these, name them (--only baseline-commit); --only baseline-* without --baseline is an error.

Last, once per session whatever --runs, the sustained run: fastwebhook-commit.toml (a queue of
1,000,000, a workflow with no nodes) started, probed and warmed up like the rows (the warm-up's
executions are let finish first), then --sustained-seconds (30) of the same load, then the drain:
/metrics is polled until fastwebhook_executions_total of workflow "bench" (all statuses) stops
growing with fastwebhook_queue_depth 0, for at most --drain-timeout (300) s, else the run failed.
Its rate is the executions finished over load + drain seconds; it also reports the acked req/s and
p99 during the load, the server's RSS (VmRSS) at the end of the load, its peak (VmHWM), the drain
seconds, CPU per execution by thread, and the rate as a share of bare's in the same session.

Then, once per session, the steady run: load that never lets up on the queue as shipped. In this
order: bare (the ceiling; reused from the rows when measured in this session); the burst,
fastwebhook-commit.toml (commit, a queue of 1,000,000) under 64 connections for 8 s: its acked
req/s and p99; the sustained figure of fastwebhook-commit.toml with --steady-seconds of load (the
sustained run above, reused when its seconds are the same); the same for fastwebhook-workflow.toml
(condition -> script in V8 -> create); floor-no-nodes and floor-workflow
(bench/peers/floor_workflow.py, with --no-nodes and as bench/workflow_load.py runs it: the same
work done with nothing general in between, load + drain; a bound only where it kept its core
busy) and floor-spec (bench/peers/floor_spec.py: floor-no-nodes with what SPEC.md asks of each
request done inline), and these two no-node floors again from 256 connections (the steady rows'
second count); then the steady rows, each on a fresh server with a config that
has NO [queue] section (the default capacity, workers and hold): no nodes (fastwebhook-steady.toml)
at 64 and at 256 connections, condition -> script -> create (fastwebhook-steady-workflow.toml) at
64 and 256, and no nodes on PostgreSQL, one host (fastwebhook-steady-postgres.toml on a fresh
schema of --postgres, dropped after the row; default $FASTWEBHOOK_BENCH_POSTGRES, else
postgresql://postgres@127.0.0.1:5432/test) at 64 and 256.
A steady row is a 1 s warm-up, then --steady-seconds of load (wrk --timeout 10s, so that an
answer held for seconds is timed, not dropped) and no drain. It reports, over the load:
- executions resolved per second of load: fastwebhook_executions_total of workflow "bench" (all
  statuses) read from /metrics just before and just after the load, over the seconds between;
- 2xx/s and 503/s as wrk saw them (signed.lua counts the answers by status);
- the p99 of admitted requests: wrk's p99 when every answer was a 2xx (then it is theirs alone);
  otherwise wrk's latencies mix admitted and refused answers and the server's histogram
  fastwebhook_request_duration_seconds has no status label, so the row reports that histogram's
  p99 over the load, all answers, as the upper bound of its bucket, marked "server": time from
  the parsed request to its answer, without the wait in the kernel's queues;
- the server's VmRSS at the end of the load and its VmHWM, CPU per execution by thread (and on
  PostgreSQL, every `postgres` process's CPU per execution, counted apart from "others");
- how many of those executions ended failed or error (the sustained runs too): these workflows
  do nothing that should fail, so any is a finding (a script timed out under load, say);
- its resolved/s as a share of bare's and of the sustained figure of the same run.
The targets (missing one is reported, not an error): no nodes at 64 and 256 connections >= 10 %
of bare, the same on PostgreSQL; condition -> script -> create at 64 connections >= 3 %; on
SQLite, each of these >= 0.9 x its sustained figure; and the burst >= 11 % of bare with p99 <=
30 ms; each target line of 64 connections on SQLite names its floor's share of bare and of a
core. CPU per execution by thread is listed for no nodes and for the workflow (sustained and
steady) beside each one's floor. With --baseline, the sustained workflow and each steady row
are measured again with that checkout's code right after ours (before/after from the same run).
--steady-runs N measures each steady row N times, alternating with its --baseline row, and
reports the run of median executions/s, with the spread of the N: runs of the same code differ
by more than 10 % on these hosts, so a smaller change needs the median of several.
The tables go to stdout and bench/results/steady.md.

    .venv/bin/python bench/load.py [--duration 10] [--runs 3] [--only bare --only fastwebhook-commit]
    .venv/bin/python bench/load.py --families   # fastwebhook-commit and the family rows only
    .venv/bin/python bench/load.py --only bare --sustained   # bare, then the sustained run
    .venv/bin/python bench/load.py --sustained [--sustained-seconds 30]   # the sustained run alone
    .venv/bin/python bench/load.py --steady [--steady-seconds 30] [--baseline /tmp/before]   # the steady run alone
    .venv/bin/python bench/load.py --steady --steady-runs 5 --baseline /tmp/before   # medians of 5 alternated
    .venv/bin/python bench/load.py --baseline /tmp/before --only fastwebhook-commit --only baseline-commit \
        --only fastwebhook-memory --only baseline-memory --runs 3   # before/after

`--sustained` (or `--only sustained`) adds the sustained run to what --only and --families pick,
or alone runs only it; `--steady` (or `--only steady`) likewise the steady run; with none of these
every row runs, then the sustained run, then the steady run. Both run once whatever --runs (the
steady rows --steady-runs times).

Exits 1 when a receiver could not be measured (its row says why), else 0; missing the speed
targets is reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http.client
import json
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

import payload
import report
from cpu_account import CpuAccount, thread_cpu_seconds

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "signed.lua"
SERVER_CPU, LOADER_CPU = 0, 1
CONNECTIONS = 64
WARMUP_SECONDS = 1
STARTUP_TIMEOUT = 20.0  # seconds until the receiver must accept connections and answer 2xx
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
SUSTAINED = "sustained"  # the name of the sustained run, for --only
STEADY = "steady"  # the name of the steady run, for --only
DRAIN_POLL_SECONDS = 0.1  # between two reads of /metrics while waiting for the drain
BURST_SECONDS = 8  # the steady run's burst row
STEADY_WRK_TIMEOUT = 10  # s: wrk's --timeout in a steady row (its default 2 s drops held answers' times)
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"  # --postgres without $FASTWEBHOOK_BENCH_POSTGRES


class ReceiverError(Exception):
    """A receiver could not be measured; the message says why, for its row in the table."""


@dataclass(frozen=True)
class Receiver:
    name: str
    description: str
    argv: Callable[[Path, int], list[str]]  # (fresh work directory, port) -> command line
    verifies: bool  # rejects a wrong signature with 401
    family: str = "github"  # the signed request it is fed: a key of payload.FAMILIES
    metrics: bool = False  # serves fastwebhook's /metrics (duplicates are read from it)
    env: tuple[tuple[str, str], ...] = ()  # set in its environment (a baseline row's PYTHONPATH)


@dataclass(frozen=True)
class WrkResult:
    requests: int  # responses of any status
    seconds: float
    non_2xx_3xx: int
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p99_ms: float
    others_cpu_share: float = 0.0  # CPU time neither the receiver nor wrk used, during the run
    duplicates: int | None = None  # answered as duplicates (fastwebhook's /metrics), probes included
    rows_per_commit: float | None = None  # fastwebhook's mean group commit, warm-up included
    # the receiver's CPU time per answer during the run, each busy thread's (name, us) first
    thread_us: tuple[tuple[str, float], ...] = ()
    statuses: tuple[tuple[int, int], ...] = ()  # (status, answers), when signed.lua counted them

    def answered(self, low: int, high: int | None = None) -> int:
        """Answers with a status from low to high (default: low alone), as signed.lua counted them."""
        return sum(count for status, count in self.statuses if low <= status <= (high or low))

    @property
    def cpu_us_per_request(self) -> float | None:
        return sum(us for _, us in self.thread_us) if self.thread_us else None

    @property
    def ok_per_second(self) -> float:
        """Answers that were 2xx or 3xx, per second: a receiver answering 503 is not fast."""
        return (self.requests - self.non_2xx_3xx) / self.seconds


@dataclass(frozen=True)
class SustainedResult:
    load: WrkResult  # the acked side, during the load (others_cpu_share: over load and drain)
    executed: int  # executions that reached a final status between the load's start and the drain's end
    drain_seconds: float  # from the end of the load until the last execution finished
    seconds: float  # from the load's start until the last execution finished
    rss_kib: int  # the server's VmRSS at the end of the load
    peak_rss_kib: int | None  # its VmHWM at the end of the drain (the peak since it started)
    # the server's CPU time over load and drain per execution, each busy thread's (name, us)
    thread_us: tuple[tuple[str, float], ...] = ()
    failed: int = 0  # of `executed`, those that ended failed or error: none expected of these workflows

    @property
    def per_second(self) -> float:
        """The sustained rate: executions finished per second of load plus drain."""
        return self.executed / self.seconds


@dataclass(frozen=True)
class SteadyResult:
    load: WrkResult  # with statuses counted
    seconds: float  # from just before the first read of /metrics around the load to just after the second
    executed: int  # executions that reached a final status between the two reads
    server_p99_ms: float | None  # the server's request-duration histogram over the load: its p99's bucket bound
    rss_kib: int  # the server's VmRSS at the end of the load
    peak_rss_kib: int | None  # its VmHWM then
    # the server's CPU time over the load per execution, each busy thread's (name, us)
    thread_us: tuple[tuple[str, float], ...] = ()
    helper_us: float | None = None  # on PostgreSQL: every `postgres` process's CPU time per execution
    failed: int = 0  # of `executed`, those that ended failed or error: none expected of these workflows

    @property
    def per_second(self) -> float:
        """Executions resolved per second of load."""
        return self.executed / self.seconds

    @property
    def accepted_per_second(self) -> float:
        return self.load.answered(200, 299) / self.load.seconds

    @property
    def refused_per_second(self) -> float:
        return self.load.answered(503) / self.load.seconds

    @property
    def other_answers(self) -> int:
        """Answers neither 2xx nor 503: none expected."""
        return self.load.requests - self.load.answered(200, 299) - self.load.answered(503)

    @property
    def admitted_p99(self) -> tuple[float | None, str]:
        """The p99 of admitted requests and whose it is: wrk's when every answer was a 2xx, else
        the server's histogram's (all answers, the bound of the bucket holding it)."""
        if self.load.answered(200, 299) == self.load.requests:
            return self.load.p99_ms, "wrk"
        return self.server_p99_ms, "server"


def peer(script: str, *extra: str) -> Callable[[Path, int], list[str]]:
    def argv(workdir: Path, port: int) -> list[str]:
        path = BENCH_DIR / "peers" / script
        command = [sys.executable, str(path), "--port", str(port), "--secret", payload.SECRET]
        return command + [arg.format(workdir=workdir) for arg in extra]

    return argv


def fastwebhook(variant: str, family: str = "github", storage: str | None = None) -> Callable[[Path, int], list[str]]:
    """bench/fastwebhook-<variant>.toml, its secret the one ``family``'s receiver verifies with
    (and its ${BENCH_STORAGE} ``storage``)."""
    def argv(workdir: Path, port: int) -> list[str]:
        executable = Path(sys.executable).parent / "fastwebhook"
        if not executable.exists():
            raise ReceiverError(f"{executable} does not exist (is fastwebhook installed in this venv?)")
        config = render_config(BENCH_DIR / f"fastwebhook-{variant}.toml", workdir, port,
                               payload.RECEIVER_SECRETS[family], storage)
        return [str(executable), "serve", "-c", str(config)]

    return argv


def baseline(checkout: Path, variant: str, storage: str | None = None) -> Callable[[Path, int], list[str]]:
    """The fastwebhook of an older checkout (PYTHONPATH=checkout) on this checkout's
    bench/fastwebhook-<variant>.toml; each start first checks that the checkout's package is the
    one imported."""
    def argv(workdir: Path, port: int) -> list[str]:
        check_imports_from(checkout, workdir)
        config = render_config(BENCH_DIR / f"fastwebhook-{variant}.toml", workdir, port,
                               payload.RECEIVER_SECRETS["github"], storage)
        return [sys.executable, "-m", "fastwebhook", "serve", "-c", str(config)]

    return argv


def check_imports_from(checkout: Path, workdir: Path) -> None:
    """``import fastwebhook`` as the server will (this interpreter, PYTHONPATH=checkout, cwd the
    work directory) must load the checkout's package, not the editable install."""
    try:
        done = subprocess.run([sys.executable, "-c", "import fastwebhook; print(fastwebhook.__file__)"],
                              cwd=workdir, env={**os.environ, "PYTHONPATH": str(checkout)},
                              capture_output=True, text=True, timeout=STARTUP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ReceiverError(f"import fastwebhook with PYTHONPATH={checkout} took over "
                            f"{STARTUP_TIMEOUT:.0f} s") from None
    imported = done.stdout.strip()
    if done.returncode != 0 or not imported:
        raise ReceiverError(f"import fastwebhook with PYTHONPATH={checkout} failed: {done.stderr.strip()[-300:]}")
    if not Path(imported).resolve().is_relative_to(checkout / "fastwebhook"):
        raise ReceiverError(f"with PYTHONPATH={checkout}, fastwebhook is imported from {imported}, "
                            "not from the baseline checkout")
    say(f"  imports {imported}")


RECEIVERS = [
    Receiver("bare", "asyncio.Protocol + uvloop + httptools, fixed 200, no work (the ceiling)",
             peer("bare.py"), verifies=False),
    Receiver("aiohttp", "aiohttp web server: HMAC + compare_digest + orjson.loads, 202, stores nothing",
             peer("aiohttp_peer.py"), verifies=True),
    Receiver("fastapi", "FastAPI on uvicorn (uvloop, httptools): same checks + aiosqlite insert, "
             "WAL, commit per request, 202",
             peer("fastapi_peer.py", "--db", "{workdir}/peer.db"), verifies=True),
    # The floor: the required checks plus the cheapest durable write, nothing else (an upper
    # bound for any receiver meeting the SPEC on these parts, not a peer): see peers/floor.py.
    Receiver("floor", "httptools + uvloop: HMAC + compare_digest + orjson.loads, 202, stores nothing",
             peer("floor.py", "--store", "none"), verifies=True),
    Receiver("floor-commit", "floor + group commit of one blob row per batch and one 64-bit dedup "
             "row per request (WAL, FULL), 202 after the commit",
             peer("floor.py", "--store", "commit", "--db", "{workdir}/floor.db"), verifies=True),
    Receiver("floor-log", "floor + group commit of ONE blob row per batch holding its bodies and "
             "dedup keys, no per-request row (WAL, FULL), 202 after the commit",
             peer("floor.py", "--store", "log", "--db", "{workdir}/floor.db"), verifies=True),
    Receiver("floor-memory", "floor-commit answering at once while less than a batch waits",
             peer("floor.py", "--store", "memory", "--db", "{workdir}/floor.db"), verifies=True),
    Receiver("fastwebhook-commit", 'fastwebhook, durability = "commit" (202 after the row is on disk)',
             fastwebhook("commit"), verifies=True, metrics=True),
    Receiver("fastwebhook-commit-2proc", 'fastwebhook-commit with processes = 2 (two workers on one '
             "SO_REUSEPORT port, one SQLite file)", fastwebhook("commit-2proc"), verifies=True, metrics=True),
    Receiver("fastwebhook-memory", 'fastwebhook, durability = "memory" (202 at enqueue)',
             fastwebhook("memory"), verifies=True, metrics=True),
    # The verification families: fastwebhook-commit's workflow, another scheme (report.FAMILIES).
    Receiver("fastwebhook-standard", 'fastwebhook-commit verified by scheme "standard" v1 '
             "(HMAC-SHA256 base64 over id.timestamp.body, 300 s tolerance); dedup key X-Delivery",
             fastwebhook("standard", "standard"), verifies=True, family="standard", metrics=True),
    Receiver("fastwebhook-ed25519", 'fastwebhook-commit verified by scheme "standard" with a whpk_ '
             "public key: v1a ed25519 over id.timestamp.body, 300 s tolerance; dedup key X-Delivery",
             fastwebhook("ed25519", "ed25519"), verifies=True, family="ed25519", metrics=True),
    Receiver("fastwebhook-token", 'fastwebhook-commit verified by scheme "token" (X-Webhook-Token, '
             "constant-time compare); dedup key X-Delivery",
             fastwebhook("token", "token"), verifies=True, family="token", metrics=True),
]
FAMILY_RECEIVERS = ["fastwebhook-commit", "fastwebhook-standard", "fastwebhook-ed25519", "fastwebhook-token"]
SUSTAINED_RECEIVER = Receiver(SUSTAINED, 'fastwebhook, durability = "commit", queue capacity 1,000,000, '
                              "a workflow with no nodes: a burst the durable queue absorbs while the "
                              "workers run behind, then the drain",
                              fastwebhook("commit"), verifies=True, metrics=True)
BASELINE_RECEIVERS = {"baseline-commit": "commit", "baseline-memory": "memory"}  # name: config variant

# The steady run's ceilings and floor, measured before its rows in the same session.
BURST = Receiver("burst", 'fastwebhook-commit.toml: durability "commit", queue capacity 1,000,000, no nodes: '
                 f"the ack rate of a burst the queue absorbs, {CONNECTIONS} connections for {BURST_SECONDS} s",
                 fastwebhook("commit"), verifies=True, metrics=True)
SUSTAINED_WORKFLOW = Receiver("sustained-workflow", 'fastwebhook-workflow.toml: durability "commit", queue capacity '
                              "1,000,000, condition -> script (V8) -> create: load, then the drain",
                              fastwebhook("workflow"), verifies=True, metrics=True)
# The least any receiver could do for the same work (bench/peers/floor_workflow.py): an upper
# bound for the workflow on this machine.
FLOOR_WORKFLOW = Receiver("floor-workflow", "bench/peers/floor_workflow.py: floor-log's ingest, then per batch the "
                          "condition in Python, ONE V8 call for the scripts, ONE transaction for the records, jobs "
                          "and executions", peer("floor_workflow.py", "--db", "{workdir}/floor.db"),
                          verifies=True, metrics=True)
# ... and for a workflow that runs nothing (bench/fastwebhook-steady.toml's): the no-node rows' bound.
FLOOR_NO_NODES = Receiver("floor-no-nodes", "bench/peers/floor_workflow.py --no-nodes: floor-log's ingest, then per "
                          "batch ONE transaction with each delivery's execution row (resolved) and its dedup key in "
                          "the unique index", peer("floor_workflow.py", "--no-nodes", "--db", "{workdir}/floor.db"),
                          verifies=True, metrics=True)
# ... and that floor doing, inline, what SPEC.md asks of every such request (ids, the stored
# request, the dedup window, limits, deadlines, metrics): the no-node rows' bound for a receiver
# that meets the SPEC (bench/peers/floor_spec.py).
FLOOR_SPEC = Receiver("floor-spec", "bench/peers/floor_spec.py: floor-no-nodes and, inline, each duty SPEC.md sets "
                      "for the request (X-Request-Id, a UUIDv7 and X-Execution-Id, the stored request with the "
                      "signature redacted in the log, the dedup window with its expiry, limits, deadlines, metrics)",
                      peer("floor_spec.py", "--db", "{workdir}/floor.db"), verifies=True, metrics=True)


@dataclass(frozen=True)
class SteadyCase:
    """A steady row: a fresh server on bench/fastwebhook-<variant>.toml (no [queue] section)."""
    name: str
    variant: str
    connections: int
    description: str
    postgres: bool = False  # one host on a fresh schema of --postgres

    def receiver(self, storage: str | None, checkout: Path | None = None) -> Receiver:
        """This checkout's fastwebhook on the case's config; with ``checkout``, that older one's."""
        if checkout is None:
            return Receiver(self.name, self.description, fastwebhook(self.variant, storage=storage),
                            verifies=True, metrics=True)
        return older(checkout, self.name, self.description, self.variant, storage)


MANY_CONNECTIONS = 256      # the steady rows' second sender count
_STEADY = 'durability "commit", the default queue (no [queue] section)'
STEADY_CASES = [
    SteadyCase("steady", "steady", 64, f"fastwebhook-steady.toml: {_STEADY}, no nodes"),
    SteadyCase("steady-256", "steady", MANY_CONNECTIONS, f"fastwebhook-steady.toml: {_STEADY}, no nodes"),
    SteadyCase("steady-workflow", "steady-workflow", 64,
               f"fastwebhook-steady-workflow.toml: {_STEADY}, condition -> script (V8) -> create"),
    SteadyCase("steady-workflow-256", "steady-workflow", MANY_CONNECTIONS,
               f"fastwebhook-steady-workflow.toml: {_STEADY}, condition -> script (V8) -> create"),
    SteadyCase("steady-postgres", "steady-postgres", 64,
               f"fastwebhook-steady-postgres.toml: {_STEADY}, no nodes, PostgreSQL, one host", postgres=True),
    SteadyCase("steady-postgres-256", "steady-postgres", MANY_CONNECTIONS,
               f"fastwebhook-steady-postgres.toml: {_STEADY}, no nodes, PostgreSQL, one host", postgres=True),
]


def older(checkout: Path, name: str, description: str, variant: str, storage: str | None = None) -> Receiver:
    """Row ``name``'s --baseline row: the checkout's code on this checkout's fastwebhook-<variant>.toml."""
    return Receiver(f"baseline-{name}", f"{description}; {checkout_revision(checkout)}'s code ({checkout})",
                    baseline(checkout, variant, storage), verifies=True, metrics=True,
                    env=(("PYTHONPATH", str(checkout)),))


def baseline_receivers(checkout: Path) -> dict[str, Receiver]:
    """The --baseline rows, keyed by the fastwebhook row each is measured after (report.BASELINES)."""
    revision = checkout_revision(checkout)
    rows = {}
    for row, name in report.BASELINES:
        variant = BASELINE_RECEIVERS[name]
        rows[row] = Receiver(name, f"fastwebhook at {revision} ({checkout}), durability = \"{variant}\": "
                             f"this checkout's fastwebhook-{variant}.toml served by that commit's code",
                             baseline(checkout, variant), verifies=True, metrics=True,
                             env=(("PYTHONPATH", str(checkout)),))
    return rows


def checkout_revision(checkout: Path) -> str:
    """The checkout's commit, short, and whether it has uncommitted changes."""
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    revision = git("rev-parse", "--short", "HEAD") or "an unknown commit"
    if git("status", "--porcelain", "--untracked-files=no"):
        revision += " + uncommitted changes"
    return revision


def render_config(template: Path, workdir: Path, port: int, secret: str = payload.SECRET,
                  storage: str | None = None) -> Path:
    """Fill the template's ${BENCH_*} placeholders so the server sees plain values."""
    values = {"BENCH_PORT": str(port), "BENCH_DIR": str(workdir), "BENCH_SECRET": secret,
              **({"BENCH_STORAGE": storage} if storage is not None else {})}

    def fill(match: re.Match) -> str:
        if match.group(1) not in values:
            raise ReceiverError(f"{template.name}: unknown placeholder {match.group(0)}")
        return values[match.group(1)]

    config = workdir / template.name
    config.write_text(re.sub(r"\$\{(BENCH_[A-Z_]+)(?::-[^}]*)?\}", fill, template.read_text()))
    return config


# --- one measurement ------------------------------------------------------------------------------

@contextlib.contextmanager
def running(receiver: Receiver, workdir: Path, port: int,
            body_file: Path) -> Iterator[tuple[subprocess.Popen, payload.SignedRequest]]:
    """Sign, start the receiver, probe, warm up; stop it on the way out. A ReceiverError raised
    while it runs gets the tail of its log."""
    if accepts_connections(port):
        raise ReceiverError(f"port {port} is already in use by another process")
    # Signed now, per start: the standard schemes' timestamp stays within tolerance whatever
    # the number of runs (parse_args bounds --duration by it).
    request = payload.signed_request(receiver.family, time.time())
    argv = ["taskset", "-c", str(SERVER_CPU), *receiver.argv(workdir, port)]
    log_path = workdir / "receiver.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **dict(receiver.env)})
    try:
        try:
            wait_until_serving(process, port)
            probe(port, request, receiver.verifies, time.monotonic() + STARTUP_TIMEOUT)
            run_wrk(port, WARMUP_SECONDS, body_file, request)
            yield process, request
        except ReceiverError as error:
            raise ReceiverError(f"{error}{log_tail(log_path)}") from None
    finally:
        stop(process)


def measure(receiver: Receiver, workdir: Path, port: int, duration: int, body_file: Path) -> WrkResult:
    """One measured run of a receiver, started afresh."""
    with running(receiver, workdir, port, body_file) as (process, request):
        threads_before = thread_cpu_seconds(process.pid)
        with CpuAccount(receiver_group=process.pid) as account:
            result = run_wrk(port, duration, body_file, request)
        result = dataclasses.replace(result, others_cpu_share=account.others_share,
                                     thread_us=cpu_per_request(process.pid, threads_before,
                                                               thread_cpu_seconds(process.pid), result.requests))
        if process.poll() is not None:
            raise ReceiverError(f"exited with status {process.returncode} during the run")
        if receiver.metrics:
            result = dataclasses.replace(result, duplicates=read_duplicates(port), rows_per_commit=read_rows_per_commit(port))
        return result


def measure_sustained(receiver: Receiver, workdir: Path, port: int, seconds: int, drain_timeout: float,
                      body_file: Path, connections: int = CONNECTIONS) -> SustainedResult:
    """A burst of load the durable queue absorbs, then the drain: executions per second overall."""
    with running(receiver, workdir, port, body_file) as (process, request):
        pid = process.pid
        if read_proc_status(pid).get("Name") == "taskset":  # it execs the server, keeping the pid
            raise ReceiverError(f"process {pid} is still taskset, not the server")
        # The warm-up's executions finish first, so that every one counted below is the load's.
        executed_before, _ = wait_for_drain(process, port, time.monotonic() + drain_timeout, "the warm-up")
        failed_before = read_failed(port)
        threads_before = thread_cpu_seconds(pid)
        with CpuAccount(receiver_group=pid) as account:
            started = time.monotonic()
            load = run_wrk(port, seconds, body_file, request, connections)
            load_ended = time.monotonic()
            rss_kib = memory_kib(pid, "VmRSS")
            if rss_kib is None:
                raise ReceiverError(f"exited with status {process.poll()} during the load")
            executed_after, drained = wait_for_drain(process, port, load_ended + drain_timeout, "the load")
        executed = executed_after - executed_before
        load = dataclasses.replace(load, others_cpu_share=account.others_share, duplicates=read_duplicates(port))
        return SustainedResult(load=load, executed=executed, drain_seconds=max(0.0, drained - load_ended),
                               seconds=drained - started, rss_kib=rss_kib, peak_rss_kib=memory_kib(pid, "VmHWM"),
                               thread_us=cpu_per_request(pid, threads_before, thread_cpu_seconds(pid), executed),
                               failed=read_failed(port) - failed_before)


def measure_steady(receiver: Receiver, workdir: Path, port: int, seconds: int, connections: int,
                   body_file: Path, helper: str | None = None) -> SteadyResult:
    """Load that never lets up, on a fresh server: executions resolved per second of it, no drain.
    ``helper`` names processes working for the server (`postgres`), whose CPU is counted apart."""
    with running(receiver, workdir, port, body_file) as (process, request):
        pid = process.pid
        if read_proc_status(pid).get("Name") == "taskset":  # it execs the server, keeping the pid
            raise ReceiverError(f"process {pid} is still taskset, not the server")
        threads_before = thread_cpu_seconds(pid)
        with CpuAccount(receiver_group=pid, helper=helper) as account:
            started = time.monotonic()
            executed_before, failed_before, durations_before = read_steady_figures(port)
            load = run_wrk(port, seconds, body_file, request, connections, timeout=STEADY_WRK_TIMEOUT,
                           count_statuses=True)
            rss_kib, peak_rss_kib = memory_kib(pid, "VmRSS"), memory_kib(pid, "VmHWM")
            threads_after = thread_cpu_seconds(pid)
            if rss_kib is None:
                raise ReceiverError(f"exited with status {process.poll()} during the load")
            executed_after, failed_after, durations_after = read_steady_figures(port)
            elapsed = time.monotonic() - started
        executed = executed_after - executed_before
        load = dataclasses.replace(load, others_cpu_share=account.others_share, duplicates=read_duplicates(port))
        return SteadyResult(load=load, seconds=elapsed, executed=executed,
                            server_p99_ms=bucket_p99_ms(durations_before, durations_after),
                            rss_kib=rss_kib, peak_rss_kib=peak_rss_kib,
                            thread_us=cpu_per_request(pid, threads_before, threads_after, executed),
                            helper_us=1e6 * account.helper_seconds / executed if helper and executed else None,
                            failed=failed_after - failed_before)


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """``url`` on a schema of its own (the server creates it: an empty store), dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{url}{'&' if '?' in url else '?'}schema={schema}"
    finally:
        async def drop() -> None:
            connection = await asyncpg.connect(url)
            try:
                await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await connection.close()

        try:
            asyncio.run(drop())
        except (OSError, asyncpg.PostgresError) as error:  # reported, not raised over the row's own error
            say(f"  warning: could not drop schema {schema} of {url}: {error}")


def wait_for_drain(process: subprocess.Popen, port: int, deadline: float, after: str) -> tuple[int, float]:
    """Poll /metrics until the executions finished stop growing with nothing queued: returns that
    count and the monotonic time it was first seen so (a poll interval's precision)."""
    last, since = None, 0.0  # the last (executions, depth) read, and when it was first read
    while True:
        if process.poll() is not None:
            raise ReceiverError(f"exited with status {process.returncode} while draining {after}")
        executed, depth = state = read_progress(port)
        now = time.monotonic()
        if depth == 0 and state == last:
            return executed, since
        if state != last:
            last, since = state, now
        if now > deadline:
            raise ReceiverError(f"the queue did not drain after {after} within --drain-timeout: "
                                f"{depth:,} still queued, {executed:,} executions finished")
        time.sleep(DRAIN_POLL_SECONDS)


def cpu_per_request(pid: int, before: dict[str, float], after: dict[str, float],
                    requests: int) -> tuple[tuple[str, float], ...]:
    """Each thread's CPU time over the run in microseconds per answer, busiest first, named
    "<comm> main" or "<comm> thread"; threads that used less than 1 % of the total are left out."""
    used = {key: seconds - before.get(key, 0.0) for key, seconds in after.items()}
    total = sum(used.values())
    if not requests or not total:
        return ()

    def label(key: str) -> str:
        name, tid = key.rsplit("/", 1)
        return f"{name} main" if tid == str(pid) else f"{name} thread"

    return tuple(sorted(((label(key), 1e6 * seconds / requests) for key, seconds in used.items()
                         if seconds >= total / 100), key=lambda item: -item[1]))


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_until_serving(process: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not accepts_connections(port):
        if process.poll() is not None:
            raise ReceiverError(f"exited with status {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise ReceiverError(f"not listening on port {port} after {STARTUP_TIMEOUT:.0f} s")
        time.sleep(0.05)


def post(port: int, request: payload.SignedRequest, forged: bool = False) -> tuple[int, bytes]:
    headers = {**request.headers, **(request.forged if forged else {}),
               request.unique_header: str(uuid.uuid4())}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", "/hook", body=payload.BODY, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as error:
        raise ReceiverError(f"probe request failed: {error!r}") from None
    finally:
        connection.close()


def probe(port: int, request: payload.SignedRequest, verifies: bool, deadline: float) -> None:
    """A signed request must get a 2xx (503 while starting up is waited out), a forged one 401."""
    status, body = post(port, request)
    while status == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
        status, body = post(port, request)
    if not 200 <= status < 300:
        raise ReceiverError(f"signed probe answered {status} {body[:200]!r}")
    if verifies:
        status, body = post(port, request, forged=True)
        if status != 401:
            raise ReceiverError(f"probe with a wrong signature answered {status}, not 401 {body[:200]!r}")


_DUPLICATES = re.compile(r'^fastwebhook_duplicates_total\{[^}]*workflow="bench"[^}]*\} ([0-9.e+]+)$', re.MULTILINE)
_EXECUTIONS = re.compile(r'^fastwebhook_executions_total\{[^}]*workflow="bench"[^}]*\} ([0-9.e+]+)$', re.MULTILINE)
_QUEUE_DEPTH = re.compile(r"^fastwebhook_queue_depth(?:\{[^}]*\})? ([0-9.e+]+)$", re.MULTILINE)


def read_duplicates(port: int) -> int:
    """Requests fastwebhook answered as duplicates so far (warm-up and probes included)."""
    match = _DUPLICATES.search(read_metrics(port))
    return int(float(match.group(1))) if match else 0  # no sample: none counted yet


_BATCH = re.compile(r"^fastwebhook_store_batch_size_(sum|count) ([0-9.e+]+)$", re.MULTILINE)


def read_rows_per_commit(port: int) -> float | None:
    """Deliveries per group commit so far (every process's, with several)."""
    found = dict(_BATCH.findall(read_metrics(port)))
    count = float(found.get("count", 0))
    return float(found["sum"]) / count if count else None


def read_progress(port: int) -> tuple[int, int]:
    """Executions of workflow "bench" finished so far, any final status, and the queue depth."""
    text = read_metrics(port)
    depth = _QUEUE_DEPTH.search(text)
    if depth is None:
        raise ReceiverError("/metrics has no fastwebhook_queue_depth sample")
    return sum(int(float(count)) for count in _EXECUTIONS.findall(text)), int(float(depth.group(1)))


_FAILED = re.compile(r'^fastwebhook_executions_total\{([^}]*)\} ([0-9.e+]+)$', re.MULTILINE)


def read_failed(port: int) -> int:
    return failed_in(read_metrics(port))


def failed_in(metrics: str) -> int:
    """Executions of workflow "bench" that ended failed or error so far: a script timed out, a
    write refused.  The bench's workflows do nothing that should fail, so any is a finding."""
    return sum(int(float(count)) for labels, count in _FAILED.findall(metrics)
               if 'workflow="bench"' in labels and ('status="failed"' in labels or 'status="error"' in labels))


_DURATION_BUCKET = re.compile(r'^fastwebhook_request_duration_seconds_bucket\{([^}]*)\} ([0-9.e+]+)$', re.MULTILINE)
_LE = re.compile(r'le="([^"]+)"')


def read_steady_figures(port: int) -> tuple[int, int, dict[float, float]]:
    """Executions of workflow "bench" finished so far (any final status), those of them that
    ended failed or error, and its request-duration histogram: cumulative answers by bucket bound
    (seconds, +Inf last).  One read of /metrics, so the counts are of the same moment."""
    text = read_metrics(port)
    buckets = {float(_LE.search(labels).group(1)): float(count) for labels, count in _DURATION_BUCKET.findall(text)
               if 'workflow="bench"' in labels}
    return sum(int(float(count)) for count in _EXECUTIONS.findall(text)), failed_in(text), buckets


def bucket_p99_ms(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The bound (ms) of the histogram bucket that holds the p99 of what was observed between two
    reads (inf: beyond the last bound); None if nothing was."""
    bounds = sorted(after)
    if not bounds:
        return None
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0)
    if total <= 0:
        return None
    return next(1e3 * bound for bound in bounds if after[bound] - before.get(bound, 0.0) >= 0.99 * total)


def read_metrics(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as error:
        raise ReceiverError(f"reading /metrics failed: {error!r}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise ReceiverError(f"/metrics answered {response.status}")
    return text


def read_proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict (empty once the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


def memory_kib(pid: int, field: str) -> int | None:
    """A "<n> kB" field of /proc/<pid>/status (VmRSS, VmHWM) in KiB; None once it is gone."""
    value = read_proc_status(pid).get(field)
    return int(value.split()[0]) if value else None


def run_wrk(port: int, duration: int, body_file: Path, request: payload.SignedRequest,
            connections: int = CONNECTIONS, timeout: int | None = None, count_statuses: bool = False) -> WrkResult:
    """wrk on the loader's CPU; ``timeout``: its --timeout in seconds (default 2: an answer slower
    than that is a timeout, its latency not recorded); ``count_statuses``: answers by status."""
    argv = ["taskset", "-c", str(LOADER_CPU), "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
            *(["--timeout", f"{timeout}s"] if timeout else []),
            "--latency", "-s", str(LUA_SCRIPT), f"http://127.0.0.1:{port}/hook"]
    env = {
        **os.environ,
        "WRK_BODY_FILE": str(body_file),
        "WRK_HEADERS": "\n".join(f"{name}: {value}" for name, value in request.headers.items()),
        "WRK_UNIQUE_HEADER": request.unique_header,
        "WRK_DELIVERY_PREFIX": str(uuid.uuid4())[:23],  # a fresh one per run: no id ever repeats
        "WRK_COUNT_STATUSES": "1" if count_statuses else "",
    }
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise ReceiverError(f"wrk did not finish within {duration + 30} s") from None
    if done.returncode != 0:
        output = done.stderr.strip() or done.stdout.strip()
        raise ReceiverError(f"wrk exited with {done.returncode}: {output}")
    return parse_wrk_output(done.stdout)


SOCKET_ERROR_KEYS = ("connect_errors", "read_errors", "write_errors", "timeouts")


def parse_wrk_output(text: str) -> WrkResult:
    """Read the JSON line signed.lua's done() prints; fall back to wrk's own --latency text."""
    match = re.search(r"^WRK_RESULT (\{.*\})$", text, re.MULTILINE)
    if match:
        numbers = json.loads(match.group(1))
        return WrkResult(
            requests=numbers["requests"],
            seconds=numbers["duration_us"] / 1e6,
            non_2xx_3xx=numbers["non_2xx_3xx"],
            socket_errors=sum(numbers[key] for key in SOCKET_ERROR_KEYS),
            p50_ms=numbers["latency_p50_us"] / 1e3,
            p99_ms=numbers["latency_p99_us"] / 1e3,
            statuses=tuple(sorted((int(status), count) for status, count in numbers.get("statuses", {}).items())),
        )
    return parse_wrk_text(text)


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk_text(text: str) -> WrkResult:
    def find(pattern: str) -> re.Match:
        match = re.search(pattern, text, re.MULTILINE)
        if not match:
            raise ReceiverError(f"cannot read wrk's output (no match for {pattern!r}): {text.strip()[-300:]}")
        return match

    def milliseconds(match: re.Match) -> float:
        return float(match.group(1)) * _UNIT_MS[match.group(2)]

    totals = find(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        requests=int(totals.group(1)),
        seconds=float(totals.group(2)) * _UNIT_MS[totals.group(3)] / 1e3,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, socket_errors.groups())) if socket_errors else 0,
        p50_ms=milliseconds(find(r"^\s+50%\s+([\d.]+)(us|ms|s|m|h)\s*$")),
        p99_ms=milliseconds(find(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$")),
    )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the receiver's process group (it may have forked workers), SIGKILL after 10 s."""
    signal_group(process, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    signal_group(process, signal.SIGKILL)  # also ends any worker that outlived its parent
    process.wait()


def signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the group start_new_session gave it: ours alone
    except ProcessLookupError:
        pass


def log_tail(path: Path, lines: int = 12) -> str:
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    return "\n  | " + "\n  | ".join(text.splitlines()[-lines:]) if text else ""


# --- the session -----------------------------------------------------------------------------------

def ensure_tools() -> None:
    if shutil.which("taskset") is None:
        sys.exit("taskset is missing (Debian package util-linux)")
    if not {SERVER_CPU, LOADER_CPU} <= os.sched_getaffinity(0):
        sys.exit(f"this benchmark needs CPUs {SERVER_CPU} and {LOADER_CPU}; "
                 f"available: {sorted(os.sched_getaffinity(0))}")
    if shutil.which("wrk") is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        say("wrk is missing; installing it: apt-get update && apt-get install -y wrk")
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
            if subprocess.run(sudo + command, stdout=sys.stderr).returncode != 0:
                sys.exit(f"could not install wrk ({' '.join(sudo + command)} failed)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [receiver.name for receiver in RECEIVERS] + list(BASELINE_RECEIVERS)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs per receiver; medians are reported (default 1)")
    parser.add_argument("--only", action="append", choices=[*names, SUSTAINED, STEADY], metavar="NAME",
                        help=f"measure only this receiver (repeatable): {', '.join(names)}; "
                             f"or {SUSTAINED}: the sustained run; or {STEADY}: the steady run")
    parser.add_argument("--families", action="store_true",
                        help=f"measure only the verification families ({', '.join(FAMILY_RECEIVERS)}); "
                             "with --only, those as well")
    parser.add_argument("--sustained", action="store_true",
                        help="run the sustained run (fastwebhook-commit, load then drain); alone, only "
                             "it; with --only or --families, after those (the same as --only sustained)")
    parser.add_argument("--sustained-seconds", type=int, default=30,
                        help="seconds of load in the sustained run (default 30)")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="seconds a sustained run's queue may take to drain (default 300)")
    parser.add_argument("--steady", action="store_true",
                        help="run the steady run (bare, the burst, the sustained figures, the floors, then "
                             "the default queue under load that never lets up); alone, only it; with --only, "
                             "--families or --sustained, after those (the same as --only steady)")
    parser.add_argument("--steady-seconds", type=int, default=30,
                        help="seconds of load in each steady row and in the steady run's sustained figures "
                             "(default 30)")
    parser.add_argument("--steady-runs", type=int, default=1,
                        help="runs of each steady row, alternated with its --baseline row; the run of "
                             "median executions/s is reported with the spread (default 1)")
    parser.add_argument("--postgres", default=os.environ.get("FASTWEBHOOK_BENCH_POSTGRES", POSTGRES),
                        help="the PostgreSQL of the steady run's PostgreSQL rows, a fresh schema per row "
                             f"(default $FASTWEBHOOK_BENCH_POSTGRES, else {POSTGRES})")
    parser.add_argument("--baseline", type=Path, metavar="PATH",
                        help="a checkout of an older fastwebhook commit (git worktree add PATH <commit>): "
                             f"adds rows {', '.join(BASELINE_RECEIVERS)}, its code on this checkout's "
                             "configs, measured with the others; with --only, name them")
    parser.add_argument("--port", type=int, default=18080,
                        help="port every receiver listens on (default 18080)")
    args = parser.parse_args(argv)
    if min(args.duration, args.runs, args.sustained_seconds, args.steady_seconds, args.steady_runs) < 1:
        parser.error("--duration, --runs, --sustained-seconds, --steady-seconds and --steady-runs must be at least 1")
    if args.drain_timeout <= 0:
        parser.error("--drain-timeout must be positive")
    if SUSTAINED in (args.only or ()):
        args.only.remove(SUSTAINED)
        args.sustained = True
    if STEADY in (args.only or ()):
        args.only.remove(STEADY)
        args.steady = True
    wanted_baselines = [name for name in BASELINE_RECEIVERS if name in (args.only or ())]
    if args.baseline is None:
        if wanted_baselines:
            parser.error(f"--only {wanted_baselines[0]} needs --baseline PATH (a checkout of the older "
                         "commit to compare with, e.g. made with git worktree add /tmp/before <commit>)")
    else:
        args.baseline = args.baseline.expanduser().resolve()  # the receiver runs in another directory
        if not (args.baseline / "fastwebhook" / "__init__.py").is_file():
            parser.error(f"--baseline {args.baseline}: no fastwebhook/__init__.py there (not a checkout "
                         "of fastwebhook?)")
        if (args.only or args.families or args.sustained) and not wanted_baselines and not args.steady:
            parser.error(f"--baseline with --only, --families or --sustained measures only the rows named: add "
                         f"--only {' --only '.join(BASELINE_RECEIVERS)} (or those wanted), or --steady")
    # A receiver start signs once; the standard schemes' timestamp must outlast start-up,
    # warm-up and the run.
    longest = payload.TIMESTAMP_TOLERANCE - STARTUP_TIMEOUT - WARMUP_SECONDS - 30
    if args.duration > longest and any(receiver.family in ("standard", "ed25519")
                                       for receiver in selected(args)):
        parser.error(f"--duration at most {longest:.0f} s with the standard scheme's rows: their signed "
                     f"timestamp must stay within its {payload.TIMESTAMP_TOLERANCE:.0f} s tolerance")
    return args


def selected(args: argparse.Namespace) -> list[Receiver]:
    """The receivers to measure, in RECEIVERS' order with each --baseline row right after its
    fastwebhook row: all of them unless --only, --families, --sustained or --steady picked some
    (or only the sustained or steady run)."""
    baselines = baseline_receivers(args.baseline) if args.baseline is not None else {}
    receivers = [each for receiver in RECEIVERS
                 for each in (receiver, *([baselines[receiver.name]] if receiver.name in baselines else []))]
    if not args.only and not args.families:
        return [] if args.sustained or args.steady else receivers
    names = set(args.only or ()) | (set(FAMILY_RECEIVERS) if args.families else set())
    return [receiver for receiver in receivers if receiver.name in names]


def sustained_selected(args: argparse.Namespace) -> bool:
    return args.sustained or not (args.only or args.families or args.steady)


def steady_selected(args: argparse.Namespace) -> bool:
    return args.steady or not (args.only or args.families or args.sustained)


def measure_all(receivers: list[Receiver], args: argparse.Namespace) -> list[report.Row]:
    """Every receiver, run after run."""
    results: dict[str, list[WrkResult]] = {receiver.name: [] for receiver in receivers}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="fastwebhook-bench-") as session:
        body_file = Path(session) / "body.json"
        body_file.write_bytes(payload.BODY)
        # Runs go round-robin over the receivers so that drift in the machine hits all alike.
        for run in range(1, args.runs + 1):
            for receiver in receivers:
                if receiver.name in errors:
                    continue  # a receiver that failed once is not retried
                say(f"[run {run}/{args.runs}] {receiver.name}: {WARMUP_SECONDS} s warm-up, "
                    f"{args.duration} s measured ...")
                workdir = Path(tempfile.mkdtemp(prefix=f"{receiver.name}-{run}-", dir=session))
                try:
                    result = measure(receiver, workdir, args.port, args.duration, body_file)
                except ReceiverError as error:
                    errors[receiver.name] = str(error)
                    say(f"  FAILED: {error}")
                    continue
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
                results[receiver.name].append(result)
                say_measured(result)
    rows = [report.Row(receiver.name, receiver.description, results[receiver.name], errors.get(receiver.name))
            for receiver in receivers]
    return rows


def say_measured(result: WrkResult) -> None:
    say(f"  {result.ok_per_second:,.0f} req/s  p50 {result.p50_ms:.2f} ms  "
        f"p99 {result.p99_ms:.2f} ms  non-2xx {result.non_2xx_3xx}  "
        f"socket errors {result.socket_errors}  "
        + (f"duplicates {result.duplicates}  " if result.duplicates is not None else "")
        + (f"rows per commit {result.rows_per_commit:.1f}  " if result.rows_per_commit else "")
        + f"other processes {100 * result.others_cpu_share:.0f} % CPU")
    if result.thread_us:
        say("  CPU per answer: " + ", ".join(f"{name} {us:.1f} us" for name, us in result.thread_us))
    if result.others_cpu_share > report.BUSY_WARNING:
        say("  warning: other processes were busy during this run; its figures are skewed")


def run_sustained(receiver: Receiver, seconds: int, args: argparse.Namespace,
                  connections: int = CONNECTIONS) -> report.Sustained:
    """A sustained run (load, then the drain), once: its result or why it failed."""
    say(f"[{receiver.name}] {receiver.description}: {WARMUP_SECONDS} s warm-up, {seconds} s of load "
        f"from {connections} connections, then the drain (at most {args.drain_timeout:.0f} s) ...")
    with tempfile.TemporaryDirectory(prefix="fastwebhook-bench-") as session:
        body_file = Path(session) / "body.json"
        body_file.write_bytes(payload.BODY)
        try:
            result = measure_sustained(receiver, Path(session), args.port, seconds, args.drain_timeout, body_file,
                                       connections)
        except ReceiverError as error:
            say(f"  FAILED: {error}")
            return report.Sustained(receiver.description, seconds, None, str(error))
    load = result.load
    say(f"  load: {load.ok_per_second:,.0f} req/s acked  p99 {load.p99_ms:.2f} ms  non-2xx {load.non_2xx_3xx}  "
        f"socket errors {load.socket_errors}  duplicates {load.duplicates}  RSS {result.rss_kib / 1024:,.0f} MiB")
    say(f"  drain: {result.drain_seconds:.1f} s; {result.executed:,} executions in {result.seconds:.1f} s = "
        f"{result.per_second:,.0f}/s sustained  peak RSS "
        + (f"{result.peak_rss_kib / 1024:,.0f} MiB" if result.peak_rss_kib else "—")
        + f"  other processes {100 * load.others_cpu_share:.0f} % CPU"
        + (f"  FAILED OR ERROR: {result.failed:,} executions" if result.failed else ""))
    if result.thread_us:
        say("  CPU per execution: " + ", ".join(f"{name} {us:.1f} us" for name, us in result.thread_us))
    return report.Sustained(receiver.description, seconds, result, None)


def run_steady(args: argparse.Namespace, rows: list[report.Row], sustained: report.Sustained | None) -> report.Steady:
    """The steady run, once: bare, the burst, floor-log, the sustained figures and the floors, then each
    steady row, its --baseline row right after it, then bare again (bare-end: the host's drift over
    the run). bare and the sustained run are reused when this session measured them already (the
    latter with the same seconds of load)."""
    checkout, seconds = args.baseline, args.steady_seconds
    ceilings: dict[str, report.Sustained] = {}
    if sustained is not None and sustained.seconds == seconds:
        ceilings[SUSTAINED] = sustained
    with tempfile.TemporaryDirectory(prefix="fastwebhook-bench-") as session:
        body_file = Path(session) / "body.json"
        body_file.write_bytes(payload.BODY)
        bare = next((row for row in rows if row.name == RECEIVERS[0].name and row.measured), None)
        if bare is None:
            bare = measure_row(RECEIVERS[0], args.duration, args.port, body_file, Path(session))
        burst = measure_row(BURST, BURST_SECONDS, args.port, body_file, Path(session))
        # the ack path's floor (HMAC, JSON, one append per group commit, nothing else): what holds
        # the no-node rows, shown beside them
        floor = measure_row(next(r for r in RECEIVERS if r.name == "floor-log"), args.duration, args.port,
                            body_file, Path(session))
        workflow_baseline = [older(checkout, SUSTAINED_WORKFLOW.name, SUSTAINED_WORKFLOW.description, "workflow")
                             ] if checkout else []
        for receiver in (SUSTAINED_RECEIVER, FLOOR_NO_NODES, FLOOR_SPEC, SUSTAINED_WORKFLOW, *workflow_baseline,
                         FLOOR_WORKFLOW):
            if receiver.name not in ceilings:
                ceilings[receiver.name] = run_sustained(receiver, seconds, args)
        # the no-node floors again from as many senders as the rows of 256 (at 64 they wait on
        # their commits more than they work)
        for receiver in (FLOOR_NO_NODES, FLOOR_SPEC):
            name = f"{receiver.name}-{MANY_CONNECTIONS}"
            ceilings[name] = run_sustained(dataclasses.replace(receiver, name=name), seconds, args, MANY_CONNECTIONS)
        steady_rows = []
        for case in STEADY_CASES:
            codes = (None, *([checkout] if checkout else []))
            runs: dict[Path | None, list[report.SteadyRow]] = {code: [] for code in codes}
            for _ in range(args.steady_runs):   # ours and the baseline's alternated: drift hits both
                for code in codes:
                    runs[code].append(measure_steady_row(case, code, args, body_file, Path(session)))
            steady_rows += [median_run(runs[code]) for code in codes]
        # bare once more: the host's speed drifts over a run this long, and the shares move with it
        bare_end = measure_row(dataclasses.replace(RECEIVERS[0], name="bare-end"), args.duration, args.port,
                               body_file, Path(session))
    return report.Steady(seconds, bare, burst, ceilings, steady_rows, floor, bare_end)


def median_run(runs: list[report.SteadyRow]) -> report.SteadyRow:
    """The run of median executions/s (the lower of the two middle ones), carrying every run's
    figure; a row with a failed run is that failure."""
    failed = next((row for row in runs if row.result is None), None)
    if failed is not None:
        return failed
    ranked = sorted(runs, key=lambda row: row.result.per_second)
    return dataclasses.replace(ranked[(len(ranked) - 1) // 2],
                               runs=tuple(row.result.per_second for row in runs))


def measure_row(receiver: Receiver, duration: int, port: int, body_file: Path, session: Path) -> report.Row:
    """One run of a receiver, as a table row."""
    say(f"[{STEADY}] {receiver.name}: {WARMUP_SECONDS} s warm-up, {duration} s measured ...")
    workdir = Path(tempfile.mkdtemp(prefix=f"{receiver.name}-", dir=session))
    try:
        result = measure(receiver, workdir, port, duration, body_file)
    except ReceiverError as error:
        say(f"  FAILED: {error}")
        return report.Row(receiver.name, receiver.description, [], str(error))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say_measured(result)
    return report.Row(receiver.name, receiver.description, [result], None)


def measure_steady_row(case: SteadyCase, checkout: Path | None, args: argparse.Namespace, body_file: Path,
                       session: Path) -> report.SteadyRow:
    """A steady row on this checkout's code, or with ``checkout`` that older one's."""
    name = case.name if checkout is None else f"baseline-{case.name}"
    say(f"[{name}] {case.connections} connections: {WARMUP_SECONDS} s warm-up, {args.steady_seconds} s of load ...")
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=session))
    storage = postgres_schema(args.postgres) if case.postgres else contextlib.nullcontext()
    try:
        with storage as url:
            receiver = case.receiver(url, checkout)
            result = measure_steady(receiver, workdir, args.port, args.steady_seconds, case.connections, body_file,
                                    helper="postgres" if case.postgres else None)
    except ReceiverError as error:
        say(f"  FAILED: {error}")
        return report.SteadyRow(name, case.description, case.connections, None, str(error))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    p99, whose = result.admitted_p99
    if p99 is None:
        admitted = "—"
    elif whose == "wrk":
        admitted = f"{p99:.2f} ms"
    else:
        admitted = f"≤ {p99:g} ms (the server's histogram, all answers)"
    say(f"  {result.per_second:,.0f} executions/s resolved  {result.accepted_per_second:,.0f} 2xx/s  "
        f"{result.refused_per_second:,.0f} 503/s  p99 admitted {admitted}"
        f"  RSS {result.rss_kib / 1024:,.0f} MiB  other processes {100 * result.load.others_cpu_share:.0f} % CPU"
        + (f"  FAILED OR ERROR: {result.failed:,} executions" if result.failed else ""))
    if result.thread_us:
        say("  CPU per execution: " + ", ".join(f"{thread} {us:.1f} us" for thread, us in result.thread_us)
            + (f"; postgres {result.helper_us:.1f} us" if result.helper_us is not None else ""))
    return report.SteadyRow(name, receiver.description, case.connections, result, None)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_tools()
    receivers = selected(args)
    rows = measure_all(receivers, args) if receivers else []
    sustained = run_sustained(SUSTAINED_RECEIVER, args.sustained_seconds, args) if sustained_selected(args) else None
    steady = run_steady(args, rows, sustained) if steady_selected(args) else None
    settings = report.Settings(args.duration, args.runs, CONNECTIONS, SERVER_CPU, LOADER_CPU)
    if rows or sustained:
        print(report.terminal(rows, settings, sustained))
        path = report.write_markdown(rows, settings, BENCH_DIR / "results" / "latest.md", sustained)
        say(f"\nwritten to {path}")
    if steady:
        print(report.steady_terminal(steady))
        path = report.write_steady_markdown(steady, settings, BENCH_DIR / "results" / "steady.md")
        say(f"\nwritten to {path}")
    failed = any(row.error for row in rows) or (sustained and sustained.error) or (steady and steady.failed)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the receiver and wrk are already stopped by then
        sys.exit(130)
