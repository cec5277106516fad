"""Nothing acknowledged is lost: kill -9 and SIGTERM against a real child server and a real
SQLite file, lease recovery after a restart, and the store's own claim / renew / dedup rules.

SPEC section 4: in `durability = "commit"` a 2xx is sent only once the request is committed, so a
crash (even `kill -9`) after a 2xx loses nothing and every acknowledged execution runs after a
restart; a duplicate within the dedup ttl answers 200 with the original id, across restarts too.
"""

from __future__ import annotations

import asyncio
import http.client
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from burst_support import wait_until
from client_support import metric
from conftest import ChildServer, start_server, write_config
from fastwebhook.core.errors import StoreError
from fastwebhook.store.rows import Delivery, Final, Records, RequestLine, Status, StoredRequest
from fastwebhook.store.reads import Reads
from fastwebhook.store.sqlite import SqliteStore
from fastwebhook.store.sqlite_connector import SqliteConnector
from durability_support import CHILD_CONFIG, FINAL, HOOK, child_config, executions_by_delivery, post, query, terminate
from store_support import ids, none_in_memory, runs_something
from wait_support import wait_for


class Load:
    """Client threads, each on one keep-alive connection, sending unique deliveries as fast as
    the server answers; every 2xx is recorded as (delivery id -> execution id)."""

    def __init__(self, child: ChildServer, threads: int, pause: float = 0.0):
        self.child = child
        self.pause = pause
        self.acked: dict[str, str] = {}
        self.statuses: dict[int, int] = {}
        self.odd: list = []                     # 2xx answers that are not a fresh acceptance
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def _run(self, index: int) -> None:
        conn = http.client.HTTPConnection(self.child.host, self.child.port, timeout=10)
        sent = 0
        while not self.stopping.is_set():
            delivery = f"d-{index}-{sent}"
            sent += 1
            try:
                status, body = post(conn, delivery, sent)
            except (OSError, http.client.HTTPException):
                return                      # the server went away: stop, as a sender would
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 202 and body["status"] == "queued":
                    self.acked[delivery] = body["execution_id"]
                elif 200 <= status < 300:
                    self.odd.append((delivery, status, body))
            if self.pause:
                time.sleep(self.pause)   # a sender pacing itself


def wait_until_final(db: Path, acked: dict[str, str], timeout: float = 20.0) -> dict:
    def pending(found: dict) -> list[str]:
        return [d for d in acked if not any(s in FINAL for _, s, _ in found.get(d, []))]

    def all_final() -> dict | None:
        found = executions_by_delivery(db)
        return None if pending(found) else found
    return wait_for(all_final, timeout, step=0.05, failure=lambda: f"acknowledged executions never finished, "
                                                                   f"e.g. {pending(executions_by_delivery(db))[:3]}")


# --- kill -9 mid-load -------------------------------------------------------------------------

def killed_under_load(spawn, config: Path, log: Path, threads: int, ready) -> tuple[ChildServer, Load]:
    """A child server loaded by `threads` clients until `ready(load)` holds, then SIGKILLed mid-load."""
    child = spawn(config, log)
    with Load(child, threads=threads) as load:
        assert wait_until(lambda: ready(load), 30), f"the load never got there: {load.statuses}"
        child.process.kill()
        child.process.wait(10)
    return child, load


