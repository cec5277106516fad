"""The SQLite store's own ways (store/sqlite.py): record()'s scripts are made once, at load, of
named blocks that hold statements alone; the alerts' script reads which alerts went in before
its COMMIT, so what is written and what is read commit together or not at all."""

from __future__ import annotations

import asyncio

import pytest

from fastwebhook.core.errors import StoreError
from fastwebhook.store.sqlite import SqliteStore
from fastwebhook.store.sqlite_connector import SqliteConnector


@pytest.mark.parametrize("block", ["record_apply", "alerts_apply"])
def test_a_block_of_record_that_begins_or_commits_fails_at_load(tmp_path, block):
    connector = SqliteConnector(str(tmp_path / "store.db"))
    store = SqliteStore(connector)
    assert store.record_script.startswith("BEGIN IMMEDIATE;") and store.record_script.endswith("COMMIT;")
    assert "COMMIT;" not in store.record_alerts_script   # committed after its read
    for changed in (f"BEGIN IMMEDIATE;\n{connector.sql[block]}", f"{connector.sql[block]}\n  COMMIT;"):
        connector.sql = {**connector.sql, block: changed}
        with pytest.raises(StoreError, match=f"block '{block}' holds a (BEGIN|COMMIT)"):
            SqliteStore(connector)


def test_a_failed_read_in_the_alerts_script_leaves_nothing_written(tmp_path):
    async def scenario():
        connector = SqliteConnector(str(tmp_path / "store.db"))
        await connector.open()
        try:
            script = "BEGIN IMMEDIATE;\nINSERT INTO intake (first_id, last_id, first_at, count, deliveries) " \
                     "VALUES (x'01', x'01', 0, 1, x'00');"
            with pytest.raises(StoreError):
                await connector.script_reading(script, "SELECT id FROM temp.no_such_table")
            assert await connector.fetch("SELECT count(*) FROM intake") == [(0,)]
            assert await connector.script_reading(script, "SELECT count(*) FROM intake") == [(1,)]
            assert await connector.fetch("SELECT count(*) FROM intake") == [(1,)]
        finally:
            await connector.close()
    asyncio.run(scenario())


def test_a_script_that_fails_or_is_cancelled_leaves_no_transaction_and_synchronous_full(tmp_path):
    """A claim's or records' script runs with synchronous relaxed to NORMAL; however it ends, the
    connection is FULL again with no transaction open, so the next append commits with an fsync,
    in a transaction of its own."""
    async def scenario():
        connector = SqliteConnector(str(tmp_path / "store.db"))
        await connector.open()
        # fails inside its transaction (claims holds its one row already); no ";" after COMMIT
        failing = "BEGIN IMMEDIATE;\nINSERT INTO claims (id, claimed_seq) VALUES (1, 0);\nCOMMIT"
        append = "INSERT INTO intake (first_id, last_id, first_at, count, deliveries) VALUES (x'01', x'01', 0, 1, x'00')"
        try:
            with pytest.raises(StoreError):
                await connector.script(failing)
            assert await connector.fetch("PRAGMA synchronous") == [(2,)]   # FULL
            # cancelled while it runs, and again while its ROLLBACK is awaited
            task = asyncio.create_task(connector.script(failing))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await connector.fetch("PRAGMA synchronous") == [(2,)]
            await connector.insert_alone(append, ())
            assert await connector.fetch("SELECT count(*) FROM intake") == [(1,)]
            # and the append committed by itself: a second connection sees it
            other = SqliteConnector(str(tmp_path / "store.db"))
            await other.open()
            try:
                assert await other.fetch("SELECT count(*) FROM intake") == [(1,)]
            finally:
                await other.close()
        finally:
            await connector.close()
    asyncio.run(scenario())
