"""The shared outbound HTTP client: one aiohttp connection pool for the whole process.

Request nodes and http notification channels go through it, so keep-alive connections to a
busy endpoint are reused across executions instead of a TCP (and TLS) handshake per call.
The session is made in `start()` because aiohttp binds it to the running event loop, which
exists only once the server runs.

`[outbound] deny` is enforced where the address is known: an IP literal before the call, a
name in the connector's resolver, which sees every address the name resolves to and hands the
connector exactly those, so a second lookup (DNS rebinding) never gets a say.  Redirects are
never followed here: the request node follows them itself, hop by hop, through `request()`.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Iterable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

USER_AGENT = "fastwebhook"
POOL_SIZE = 256          # connections open at once, all hosts together (aiohttp's default is 100)
DNS_CACHE_SECONDS = 60   # webhook targets rarely move; a minute keeps a moved one reachable
# Link-local (where every big cloud serves instance metadata and credentials, 169.254.169.254),
# AWS's IPv6 metadata address, Alibaba Cloud's metadata address and Azure's WireServer (the
# host agent, which hands out extension settings).  Private ranges are the operator's call.
DEFAULT_DENY = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "168.63.129.16/32")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ResponseTooLarge(Exception):
    """An answer past the size a node will hold in memory and record."""


class Denied(Exception):
    """A destination `[outbound] deny` forbids.  Not an OSError: aiohttp would wrap that in a
    connection error, which a node retries."""


def denied(address: str, deny: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])   # an IPv6 scope (fe80::1%eth0) aside
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:        # ::ffff:169.254.169.254 is the v4 one
        ip = ip.ipv4_mapped
    return any(ip in network for network in deny)


class _DenyingResolver(AbstractResolver):
    """The default resolver, refusing a name if any of its addresses is denied."""

    def __init__(self, deny: tuple[Network, ...]) -> None:
        self._inner = aiohttp.DefaultResolver()
        self._deny = deny

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        found = await self._inner.resolve(host, port, family)
        if any(denied(entry["host"], self._deny) for entry in found):
            raise Denied(f"{host} resolves to an address denied by [outbound] deny")
        return found

    async def close(self) -> None:
        await self._inner.close()


class HttpClient:
    def __init__(self, deny: Iterable[Network] | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _DenyingResolver | None = None
        self.deny: tuple[Network, ...] = tuple(deny) if deny is not None else default_deny()

    async def start(self) -> None:
        if self._session is None:
            self._resolver = _DenyingResolver(self.deny)
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, ttl_dns_cache=DNS_CACHE_SECONDS,
                                             resolver=self._resolver)
            # trust_env=False: the process environment must not reroute calls through a proxy
            # the config never mentions; cookies are not carried from one execution to the next.
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": USER_AGENT}, trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the outbound HTTP client is not started")
        return self._session

    def request(self, method: str, url: str, **options: Any):
        """`session.request` (an async context manager) that follows no redirect and refuses a
        denied IP literal (a name is checked by the resolver) with Denied."""
        host = urlsplit(url).hostname or ""
        if denied(host, self.deny):
            raise Denied(f"{host} is denied by [outbound] deny")
        return self.session.request(method, url, allow_redirects=False, **options)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._resolver is not None:
            resolver, self._resolver = self._resolver, None
            await resolver.close()


def default_deny() -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in DEFAULT_DENY)


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refusing (ResponseTooLarge) past `limit` bytes rather than buffering
    whatever a misbehaving endpoint streams."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise ResponseTooLarge(f"the response body is {declared} bytes, over the {limit} bytes a node keeps")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 << 10):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"the response body is over the {limit} bytes a node keeps")
        chunks.append(chunk)
    return b"".join(chunks)


def is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port   # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def display_url(url: str) -> str:
    """The URL without its query string and credentials, which may hold secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("?", 1)[0].rpartition("@")[2]
    if not parts.scheme:
        return url.split("?", 1)[0][:200]
    return f"{parts.scheme}://{host}{port}{parts.path}"
