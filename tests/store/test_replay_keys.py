"""Bulk replays' Idempotency-Keys in the store, on SQLite and PostgreSQL: taken once (two hosts
taking one key at once: one wins), answered, read back, released only while unanswered, and
forgotten after the time they are kept."""

from __future__ import annotations

import asyncio

from fastwebhook.store.replay_keys import ReplayKeys
import store_support
from store_support import run


url = store_support.url   # the fixture: a SQLite file, or a fresh PostgreSQL schema


def test_a_key_is_taken_once_answered_and_forgotten_after_it_is_kept(url):
    async def scenario(one, two):
        keys, other = ReplayKeys(one), ReplayKeys(two)
        taken = await asyncio.gather(keys.take("k", 1000.0, 60), other.take("k", 1000.0, 60))
        assert sorted(taken) == [(False, None), (True, None)]        # one wins; the other sees it under way
        await keys.answer("k", b'{"replayed": 2}')
        await keys.release("k")                                      # answered: stays
        assert await other.take("k", 1010.0, 60) == (False, b'{"replayed": 2}')
        assert await keys.take("j", 1020.0, 60) == (True, None)
        await keys.release("j")                                      # unanswered: free again
        assert await keys.take("j", 1030.0, 60) == (True, None)
        assert await keys.take("k", 1061.0, 60) == (True, None)      # kept 60 s: forgotten, so new
    run(url, scenario, stores=2)
