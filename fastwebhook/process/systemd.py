"""systemd's two protocols: readiness notification (sd_notify) and socket activation.

Both are a few lines of plain sockets, so they are written here rather than taken from a
library: `systemd-python` builds against libsystemd's headers (a compiler and -dev package on
every install), and `sdnotify`, the pure-Python one, has had no release since 2017.

Notify: each message is one datagram of "KEY=VALUE" lines to the AF_UNIX socket named by
$NOTIFY_SOCKET (a leading "@" is Linux's abstract namespace).  Without it every call is a no-op,
so the server runs the same under systemd and without it.

Socket activation: systemd passes listening sockets as file descriptors 3, 4, ... and says how
many in $LISTEN_FDS, for the process $LISTEN_PID; they are taken once and the variables
unset, so a child process does not take them again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

log = logging.getLogger("fastwebhook.systemd")
LISTEN_FDS_START = 3


class Notifier:
    """Messages to systemd's notify socket; silent when there is none."""

    def __init__(self, environ=os.environ):
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self.address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        watchdog_usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID, when set, names the process the watchdog is for (not a child of it)
        wanted = watchdog_usec.isdigit() and int(watchdog_usec) > 0 and \
            (not watchdog_pid or watchdog_pid == str(os.getpid()))
        self.watchdog_interval = int(watchdog_usec) / 2e6 if wanted else None   # seconds: half of it
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def over(cls, connected: socket.socket, watchdog_interval: float) -> "Notifier":
        """The same messages over a connected socket (a worker's to its supervisor)."""
        notifier = cls(environ={})
        notifier._socket, notifier.address = connected, None
        notifier.watchdog_interval = watchdog_interval
        return notifier

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, **fields: str | int) -> None:
        if self._socket is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self.address is None:
                self._socket.send(message)
            else:
                self._socket.sendto(message, self.address)
        except OSError as exc:   # systemd gone or the socket full: the service goes on regardless
            log.warning("systemd notify failed: %s", exc, extra={"notify_socket": self.address})

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd tell this reload from an earlier one (Type=notify-reload)
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> None:
        self.send(STOPPING=1, STATUS="stopping")

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """WATCHDOG=1 every half $WATCHDOG_USEC, from a timer on the event loop: a loop that
        stops turning (blocked, or spinning in one callback) stops the pings, and systemd
        restarts the service."""
        if self._socket is None or self.watchdog_interval is None:
            return

        def ping() -> None:
            self.send(WATCHDOG=1)
            self._watchdog = loop.call_later(self.watchdog_interval, ping)

        ping()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def listen_sockets(environ=os.environ) -> list[socket.socket]:
    """The listening sockets systemd passed this process (none when it passed none); the
    variables are unset so that they are taken once."""
    pid, count = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    if not (pid.isdigit() and count.isdigit()) or int(pid) != os.getpid():
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))   # family and type are read from the descriptor
    return sockets
