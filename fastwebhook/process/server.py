"""Serving: listeners, signals, and a shutdown that loses nothing.

SIGTERM (or SIGINT): stop accepting, let requests in flight get their answers, let running
executions finish up to a grace period, commit, release leases so the next start takes the
queued rest at once, exit 0.  SIGHUP: the config file read again and swapped in (Server.reload),
the TLS certificate re-read.

Under systemd (systemd.py): the listeners are the sockets it passed, when it passed any;
READY=1 once every listener is open, STATUS= with live figures, RELOADING=1 / READY=1 around a
SIGHUP, STOPPING=1 at shutdown, WATCHDOG=1 from the event loop while it turns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import ssl
import sys
import time

import uvloop

from ..http import tls
from ..service.app import WebhookApp
from ..config.model import Config
from ..config.loader import display_url, load_config
from ..core.errors import ConfigErrors, StoreError
from ..http.protocol import HttpProtocol, Limits
from ..service.service import Service
from ..admin.stored import StoredWorkflows
from .binding import bind_all
from .pipe import WorkerPipe, Worker
from .systemd import Notifier, listen_sockets

log = logging.getLogger("fastwebhook.server")
SHUTDOWN_GRACE = 10.0
DRAIN_REQUESTS = 5.0
GC_THRESHOLDS = (50_000, 20, 100)
SWITCH_INTERVAL = 0.001
STATUS_EVERY = 5.0          # seconds between systemd STATUS= updates
HOSTS_POLL = 0.5            # seconds between two looks at what other hosts changed (PostgreSQL)


class Server:
    def __init__(self, config: Config, worker: Worker | None = None):
        self.config = config
        self.worker = worker            # one of several processes (process/supervisor.py), or None
        self.pipe = WorkerPipe(worker) if worker is not None else None
        self.service = Service(config, worker=worker)
        self.app: WebhookApp | None = None
        self.listeners: list[asyncio.Server] = []
        self.addresses: list[tuple[str, int]] = []    # the TCP listeners' (host, port)
        self.where: list[str] = []                      # every listener, as the log says it
        self.stopped = asyncio.Event()
        # One context for every listener, so a reload reaches them all.
        self.ssl_context: ssl.SSLContext | None = None
        self.limits: Limits | None = None
        self._changing = asyncio.Lock()   # one config change at a time: SIGHUP, admin API

    @property
    def tls_enabled(self) -> bool:
        """Whether every listener speaks HTTPS (so every request came over TLS)."""
        return self.ssl_context is not None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self.config.server
        if server.tls_enabled:  # before the store opens: a bad certificate stops the start cleanly
            self.ssl_context = tls.server_context(server.tls_cert, server.tls_key)
        worker = self.worker
        inherited = listen_sockets() if worker is None else worker.sockets
        # Bound before the store opens too, and likewise: a busy port is one error at once.
        # Several workers: each its own socket on the port, the kernel spreading connections.
        bound = [] if inherited else bind_all(server.listen if worker is None else worker.listen,
                                              reuse_port=worker is not None)
        try:
            await self.service.start()
        except BaseException:
            for sock in bound:
                sock.close()
            raise
        self.config = self.service.config      # with the workflows stored through the admin API
        self.app = WebhookApp(self.config, self.service, StoredWorkflows(
            self.service.store, lambda: self.config, self._workflows_changed))
        if self.service.store.shared_by_hosts:
            await self._follow_other_hosts()
        self.limits = Limits(server.max_header_size, server.max_body_size, server.read_timeout,
                             server.keepalive_timeout, self.config.answer_timeout())
        app = self.app
        # The handshake comes before the protocol's own read deadline, so it gets the same limit.
        handshake_timeout = server.read_timeout if self.ssl_context is not None else None

        def make_protocol() -> HttpProtocol:   # self.limits: a reload may lengthen answer_timeout
            return HttpProtocol(app, self.limits, loop, time.time)

        if inherited and worker is None:
            log.info("listening on the sockets systemd passed (server.listen is not used)",
                     extra={"sockets": len(inherited)})
        for sock in [*inherited, *bound]:
            self._listening(await loop.create_server(
                make_protocol, sock=sock, backlog=4096, ssl=self.ssl_context,
                ssl_handshake_timeout=handshake_timeout))

    async def _follow_other_hosts(self) -> None:
        """Hosts on one PostgreSQL database: a NOTIFY wakes this one's claim when another
        appended (the dispatcher's sweep is the safety net), and a look every HOSTS_POLL
        seconds at the stored workflows' signature reads them again when another changed them."""
        store = self.service.store
        await store.listen("fastwebhook_intake", self.service.dispatcher.poke_claim)
        self._signature = self.service.stored_signature   # read before the start read the workflows
        self.service.supervisor.every("other-hosts", HOSTS_POLL, self._follow)

    async def _follow(self) -> None:
        store = self.service.store
        await store.keep_listening()
        signature = await store.workflows_signature()
        if signature != self._signature and await self.refresh_workflows():
            self._signature = signature

    def _listening(self, listener: asyncio.Server) -> None:
        self.listeners.append(listener)
        for sock in listener.sockets:
            bound = sock.getsockname()
            if isinstance(bound, tuple):
                self.addresses.append((bound[0], bound[1]))
                where = f"{bound[0]}:{bound[1]}"
            else:   # a Unix socket systemd passed (ListenStream=/run/...)
                where = bound or "an unnamed Unix socket"
            self.where.append(where)
            log.info("listening", extra={"address": where, "tls": self.tls_enabled})

    def status(self) -> str:
        """One line of live figures, for systemd's STATUS=."""
        service = self.service
        finished = int(sum(child.value for stats in service.execution_stats.values() for child in stats.by_status.values()))
        listening = ", ".join(self.where)
        return (f"listening on {listening}; {len(self.config.workflows)} workflows; "
                f"queue depth {service.intake.depth}; {finished} executions finished")

    async def reload(self) -> None:
        """SIGHUP: the config file read again and put in force.  Workflows, [env], channels,
        collections, metrics and the admin token change at once; [server], [storage], [queue]
        and [outbound] at the next start (a warning names them).  A config that does not load,
        or whose new collections the store refuses, is refused with its errors in the log and
        the old one stays in force.  TLS certificates are read again either way."""
        self._reload_tls()
        old = self.config
        try:
            new = load_config(old.source)
        except ConfigErrors as exc:
            log.error("SIGHUP: the config was not reloaded; the old one stays in force",
                      extra={"config": old.source, "errors": [str(error) for error in exc.errors]})
            return
        later = [name for name in ("server", "storage", "queue", "outbound")
                 if getattr(new, name) != getattr(old, name)]
        new = dataclasses.replace(new, server=old.server, storage=old.storage, queue=old.queue, outbound=old.outbound)
        if await self._put_in_force(new, "SIGHUP") and later:
            log.warning("SIGHUP: these sections changed and take effect at the next start",
                        extra={"sections": later})

    async def refresh_workflows(self) -> bool:
        """The workflows stored through the admin API read again and put in force (one was
        created, changed or deleted here or in another process)."""
        return await self._put_in_force(None, "workflows changed")

    async def _workflows_changed(self) -> None:
        """The admin API changed a stored workflow: in force here, then in every other worker
        process, before the call answers."""
        shared = self.service.store.shared_by_hosts
        # read before the workflows: a change another host makes meanwhile shows in the next look
        signature = await self.service.store.workflows_signature() if shared else None
        if not await self.refresh_workflows():
            raise StoreError("the change is saved but not in force yet: reading it back failed (see the log)")
        if shared:
            self._signature = signature
        if self.pipe is not None:
            await self.pipe.refresh_others()

    async def _put_in_force(self, new: Config | None, why: str) -> bool:
        """`new` (its workflows as the file has them; None: the config in force when our turn
        comes, so a refresh never undoes a reload before it) with the stored ones, in force at
        once: the next request on every connection is routed by it, executions that start from
        now on use it, those running finish on theirs."""
        async with self._changing:
            old = self.config
            new = old if new is None else new
            try:
                config = await self.service.with_stored(new)
                await self.service.reload(config)
            except StoreError as exc:
                log.error(f"{why}: the config was not reloaded: the store failed; the old one stays in force",
                          extra={"config": old.source, "error": str(exc)})
                return False
            self.app.reload(config)
            self.config = config
            self.limits = dataclasses.replace(self.limits, answer_timeout=config.answer_timeout())
        before = {key: w.version for key, w in old.workflows.items()}
        after = {key: w.version for key, w in config.workflows.items()}
        log.info(f"{why}: config reloaded", extra={
            "config": old.source, "added": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(k for k in after.keys() & before.keys() if after[k] != before[k])})
        return True

    def _reload_tls(self) -> None:
        """New handshakes get the certificate now in the files; open connections go on.  A pair
        that does not load leaves the old certificate in use."""
        if self.ssl_context is None:
            return
        cert, key = self.config.server.tls_cert, self.config.server.tls_key
        try:
            tls.reload(self.ssl_context, cert, key)
        except tls.TlsError as exc:
            log.error("SIGHUP: TLS certificate reload failed, still serving the old certificate",
                      extra={"error": str(exc), "tls_cert": cert, "tls_key": key})
            return
        log.info("SIGHUP reloaded TLS certificates", extra={"tls_cert": cert, "tls_key": key})

    async def stop(self) -> None:
        for listener in self.listeners:
            listener.close()
        # New requests on open connections now get 503; answers already owed (their commits
        # in flight) still go out before the store closes.
        self.service.stopping = True
        try:
            await asyncio.wait_for(self.service.intake.drain(), DRAIN_REQUESTS)
        except asyncio.TimeoutError:
            log.warning("the store did not take the last batch within %ss", DRAIN_REQUESTS)
        await self.service.stop(SHUTDOWN_GRACE)
        self.stopped.set()


async def serve(config: Config, worker: Worker | None = None) -> None:
    server = Server(config, worker)
    await server.start()
    # Everything alive now lives as long as the process: keep the collector from walking it
    # again and again, and let it run less often (each request allocates a few dozen objects
    # that die young, which reference counting frees without any collection).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    # The store's thread needs the GIL back the moment its commit (an fsync, GIL released)
    # returns, to hand the result to the loop: with the default 5 ms switch interval a busy
    # loop keeps it waiting that long, and every acknowledgement waits with it.
    sys.setswitchinterval(SWITCH_INTERVAL)
    loop = asyncio.get_running_loop()
    notifier = Notifier() if server.pipe is None else server.pipe.notifier()
    stop = asyncio.Event()
    if server.pipe is not None:   # a worker: its supervisor gone (SIGKILL) is a SIGTERM
        server.pipe.start(server.refresh_workflows, server.service.intake.replies, orphaned=stop.set)
        server.service.executions.forward_reply = server.pipe.forward_reply
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    reloading: asyncio.Task | None = None

    async def reload() -> None:
        notifier.reloading()
        try:
            await server.reload()
        except Exception:  # noqa: BLE001 - the old config stays in force, and the process goes on
            log.exception("SIGHUP: the reload failed; the old config stays in force")
        finally:
            notifier.ready(server.status())

    def hangup() -> None:
        nonlocal reloading
        if stop.is_set():
            return   # shutting down: nothing to reload into
        if reloading is not None and not reloading.done():
            log.warning("SIGHUP while a reload is under way: ignored (send it again once it is done)")
            return
        reloading = loop.create_task(reload(), name="fastwebhook-reload")

    loop.add_signal_handler(signal.SIGHUP, hangup)
    log.info("ready", extra={"workflows": len(config.workflows), "storage": display_url(config.storage.url),
                             "durability": config.storage.durability})
    notifier.ready(server.status())
    notifier.start_watchdog(loop)
    if notifier.enabled:
        async def report_status() -> None:
            notifier.status(server.status())
        server.service.supervisor.every("systemd-status", STATUS_EVERY, report_status)
    await stop.wait()
    log.info("stopping")
    notifier.stopping()
    await server.stop()
    if server.pipe is not None:
        server.pipe.close()
    notifier.close()
    log.info("stopped")


def run_worker(config: Config, worker: Worker) -> int:
    """A worker process's whole life (its supervisor forked it)."""
    uvloop.run(serve(config, worker))
    return 0
