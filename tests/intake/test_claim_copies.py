"""The intake's window and claim copies (intake.py), over a real store: past the window of
committed batches, copies of those whose workflows all run nothing, counted through whole and
partial claims; a batch with work in it is never copied.  Large bodies make smaller batches and
a window of fewer deliveries: both are bounded in bytes too."""

from __future__ import annotations

import asyncio
import time

from fastwebhook.config.model import StorageConfig
from fastwebhook.intake import intake as intake_module
from fastwebhook.intake.intake import WINDOW, Intake
from fastwebhook.observe.metrics import Metrics
from fastwebhook.store import open_store
from fastwebhook.store.rows import ClaimCopies, Delivery, StoredRequest, body_bytes
from fastwebhook.store.sqlite import SqliteStore
from fastwebhook.store.sqlite_connector import SqliteConnector
import store_support
from store_support import none_in_memory

url = store_support.url   # the fixture: a SQLite file, or a fresh PostgreSQL schema


def delivery(n: int, workflow: str, size: int = 0) -> Delivery:
    request = StoredRequest("POST", "/hook", "", [("content-type", "application/json")], {}, "127.0.0.1",
                            time.time(), f"req-{n}")
    body = b'{"n": %d}' % n
    return Delivery(n.to_bytes(16, "big"), workflow, "v1", request, body.ljust(size) if size else body,
                    None, None, 0.0)


def test_copies_are_kept_past_the_window_only_for_batches_that_run_nothing(tmp_path):
    async def main():
        store = SqliteStore(SqliteConnector(str(tmp_path / "store.db")))
        await store.open()
        intake = Intake(store, Metrics(), 100_000, True)
        intake.runs_nothing = lambda workflow: workflow == "quiet"
        writer = asyncio.create_task(intake.run())
        answered: list = []
        try:
            async def offer(numbers, workflow):   # one batch each: the writer takes what waits
                for n in numbers:
                    assert intake.offer(delivery(n, workflow), answered.append) is None
                await intake.drain()

            for start in range(0, WINDOW, 512):
                await offer(range(start, start + 512), "quiet")    # the window, full
            await offer(range(10_000, 10_300), "quiet")            # past it: copies
            await offer(range(20_000, 20_010), "busy")             # work in it: read back later
            await offer([30_000, 30_001], "quiet")                 # copies again
            assert intake.window_size == WINDOW and len(answered) == WINDOW + 312
            assert intake.copies_size == 302 and all(isinstance(c, ClaimCopies) for c in intake.copies.values())
            assert all(d.body == b"" and d.request.headers == [] for c in intake.copies.values() for d in c)

            claimed = 0
            while claimed < WINDOW + 312:   # claims of 700: whole batches and parts of them
                now = time.time()
                claim = await store.claim("me", now, now + 30, 700, intake.in_window, intake.runs_nothing)
                intake.claimed(claim.finished, claim.partial)
                claimed += len(claim.run) + len(claim.resolved)
                assert [int.from_bytes(d.id, "big") // 10_000 for d in claim.run] in ([], [2] * 10)
                assert all(d.body for d in claim.run)   # the busy batch came back whole from the store
            assert (intake.window, intake.window_size, intake.copies, intake.copies_size) == ({}, 0, {}, 0)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await store.close()

    asyncio.run(main())


def test_what_another_process_claimed_leaves_this_ones_memory(url):
    """With worker processes or hosts, others claim most of a process's batches: its next claim
    learns that everything below some seq is claimed, and its window and copies let them go."""
    async def main():
        mine, theirs = (open_store(StorageConfig(url=url), shared=True) for _ in range(2))
        await mine.open()
        await theirs.open()
        intake = Intake(mine, Metrics(), 100_000, True)
        intake.runs_nothing = lambda workflow: True
        writer = asyncio.create_task(intake.run())
        try:
            for start in range(0, WINDOW + 400, 400):   # the window and some copies
                for n in range(start, start + 400):
                    intake.offer(delivery(n, "quiet"), lambda outcome: None)
                await intake.drain()
            assert intake.window and intake.copies
            now = time.time()
            while (await theirs.claim("them", now, now + 30, 1000, none_in_memory, runs_nothing)).resolved:
                pass   # another process took them all
            claim = await mine.claim("me", now, now + 30, 1000, intake.in_window, intake.runs_nothing)
            assert (claim.run, claim.resolved) == ([], [])
            intake.claimed(claim.finished, claim.partial, claim.done_below)
            # (PostgreSQL learns it from the oldest batch still unclaimed: one more comes first)
            if claim.done_below is None:
                await mine.append([delivery(99_999, "quiet")])
                claim = await mine.claim("me", now, now + 30, 1000, intake.in_window, intake.runs_nothing)
                intake.claimed(claim.finished, claim.partial, claim.done_below)
            assert (intake.window, intake.window_size, intake.copies, intake.copies_size) == ({}, 0, {}, 0)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await mine.close()
            await theirs.close()

    asyncio.run(main())


def runs_nothing(workflow: str) -> bool:
    return True


def test_large_bodies_make_smaller_batches_and_a_window_bounded_in_bytes(url, monkeypatch):
    """An append takes bodies up to MAX_BATCH_BYTES (one at least, however large), and the
    window keeps batches while their bodies fit WINDOW_BYTES: the claim reads the rest back."""
    monkeypatch.setattr(intake_module, "MAX_BATCH_BYTES", 10_000)
    monkeypatch.setattr(intake_module, "WINDOW_BYTES", 25_000)

    async def main():
        store = open_store(StorageConfig(url=url))
        await store.open()
        intake = Intake(store, Metrics(), 100_000, True)
        writer = asyncio.create_task(intake.run())
        answered: list = []
        try:
            for n in range(12):   # all open before the writer runs: it cuts them into batches
                assert intake.offer(delivery(n, "busy", 4_000), answered.append) is None
            assert intake.offer(delivery(12, "busy", 15_000), answered.append) is None   # alone
            await intake.drain()
            assert len(answered) == 13
            assert [count for (count,) in await store.db.fetch("SELECT count FROM intake ORDER BY seq")] \
                == [2, 2, 2, 2, 2, 2, 1]
            assert intake.window_size == 6 and intake.window_bytes == 24_000   # a fourth batch: 32,000
            assert all(body_bytes(batch) == 8_000 for batch in intake.window.values())

            run = []
            while len(run) < 13:
                now = time.time()
                claim = await store.claim("me", now, now + 30, 5, intake.in_window, intake.runs_nothing)
                intake.claimed(claim.finished, claim.partial, claim.done_below)
                assert claim.run, "the claim found nothing"
                run += claim.run
            assert [int.from_bytes(d.id, "big") for d in run] == list(range(13))
            assert [len(d.body) for d in run] == [4_000] * 12 + [15_000]   # read back whole
            assert (intake.window, intake.window_size, intake.window_bytes) == ({}, 0, 0)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await store.close()

    asyncio.run(main())
