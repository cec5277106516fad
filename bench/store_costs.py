"""What one durable execution costs SQLite, piece by piece (run by `make bench`).

Writes batches shaped like the intake's (an execution row, its dedup row, its request-log row,
and the previous batch's final-status updates) into a WAL file with synchronous=FULL, with a
dedup table pre-filled as a server that has run for a while has it, then leaves one piece out
at a time.  Prints wall, user and system time per execution.  Usage:
    .venv/bin/python bench/store_costs.py [--batch 27] [--batches 1500] [--prefill 100000]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastwebhook.ids import new_id  # noqa: E402
from fastwebhook.store.sql import queries  # noqa: E402

SQL = queries("sqlite")
BODY = b"x" * 1160
REQUEST = (b'{"method":"POST","path":"/hook","headers":{"content-type":"application/json",'
           b'"x-github-delivery":"0f1e2d3c"},"query":{},"params":{},"ip":"127.0.0.1"}')


def measure(label: str, folder: Path, batch: int, batches: int, prefill: int, *, dedup=True,
            request_log=True, finish=True) -> None:
    path = folder / f"{label.replace(' ', '-')}.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SQL["schema"])
    db.execute("BEGIN")
    db.executemany(SQL["upsert_dedup"], [(random.getrandbits(63), new_id(), 1e12) for _ in range(prefill)])
    db.execute("COMMIT")
    previous: list[bytes] = []
    wall, cpu = time.perf_counter(), os.times()
    for _ in range(batches):
        now = time.time()
        ids = [new_id() for _ in range(batch)]
        db.execute("BEGIN IMMEDIATE")
        db.executemany(SQL["insert_execution"],
                       [(i, "bench", "v1", None, now, "owner", now + 30, REQUEST, BODY) for i in ids])
        if dedup:
            db.executemany(SQL["upsert_dedup"], [(random.getrandbits(63), i, now + 86400) for i in ids])
        if request_log:
            db.executemany(SQL["insert_request"], [
                (now, "127.0.0.1", "POST", "/hook", "bench", 202, None, 1160, 0.1, "r", i) for i in ids])
        if finish and previous:
            db.executemany(SQL["mark_finished"], [("resolved", now, now, None, i) for i in previous])
        db.execute("COMMIT")
        previous = ids
    wall, end = time.perf_counter() - wall, os.times()
    count = batch * batches
    print(f"{label:28s} {wall / count * 1e6:6.1f} us/execution  "
          f"(user {(end.user - cpu.user) / count * 1e6:5.1f}, system {(end.system - cpu.system) / count * 1e6:5.1f})")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=27, help="executions per commit (the load bench sees ~27)")
    parser.add_argument("--batches", type=int, default=1500)
    parser.add_argument("--prefill", type=int, default=100_000, help="dedup rows already there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as folder:
        run = lambda label, **kw: measure(label, Path(folder), args.batch, args.batches, args.prefill, **kw)  # noqa: E731
        run("everything")
        run("without dedup row", dedup=False)
        run("without request-log row", request_log=False)
        run("without final-status update", finish=False)
        run("execution row only", dedup=False, request_log=False, finish=False)


if __name__ == "__main__":
    main()
