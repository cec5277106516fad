"""Who is asking: IP allowlists as address ranges, and the client address behind trusted proxies.

Everything is prepared at load: an `AddressSet` holds each family's networks as sorted, merged
ranges of packed addresses, so a lookup is one `inet_pton` and one bisect.  `ipaddress` only
reads the config; parsing a request's address with it would cost ten times as much.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from socket import AF_INET, AF_INET6, inet_pton
from typing import Iterable, Mapping

_V4_MAPPED = 0xFFFF << 32           # ::ffff:0:0/96 - an IPv4 address written as IPv6
_V4_MAPPED_LAST = _V4_MAPPED | 0xFFFFFFFF
_V4_MAPPED_PREFIX = _V4_MAPPED.to_bytes(16, "big")[:12]
_BAD_ADDRESS = (OSError, ValueError, TypeError)   # inet_pton: illegal, NUL inside, not a str


class AddressSet:
    """A set of IPv4 and IPv6 networks answering ``"10.1.2.3" in addresses``.

    IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, what a dual-stack socket reports for an IPv4
    peer) count as their IPv4 address, on both sides: a mapped network joins the IPv4 ranges.
    Ranges are kept as packed big-endian bytes, which sort like the numbers they spell, so the
    `inet_pton` result is compared as it comes.  Anything that is not an address is in no set.
    """

    __slots__ = ("_v4_starts", "_v4_ends", "_v6_starts", "_v6_ends", "networks")

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network | str] = ()):
        self.networks = tuple(ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n
                              for n in networks)
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for network in self.networks:
            first, last = int(network.network_address), int(network.broadcast_address)
            if network.version == 4:
                v4.append((first, last))
                continue
            v6.append((first, last))
            if first <= _V4_MAPPED_LAST and last >= _V4_MAPPED:
                v4.append((max(first, _V4_MAPPED) - _V4_MAPPED, min(last, _V4_MAPPED_LAST) - _V4_MAPPED))
        self._v4_starts, self._v4_ends = _merge(v4, 4)
        self._v6_starts, self._v6_ends = _merge(v6, 16)

    def match(self, ip: str) -> bool | None:
        """Whether `ip` is in the set; None when it is not an address at all."""
        try:
            if ":" in ip:
                if "%" in ip:                   # fe80::1%eth0: the zone does not change who it is
                    ip = ip.partition("%")[0]
                packed = inet_pton(AF_INET6, ip)
                if packed[:12] == _V4_MAPPED_PREFIX:
                    packed = packed[12:]
                    starts, ends = self._v4_starts, self._v4_ends
                else:
                    starts, ends = self._v6_starts, self._v6_ends
            else:
                packed = inet_pton(AF_INET, ip)
                starts, ends = self._v4_starts, self._v4_ends
        except _BAD_ADDRESS:
            return None
        i = bisect_right(starts, packed) - 1
        return i >= 0 and packed <= ends[i]

    # `in` makes a bool of whatever this returns, so "not an address" (None) reads as False.
    __contains__ = match

    def __bool__(self) -> bool:
        return bool(self._v4_starts or self._v6_starts)

    def __repr__(self) -> str:
        return f"AddressSet({[str(n) for n in self.networks]!r})"


def _merge(ranges: list[tuple[int, int]], width: int) -> tuple[list[bytes], list[bytes]]:
    """Sorted, non-overlapping, non-adjacent ranges as two parallel lists for bisect."""
    starts: list[int] = []
    ends: list[int] = []
    for first, last in sorted(ranges):
        if ends and first <= ends[-1] + 1:
            ends[-1] = max(ends[-1], last)
        else:
            starts.append(first)
            ends.append(last)
    return [n.to_bytes(width, "big") for n in starts], [n.to_bytes(width, "big") for n in ends]


def client_ip(peer: str, headers: Mapping[str, str], trusted: AddressSet) -> str:
    """The address of whoever sent the request, believing only proxies in `trusted`.

    From an untrusted peer every forwarding header is ignored (anyone can write one).  From a
    trusted peer the chain in ``X-Forwarded-For`` (or, without it, RFC 7239 ``Forwarded``) is
    walked right to left, each hop appended by the proxy to its right: trusted hops are skipped,
    the first untrusted one is the client.  All trusted: the left-most.  A hop that is not an
    address ("unknown", an obfuscated name, garbage) ends the walk: what lies to its left was
    written by nobody we can vouch for, so the last good hop is the answer.  Never raises.
    """
    if not trusted or peer not in trusted:
        return peer
    chain = headers.get("x-forwarded-for")
    if chain is not None:
        hops, address_of = chain.split(","), _hop_address
    else:
        chain = headers.get("forwarded")
        if chain is None:
            return peer
        hops, address_of = chain.split(","), _forwarded_address
    client = peer
    for hop in reversed(hops):
        address = address_of(hop)
        trusted_hop = trusted.match(address) if address else None
        if trusted_hop is None:
            return client
        if not trusted_hop:
            return address
        client = address
    return client


def _forwarded_address(element: str) -> str:
    """The address in the ``for=`` of one Forwarded element, "" when it has none.

    Elements and pairs are split on every ',' and ';' even inside quotes: no address holds one,
    and a quote-aware scan would let an unbalanced quote written by the client swallow the
    elements the proxies appended to its right.
    """
    for pair in element.split(";"):
        name, _, value = pair.partition("=")
        if name.strip().lower() == "for":
            value = value.strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            return _hop_address(value)
    return ""


def _hop_address(hop: str) -> str:
    """The address part of one hop, "" if it has none: ``1.2.3.4``, ``1.2.3.4:80``,
    ``2001:db8::1``, ``[2001:db8::1]:80``.  Whether it is an address, `AddressSet.match` says."""
    hop = hop.strip()
    if hop.startswith("["):
        host, bracket, port = hop[1:].partition("]")
        if bracket and ":" in host and (not port or port[0] == ":" and _is_port(port[1:])):
            return host
        return ""
    if hop.count(":") == 1 and "." in hop:          # IPv4 with a port
        host, _, port = hop.partition(":")
        return host if _is_port(port) else ""
    return hop


def _is_port(port: str) -> bool:
    if port.isascii() and port.isdigit():
        return len(port) <= 5 and int(port) <= 65535
    return port.startswith("_")   # RFC 7239 obfuscated port: it says nothing about who the client is
