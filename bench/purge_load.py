"""Ingest while the retention purge runs (issue 9), on the two-core machine as bench/load.py
measures: the server pinned to CPU 0, wrk (`-t1 -c64`, signed GitHub pushes) on CPU 1.

The store is prefilled with --expired finished executions ten days old, straight into
fastwebhook's schema: each with a job, its dedup key expired, its intake batch claimed.  Then
bench/fastwebhook-purge.toml (7-day retention) serves it: ingest is measured once before the
purge, which starts a minute after the server (fastwebhook.maintenance.PURGE_FIRST), and once over
a run that the purge falls in; the server's log says when it ran and what it removed.

    .venv/bin/python bench/purge_load.py [--expired 300000] [--seconds 10]

The table goes to stdout and bench/results/purge.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import orjson

import payload
from fastwebhook.service.maintenance import PURGE_FIRST
from fastwebhook.store.sqlite import SqliteStore
from fastwebhook.store.sqlite_connector import SqliteConnector
from load import BENCH_DIR, Receiver, fastwebhook, run_wrk, running, say

PURGE = Receiver("purge", "fastwebhook-commit, 7-day retention, a store full of expired executions",
                 fastwebhook("purge"), verifies=True, metrics=True)
DAY = 86400.0
BATCH = 256   # deliveries per intake row, as the group commit makes them under load


def prefill(db: Path, count: int) -> None:
    async def schema() -> None:
        store = SqliteStore(SqliteConnector(str(db)))
        await store.open()
        await store.close()

    asyncio.run(schema())
    old = time.time() - 10 * DAY
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        for start in range(0, count, BATCH):
            seq = start // BATCH + 1
            ids = [((int((old + (start + i) * 0.001) * 1000) << 80) | (0x7000 << 64) | (2 << 62) | (start + i))
                   .to_bytes(16, "big") for i in range(min(BATCH, count - start))]
            at = old + start * 0.001
            conn.execute("INSERT INTO intake (seq, first_id, last_id, first_at, count, deliveries) VALUES (?, ?, ?, ?, ?, ?)",
                         (seq, ids[0], ids[-1], at, len(ids), b"\0" * 4))
            conn.executemany(
                "INSERT INTO executions (id, workflow, version, status, dedup_key, created_at, started_at, finished_at, "
                "attempts, intake_seq, intake_index) VALUES (?, 'bench', 'v', 'resolved', ?, ?, ?, ?, 1, ?, ?)",
                [(eid, f"d-{start + i}", at, at, at, seq, i) for i, eid in enumerate(ids)])
            conn.executemany("INSERT INTO jobs (execution, position, node, type, status, result, duration_ms) "
                             "VALUES (?, 0, 'n', 'condition', 'resolved', X'74727565', 0.1)", [(eid,) for eid in ids])
            conn.executemany("INSERT OR IGNORE INTO dedup (hash, execution, expires_at) VALUES (?, ?, ?)",
                             [(int.from_bytes(os.urandom(8), "big", signed=True), eid, at + DAY) for eid in ids])
        conn.execute("UPDATE claims SET claimed_seq = ?, partial = 0 WHERE id = 1", ((count + BATCH - 1) // BATCH,))


def log_entries(path: Path) -> list[dict]:
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return entries


def when(entry: dict) -> float:
    return datetime.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expired", type=int, default=300_000, help="expired executions in the store")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of the run before the purge")
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fastwebhook-purge-") as session:
        workdir = Path(session)
        body_file = workdir / "body.json"
        body_file.write_bytes(payload.BODY)
        say(f"[purge] prefilling {args.expired:,} expired executions ...")
        prefill(workdir / "bench.db", args.expired)
        with running(PURGE, workdir, args.port, body_file) as (process, request):
            log = workdir / "receiver.log"
            ready = next(when(e) for e in log_entries(log) if e.get("msg") == "ready")
            before = run_wrk(args.port, args.seconds, body_file, request)
            time.sleep(max(0.0, ready + PURGE_FIRST - 3 - time.time()))
            window_start = time.time()
            purged = None
            runs = []
            while purged is None and time.time() < window_start + 600:
                runs.append((time.time(), run_wrk(args.port, 5, body_file, request), time.time()))
                purged = next((e for e in log_entries(log) if e.get("msg") == "purged what is older than the retention"),
                              None)
            if purged is None:
                say("  FAILED: no purge within 10 minutes")
                return 1
            purge_end = when(purged)
            purge_start = purge_end - purged["seconds"]
            during = [wrk for start, wrk, end in runs if start < purge_end and end > purge_start]
    worst = max(during, key=lambda wrk: wrk.p99_ms)
    lines = [f"# Ingest during the retention purge ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"Server pinned to CPU 0, wrk -t1 -c64 on the other; signed 1160-byte GitHub pushes. The store held "
             f"{args.expired:,} executions ten days old; the purge removed {purged['executions']:,} executions "
             f"({purged['rows']:,} rows) in {purged['seconds']:.1f} s.", "",
             "| ingest | req/s | p50 ms | p99 ms |", "|---|--:|--:|--:|",
             f"| before the purge ({args.seconds} s) | {before.ok_per_second:,.0f} | {before.p50_ms:.2f} | {before.p99_ms:.2f} |"]
    lines += [f"| during the purge, 5 s run {i + 1} | {wrk.ok_per_second:,.0f} | {wrk.p50_ms:.2f} | {wrk.p99_ms:.2f} |"
              for i, wrk in enumerate(during)]
    lines += ["", f"Worst p99 during the purge / p99 before it: {worst.p99_ms / before.p99_ms:.2f}x."]
    text = "\n".join(lines) + "\n"
    print(text)
    (BENCH_DIR / "results" / "purge.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
