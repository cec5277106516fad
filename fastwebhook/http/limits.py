"""What a connection may send and how long it may take: the limits, the deadlines of its one
timer, and the prebuilt answers to a request that breaks them or is malformed (each with its
reason for the request log and rejected_total).  The protocol (protocol.py) enforces them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .messages import Response

# (answer, reason for the request log and rejected_total; None: the application logged it)
MALFORMED = (Response.error(400, "malformed HTTP request", close=True), "malformed")
HEADERS_TOO_LARGE = (Response.error(431, "request headers too large", close=True), "header_size")
UNSUPPORTED_UPGRADE = (Response.error(400, "protocol upgrade is not supported", close=True), "upgrade")
VERSION_NOT_SUPPORTED = (Response.error(505, "HTTP version not supported", close=True), "version")
BAD_HOST = (Response.error(400, "missing, repeated or invalid Host header", close=True), "malformed")
# A host is a reg-name, an IPv4 address or a bracketed IPv6 literal, with an optional port.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")


class Deadline(Enum):
    """What a connection's one timer waits for."""
    READ = "read"        # the rest of a request that began
    IDLE = "idle"        # the next request on a quiet keep-alive connection
    ANSWER = "answer"    # the application's answer to a request read


@dataclass(frozen=True)
class Limits:
    max_header_size: int
    max_body_size: int
    read_timeout: float
    keepalive_timeout: float
    answer_timeout: float = 60.0    # a response still not ready after this: 503 and close

    @property
    def tick(self) -> float:
        return min(self.read_timeout, self.keepalive_timeout)


def valid_host(value: str) -> bool:
    if value.replace(".", "").replace(":", "").isalnum():  # the common "host:port" or "a.b.c"
        return True
    return _HOST.fullmatch(value.strip()) is not None
