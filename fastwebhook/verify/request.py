"""The part of a request a scheme may read besides body and headers, and URL helpers.

Built per request only for verifiers with ``needs_request`` (twilio, wecom, token with `query`,
a Meta `verify_token`); every other verifier is called with None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from ..core.errors import ConfigError
from ..http.messages import parse_query


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a scheme may read of the request besides body and headers (built only on demand)."""

    method: str
    path: str                 # without the query
    query_string: bytes
    url: str                  # the URL the sender signed (see `build`)
    query: Mapping[str, str]  # parsed query (a MultiDict: a repeated name's first value)

    @classmethod
    def build(cls, method: str, path: str, query_string: bytes, headers: Mapping[str, str],
              base: str = "", tls: bool = False) -> RequestView:
        """``base`` is `public_url_base(workflow.public_url)`; empty means trust the Host header."""
        if not base:
            base = ("https://" if tls else "http://") + headers.get("host", "")
        text = query_string.decode("latin-1")
        # The URL keeps the query exactly as sent: senders sign the bytes they requested.
        url = base + path + ("?" + text if text else "")
        return cls(method, path, query_string, url, parse_query(text) if text else {})


def public_url_base(public_url: str, path: str = "public_url") -> str:
    """Scheme and host of a workflow's ``public_url`` (its path, if any, is not used)."""
    if not public_url:
        return ""
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(path, f"must be http(s)://host[:port], not {public_url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def with_query(url: str, params: Mapping[str, str]) -> str:
    if not params:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(params)
