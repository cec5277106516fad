"""Shared by the store's tests: the PostgreSQL the suite uses, and the claim's callbacks."""

from __future__ import annotations

import asyncio
import os

POSTGRES = os.environ.get("FASTWEBHOOK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_reachable() -> bool:
    import asyncpg  # noqa: PLC0415

    async def probe():
        connection = await asyncpg.connect(POSTGRES, timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
        return True
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False


def none_in_memory(seq: int):
    return None


def runs_something(workflow: str) -> bool:
    return False


def ids(deliveries) -> list[int]:
    return [int.from_bytes(d.id, "big") for d in deliveries]
