"""What nodes use besides their own settings, one set per process: the store's collections
(written through the effects batcher), the notification channels, the V8 scripts (a pool of
reused contexts per workflow) and the shared outbound HTTP client."""

from __future__ import annotations

from typing import Iterable, Mapping

from ..store import Store
from .effects import Effects
from .outbound import HttpClient
from .script_pool import WorkflowScripts


class Resources:
    def __init__(self, store: Store, channels: Mapping, collections: Mapping, deny: Iterable | None = None):
        self.store = store
        self.channels = channels
        self.collections = collections
        self.effects = Effects(store)
        self.scripts = WorkflowScripts()   # a pool of V8 contexts per workflow
        self.http = HttpClient(deny)   # [outbound] deny (None: the default); read at start

    async def start(self, supervisor) -> None:
        await self.store.ensure_collections(self.collections.values())
        # No V8 until a script runs: the pool opens its contexts for the first one (~2 ms each),
        # and a server without scripts carries no isolate in memory.
        await self.http.start()
        supervisor.start("effects", self.effects.run)

    async def close(self) -> None:
        await self.http.close()
        await self.scripts.close()
