"""Effects once (issue 8): a collection node's writes commit in the same transaction as its job
row, so after `kill -9` at any moment an execution resumes after its last committed job and no
record is created, updated or destroyed twice.  Real child servers, real sockets, real SQLite."""

from __future__ import annotations

import asyncio
import threading

from burst_support import burst, wait_until
from fastwebhook.core.errors import ConstraintError
from fastwebhook.store.rows import Effect, Job
from fastwebhook.store.sqlite import SqliteStore
from fastwebhook.store.sqlite_connector import SqliteConnector
from fastwebhook.workflow.collections import Collection
from fastwebhook.workflow.effects import Effects
from conftest import write_config
from durability_support import query, terminate, wait_all_final

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///{db}"
[queue]
capacity = 1000000
workers = 16
[log]
level = "info"
[collections.customers]
fields = { email = "string", owner = "string" }
unique = [["email"]]
[collections.events]
fields = { delivery = "string", step = "integer" }
[workflows.hook]
[workflows.hook.dedup]
key = "{{$context.headers.x-delivery}}"
[[workflows.hook.nodes]]
key = "customer"
type = "create"
collection = "customers"
values = { email = "{{$context.data.d}}@example.com" }
[[workflows.hook.nodes]]
key = "first"
type = "create"
collection = "events"
values = { delivery = "{{$context.data.d}}", step = 1 }
[[workflows.hook.nodes]]
key = "owner"
type = "update"
collection = "customers"
filter = { email = "{{$context.data.d}}@example.com" }
values = { owner = "team-{{$jobsMapByNodeKey.first.id}}" }
[[workflows.hook.nodes]]
key = "second"
type = "create"
collection = "events"
values = { delivery = "{{$context.data.d}}", step = 2 }
[[workflows.hook.nodes]]
key = "drop_first"
type = "destroy"
collection = "events"
filter = { id = "{{$jobsMapByNodeKey.first.id}}" }
"""


def test_kill_9_mid_collection_writes_leaves_every_record_exactly_once(spawn, tmp_path):
    config = write_config(tmp_path, CONFIG)
    db = tmp_path / "fastwebhook.db"
    child = spawn(config, tmp_path / "first.log")
    acked: dict[str, str] = {}
    statuses: dict[int, int] = {}
    sender = threading.Thread(target=burst, args=(child.host, child.port, 12_000),
                              kwargs=dict(acked=acked, statuses=statuses, seconds=30, connections=16, depth=16),
                              daemon=True)
    sender.start()

    def writing() -> bool:
        try:
            [(made,)] = query(db, "SELECT count(*) FROM records_customers")
        except Exception:  # noqa: BLE001 - the table is made at start; a locked read retries
            return False
        return made >= 1_500 and len(acked) > made + 500
    assert wait_until(writing, 60, 0.02), f"no collection writes under way: {statuses}"
    child.process.kill()
    child.process.wait(10)
    sender.join(30)
    acked = dict(acked)
    assert set(statuses) == {202}, statuses
    [(before,)] = query(db, "SELECT count(*) FROM records_customers")
    [(started,)] = query(db, "SELECT count(*) FROM executions WHERE status = 'started'")
    print(f"\nkilled with {len(acked)} acknowledged, {before} customers written, {started} executions mid-run")

    restarted = spawn(config, tmp_path / "second.log")
    try:
        wait_all_final(db, acked, timeout=180)
    finally:
        assert terminate(restarted) == 0
    failed = query(db, "SELECT id, error FROM executions WHERE status NOT IN ('resolved', 'duplicate') LIMIT 3")
    assert not failed, f"executions that did not resolve (a write done twice fails its unique key): {failed}"
    [(ran,)] = query(db, "SELECT count(*) FROM executions WHERE status = 'resolved'")
    assert ran >= len(acked)
    # one customer per execution that ran, each with its owner set from the event made for it
    [(customers,)] = query(db, "SELECT count(*) FROM records_customers")
    assert customers == ran
    [(unowned,)] = query(db, "SELECT count(*) FROM records_customers WHERE owner IS NULL")
    assert unowned == 0
    # step 1 was created then destroyed, step 2 created: exactly one event left per delivery
    twice = query(db, "SELECT delivery, count(*) FROM records_events GROUP BY delivery HAVING count(*) != 1 LIMIT 3")
    assert not twice, f"a delivery's events were written more than once: {twice}"
    [(steps,)] = query(db, "SELECT count(*) FROM records_events WHERE step = 2")
    [(events,)] = query(db, "SELECT count(*) FROM records_events")
    assert steps == events == ran
    acknowledged = {d + "@example.com" for d in acked}
    emails = {row[0] for row in query(db, "SELECT email FROM records_customers")}
    assert acknowledged <= emails, "an acknowledged execution's record is missing"
    twice_jobs = query(db, "SELECT execution, position FROM jobs GROUP BY execution, position HAVING count(*) > 1 LIMIT 3")
    assert not twice_jobs, f"a node's job was recorded twice: {twice_jobs}"


def test_one_refused_write_in_a_batch_fails_alone_and_the_others_commit_with_their_jobs(tmp_path):
    """Effects gathered in one loop iteration go to the store as one batch; the one a unique
    constraint refuses gets its error, the others their rows, each job row with its write."""
    customers = Collection("customers", {"email": "string"}, (("email",),))

    async def main():
        store = SqliteStore(SqliteConnector(str(tmp_path / "effects.db"), synchronous="FULL"))
        await store.open()
        try:
            await store.ensure_collections([customers])
            effects = Effects(store)
            writer = asyncio.ensure_future(effects.run())

            def effect(n: int, email: str) -> Effect:
                job = Job(bytes([n]) * 16, 0, "customer", "create", "resolved", None, None, None, 1.0)
                return Effect([customers.insert({"email": email})], "row", job, customers.decode)

            emails = ["a@x", "b@x", "a@x", "c@x"]   # the third takes an email the first took
            outcomes = await asyncio.gather(*(effects.commit(effect(n, e)) for n, e in enumerate(emails)),
                                            return_exceptions=True)
            writer.cancel()
            rows = await store.read_records('SELECT email FROM "records_customers" ORDER BY id', ())
            jobs = [(await store.committed_jobs(bytes([n]) * 16)) for n in range(4)]
            return outcomes, rows, jobs
        finally:
            await store.close()

    outcomes, rows, jobs = asyncio.run(main())
    assert [o["email"] for o in (outcomes[0], outcomes[1], outcomes[3])] == ["a@x", "b@x", "c@x"]
    assert isinstance(outcomes[2], ConstraintError) and "UNIQUE" in str(outcomes[2])
    assert rows == [("a@x",), ("b@x",), ("c@x",)]
    assert [bool(j) for j in jobs] == [True, True, False, True]   # no job row for the refused one
