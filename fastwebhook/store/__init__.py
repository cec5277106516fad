"""Opening the store a config names: the dialect-free `Store` over that dialect's connector."""

from __future__ import annotations

from urllib.parse import urlparse

from ..config.model import Durability, StorageConfig
from .base import StatementTimeout, Store


def open_store(storage: StorageConfig, *, shared: bool = False) -> Store:
    """An unopened store for `storage.url`; call `await store.open()`.  `shared`: several
    processes of this server write to it."""
    url = storage.url
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStore  # noqa: PLC0415
        from .sqlite_connector import SqliteConnector  # noqa: PLC0415

        synchronous = "FULL" if storage.durability == Durability.COMMIT else "NORMAL"
        return SqliteStore(SqliteConnector(sqlite_file(storage) or ":memory:", synchronous=synchronous,
                                           shared=shared, statement_timeout=storage.statement_timeout))
    from .postgres import PostgresStore  # noqa: PLC0415
    from .postgres_connector import PostgresConnector  # noqa: PLC0415

    return PostgresStore(PostgresConnector(url, statement_timeout=storage.statement_timeout))


def sqlite_file(storage: StorageConfig) -> str | None:
    """The SQLite database file `storage.url` names (the config loader made a relative one
    absolute); None for PostgreSQL or an in-memory database."""
    url = storage.url
    if not url.startswith("sqlite://"):
        return None
    # sqlite:///./x.db and sqlite:///relative are relative paths; sqlite:////abs is absolute.
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else urlparse(url).path
    return path if path and path != ":memory:" else None


async def reach_store(storage: StorageConfig) -> None:
    """Raise StoreError when the database server `storage.url` names cannot be reached (a
    SQLite file needs no server: nothing to do, and nothing is created)."""
    if storage.url.startswith(("postgresql://", "postgres://")):
        from .postgres_connector import PostgresConnector  # noqa: PLC0415

        await PostgresConnector(storage.url).reach()


__all__ = ["StatementTimeout", "Store", "open_store", "reach_store", "sqlite_file"]
