"""`[server] processes = N`: N worker processes serve one port, under a small supervisor.

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

import asyncio
import dataclasses
import logging
import mmap
import os
import select
import selectors
import shutil
import signal
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field

import orjson

from .config import Config, load_config
from .errors import ConfigErrors
from .http.messages import Response
from .ids import reseed
from .systemd import Notifier, listen_sockets

log = logging.getLogger("fastwebhook.processes")
WORKER_PING = 2.0           # seconds between a worker's WATCHDOG=1 pings to the supervisor
WORKER_SILENCE = 20.0       # ... and how long without one before it is killed and replaced
STOP_WAIT = 25.0            # SIGTERM to SIGKILL: the workers' drain (5 s) and grace (10 s), and some;
                            # under the unit's TimeoutStopSec (30 s)
REFRESH_WAIT = 10.0         # longest an admin API change waits for the other workers
SEND_WAIT = 1.0             # longest the supervisor waits for room in a worker's pipe
RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)   # after deaths in a row, each within STABLE
STABLE = 10.0
CHANNEL_BUFFER = 4 << 20   # bytes: a sync answer made in one worker for a sender in another
REPLY = b"FASTWEBHOOK_REPLY="
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


@dataclass
class Worker:
    """What a worker process is given: who it is, its end of the control pipe, what to
    listen on, where its metrics go."""

    index: int
    control: socket.socket
    sockets: list[socket.socket]            # systemd's, shared by every worker; or none
    listen: tuple[tuple[str, int], ...]     # else these, bound with SO_REUSEPORT
    metrics_dir: str

    @property
    def leader(self) -> bool:
        """The one that checkpoints the WAL and purges (one is enough, and they would collide)."""
        return self.index == 0


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
        self.buffer = _buffer()

    # -- the supervisor's life -----------------------------------------------------------------
    def run(self) -> int:
        self.metrics_dir = tempfile.mkdtemp(prefix="fastwebhook-metrics-", dir=os.environ.get("RUNTIME_DIRECTORY"))
        self.shared_sockets = listen_sockets()
        self.placeholders, self.listen = [], ()
        if not self.shared_sockets:
            self.listen = self._reserve_ports()
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
        bound = []
        for host, port in self.config.server.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            self.placeholders.append(sock)
            bound.append((host, sock.getsockname()[1]))
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
        mine, theirs = _pipe()
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
                from .server import run_worker  # noqa: PLC0415 - the workers' own modules

                code = run_worker(self._current_config(), Worker(index, theirs, self.shared_sockets,
                                                                 self.listen, self.metrics_dir))
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
                data = _receive(control, self.buffer)
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
                        _send_bytes(other.control, data, SEND_WAIT)
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
            _send(self.children[index].control, f"FASTWEBHOOK_REFRESH={token}", SEND_WAIT)
        refresh = _Refresh(asker, {i for i in others if self.children[i].ready}, time.monotonic() + REFRESH_WAIT)
        if not refresh.waiting:
            self._refreshed(token, refresh)
            return
        self.refreshes[token] = refresh

    def _refreshed(self, token: str, refresh: _Refresh) -> None:
        self.refreshes.pop(token, None)
        asker = self.children.get(refresh.asker)
        if asker is not None:
            _send(asker.control, f"FASTWEBHOOK_REFRESHED={token}", SEND_WAIT)


class WorkerPipe:
    """A worker's end of the control pipe: its notify messages to the supervisor, and the
    supervisor's asks to read the stored workflows again."""

    def __init__(self, worker: Worker):
        self.socket = worker.control
        self.socket.setblocking(False)
        self.waiting: dict[str, asyncio.Future] = {}
        self.tasks: set[asyncio.Task] = set()
        self.refresh = None
        self.buffer = _buffer()

    def notifier(self) -> Notifier:
        return Notifier.over(self.socket, WORKER_PING)

    def start(self, refresh, replies: dict, orphaned) -> None:
        """`refresh()`: this worker reads the stored workflows again (another one changed them);
        `replies`: its sync senders' answers waiting, by delivery id; `orphaned()`: the
        supervisor is gone (killed): the worker stops as on SIGTERM."""
        self.refresh, self.replies, self.orphaned = refresh, replies, orphaned
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.socket, self._read)

    def close(self) -> None:
        self.loop.remove_reader(self.socket)
        for waiter in self.waiting.values():
            waiter.cancel()

    async def refresh_others(self) -> None:
        """Every other worker has read the stored workflows again when this returns (or the
        supervisor gave up waiting for one, and logged it)."""
        token = os.urandom(8).hex()
        done = self.waiting[token] = self.loop.create_future()
        _send(self.socket, f"FASTWEBHOOK_REFRESH={token}")
        try:
            await asyncio.wait_for(done, REFRESH_WAIT + 5.0)
        except asyncio.TimeoutError:
            log.warning("the supervisor did not confirm that the other workers read the stored workflows")
        finally:
            self.waiting.pop(token, None)

    def _read(self) -> None:
        while True:
            try:
                data = _receive(self.socket, self.buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                data, error = b"", exc
            else:
                error = None
            if not data:
                log.error("the supervisor is gone: stopping", extra={"error": str(error) if error else None})
                self.loop.remove_reader(self.socket)
                self.orphaned()
                return
            if data.startswith(REPLY):
                self._answer(data)
                continue
            fields = dict(line.partition("=")[::2] for line in data.decode(errors="replace").splitlines())
            if "FASTWEBHOOK_REFRESH" in fields:
                task = self.loop.create_task(self._refresh_and_confirm(fields["FASTWEBHOOK_REFRESH"]))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            waiter = self.waiting.get(fields.get("FASTWEBHOOK_REFRESHED", ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def forward_reply(self, delivery_id: bytes, response: Response) -> None:
        """The answer for a sync delivery another worker acknowledged (its sender waits there):
        to every other worker through the supervisor; the one holding the sender answers."""
        message = REPLY + delivery_id.hex().encode() + b" " + _encode_response(response)
        if len(message) > self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2:
            message = REPLY + delivery_id.hex().encode() + b" " + _encode_response(Response.error(
                500, f"the answer ({len(response.body)} bytes) was made by another worker process and is too "
                     "large to pass on to this one"))
        _send_bytes(self.socket, message)

    def _answer(self, data: bytes) -> None:
        head, _, payload = data[len(REPLY):].partition(b" ")
        try:
            reply = self.replies.pop(bytes.fromhex(head.decode()), None)
        except ValueError:
            return
        if reply is not None and not reply.done():
            try:
                status, content_type, headers, body = orjson.loads(payload)
            except (orjson.JSONDecodeError, ValueError) as exc:
                log.error("a sync answer from another worker could not be read: %s", exc)
                reply.set_result(Response.error(500, "the answer from another worker process could not be read"))
                return
            reply.set_result(Response(status, body.encode("latin-1"), content_type.encode("latin-1"),
                                      tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)))

    async def _refresh_and_confirm(self, token: str) -> None:
        try:
            await self.refresh()
        except Exception:  # noqa: BLE001 - said, and confirmed anyway: the asker must not hang
            log.exception("reading the stored workflows again failed")
        finally:
            _send(self.socket, f"FASTWEBHOOK_REFRESHED={token}")


def _encode_response(response: Response) -> bytes:
    return orjson.dumps([response.status, response.content_type.decode("latin-1"),
                         [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers],
                         response.body.decode("latin-1")])


def _pipe() -> tuple[socket.socket, socket.socket]:
    """A socketpair of messages (SEQPACKET: each end sees the other close) with room for a
    sync answer passed between workers."""
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in pair:
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CHANNEL_BUFFER)
    return pair


def _buffer() -> memoryview:
    """Room for the largest message, whole (SEQPACKET cuts a longer one short); its pages are
    only touched as far as messages reach."""
    return memoryview(mmap.mmap(-1, CHANNEL_BUFFER))


def _receive(control: socket.socket, buffer: memoryview) -> bytes:
    """One message (b"" when the other end closed)."""
    return bytes(buffer[:control.recv_into(buffer)])


def _send(control: socket.socket, message: str, wait: float = 0.0) -> None:
    _send_bytes(control, message.encode(), wait)


def _send_bytes(control: socket.socket, message: bytes, wait: float = 0.0) -> None:
    """One message; with `wait` (the supervisor's sends), up to that long for room in a busy
    worker's buffer, rather than dropping it at once (a worker's own sends never wait: its
    event loop must not stop, and the supervisor reads at once)."""
    try:
        try:
            control.send(message)
        except BlockingIOError:
            if not wait or not select.select([], [control], [], wait)[1]:
                raise
            control.send(message)
    except OSError as exc:   # full, or the worker is going (its death is handled when it is reaped)
        log.warning("could not reach a worker: %s", exc)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def worker_count(config: Config) -> int:
    return config.server.processes or os.cpu_count() or 1


def run_processes(config: Config) -> int:
    return ProcessSupervisor(config, worker_count(config)).run()
