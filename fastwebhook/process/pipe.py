"""The control pipe between a worker process and its supervisor (SEQPACKET socketpair):
systemd's notify messages and ours (see process/supervisor.py), and sync answers handed
from the worker that made them to the one holding their sender."""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import select
import socket
from dataclasses import dataclass

import orjson

from ..http.messages import Response
from .systemd import Notifier

log = logging.getLogger("fastwebhook.processes")
WORKER_PING = 2.0           # seconds between a worker's WATCHDOG=1 pings to the supervisor
REFRESH_WAIT = 10.0         # longest an admin API change waits for the other workers
PIPE_BUFFER = 4 << 20       # bytes: a sync answer made in one worker for a sender in another
REPLY = b"FASTWEBHOOK_REPLY="


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


class WorkerPipe:
    """A worker's end of the control pipe: its notify messages to the supervisor, and the
    supervisor's asks to read the stored workflows again."""

    def __init__(self, worker: Worker):
        self.socket = worker.control
        self.socket.setblocking(False)
        self.waiting: dict[str, asyncio.Future] = {}
        self.tasks: set[asyncio.Task] = set()
        self.refresh = None
        self.buffer = new_buffer()

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
        send(self.socket, f"FASTWEBHOOK_REFRESH={token}")
        try:
            await asyncio.wait_for(done, REFRESH_WAIT + 5.0)
        except asyncio.TimeoutError:
            log.warning("the supervisor did not confirm that the other workers read the stored workflows")
        finally:
            self.waiting.pop(token, None)

    def _read(self) -> None:
        while True:
            try:
                data = receive(self.socket, self.buffer)
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
        message = REPLY + delivery_id.hex().encode() + b" " + encode_response(response)
        if len(message) > self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2:
            message = REPLY + delivery_id.hex().encode() + b" " + encode_response(Response.error(
                500, f"the answer ({len(response.body)} bytes) was made by another worker process and is too "
                     "large to pass on to this one"))
        send_bytes(self.socket, message)

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
            send(self.socket, f"FASTWEBHOOK_REFRESHED={token}")


def encode_response(response: Response) -> bytes:
    return orjson.dumps([response.status, response.content_type.decode("latin-1"),
                         [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers],
                         response.body.decode("latin-1")])


def new_pipe() -> tuple[socket.socket, socket.socket]:
    """A socketpair of messages (SEQPACKET: each end sees the other close) with room for a
    sync answer passed between workers."""
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in pair:
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIPE_BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PIPE_BUFFER)
    return pair


def new_buffer() -> memoryview:
    """Room for the largest message, whole (SEQPACKET cuts a longer one short); its pages are
    only touched as far as messages reach."""
    return memoryview(mmap.mmap(-1, PIPE_BUFFER))


def receive(control: socket.socket, buffer: memoryview) -> bytes:
    """One message (b"" when the other end closed)."""
    return bytes(buffer[:control.recv_into(buffer)])


def send(control: socket.socket, message: str, wait: float = 0.0) -> None:
    send_bytes(control, message.encode(), wait)


def send_bytes(control: socket.socket, message: bytes, wait: float = 0.0) -> None:
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