def test_kill_9_under_load_loses_nothing_acknowledged_and_runs_each_delivery_once(spawn, tmp_path):
    config, db = child_config(tmp_path, workers=4)
    child, load = killed_under_load(spawn, config, tmp_path / "first.log", threads=8,
                                    ready=lambda load: len(load.acked) >= 1000)
    acked = dict(load.acked)
    assert len(acked) > 200, f"too little load to mean anything: {load.statuses}"
    assert load.odd == [], "a unique delivery was answered as something other than accepted"

    # Straight after the crash, before any restart: every 2xx is already on disk.
    stored = executions_by_delivery(db)
    missing = [d for d in acked if d not in stored]
    assert not missing, f"{len(missing)} acknowledged requests lost by kill -9, e.g. {missing[:3]}"

    restarted = spawn(config, tmp_path / "second.log")
    try:
        found = wait_until_final(db, acked)
        # A sender that retries an acknowledged delivery after the restart gets the original id.
        conn = http.client.HTTPConnection(restarted.host, restarted.port, timeout=10)
        for delivery in sorted(acked)[:: max(1, len(acked) // 5)]:
            assert post(conn, delivery) == (200, {"execution_id": acked[delivery], "status": "duplicate"})
        conn.close()
    finally:
        assert terminate(restarted) == 0

    for delivery, execution_id in acked.items():
        rows = found[delivery]
        assert len(rows) == 1, f"delivery {delivery} stored {len(rows)} times: {rows}"
        assert rows[0][0] == execution_id
        assert rows[0][1] == "resolved"
    duplicated = [key for key, rows in executions_by_delivery(db).items() if len(rows) > 1]
    assert not duplicated, f"deliveries with several executions: {duplicated[:3]}"
    twice = query(db, "SELECT execution, position, count(*) FROM jobs GROUP BY execution, position "
                      "HAVING count(*) > 1")
    [(unfinished,)] = query(db, "SELECT count(*) FROM executions WHERE status NOT IN "
                                "('resolved', 'failed', 'error', 'aborted')")
    assert not twice, "an execution recorded the same node twice (it ran twice)"
    assert unfinished == 0, "work a dead process held was never run"


def test_sigterm_exits_0_and_everything_acknowledged_runs(spawn, tmp_path):
    config, db = child_config(tmp_path, workers=2)
    child = spawn(config, tmp_path / "first.log")
    with Load(child, threads=3, pause=0.005) as load:
        assert wait_until(lambda: len(load.acked) > 60, 30), load.statuses
        started = time.monotonic()
        child.process.send_signal(signal.SIGTERM)
        code = child.process.wait(10)
        took = time.monotonic() - started
    assert code == 0
    assert took < 5.0, f"SIGTERM took {took:.1f} s"
    acked = dict(load.acked)
    assert len(acked) > 20, load.statuses
    assert load.odd == []
    assert set(load.statuses) <= {202, 503}, f"unexpected answers while stopping: {load.statuses}"

    stored = executions_by_delivery(db)
    assert [d for d in acked if d not in stored] == [], "an acknowledged request is missing after SIGTERM"
    [(leased,)] = query(db, "SELECT count(*) FROM executions WHERE status IN ('queued', 'started') "
                            "AND lease_until > ?", (time.time(),))
    assert leased == 0, "a clean stop must release its leases so the next start runs the rest at once"

    restarted = spawn(config, tmp_path / "second.log")
    try:
        found = wait_until_final(db, acked, timeout=10)
    finally:
        assert terminate(restarted) == 0
    assert all(len(found[d]) == 1 and found[d][0][0] == acked[d] for d in acked)


def test_lapsed_work_of_a_dead_process_runs_after_restart(spawn, tmp_path):
    """One worker, steady load, kill -9: what was accepted but not finished stays pending in
    the store under the dead process's live lease; the next process claims it at start (it
    knows the owner's pid is gone) instead of waiting out the 30 s lease."""
    config, db = child_config(tmp_path, workers=1)
    def work_left_behind(load: Load) -> bool:
        return len(load.acked) >= 200 and bool(query(db, "SELECT 1 FROM executions WHERE status IN "
                                                        "('queued', 'started') AND owner IS NOT NULL LIMIT 1"))
    child, load = killed_under_load(spawn, config, tmp_path / "first.log", threads=6, ready=work_left_behind)
    acked = dict(load.acked)
    owners = {row[0] for row in query(db, "SELECT owner FROM executions WHERE status IN ('queued', 'started')")}
    assert owners, "nothing was left pending: the crash did not leave work behind"
    assert {owner.split(":")[1] for owner in owners} == {str(child.process.pid)}
    restarted = spawn(config, tmp_path / "second.log")
    try:
        wait_until_final(db, acked, timeout=10)     # well inside the dead owner's 30 s lease
    finally:
        assert terminate(restarted) == 0
    [(rerun,)] = query(db, "SELECT count(*) FROM executions WHERE attempts > 1")
    assert rerun >= 1, "the restarted process claimed nothing"


# --- dedup across a commit in flight and across restarts ----------------------------------------

def test_duplicate_is_not_acknowledged_before_its_original_is_committed(spawn, tmp_path):
    config, db = child_config(tmp_path)
    child = spawn(config, tmp_path / "first.log")
    # Hold SQLite's write lock, as a slow disk or a long purge would: the first commit waits.
    blocker = sqlite3.connect(str(db), isolation_level=None, timeout=10)
    blocker.execute("BEGIN IMMEDIATE")
    first: list = []

    def send_first() -> None:
        conn = http.client.HTTPConnection(child.host, child.port, timeout=10)
        try:
            first.append(post(conn, "same-delivery"))
        except (OSError, http.client.HTTPException) as exc:
            first.append(exc)

    sender = threading.Thread(target=send_first, daemon=True)
    sender.start()
    # the first is offered (its commit now waits on the lock): the queue holds it
    assert wait_until(lambda: metric(child, "fastwebhook_queue_depth") >= 1, timeout=10), "never offered"
    second = http.client.HTTPConnection(child.host, child.port, timeout=1.0)
    try:
        status, body = post(second, "same-delivery")
    except (TimeoutError, OSError):
        status, body = None, None           # waiting for the original's commit is right
    child.process.kill()
    child.process.wait(10)
    blocker.execute("ROLLBACK")
    blocker.close()
    sender.join(10)
    if status is not None and 200 <= status < 300:
        stored = executions_by_delivery(db)
        assert body["execution_id"] in [row[0] for row in stored.get("same-delivery", [])], (
            f"the duplicate was acknowledged ({status} {body}) but its original was never stored")


def test_dedup_survives_a_restart(serve, tmp_path):
    body = CHILD_CONFIG % {"workers": 4, "ttl": "24h"}
    first = serve(body)
    conn = http.client.HTTPConnection(first.host, first.port, timeout=5)
    status, accepted = post(conn, "once")
    assert status == 202
    conn.close()
    first.stop()
    second = serve(body)
    conn = http.client.HTTPConnection(second.host, second.port, timeout=5)
    assert post(conn, "once") == (200, {"execution_id": accepted["execution_id"], "status": "duplicate"})
    conn.close()


def test_dedup_key_expires_at_its_ttl_after_a_restart(serve, tmp_path):
    ttl = 2.0
    body = CHILD_CONFIG % {"workers": 4, "ttl": f"{ttl:g}s"}
    first = serve(body)
    conn = http.client.HTTPConnection(first.host, first.port, timeout=5)
    sent = time.monotonic()   # the key expires no sooner than ttl after this
    assert post(conn, "short-lived")[0] == 202
    conn.close()
    first.stop()
    second = serve(body)
    conn = http.client.HTTPConnection(second.host, second.port, timeout=5)
    answers = []   # (seconds since `sent` the repeat was sent, status, its answer's status)

    def accepted() -> bool:   # a repeat within the ttl is a duplicate, and costs nothing more
        asked = time.monotonic() - sent
        status, answer = post(conn, "short-lived")
        answers.append((asked, status, answer["status"]))
        return status == 202
    assert wait_until(accepted, timeout=10, step=0.05), answers
    waited = time.monotonic() - sent
    conn.close()
    # Judged by when each repeat was sent, not by how fast the restart was (a loaded machine's
    # restart can take most of the ttl): every repeat sent within it is a duplicate.
    within = [(status, told) for asked, status, told in answers if asked < ttl]
    assert within == [(200, "duplicate")] * len(within), f"after the restart, within its ttl, the key holds: {answers}"
    assert answers[-1][1:] == (202, "queued") and waited >= ttl, "accepted again once the ttl passed, not before"


# --- the store's intake, claims, leases and dedup, unit level (real SQLite file) ---------------

def delivery(n: int, *, dedup: int | None = None, dedup_expires: float = 0.0, at: float = 1000.0,
             workflow: str = "hook") -> Delivery:
    request = StoredRequest("POST", HOOK, "", [("content-type", "application/json")], {}, "127.0.0.1",
                            at + n, f"req-{n}")
    return Delivery(n.to_bytes(16, "big"), workflow, "v1", request, b"{}", dedup,
                    None if dedup is None else f"key-{dedup}", dedup_expires)


def with_store(tmp_path: Path, scenario) -> None:
    with_store_path(tmp_path / "store.db", scenario)


def with_store_path(db: Path, scenario) -> None:
    async def main():
        store = SqliteStore(SqliteConnector(str(db)))
        await store.open()
        try:
            await scenario(store)
        finally:
            await store.close()
    asyncio.run(main())


def test_an_append_is_one_intake_row_listed_as_queued_until_claimed(tmp_path):
    now = 5000.0

    async def scenario(store):
        await store.append([delivery(n, at=now) for n in (1, 2, 3)])
        [(rows,)] = await store.db.fetch("SELECT count(*) FROM intake")
        [(executions,)] = await store.db.fetch("SELECT count(*) FROM executions")
        assert (rows, executions) == (1, 0), "one append per batch, no per-request row"
        assert await store.unfinished() == 3
        listed = await Reads(store).list_executions(None, None, 10, None)
        assert ids(listed) == [3, 2, 1] and {r.status for r in listed} == {Status.QUEUED}
        found = await Reads(store).get_execution((2).to_bytes(16, "big"))
        assert found.status == Status.QUEUED and found.request.request_id == "req-2"
        claim = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        assert ids(claim.run) == [1, 2, 3]
        assert await store.db.fetch("PRAGMA synchronous") == [(2,)], "the next append commits with FULL"
        again = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        assert (again.run, again.resolved, again.duplicates, again.finished) == ([], [], [], [])
        assert ids(await Reads(store).list_executions(None, None, 10, None)) == [3, 2, 1], "each listed once"
        assert await store.unfinished() == 3

    with_store(tmp_path, scenario)


def test_a_claim_takes_as_many_deliveries_as_asked_even_from_the_middle_of_a_batch(tmp_path):
    now = 5000.0

    async def scenario(store):
        await store.append([delivery(n) for n in range(1, 6)])
        await store.append([delivery(n) for n in range(6, 9)])
        first = await store.claim("me", now, now + 30, 2, none_in_memory, runs_something)
        assert ids(first.run) == [1, 2] and first.finished == [] and first.partial[0] == 1
        assert await store.unfinished() == 8
        kept = dict([first.partial])  # what the intake keeps in memory of a batch taken in part
        second = await store.claim("me", now, now + 30, 4, kept.get, runs_something)
        assert ids(second.run) == [3, 4, 5, 6] and second.finished == [1]
        rest = await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        assert ids(rest.run) == [7, 8] and rest.finished == [2] and rest.partial is None
        queued = await Reads(store).list_executions(None, Status.QUEUED, 10, None)
        assert ids(queued) == [8, 7, 6, 5, 4, 3, 2, 1], "each listed once, however it was claimed"

    with_store(tmp_path, scenario)


def test_a_workflow_with_nothing_to_run_is_resolved_in_the_claim(tmp_path):
    async def scenario(store):
        await store.append([delivery(1), delivery(2, workflow="busy")])
        claim = await store.claim("me", 5000.0, 5030.0, 10, none_in_memory, lambda w: w == "hook")
        assert ids(claim.resolved) == [1] and ids(claim.run) == [2]
        assert (await Reads(store).get_execution((1).to_bytes(16, "big"))).status == Status.RESOLVED
        assert await store.unfinished() == 1

    with_store(tmp_path, scenario)


def test_reclaim_takes_only_lapsed_leases_or_dead_owners_and_counts_attempts(tmp_path):
    now = 5000.0

    async def scenario(store):
        await store.append([delivery(n) for n in (1, 2, 3)])
        await store.claim("otherhost:1:x", now, now + 30, 10, none_in_memory, runs_something)
        assert await store.reclaim("me", now, now + 30, 10) == [], "leases still live"
        await store.renew("otherhost:1:x", now + 100)
        assert await store.reclaim("me", now + 31, now + 60, 10) == [], "renewed to now+100"
        taken = await store.reclaim("me", now + 101, now + 130, 2)
        assert ids(taken) == [1, 2] and [d.attempts for d in taken] == [2, 2]
        assert taken[0].body == b"{}" and taken[0].request.path == HOOK, "read back from the intake"
        assert ids(await store.reclaim("me", now, now + 30, 10, ("otherhost:1:x",))) == [3]
        assert await store.pending_owners() == ["me"]

    with_store(tmp_path, scenario)


def test_records_move_statuses_by_the_transition_table_and_final_work_is_never_reclaimed(tmp_path):
    now = 5000.0
    one = (1).to_bytes(16, "big")

    async def scenario(store):
        await store.append([delivery(1), delivery(2)])
        await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        records = Records()
        records.change(Final(one, Status.STARTED, now + 1))
        records.change(Final(one, Status.RESOLVED, None, now + 2))
        await store.record(records)
        stale = Records()
        stale.change(Final(one, Status.FAILED, now + 1, now + 3, "late"))
        await store.record(stale)
        record = await Reads(store).get_execution(one)
        assert record.status == Status.RESOLVED and record.started_at == now + 1, "final stays final"
        assert ids(await store.reclaim("thief", now + 31, now + 60, 10)) == [2]

    with_store(tmp_path, scenario)


def test_a_record_batch_that_fails_midway_is_rolled_back_and_the_store_goes_on(tmp_path):
    now = 5000.0
    one = (1).to_bytes(16, "big")

    class Unstorable:  # sqlite3 cannot bind it: the batch fails after its status changes ran
        pass

    async def scenario(store):
        await store.append([delivery(1)])
        await store.claim("me", now, now + 30, 10, none_in_memory, runs_something)
        broken = Records(requests=[RequestLine(now, "127.0.0.1", "POST", HOOK, "hook", 401, None, 2,
                                               0.1, Unstorable(), None)])
        broken.change(Final(one, Status.RESOLVED, now, now + 1))
        with pytest.raises(StoreError):
            await store.record(broken)
        assert (await Reads(store).get_execution(one)).status == Status.QUEUED, "rolled back"
        fixed = Records()
        fixed.change(Final(one, Status.RESOLVED, now, now + 1))
        await store.record(fixed)
        assert (await Reads(store).get_execution(one)).status == Status.RESOLVED

    with_store(tmp_path, scenario)


def test_a_restarted_in_process_server_runs_work_left_queued(tmp_path):
    """The same recovery through the real Service: an intake nobody claimed, and executions a
    dead owner on another host left leased, both run."""
    body = CHILD_CONFIG % {"workers": 4, "ttl": "24h"}
    config = write_config(tmp_path, body)
    db = tmp_path / "fastwebhook.db"

    async def leave_work(store):
        now = time.time()
        await store.append([delivery(n, at=now) for n in (1, 2)])
        await store.claim("gone-host:1:x", now - 60, now - 1, 2, none_in_memory, runs_something)
        await store.append([delivery(3, at=now)])

    # The schema comes from a first start; the rows from a "crashed" owner on another host.
    running = start_server(config)
    running.stop()
    with_store_path(db, leave_work)
    running = start_server(config)
    try:
        def all_three_final() -> list | None:
            rows = query(db, "SELECT status, attempts FROM executions ORDER BY id")
            return rows if len(rows) == 3 and all(status in FINAL for status, _ in rows) else None
        rows = wait_for(all_three_final, 10,
                        failure=lambda: f"not all final: {query(db, 'SELECT status, attempts FROM executions')}")
        assert rows == [("resolved", 2), ("resolved", 2), ("resolved", 1)]
    finally:
        running.stop()


def test_memory_durability_answers_after_the_commit_once_the_writer_falls_behind(serve):
    """'memory' acknowledges before the commit only while less than a batch is uncommitted."""
    import http.client
    import sqlite3

    from fastwebhook.intake.intake import MAX_BATCH

    s = serve('[storage]\nurl = "sqlite:///{db}"\ndurability = "memory"\n'
              '[log]\nlevel = "warning"\n[workflows.m]\npath = "/m"\n')

    def post(timeout: float):
        connection = http.client.HTTPConnection(s.host, s.port, timeout=timeout)
        connection.request("POST", "/m", body=b"{}", headers={"content-type": "application/json"})
        return connection.getresponse().status

    blocker = sqlite3.connect(s.db, timeout=10)
    blocker.execute("BEGIN IMMEDIATE")  # the writer cannot commit while we hold this
    try:
        assert post(timeout=2) == 202   # answered although nothing is on disk yet

        async def behind():
            s.server.service.intake.in_flight += MAX_BATCH
        s.call(behind)
        try:
            with pytest.raises(TimeoutError):
                post(timeout=0.5)           # now it waits for its commit, which cannot happen
        finally:
            async def caught_up():
                s.server.service.intake.in_flight -= MAX_BATCH
            s.call(caught_up)
    finally:
        blocker.rollback()
        blocker.close()
