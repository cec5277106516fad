"""The listening sockets of `server.listen`, bound before anything else starts.

A port another process holds is then one line and exit 1 at once, not a traceback after the
store opened, with the process left running and listening nowhere.
"""

from __future__ import annotations

import errno
import socket

from ..core.errors import FastwebhookError


class ListenError(FastwebhookError):
    """An address of server.listen could not be bound."""


def bind_all(listen, *, reuse_port: bool) -> list[socket.socket]:
    """Every (host, port) bound (not listening yet); on any failure none stays bound."""
    bound: list[socket.socket] = []
    try:
        for host, port in listen:
            bound += bind(host, port, reuse_port=reuse_port)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def bind(host: str, port: int, *, reuse_port: bool) -> list[socket.socket]:
    """A socket per address `host` resolves to, as loop.create_server(host, port) would bind."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, socket.AF_INET6 if ":" in host else socket.AF_UNSPEC,
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {where}: {exc.strerror}") from None
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:   # "::" and "0.0.0.0" are two sockets, as asyncio has them
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        for sock in bound:
            sock.close()
        hint = (f" (another process holds the port: `ss -ltnp 'sport = :{port}'` names it)"
                if exc.errno == errno.EADDRINUSE else "")
        raise ListenError(f"cannot listen on {where}: {exc.strerror}{hint}") from None
    return bound


def check_free(listen) -> None:
    """Raise ListenError if any fixed port of `listen` is bound already.  Several worker
    processes bind with SO_REUSEPORT, which would share the port silently with another server
    that did too (a second fastwebhook); a bind without it fails on any holder."""
    for host, port in listen:
        if port:
            for sock in bind(host, port, reuse_port=False):
                sock.close()
