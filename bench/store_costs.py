"""What one durable delivery costs SQLite, piece by piece, through the real Store (run by `make bench`).

The acknowledging write (`append`: one blob row per group commit, WAL, synchronous=FULL) and the
work the claim does later in batches (an execution row and a dedup key in the unique index per
delivery, committed with NORMAL), with a dedup index pre-filled as a server that has run for a
while has it.  Prints wall, user and system time per delivery for each piece.  Usage:
    .venv/bin/python bench/store_costs.py [--batch 64] [--batches 500] [--claim 1024] [--prefill 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastwebhook.core.ids import new_id  # noqa: E402
from fastwebhook.store.rows import Delivery, StoredRequest  # noqa: E402
from fastwebhook.store.sqlite import SqliteStore  # noqa: E402
from fastwebhook.store.sqlite_connector import SqliteConnector  # noqa: E402

BODY = b"x" * 1160
HEADERS = [("host", "127.0.0.1"), ("content-type", "application/json"), ("x-github-event", "push"),
           ("x-github-delivery", "0f1e2d3c"), ("x-hub-signature-256", "[redacted]")]


def deliveries(count: int, keyed: bool) -> list[Delivery]:
    now = time.time()
    return [Delivery(new_id(), "bench", "v1", StoredRequest("POST", "/hook", "", HEADERS, {}, "127.0.0.1", now, "r"),
                     BODY, random.getrandbits(63) if keyed else None, None, now + 86400) for _ in range(count)]


class Stopwatch:
    def __init__(self):
        self.wall = self.user = self.system = 0.0

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), os.times()
        return self

    def __exit__(self, *exc):
        end = os.times()
        self.wall += time.perf_counter() - self._wall
        self.user += end.user - self._cpu.user
        self.system += end.system - self._cpu.system

    def line(self, label: str, count: int) -> str:
        return (f"{label:44s} {self.wall / count * 1e6:6.1f} us/delivery  "
                f"(user {self.user / count * 1e6:5.1f}, system {self.system / count * 1e6:5.1f})")


async def measure(folder: Path, label: str, args, keyed: bool) -> None:
    store = SqliteStore(SqliteConnector(str(folder / f"{label}.db")))
    await store.open()
    if args.prefill:  # a dedup index that has seen traffic: random keys all over the B-tree
        async with store.db.transaction() as db:
            await db.executemany("INSERT OR REPLACE INTO dedup (hash, execution, expires_at) VALUES (?, ?, ?)",
                                 [(random.getrandbits(63), new_id(), 1e12) for _ in range(args.prefill)])
    appending, claiming = Stopwatch(), Stopwatch()
    count = args.batch * args.batches
    for _ in range(args.batches):
        batch = deliveries(args.batch, keyed)
        with appending:
            await store.append(batch)
    now = time.time()
    while True:
        with claiming:
            claim = await store.claim("bench", now, now + 30, args.claim, lambda seq: None, lambda w: True)
        if not claim.resolved and not claim.duplicates:
            break
    print(appending.line(f"{label}: append (batches of {args.batch}, FULL)", count))
    print(claiming.line(f"{label}: claim (batches of {args.claim}, NORMAL)", count))
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="deliveries per group commit (64 connections)")
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--claim", type=int, default=1024, help="deliveries per claim (the idle claim size)")
    parser.add_argument("--prefill", type=int, default=100_000, help="dedup keys already in the index")
    args = parser.parse_args()

    async def run() -> None:
        with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as folder:
            await measure(Path(folder), "with dedup keys", args, keyed=True)
            await measure(Path(folder), "without dedup keys", args, keyed=False)

    asyncio.run(run())


if __name__ == "__main__":
    main()
