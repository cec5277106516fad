"""The store's contract, the same tests on real SQLite and on real PostgreSQL (issue 10): the
append, claims (two stores side by side, as two hosts), dedup within and across claims, leases
that lapse, records, reads, stored workflows and the purge.

PostgreSQL: $FASTWEBHOOK_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test), each
test in a schema of its own, dropped after.  Without a server the PostgreSQL cases skip, unless
$FASTWEBHOOK_REQUIRE_POSTGRES is set (CI sets it): then they fail.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fastwebhook.config.model import StorageConfig
from fastwebhook.core.errors import ConstraintError, StoreError
from fastwebhook.store import StatementTimeout, open_store
from fastwebhook.store.rows import ClaimCopies, Delivery, Effect, Final, Job, Records, RequestLine, Status, StoredRequest
from fastwebhook.store.reads import Reads
from fastwebhook.workflow.collections import Collection
import store_support
from store_support import ids, none_in_memory, run, runs_something
from wait_support import wait_for_async

url = store_support.url   # the fixture: a SQLite file, or a fresh PostgreSQL schema
postgres_url = store_support.postgres_url


def delivery(n: int, *, dedup: int | None = None, dedup_expires: float = 0.0, at: float | None = None,
             workflow: str = "hook") -> Delivery:
    received = (at if at is not None else time.time()) + n / 1000
    request = StoredRequest("POST", "/hook", "", [("content-type", "application/json")], {}, "127.0.0.1",
                            received, f"req-{n}")
    return Delivery(n.to_bytes(16, "big"), workflow, "v1", request, b'{"n": %d}' % n, dedup,
                    None if dedup is None else f"key-{dedup}", dedup_expires)


def test_an_append_is_listed_queued_and_a_claim_takes_it_once(url):
    async def scenario(store):
        now = time.time()
        await store.append([delivery(n) for n in (1, 2, 3)])
        assert await store.unfinished() == 3
        listed = await Reads(store).list_executions(None, None, 10, None)
        assert ids(listed) == [3, 2, 1] and {r.status for r in listed} == {Status.QUEUED}
        found = await Reads(store).get_execution((2).to_bytes(16, "big"))
        assert found.status == Status.QUEUED and found.request.request_id == "req-2" and found.body == b'{"n": 2}'
        claim = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        assert ids(claim.run) == [1, 2, 3] and len(claim.finished) == 1
        again = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        assert (again.run, again.resolved, again.duplicates) == ([], [], [])
        assert ids(await Reads(store).list_executions(None, None, 10, None)) == [3, 2, 1]
        assert await store.unfinished() == 3
        assert await store.pending_owners() == ["me"]

    run(url, scenario)


def test_a_claim_takes_no_more_bodies_to_run_than_its_byte_budget_but_one_at_least(url):
    """SQLite cuts a batch by its bodies; PostgreSQL takes batches whole, counted by their blobs."""
    def big(n: int) -> Delivery:
        d = delivery(n)
        d.body = d.body.ljust(4_000)
        return d

    async def scenario(store):
        now = time.time()
        for first in (1, 3, 5, 7):
            await store.append([big(first), big(first + 1)])   # batches of 2 bodies of 4,000 bytes
        sqlite = store.db.dialect == "sqlite"
        claim = await store.claim("me", now, now + 30, 100, none_in_memory, runs_something, max_bytes=10_000)
        assert ids(claim.run) == [1, 2]   # 3 bodies (SQLite), 2 blobs (PostgreSQL): past the budget
        claim = await store.claim("me", now, now + 30, 100, none_in_memory, runs_something, max_bytes=100)
        assert ids(claim.run) == ([3] if sqlite else [3, 4]), "one at least, however large"
        claim = await store.claim("me", now, now + 30, 100, none_in_memory, runs_something)
        assert ids(claim.run) == ([4, 5, 6, 7, 8] if sqlite else [5, 6, 7, 8]), "no budget: the limit alone"
        assert all(len(d.body) == 4_000 for d in claim.run)

    run(url, scenario)


def test_a_byte_budget_leaves_deliveries_that_run_nothing_whole_on_sqlite(tmp_path):
    """Resolved in the claim, their bodies are let go at once: they spend none of it."""
    async def scenario(store):
        now = time.time()
        batch = [delivery(n) for n in range(1, 7)]
        for d in batch:
            d.body = d.body.ljust(4_000)
        await store.append(batch)
        claim = await store.claim("me", now, now + 30, 100, none_in_memory, lambda workflow: True, max_bytes=100)
        assert ids(claim.resolved) == [1, 2, 3, 4, 5, 6] and claim.run == []

    run(f"sqlite:///{tmp_path / 'store.db'}", scenario)


def test_dedup_keys_are_taken_once_within_a_claim_and_against_live_and_expired_keys(url):
    async def scenario(store):
        now = 5000.0   # the dedup expiry times are the hosts' (received + ttl): the claim's clock
        await store.append([delivery(1, dedup=7, dedup_expires=now + 100), delivery(2, dedup=7, dedup_expires=now + 100),
                            delivery(3, dedup=8, dedup_expires=now + 10)])
        claim = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        assert ids(claim.run) == [1, 3]
        assert [(int.from_bytes(d.id, "big"), original) for d, original in claim.duplicates] == \
            [(2, (1).to_bytes(16, "big"))]
        duplicate = await Reads(store).get_execution((2).to_bytes(16, "big"))
        assert duplicate.status == Status.DUPLICATE and duplicate.duplicate_of == (1).to_bytes(16, "big")
        await store.append([delivery(4, dedup=7, dedup_expires=now + 150), delivery(5, dedup=8, dedup_expires=now + 150)])
        later = await store.claim("me", now + 50, now + 80, 10, none_in_memory, runs_something)
        assert ids(later.run) == [5] and ids(d for d, _ in later.duplicates) == [4]
        assert await store.held_keys([7, 8, 9], now + 60) == {7: (1).to_bytes(16, "big"), 8: (5).to_bytes(16, "big")}
        # the append of a batch whose keys another host may have taken: nothing, while one is held
        before = await store.unfinished()
        assert await store.append_unless_held([delivery(6, dedup=9), delivery(7, dedup=8)], [8, 9], now + 60) == \
            (None, {8: (5).to_bytes(16, "big")})
        assert await store.unfinished() == before
        seq, held = await store.append_unless_held([delivery(6, dedup=9)], [9], now + 60)
        assert seq is not None and held == {} and await store.unfinished() == before + 1

    run(url, scenario)


def test_claim_copies_resolve_what_runs_nothing_and_a_batch_with_work_is_read_back_whole(url):
    """The intake keeps claim copies (no headers, no body) of batches whose workflows run nothing;
    a claim resolves those from memory, but one that finds work among them (a reload gave the
    workflow nodes) runs it on the stored request, read back."""
    async def scenario(store):
        now = time.time()
        first, second = [delivery(n, dedup=n, dedup_expires=now + 600) for n in (1, 2, 3)], \
            [delivery(n, dedup=n, dedup_expires=now + 600) for n in (4, 5)]
        held = {await store.append(first): ClaimCopies(d.claim_copy() for d in first),
                await store.append(second): ClaimCopies(d.claim_copy() for d in second)}
        assert all(not d.body and not d.request.headers for copies in held.values() for d in copies)
        resolved = await store.claim("me", now, now + 30, 3, held.get, lambda workflow: True)
        assert ids(resolved.resolved) == [1, 2, 3] and (resolved.run, resolved.duplicates) == ([], [])
        assert {r.status for r in await Reads(store).list_executions(None, None, 10, None)
                if int.from_bytes(r.id, "big") <= 3} == {Status.RESOLVED}
        ran = await store.claim("me", now, now + 30, 10, held.get, runs_something)
        assert ids(ran.run) == [4, 5] and ran.resolved == []
        assert [(d.body, d.request.headers, d.request.request_id) for d in ran.run] == \
            [(b'{"n": %d}' % n, [("content-type", "application/json")], f"req-{n}") for n in (4, 5)]

    run(url, scenario)


def test_two_hosts_claiming_side_by_side_take_each_delivery_once_and_each_key_once(url):
    async def scenario(one, two):
        now = time.time()
        expected = []
        for batch in range(40):
            batch_deliveries = [delivery(batch * 10 + i, dedup=(batch * 10 + i) % 37, dedup_expires=now + 600)
                                for i in range(10)]
            expected += batch_deliveries
            await (one if batch % 2 else two).append(batch_deliveries)
        taken: dict[str, list] = {"one": [], "two": []}

        async def claim_once(name, store):
            claim = await store.claim(name, now, now + 30, 32, none_in_memory, runs_something)
            taken[name] += [(d, "run") for d in claim.run] + [(d, "duplicate") for d, _ in claim.duplicates]

        async def claim_all(name, store):
            deadline = time.monotonic() + 20
            while sum(map(len, taken.values())) < len(expected) and time.monotonic() < deadline:
                # (a SQLite claim that lost the race to the other store's comes back empty)
                await claim_once(name, store)
                await asyncio.sleep(0.001)   # the other store's turn: the two claim side by side

        # One claim each in turn first: the second host continues where the first left off (which
        # of two racing hosts wins each round is the scheduler's choice, so it is not asserted).
        await claim_once("one", one)
        await claim_once("two", two)
        assert taken["one"] and taken["two"]
        assert not set(ids(d for d, _ in taken["one"])) & set(ids(d for d, _ in taken["two"]))
        await asyncio.gather(claim_all("one", one), claim_all("two", two))
        every = taken["one"] + taken["two"]
        assert sorted(ids(d for d, _ in every)) == sorted(ids(expected))       # each once
        runs = [d for d, how in every if how == "run"]
        assert sorted(d.dedup_hash for d in runs) == list(range(37))          # one run per key

    run(url, scenario, stores=2)


def test_records_and_claims_keep_every_value_exactly(url):
    """What a claim and batches of records write comes back bit for bit: ids, times to the last
    bit of a float, 64-bit dedup keys at both ends of their range, text with quotes, escapes and
    other scripts, and job results and logs as the bytes they were (one that is not UTF-8 too)."""
    async def scenario(store):
        now = time.time()
        first = delivery(1, dedup=-(2 ** 63), dedup_expires=now + 86400.123456789)
        first.dedup_key = 'k "\\ \u00e9\u4e2d\x01'
        second = delivery(2, dedup=2 ** 63 - 1, dedup_expires=now + 1000.5)
        await store.append([first, second])
        claim = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        assert [d.id for d in claim.run] == [first.id, second.id]
        assert sorted(await store.live_keys(now, 10)) == [(-(2 ** 63), first.id, first.dedup_expires),
                                                          (2 ** 63 - 1, second.id, second.dedup_expires)]
        found = await Reads(store).get_execution(first.id)
        assert found.dedup_key == first.dedup_key and found.created_at == first.request.received_at
        records = Records()
        started, finished = now + 0.1234567891011, now + 0.9876543210123
        records.finals[first.id] = Final(first.id, Status.FAILED, started, finished, 'it said "no" \u00e9\t')
        results = [b'{"a":"\\"\xc3\xa9\\u00e9","n":12345678901234567890,"f":1e-07,"c":"\\u0001"}', b'"text"',
                   None, b"\xff\xfe not utf-8"]
        for position, result in enumerate(results):
            records.jobs.append(Job(first.id, position, f"n{position}", "script", "resolved", result,
                                    None, b'["line \\"one\\""]' if position else None, 0.1 * position))
        odd = Records(jobs=[records.jobs.pop()])   # not UTF-8, in a batch of its own
        await store.record(records)
        await store.record(odd)
        found = await Reads(store).get_execution(first.id)
        assert (found.status, found.started_at, found.finished_at) == (Status.FAILED, started, finished)
        assert found.error == 'it said "no" \u00e9\t'
        assert [(j.position, j.result, j.logs, j.duration_ms) for j in found.jobs] == [
            (position, result, b'["line \\"one\\""]' if position else None, 0.1 * position)
            for position, result in enumerate(results)]

    run(url, scenario)


def test_records_change_statuses_as_allowed_and_add_jobs_and_request_lines(url):
    async def scenario(store):
        now = time.time()
        await store.append([delivery(1), delivery(2)])
        await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        one, two = (1).to_bytes(16, "big"), (2).to_bytes(16, "big")
        records = Records()
        records.finals[one] = Final(one, Status.RESOLVED, now, now + 0.01, None)
        records.finals[two] = Final(two, Status.FAILED, now, now + 0.02, "node x failed")
        records.jobs.append(Job(one, 0, "answer", "response", "resolved", b'{"ok": true}', None, b"[]", 1.5))
        records.requests.append(RequestLine(now + 1, "10.0.0.1", "GET", "/nope", None, 404, "not found", 0, 0.2, "r-x", None))
        await store.record(records)
        late = Records()
        late.finals[one] = Final(one, Status.FAILED, now, now + 1, "too late")   # resolved is final
        await store.record(late)
        found = await Reads(store).get_execution(one)
        assert found.status == Status.RESOLVED and found.error is None
        assert [(j.node, j.status, j.result) for j in found.jobs] == [("answer", "resolved", b'{"ok": true}')]
        assert (await Reads(store).get_execution(two)).error == "node x failed"
        assert await store.unfinished() == 0 and await store.pending_owners() == []
        lines = await Reads(store).list_requests(10, None)
        assert [(line.path, line.status) for line in lines][:1] == [("/nope", 404)]
        assert {line.request_id for line in lines} >= {"r-x", "req-1", "req-2"}   # accepted ones from the intake
        assert (await store.committed_jobs(one)).keys() == {"answer"}
        failed = await Reads(store).list_executions(None, Status.FAILED, 10, None)
        assert ids(failed) == [2]

    run(url, scenario)


def test_work_whose_lease_lapsed_is_taken_over_by_another_owner(url):
    async def scenario(store):
        now = time.time()
        await store.append([delivery(1), delivery(2)])
        await store.claim("dead-host", now, now + 0.3, 10, none_in_memory, runs_something)
        assert await store.reclaim("me", time.time(), time.time() + 30, 10) == []   # still leased
        # The lease lapses by the database's clock (PostgreSQL's now()): asked until it has.
        taken = await wait_for_async(lambda: store.reclaim("me", time.time(), time.time() + 30, 10), 10, step=0.02,
                                     failure="the lapsed lease was never taken over")
        assert ids(taken) == [1, 2] and {d.attempts for d in taken} == {2}
        assert await store.pending_owners() == ["me"]
        await store.renew("me", time.time() + 30)
        assert await store.reclaim("other", time.time(), time.time() + 30, 10) == []
        known_dead = await store.reclaim("other", time.time(), time.time() + 30, 10, ("me",))
        assert ids(known_dead) == [1, 2]

    run(url, scenario)


def test_stored_workflows(url):
    async def scenario(store):
        assert await store.stored_workflows() == {}
        assert await store.put_workflow("a", {"path": "/a"}, 1.0, create=True)
        assert not await store.put_workflow("a", {"path": "/b"}, 2.0, create=True)
        assert await store.put_workflow("a", {"path": "/c"}, 3.0, create=False)
        assert not await store.put_workflow("b", {}, 3.0, create=False)
        assert await store.stored_workflows() == {"a": {"path": "/c"}}
        assert await store.delete_workflow("a") and not await store.delete_workflow("a")

    run(url, scenario)


def test_the_purge_takes_what_finished_before_the_cut(url):
    async def scenario(store):
        now = time.time()
        await store.append([delivery(n) for n in (1, 2)])
        await store.append([delivery(3)])
        await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        records = Records()
        for n in (1, 2):
            raw = n.to_bytes(16, "big")
            records.finals[raw] = Final(raw, Status.RESOLVED, now, now, None)
            records.jobs.append(Job(raw, 0, "x", "response", "resolved", None, None, b"[]", 0.1))
        await store.record(records)
        # ids made from these small numbers sort before any real id: all are older than the cut
        executions, removed, more = await store.purge_batch(time.time() + 1, 500, (-(1 << 63), (1 << 63) - 1), time.time())
        assert executions == 2 and removed == 5 and not more     # 2 executions, 2 jobs, their batch
        assert await Reads(store).get_execution((1).to_bytes(16, "big")) is None
        assert (await Reads(store).get_execution((3).to_bytes(16, "big"))).status == Status.QUEUED   # still running


def test_a_store_an_earlier_purge_emptied_claims_what_comes_next(tmp_path):
    """An earlier version's purge could delete every intake row: the next row is then numbered 1,
    at or below the claim cursor.  Opening the store brings the cursor back to the highest row."""
    url = f"sqlite:///{tmp_path / 'store.db'}"

    async def emptied(store):
        now = time.time()
        await store.append([delivery(1)])
        await store.append([delivery(2)])
        await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        await store.db.execute("DELETE FROM intake")   # what the earlier purge left

    async def upgraded(store):
        now = time.time()
        await store.append([delivery(3)])
        assert await store.unfinished() == 3   # 1 and 2 claimed and pending, 3 unclaimed
        later = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        assert ids(later.run) == [3]

    run(url, emptied)
    run(url, upgraded)


def test_a_delivery_appended_after_the_purge_emptied_the_intake_is_still_claimed(url):
    """The purge always leaves the newest batch: SQLite numbers a new row after the highest one
    left, and a number at or below the claim cursor would never be claimed."""
    async def scenario(store):
        now = time.time()
        await store.append([delivery(1)])
        await store.append([delivery(2)])
        claim = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        records = Records()
        for d in claim.run:
            records.finals[d.id] = Final(d.id, Status.RESOLVED, now, now, None)
        await store.record(records)
        await store.purge_batch(time.time() + 1, 500, (-(1 << 63), (1 << 63) - 1), time.time())
        await store.append([delivery(3)])
        assert await store.unfinished() == 1
        later = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        assert ids(later.run) == [3]

    run(url, scenario)


def test_a_postgres_server_that_cannot_be_reached_is_a_store_error():
    async def main():
        store = open_store(StorageConfig(url="postgresql://postgres@127.0.0.1:1/test"))
        with pytest.raises(StoreError, match="cannot reach the server"):
            await store.open()
    asyncio.run(main())


# --- collections: a node's writes and its job row in one transaction ------------------------------

PEOPLE = Collection("people", {"email": "string", "score": "integer", "vip": "boolean", "tags": "json"}, (("email",),))


def effect(execution: int, position: int, write, shape: str = "row"):
    job = Job(execution.to_bytes(16, "big"), position, f"node{position}", "create", "resolved", None, None, b"[]", 0.5)
    return Effect([write], shape, job, PEOPLE.decode if shape == "row" else (lambda given: given))


def test_collection_writes_go_in_with_their_job_rows_and_a_refused_one_fails_alone(url):
    async def scenario(store):
        await store.ensure_collections([PEOPLE])
        await store.ensure_collections([PEOPLE])     # again: nothing to do
        outcomes = await store.write_effects([
            effect(1, 0, PEOPLE.insert({"email": "a@x", "score": 3, "vip": True, "tags": ["x"]})),
            effect(1, 1, PEOPLE.insert({"email": "b@x", "score": 5})),
        ])
        assert [o["email"] for o in outcomes] == ["a@x", "b@x"]
        assert outcomes[0]["vip"] is True and outcomes[0]["tags"] == ["x"] and outcomes[1]["vip"] is None
        # one taken email in a batch of three: it alone fails, with its job row left out
        outcomes = await store.write_effects([
            effect(2, 0, PEOPLE.insert({"email": "c@x", "score": 1})),
            effect(2, 1, PEOPLE.insert({"email": "a@x", "score": 9})),
            effect(2, 2, PEOPLE.insert({"email": "a@x", "score": 7}, upsert_on=("email",))),
        ])
        assert outcomes[0]["email"] == "c@x" and isinstance(outcomes[1], ConstraintError)
        assert outcomes[2]["email"] == "a@x" and outcomes[2]["score"] == 7          # the upsert
        jobs = await store.db.fetch(store.sql["get_jobs"], ((2).to_bytes(16, "big"),))
        assert [row[1] for row in jobs] == [0, 2]
        changed = await store.write_effects([
            effect(3, 0, PEOPLE.update([("score", "gte", 5)], {"vip": False}), "count"),
            effect(3, 1, PEOPLE.destroy([("email", "ne", "a@x"), ("score", "lt", 2)]), "count"),
            effect(3, 2, PEOPLE.destroy([("email", "in", [])]), "count"),        # matches nothing
        ])
        assert changed == [2, 1, 0]
        sql, params = PEOPLE.select([("score", "gte", 0)], ("-score",), 10)
        rows = [PEOPLE.decode(row) for row in await store.read_records(sql, params)]
        assert [(r["email"], r["score"], r["vip"]) for r in rows] == [("a@x", 7, False), ("b@x", 5, False)]
        sql, params = PEOPLE.select([("email", "like", "b%")])
        assert [PEOPLE.decode(row)["email"] for row in await store.read_records(sql, params)] == ["b@x"]

    run(url, scenario)


def test_a_field_added_to_a_collection_becomes_a_column(url):
    async def scenario(store):
        await store.ensure_collections([PEOPLE])
        grown = Collection("people", {**PEOPLE.fields, "city": "string"}, PEOPLE.unique)
        await store.ensure_collections([grown])
        [saved] = await store.write_effects([Effect([grown.insert({"email": "z@x", "city": "Oslo"})], "row",
                                                    effect(9, 0, None).job, grown.decode)])
        assert saved["city"] == "Oslo"

    run(url, scenario)


def test_hosts_starting_together_create_the_same_collection_once(url):
    async def scenario(*stores):
        await asyncio.gather(*(store.ensure_collections([PEOPLE]) for store in stores))
        grown = Collection("people", {**PEOPLE.fields, "city": "string"}, PEOPLE.unique)
        await asyncio.gather(*(store.ensure_collections([grown]) for store in stores))
        [saved] = await stores[0].write_effects([Effect([grown.insert({"email": "q@x", "city": "Rome"})], "row",
                                                        effect(8, 0, None).job, grown.decode)])
        assert saved["city"] == "Rome"

    run(url, scenario, stores=3)


# --- what one statement may cost (issue 18) ------------------------------------------------------

NOTES = Collection("notes", {"body": "text"}, ())
SLOW_LIKE = "%" + "a" * 100 + "b"    # ~17 ms a row against 100 KB of 'a': 120 rows take ~2 s


def test_a_statement_past_the_budget_fails_alone_and_the_store_goes_on(url):
    async def scenario(store):
        await store.ensure_collections([NOTES])
        body = "a" * 100_000
        filled = await store.write_effects([effect(20, i, NOTES.insert({"body": body}), "none") for i in range(120)])
        assert filled == [None] * 120
        started = time.monotonic()
        outcomes = await store.write_effects([
            effect(21, 0, NOTES.insert({"body": "before"}), "none"),
            effect(21, 1, NOTES.destroy([("body", "like", SLOW_LIKE)]), "count"),
            effect(21, 2, NOTES.insert({"body": "after"}), "none"),
        ])
        assert time.monotonic() - started < 1.0
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], StatementTimeout)
        assert str(outcomes[1]) == "the statement ran past storage.statement_timeout (50 ms) and was stopped"
        jobs = await store.db.fetch(store.sql["get_jobs"], ((21).to_bytes(16, "big"),))
        assert [row[1] for row in jobs] == [0, 2]
        with pytest.raises(StatementTimeout):
            await store.read_records(*NOTES.select([("body", "like", SLOW_LIKE)]))
        sql, params = NOTES.select([("body", "in", ["before", "after"])])
        assert [NOTES.decode(row)["body"] for row in await store.read_records(sql, params)] == ["before", "after"]

    run(url, scenario, statement_timeout=0.05)


def test_postgres_stores_intake_batches_with_lz4_and_reads_them_back(postgres_url):
    """migration_3: a batch's blob goes in with LZ4 rather than pglz (the database's CPU per
    append), and a claim that reads it back gets every body as it was."""
    import asyncpg

    bodies = {n: b'{"n": %d, "text": "%s"}' % (n, b"compressible " * 400) for n in range(1, 65)}

    async def scenario(store):
        now = time.time()
        batch = [delivery(n) for n in bodies]
        for d in batch:
            d.body = bodies[int.from_bytes(d.id, "big")]
        await store.append(batch)
        schema = postgres_url.partition("?schema=")[2]
        connection = await asyncpg.connect(store_support.POSTGRES, server_settings={"search_path": schema})
        try:
            method = await connection.fetchval("SELECT pg_column_compression(deliveries) FROM intake")
        finally:
            await connection.close()
        assert method == "lz4"
        claim = await store.claim("me", now, now + 30, 100, none_in_memory, runs_something)
        assert {int.from_bytes(d.id, "big"): d.body for d in claim.run} == bodies

    run(postgres_url, scenario)
