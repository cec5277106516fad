"""The admin reads over a store (store/reads.py), on real SQLite and real PostgreSQL: a bulk
replay's candidates read through the index its filter names, each stored request decoded only
when wanted; a scan of the stored requests lets the event loop run every few bodies, however big
the intake's batches are."""

from __future__ import annotations

import asyncio
import time
from itertools import groupby
from urllib.parse import parse_qs, urlparse

from fastwebhook.admin.finding import carried, matcher
from fastwebhook.store import batch_codec
from fastwebhook.store.reads import SCAN_STEP_BYTES, SCAN_STEP_DELIVERIES, Reads
from fastwebhook.store.rows import Delivery, Final, Records, Status, StoredRequest
import store_support
from store_support import none_in_memory, run, runs_something

url = store_support.url   # the fixture: a SQLite file, or a fresh PostgreSQL schema

FIRST, LAST = bytes(16), b"\xff" * 16


def delivery(n: int, workflow: str = "hook", body: bytes | None = None) -> Delivery:
    request = StoredRequest("POST", "/hook", "", [("content-type", "application/json")], {}, "127.0.0.1",
                            time.time(), f"req-{n}")
    return Delivery(n.to_bytes(16, "big"), workflow, "v1", request,
                    body if body is not None else b'{"n": %d}' % n, None, None, 0.0)


def number(id_: bytes) -> int:
    return int.from_bytes(id_, "big")


def test_a_batch_decodes_only_the_deliveries_asked_for():
    blob = batch_codec.encode([delivery(n) for n in range(1, 6)])
    assert [number(d.id) for d in batch_codec.decode(blob)] == [1, 2, 3, 4, 5]
    assert [number(d.id) for d in batch_codec.decode(blob, only=3)] == [4]
    assert [(number(d.id), d.body) for d in batch_codec.decode(blob, only={4, 0, 9})] == [(1, b'{"n": 1}'), (5, b'{"n": 5}')]
    assert [(index, number(d.id)) for index, d in batch_codec.newest_first(blob)] == \
        [(4, 5), (3, 4), (2, 3), (1, 2), (0, 1)]
    assert [number(d.id) for _, d in batch_codec.newest_first(blob, below=2)] == [2, 1]


def test_replay_candidates_of_a_workflow_or_of_all_and_their_requests(url):
    async def scenario(store):
        now = time.time()
        await store.append([delivery(n, "a" if n % 2 else "b") for n in range(1, 7)])
        await store.append([delivery(n, "a") for n in (7, 8)])
        await store.claim("me", now, now + 30, 100, none_in_memory, runs_something)
        records = Records()
        for n in range(1, 9):
            id_ = n.to_bytes(16, "big")
            records.finals[id_] = Final(id_, Status.FAILED if n != 3 else Status.RESOLVED, now, now, None)
        await store.record(records)
        reads = Reads(store)
        of_a = await reads.replay_candidates("a", (Status.FAILED,), FIRST, LAST, 10)
        assert [(number(id_), d.body) for id_, d in of_a] == [(1, b'{"n": 1}'), (5, b'{"n": 5}'), (7, b'{"n": 7}'),
                                                             (8, b'{"n": 8}')]
        every = await reads.replay_candidates(None, (Status.FAILED, Status.RESOLVED), (2).to_bytes(16, "big"), LAST, 5)
        assert [number(id_) for id_, d in every] == [2, 3, 4, 5, 6]
        assert all(d is not None and d.id == id_ for id_, d in every)
        assert await reads.replay_candidates("b", (Status.RESOLVED,), FIRST, LAST, 10) == []

    run(url, scenario)


def test_replay_candidates_read_the_index_their_filter_names(url):
    """A named workflow is a range of executions_by_workflow, no name one of the primary key."""
    async def scenario(store):
        statuses = (Status.FAILED,)
        if store.db.dialect == "sqlite":
            async def plan(block: str, *params) -> str:
                rows = await store.db.read_alone("EXPLAIN QUERY PLAN " + store.sql[block], params)
                return " ".join(str(row[-1]) for row in rows)
            wanted = '["failed"]'
        else:
            import asyncpg  # noqa: PLC0415
            schema = parse_qs(urlparse(url).query)["schema"][0]
            connection = await asyncpg.connect(store_support.POSTGRES, server_settings={"search_path": schema})
            await connection.execute("SET enable_seqscan = off")   # an empty table: show the index it can use

            async def plan(block: str, *params) -> str:
                return " ".join(row[0] for row in await connection.fetch("EXPLAIN " + store.sql[block], *params))
            wanted = [s.value for s in statuses]
        try:
            named = await plan("replay_candidates_of_workflow", "a", wanted, FIRST, LAST, 10)
            every = await plan("replay_candidates", wanted, FIRST, LAST, 10)
        finally:
            if store.db.dialect != "sqlite":
                await connection.close()
        assert "executions_by_workflow" in named, named
        assert "executions_by_workflow" not in every and ("PRIMARY KEY" in every or "executions_pkey" in every), every
        assert await store.replay_candidates("a", statuses, FIRST, LAST, 10) == []

    run(url, scenario)


def test_a_scan_lets_the_loop_run_every_few_bodies_however_big_the_batch(url):
    big = b'{"n": 0, "pad": "%s"}' % (b"x" * 40_000)
    async def scenario(store):
        await store.append([delivery(n, body=big) for n in range(1, 101)])       # one batch of 4 MB
        await store.append([delivery(n) for n in range(101, 1101)])             # one of 1000 small bodies
        turns, done = 0, False

        async def other_work():   # what else the loop has to do: a webhook, say
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)
        inner = matcher(carried({"data.n": "-1"}))
        given: list[tuple[int, int]] = []   # (the loop's turn, the body's size) for each delivery matched

        def matches(d: Delivery) -> bool:
            given.append((turns, len(d.body)))
            return inner(d)
        other = asyncio.ensure_future(other_work())
        try:
            found, next_id = await Reads(store).scan_executions(matches, None, None, 10, None, 5_000)
        finally:
            done = True
            await other
        assert (found, next_id, len(given)) == ([], None, 1100)
        for _, step in groupby(given, key=lambda pair: pair[0]):
            sizes = [size for _, size in step]
            assert len(sizes) <= SCAN_STEP_DELIVERIES
            assert sum(sizes) - max(sizes) < SCAN_STEP_BYTES

    run(url, scenario)


def test_a_search_pages_through_batches_whose_ids_interleave_and_misses_none(url):
    """Two processes commit batches whose ids interleave (the one committed first holds the
    newest id): a search that stops mid-way goes on at the position it stopped, not at an id,
    so every stored request is read once over the pages."""
    async def scenario(store):
        await store.append([delivery(n) for n in (10, 11, 30)])   # committed first, newest id last
        await store.append([delivery(n) for n in (20, 21)])
        def everything(d: Delivery) -> bool:
            return True
        seen, resume = [], None
        for _ in range(5):   # two stored requests read a page
            found, resume = await Reads(store).scan_executions(everything, None, None, 10, None, 2, resume)
            seen += [number(record.id) for record in found]
            if resume is None:
                break
        assert sorted(seen) == [10, 11, 20, 21, 30] and len(seen) == 5
        bounded, resume = [], None   # ... and an id bound holds on every page, not the first alone
        for _ in range(5):
            found, resume = await Reads(store).scan_executions(everything, None, None, 10, (25).to_bytes(16, "big"),
                                                               1, resume)
            bounded += [number(record.id) for record in found]
            if resume is None:
                break
        assert sorted(bounded) == [10, 11, 20, 21]

    run(url, scenario)
