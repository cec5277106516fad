"""Bulk replays' `Idempotency-Key`s, durably: the same key again answers the first answer and
replays nothing more, across restarts and across hosts sharing the store.

A key is taken (its row written, answer NULL) before anything is replayed and answered after,
in the store, so two requests with one key never both replay.  Keys are kept for [storage]
retention: each key taken first forgets those older than that (an admin's rate: a handful)."""

from __future__ import annotations

from .base import Store


class ReplayKeys:
    def __init__(self, store: Store):
        self.store = store

    async def take(self, key: str, now: float, keep: float) -> tuple[bool, bytes | None]:
        """(True, None) when the key is now this replay's; else (False, its first answer), the
        answer None while that replay runs (or when it was cut short)."""
        sql = self.store.sql
        async with self.store.db.transaction() as db:
            await db.execute(sql["forget_replay_keys"], (now - keep,))
            if await db.execute(sql["take_replay_key"], (key, now)) == 1:
                return True, None
            (answer,), = await db.fetch(sql["replay_key"], (key,))
        return False, bytes(answer) if answer is not None else None

    async def answer(self, key: str, answer: bytes) -> None:
        async with self.store.db.transaction() as db:
            await db.execute(self.store.sql["answer_replay_key"], (answer, key))

    async def release(self, key: str) -> None:
        """The replay did not happen (nothing matched it to a queue, say): the key is free again."""
        async with self.store.db.transaction() as db:
            await db.execute(self.store.sql["release_replay_key"], (key,))
