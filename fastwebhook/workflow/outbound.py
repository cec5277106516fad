"""The shared outbound HTTP client: one aiohttp connection pool for the whole process.

Request nodes and http notification channels go through it, so keep-alive connections to a
busy endpoint are reused across executions instead of a TCP (and TLS) handshake per call.
The session is made in `start()` because aiohttp binds it to the running event loop, which
exists only once the server runs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

USER_AGENT = "fastwebhook"
POOL_SIZE = 256          # connections open at once, all hosts together (aiohttp's default is 100)
DNS_CACHE_SECONDS = 60   # webhook targets rarely move; a minute keeps a moved one reachable


class ResponseTooLarge(Exception):
    """An answer past the size a node will hold in memory and record."""


class HttpClient:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, ttl_dns_cache=DNS_CACHE_SECONDS)
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

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


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
