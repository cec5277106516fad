"""Shared by the store's tests: the PostgreSQL the suite uses, a storage URL of either engine
(the `url` fixture), a scenario run on opened stores, and the claim's callbacks."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

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


def require_postgres() -> None:
    """Skip the test when PostgreSQL cannot be reached, or fail it when $FASTWEBHOOK_REQUIRE_POSTGRES
    is set (CI sets it: there the store's tests must not skip)."""
    if not postgres_reachable():
        if os.environ.get("FASTWEBHOOK_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here and {POSTGRES} cannot be reached")
        pytest.skip(f"no PostgreSQL at {POSTGRES}")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    """A storage URL of its own: a SQLite file, or a fresh PostgreSQL schema (dropped after).
    The one way a test runs on both engines: a test module takes it with
    `url = store_support.url` (an assignment, so a test's `url` argument redefines no import)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    yield from _postgres_schema()


@pytest.fixture
def postgres_url():
    """`url`'s PostgreSQL case alone, for what only PostgreSQL does."""
    yield from _postgres_schema()


def _postgres_schema():
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{POSTGRES}?schema={schema}"
    import asyncpg  # noqa: PLC0415

    async def drop():
        connection = await asyncpg.connect(POSTGRES)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()

    asyncio.run(drop())


def run(url: str, scenario, stores: int = 1, **storage) -> None:
    """`scenario(*stores)` on `stores` stores of `url` (hosts sharing it), opened at once as
    hosts starting together would, and closed whatever happens; `storage`: more StorageConfig."""
    from fastwebhook.config.model import StorageConfig  # noqa: PLC0415
    from fastwebhook.store import open_store  # noqa: PLC0415

    async def main():
        opened = [open_store(StorageConfig(url=url, **storage)) for _ in range(stores)]
        await asyncio.gather(*(store.open() for store in opened))
        try:
            await scenario(*opened)
        finally:
            for store in opened:
                await store.close()
    asyncio.run(main())


def none_in_memory(seq: int):
    return None


def runs_something(workflow: str) -> bool:
    return False


def ids(deliveries) -> list[int]:
    return [int.from_bytes(d.id, "big") for d in deliveries]

