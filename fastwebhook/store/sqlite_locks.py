"""File locks beside a SQLite database, for the processes that share it.

`WriterLock`: the processes of one server (`processes = N`) take turns writing, each woken the
moment the last is done, where SQLite's busy handler would have it sleep and try again, up to
100 ms a time.

`ServedMark`: a server counts what it acknowledges; a delivery appended beside it (the command
line's replay, when no server answered it) would be claimed and released uncounted, and the
queue's depth would drift below the truth.  So each server process holds a shared lock on a file
beside the database while it serves, and an append from outside holds it exclusively for as
long as it writes (a server starting meanwhile waits that long, then counts it).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from ..core.errors import StoreError


class WriterLock:
    """An exclusive flock on a file beside the database, shared by the processes of one server.
    Free, it is taken with one system call; else it is waited for on a thread of its own."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def acquire(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="fastwebhook-writer-lock")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await asyncio.get_running_loop().run_in_executor(self._thread, fcntl.flock, self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._thread.shutdown(wait=False)
            self._fd = self._thread = None


class ServedMark:
    """The shared lock a serving process holds on `<database>-served`, and the exclusive one an
    append from outside takes (none for an in-memory database: no other process sees it)."""

    def __init__(self, database: str):
        self.database = database
        self._fd: int | None = None   # the descriptor of the mark, while serving

    def mark(self) -> None:
        if self.database == ":memory:" or self._fd is not None:
            return
        fd = os.open(f"{self.database}-served", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)   # waits for an outside append under way, no longer
        self._fd = fd

    @contextmanager
    def unserved(self):
        """The file held against servers while the block runs; StoreError if one serves it."""
        if self.database == ":memory:":
            yield
            return
        refused = StoreError(f"a server is serving {self.database}: replay through its admin API (the command "
                             "line reaches it at the config's first listen address, with [admin] token)")
        if self._fd is not None:
            raise refused
        try:
            fd = os.open(f"{self.database}-served", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:   # another user's server made it: not ours to append beside
            raise StoreError(f"cannot tell whether a server is serving {self.database} ({exc}): replay "
                             "through its admin API") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise refused from None
            yield
        finally:
            os.close(fd)   # (and with it the lock)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
