"""`[server] processes = N`: N worker processes serve one port, under a small supervisor (and
`run`, which serves in this process when N is 1).

The supervisor (the process systemd started) forks the workers before any of them opens the
store or starts a thread, restarts one that dies, forwards SIGTERM, SIGINT and SIGHUP, and
speaks for them all to systemd.  Each worker is a whole server (server.serve) on its own event
loop, with its own listening socket bound with SO_REUSEPORT, so the kernel spreads connections
over them and one worker's death costs only the connections it held; the sockets systemd
passed, if it passed any, are shared instead.

They share the one store.  SQLite takes one writer at a time across processes (its file lock,
waited on with busy_timeout): each worker's appends, claims and records take turns with the
others'.  The claim cursor and the leases are in the store, so a delivery is claimed once
whoever acknowledged it, a duplicate sent to two workers at once is found at the claim (SPEC
section 4), and the work of a worker that died is taken over by the one that replaces it
(its leases name a dead pid) or, failing that, by any when the leases lapse.  Worker 0 alone
checkpoints the WAL and purges.

Each worker speaks systemd's notify protocol to the supervisor over a socketpair (SEQPACKET: a
worker whose supervisor was killed sees its end close, and stops):
READY=1, RELOADING=1, STATUS=, WATCHDOG=1 (a worker whose pings stop is killed and replaced),
and two messages of ours: FASTWEBHOOK_REFRESH=<token> asks every other worker to read the
stored workflows again, FASTWEBHOOK_REFRESHED=<token> says one did (and, to the asker, that all
did: an admin API change answers only once every process has it).  READY=1 goes to systemd
once every worker listens.  Metrics: metrics.SharedCells, a file per worker in one directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

import uvloop

from ..config.model import Config
from ..config.loader import load_config
from ..core.errors import ConfigErrors, FastwebhookError
from ..core.ids import reseed
from .binding import bind, check_free
from .pipe import REFRESH_WAIT, REPLY, Worker, new_buffer, new_pipe, receive, send, send_bytes
from .server import run_worker, serve
from .systemd import Notifier, listen_sockets

log = logging.getLogger("fastwebhook.processes")
WORKER_SILENCE = 20.0       # ... and how long without one before it is killed and replaced
STOP_WAIT = 25.0            # SIGTERM to SIGKILL: the workers' drain (5 s) and grace (10 s), and some;
                            # under the unit's TimeoutStopSec (30 s)
SEND_WAIT = 1.0             # longest the supervisor waits for room in a worker's pipe
RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)   # after deaths in a row, each within STABLE
STABLE = 10.0
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


@dataclass
class _Child:
    index: int
    pid: int
    control: socket.socket                  # the supervisor's end
    started: float
    ready: bool = False       # sent READY=1 once (a reload does not unset it)
    reloading: bool = False
    last_ping: float = 0.0
    status: str = ""
    control_open: bool = True


@dataclass
class _Refresh:
    asker: int
    waiting: set[int]
    deadline: float


@dataclass
class ProcessSupervisor:
    config: Config
    count: int
    notifier: Notifier = field(default_factory=Notifier)

    def __post_init__(self):
        self.children: dict[int, _Child] = {}       # by index
        self.restart_at: dict[int, float] = {}      # index -> when to fork it again
        self.failures: dict[int, int] = {}          # quick deaths in a row, by index
        self.refreshes: dict[str, _Refresh] = {}
        self.stopping = False
        self.announced = False                      # READY=1 sent for the start
        self.reloading = False
        self.exit_code = 0
        self.buffer = new_buffer()

    # -- the supervisor's life -----------------------------------------------------------------
    def run(self) -> int:
        self.shared_sockets = listen_sockets()
        self.placeholders, self.listen = [], ()
        if not self.shared_sockets:   # before anything starts: a busy port is one error at once
            self.listen = self._reserve_ports()
        self.metrics_dir = tempfile.mkdtemp(prefix="fastwebhook-metrics-", dir=os.environ.get("RUNTIME_DIRECTORY"))
        self.wakeup_read, self.wakeup_write = socket.socketpair()
        for end in (self.wakeup_read, self.wakeup_write):
            end.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.wakeup_read, selectors.EVENT_READ)
        self.pending_signals: list[int] = []
        previous = {signum: signal.signal(signum, self._on_signal) for signum in SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self.wakeup_write.fileno())
        try:
            log.info("starting worker processes", extra={"processes": self.count, "metrics_dir": self.metrics_dir})
            self._spawn(0)     # the others one by one, each once the one before is ready
            self._loop()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.notifier.close()
        log.info("stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def _reserve_ports(self) -> tuple[tuple[str, int], ...]:
        """Each listen address bound once here, with SO_REUSEPORT and never listening: port 0
        becomes one port for every worker, and the port stays ours while a worker restarts."""
        check_free(self.config.server.listen)
        bound = []
        for host, port in self.config.server.listen:
            sockets = bind(host, port, reuse_port=True)
            self.placeholders += sockets
            bound.append((host, sockets[0].getsockname()[1]))
        return tuple(bound)

    def _on_signal(self, signum: int, frame) -> None:
        self.pending_signals.append(signum)     # handled in the loop (the wakeup fd woke it)

    def _loop(self) -> None:
        next_ping = time.monotonic()
        while self.children or (not self.stopping and self.restart_at):
            now = time.monotonic()
            if self.notifier.watchdog_interval is not None and now >= next_ping:
                self.notifier.send(WATCHDOG=1)
                next_ping = now + self.notifier.watchdog_interval
            deadline = min([next_ping if self.notifier.watchdog_interval else now + 1.0, now + 1.0,
                            *self.restart_at.values()])
            for key, _ in self.selector.select(max(0.0, deadline - now)):
                if key.fileobj is self.wakeup_read:
                    try:
                        self.wakeup_read.recv(4096)
                    except BlockingIOError:
                        pass
                else:
                    self._message(key.data, key.fileobj)
            signals, self.pending_signals = self.pending_signals, []
            for signum in signals:
                self._signal(signum)
            self._tend(time.monotonic())

    def _signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self._reap()
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self._stop(signum)
        elif signum == signal.SIGHUP:
            self._reload()

    def _stop(self, signum: int) -> None:
        if self.stopping:
            return
        log.info("stopping the worker processes", extra={"signal": signal.Signals(signum).name})
        self.stopping = True
        self.stop_by = time.monotonic() + STOP_WAIT
        self.restart_at.clear()
        self.notifier.stopping()
        for child in self.children.values():
            _kill(child.pid, signal.SIGTERM)

    def _reload(self) -> None:
        if self.stopping:
            return
        if self.reloading or not self.announced:
            log.warning("SIGHUP while the workers start or reload: ignored (send it again once they are ready)")
            return
        self.reloading = True
        self.notifier.reloading()
        for child in self.children.values():
            if child.ready:   # one still starting reads the config file as it starts anyway
                child.reloading = True
                _kill(child.pid, signal.SIGHUP)

    def _tend(self, now: float) -> None:
        """Restarts due, workers gone silent, shutdown overdue, refreshes overdue."""
        if self.stopping:
            if now > self.stop_by:
                for child in self.children.values():
                    log.error("a worker did not stop in time: killed", extra={"worker": child.index, "worker_pid": child.pid})
                    _kill(child.pid, signal.SIGKILL)
                self.stop_by = now + 5.0
                self.exit_code = 1
            return
        for index, when in list(self.restart_at.items()):
            if now >= when:
                del self.restart_at[index]
                self._spawn(index)
        for child in self.children.values():
            if child.last_ping and now - child.last_ping > WORKER_SILENCE:
                log.error("a worker's event loop stopped turning: killed, to be replaced",
                          extra={"worker": child.index, "worker_pid": child.pid, "silent_seconds": round(now - child.last_ping, 1)})
                child.last_ping = 0.0
                _kill(child.pid, signal.SIGKILL)
        for token, refresh in list(self.refreshes.items()):
            if now > refresh.deadline:
                log.warning("workers did not confirm reading the stored workflows in time",
                            extra={"workers": sorted(refresh.waiting)})
                self._refreshed(token, refresh)

    # -- the workers ---------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        mine, theirs = new_pipe()
        # Blocked across the fork: a signal in between would reach the supervisor's handler in
        # the child; the worker takes them (default action until serve() installs its own).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        pid = os.fork()
        if pid == 0:   # the worker: it never returns into the supervisor's code
            code = 1
            try:
                mine.close()
                self._become_worker()
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

                code = run_worker(self._current_config(), Worker(index, theirs, self.shared_sockets,
                                                                 self.listen, self.metrics_dir))
            except FastwebhookError as exc:   # a port taken since the supervisor's check, say
                print(f"fastwebhook: worker {index}: {exc}", file=sys.stderr)
            except BaseException:  # noqa: BLE001 - whatever it was, the worker ends here, loudly
                traceback.print_exc()
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        theirs.close()
        mine.setblocking(False)
        child = _Child(index, pid, mine, time.monotonic())
        self.children[index] = child
        self.selector.register(mine, selectors.EVENT_READ, index)
        log.info("worker started", extra={"worker": index, "worker_pid": pid})

    def _current_config(self) -> Config:
        """The config file as it is now (a worker started after a SIGHUP serves what the others
        reloaded), with the sections a reload does not change; the supervisor's own if the file
        no longer loads (the log says why)."""
        try:
            new = load_config(self.config.source)
        except ConfigErrors as exc:
            log.error("a worker starts on the config the server started with: the file does not load now",
                      extra={"errors": [str(error) for error in exc.errors]})
            return self.config
        return dataclasses.replace(new, server=self.config.server, storage=self.config.storage, queue=self.config.queue)

    def _become_worker(self) -> None:
        """What the supervisor holds that a worker must not: signal handling, the other
        workers' pipes, the placeholders (closed: only the worker's own socket listens)."""
        signal.set_wakeup_fd(-1)
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        for child in self.children.values():
            child.control.close()
        self.selector.close()
        self.wakeup_read.close()
        self.wakeup_write.close()
        for sock in self.placeholders:
            sock.close()
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            os.environ.pop(name, None)
        reseed()   # else two workers make the same ids in the same millisecond

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children.values() if c.pid == pid), None)
            if child is not None:
                self._gone(child, os.waitstatus_to_exitcode(status))

    def _gone(self, child: _Child, code: int) -> None:
        del self.children[child.index]
        if child.control_open:
            self.selector.unregister(child.control)
        child.control.close()
        open(os.path.join(self.metrics_dir, f"{child.pid}.dead"), "w").close()   # its gauges stop counting
        for token, refresh in list(self.refreshes.items()):
            refresh.waiting.discard(child.index)
            if refresh.asker == child.index:
                del self.refreshes[token]
            elif not refresh.waiting:
                self._refreshed(token, refresh)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if self.stopping:
            log.info("worker stopped", extra={"worker": child.index, "worker_pid": child.pid, "how": how})
            if code != 0:
                self.exit_code = 1
            return
        if not child.ready and not self.announced:
            log.error("a worker ended before it was ready: stopping", extra={
                "worker": child.index, "worker_pid": child.pid, "how": how})
            self.exit_code = 1
            self._stop(signal.SIGTERM)
            return
        quick = time.monotonic() - child.started < STABLE
        failures = self.failures[child.index] = self.failures.get(child.index, 0) + 1 if quick else 0
        delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
        log.error("a worker ended: starting a new one", extra={
            "worker": child.index, "worker_pid": child.pid, "how": how, "restart_in_seconds": delay})
        self.restart_at[child.index] = time.monotonic() + delay
        self._after_change()

    def _message(self, index: int, control: socket.socket) -> None:
        child = self.children.get(index)
        while child is not None:
            try:
                data = receive(control, self.buffer)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:   # the worker closed its end: it is ending (reaped on its SIGCHLD)
                self.selector.unregister(control)
                child.control_open = False
                return
            if data.startswith(REPLY):   # a sync answer: for whichever other worker holds its sender
                for other in self.children.values():
                    if other.index != index:
                        send_bytes(other.control, data, SEND_WAIT)
                continue
            fields = dict(line.partition("=")[::2] for line in data.decode(errors="replace").splitlines())
            if "WATCHDOG" in fields:
                child.last_ping = time.monotonic()
            if "STATUS" in fields:
                child.status = fields["STATUS"]
            if fields.get("RELOADING") == "1":
                child.reloading = True
            if fields.get("READY") == "1":
                child.ready = True
                child.reloading = False
                child.last_ping = child.last_ping or time.monotonic()
                self._after_change()
            elif "STATUS" in fields and self.announced:
                self.notifier.status(self._status())
            if "FASTWEBHOOK_REFRESH" in fields:
                self._refresh(index, fields["FASTWEBHOOK_REFRESH"])
            if "FASTWEBHOOK_REFRESHED" in fields:
                refresh = self.refreshes.get(fields["FASTWEBHOOK_REFRESHED"])
                if refresh is not None:
                    refresh.waiting.discard(index)
                    if not refresh.waiting:
                        self._refreshed(fields["FASTWEBHOOK_REFRESHED"], refresh)

    def _after_change(self) -> None:
        """READY=1 to systemd once every worker is ready: at the start, and after a reload."""
        if self.stopping:
            return
        unborn = [i for i in range(self.count) if i not in self.children and i not in self.restart_at]
        if not self.announced and unborn and all(c.ready for c in self.children.values()):
            # One at a time: a fresh database is switched to WAL and given its tables by the
            # first, which two at once could not both do (SQLite answers one "database is locked").
            self._spawn(unborn[0])
            return
        all_ready = len(self.children) == self.count and all(c.ready and not c.reloading for c in self.children.values())
        if not all_ready:
            return
        if not self.announced:
            self.announced = True
            log.info("ready", extra={"processes": self.count, "worker_pids": [c.pid for c in self.children.values()]})
            self.notifier.ready(self._status())
        elif self.reloading:
            self.reloading = False
            self.notifier.ready(self._status())
        else:
            self.notifier.status(self._status())

    def _status(self) -> str:
        first = self.children.get(0)
        return f"{len(self.children)} of {self.count} processes" + (f"; worker 0: {first.status}" if first and first.status else "")

    def _refresh(self, asker: int, token: str) -> None:
        """Every other worker reads the stored workflows again; the asker hears once the ready
        ones have (one still starting reads the message once it listens to its pipe)."""
        others = [i for i in self.children if i != asker]
        for index in others:
            send(self.children[index].control, f"FASTWEBHOOK_REFRESH={token}", SEND_WAIT)
        refresh = _Refresh(asker, {i for i in others if self.children[i].ready}, time.monotonic() + REFRESH_WAIT)
        if not refresh.waiting:
            self._refreshed(token, refresh)
            return
        self.refreshes[token] = refresh

    def _refreshed(self, token: str, refresh: _Refresh) -> None:
        self.refreshes.pop(token, None)
        asker = self.children.get(refresh.asker)
        if asker is not None:
            send(asker.control, f"FASTWEBHOOK_REFRESHED={token}", SEND_WAIT)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def worker_count(config: Config) -> int:
    return config.server.processes or os.cpu_count() or 1


def run_processes(config: Config) -> int:
    return ProcessSupervisor(config, worker_count(config)).run()


def run(config: Config) -> int:
    """Serve until SIGTERM: in this process, or as the supervisor of several."""
    if worker_count(config) > 1:
        return run_processes(config)
    uvloop.run(serve(config))
    return 0
