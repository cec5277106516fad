"""AddressSet membership and the client address behind trusted proxies, table-driven."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastwebhook.door.netaccess import AddressSet, client_ip

ALLOW = AddressSet(["10.0.0.0/8", "192.168.1.0/24", "203.0.113.7/32", "2001:db8::/32", "::1/128"])


@pytest.mark.parametrize("ip, inside", [
    ("10.0.0.0", True), ("10.255.255.255", True), ("11.0.0.0", False), ("9.255.255.255", False),
    ("192.168.1.77", True), ("192.168.2.1", False),
    ("203.0.113.7", True), ("203.0.113.6", False), ("203.0.113.8", False),
    ("2001:db8::1", True), ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", True), ("2001:db9::", False),
    ("::1", True), ("::2", False), ("0:0:0:0:0:0:0:1", True),
    ("::ffff:10.0.0.1", True),              # IPv4-mapped counts as the IPv4 address
    ("::ffff:a00:1", True),                 # the same, written in hex
    ("::ffff:11.0.0.1", False),
    ("::10.0.0.1", False),                  # IPv4-compatible (deprecated) is not mapped
    ("2001:db8::1%eth0", True),             # a zone does not change the address
    ("", False), ("unix", False), ("10.0.0", False), ("010.0.0.1", False), ("10.0.0.1 ", False),
    ("10.0.0.1/8", False), ("10.0.0.1\x00", False), ("1:2:3", False), ("é", False),
])
def test_membership(ip: str, inside: bool) -> None:
    assert (ip in ALLOW) is inside


def test_mapped_networks_join_ipv4() -> None:
    mapped = AddressSet(["::ffff:10.0.0.0/104"])
    assert "10.1.2.3" in mapped and "::ffff:10.1.2.3" in mapped
    assert "11.0.0.0" not in mapped
    everything = AddressSet(["::/0"])
    assert "1.2.3.4" in everything and "2001:db8::1" in everything


def test_ranges_are_merged() -> None:
    merged = AddressSet(["10.0.0.0/25", "10.0.0.128/25", "10.0.0.64/26", "10.0.2.0/24", "10.0.1.0/24"])
    assert merged._v4_starts == [ipaddress.ip_address("10.0.0.0").packed]
    assert merged._v4_ends == [ipaddress.ip_address("10.0.2.255").packed]
    assert all(f"10.0.{i}.{j}" in merged for i in range(3) for j in (0, 255))
    assert "10.0.3.0" not in merged


def test_accepts_ipaddress_networks_and_strict_false() -> None:
    networks = (ipaddress.ip_network("127.0.0.0/8"), "192.168.1.5/24")
    addresses = AddressSet(networks)
    assert "127.0.0.3" in addresses and "192.168.1.200" in addresses


def test_match_tells_not_an_address_apart() -> None:
    assert ALLOW.match("10.0.0.1") is True
    assert ALLOW.match("11.0.0.1") is False
    assert ALLOW.match("garbage") is None
    assert ("garbage" in ALLOW) is False


def test_empty_set_contains_nothing() -> None:
    empty = AddressSet()
    assert not empty
    assert "127.0.0.1" not in empty and "::1" not in empty
    assert AddressSet(["::1/128"])


# A proxy chain: two local proxies (127.0.0.2, 127.0.0.3) and an IPv6 load balancer range.
TRUSTED = AddressSet(["127.0.0.2/32", "127.0.0.3/32", "::1/128", "2001:db8::/32"])


@pytest.mark.parametrize("peer, headers, expected", [
    # untrusted peers: headers are spoofable and ignored
    ("198.51.100.1", {"x-forwarded-for": "1.1.1.1"}, "198.51.100.1"),
    ("198.51.100.1", {"forwarded": "for=1.1.1.1"}, "198.51.100.1"),
    ("127.0.0.1", {"x-forwarded-for": "1.1.1.1"}, "127.0.0.1"),         # loopback, but not listed
    ("2001:db9::1", {"x-forwarded-for": "1.1.1.1"}, "2001:db9::1"),
    ("unix", {"x-forwarded-for": "1.1.1.1"}, "unix"),
    # trusted peer, X-Forwarded-For
    ("127.0.0.2", {}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "198.51.100.9"}, "198.51.100.9"),
    ("127.0.0.2", {"x-forwarded-for": "198.51.100.9, 127.0.0.3"}, "198.51.100.9"),
    ("127.0.0.2", {"x-forwarded-for": "198.51.100.9,127.0.0.3,  127.0.0.2 "}, "198.51.100.9"),
    # spoofing: the client wrote "1.1.1.1" before our proxy appended its real address
    ("127.0.0.2", {"x-forwarded-for": "1.1.1.1, 198.51.100.9, 127.0.0.3"}, "198.51.100.9"),
    ("127.0.0.2", {"x-forwarded-for": "127.0.0.3, 198.51.100.9"}, "198.51.100.9"),
    # all trusted: the left-most
    ("127.0.0.2", {"x-forwarded-for": "127.0.0.3, 127.0.0.2"}, "127.0.0.3"),
    ("::1", {"x-forwarded-for": "2001:db8::5, 127.0.0.2"}, "2001:db8::5"),
    # IPv6 and mapped hops
    ("::1", {"x-forwarded-for": "2001:db9::7, 2001:db8::1"}, "2001:db9::7"),
    ("::ffff:127.0.0.2", {"x-forwarded-for": "203.0.113.50"}, "203.0.113.50"),
    ("127.0.0.2", {"x-forwarded-for": "203.0.113.50, ::ffff:127.0.0.3"}, "203.0.113.50"),
    ("127.0.0.2", {"x-forwarded-for": "::ffff:203.0.113.50"}, "::ffff:203.0.113.50"),
    # ports and brackets some proxies add
    ("127.0.0.2", {"x-forwarded-for": "203.0.113.50:4711"}, "203.0.113.50"),
    ("127.0.0.2", {"x-forwarded-for": "[2001:db9::1]:4711"}, "2001:db9::1"),
    ("127.0.0.2", {"x-forwarded-for": "[2001:db9::1]"}, "2001:db9::1"),
    # malformed: stop and answer the last good hop
    ("127.0.0.2", {"x-forwarded-for": ""}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "garbage"}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "198.51.100.9, garbage, 127.0.0.3"}, "127.0.0.3"),
    ("127.0.0.2", {"x-forwarded-for": "198.51.100.9,,127.0.0.3"}, "127.0.0.3"),
    ("127.0.0.2", {"x-forwarded-for": "198.51.100.300"}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "[2001:db9::1"}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "[2001:db9::1]x"}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "[198.51.100.9]"}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "198.51.100.9:99999"}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "198.51.100.9:"}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "unknown"}, "127.0.0.2"),
    ("127.0.0.2", {"x-forwarded-for": "198.51.100.9\x00"}, "127.0.0.2"),
    # RFC 7239 Forwarded, used only without X-Forwarded-For
    ("127.0.0.2", {"forwarded": "for=198.51.100.9"}, "198.51.100.9"),
    ("127.0.0.2", {"forwarded": "For=\"198.51.100.9:8080\";proto=https;by=127.0.0.2"}, "198.51.100.9"),
    ("127.0.0.2", {"forwarded": 'for="[2001:db9:cafe::17]:4711"'}, "2001:db9:cafe::17"),
    ("127.0.0.2", {"forwarded": 'for="[2001:db9:cafe::17]"'}, "2001:db9:cafe::17"),
    ("127.0.0.2", {"forwarded": "for=1.1.1.1, for=198.51.100.9, for=127.0.0.3"}, "198.51.100.9"),
    ("127.0.0.2", {"forwarded": "for=127.0.0.3;proto=http, for=127.0.0.2"}, "127.0.0.3"),
    ("127.0.0.2", {"forwarded": "proto=https; FOR = 198.51.100.9 ; host=example.com"}, "198.51.100.9"),
    ("127.0.0.2", {"forwarded": "for=198.51.100.9, for=unknown, for=127.0.0.3"}, "127.0.0.3"),
    ("127.0.0.2", {"forwarded": "for=198.51.100.9, for=_hidden"}, "127.0.0.2"),
    ("127.0.0.2", {"forwarded": 'for="_gazonk:_port"'}, "127.0.0.2"),
    ("127.0.0.2", {"forwarded": 'for="198.51.100.9:_port"'}, "198.51.100.9"),
    ("127.0.0.2", {"forwarded": "by=127.0.0.2"}, "127.0.0.2"),       # an element without for=
    ("127.0.0.2", {"forwarded": 'for="198.51.100.9'}, "127.0.0.2"),   # unbalanced quote
    ("127.0.0.2", {"forwarded": 'for=", for=198.51.100.9'}, "198.51.100.9"),  # client's quote cannot swallow ours
    ("127.0.0.2", {"forwarded": ""}, "127.0.0.2"),
    ("127.0.0.2", {"forwarded": "for=1.1.1.1", "x-forwarded-for": "198.51.100.9"}, "198.51.100.9"),
])
def test_client_ip(peer: str, headers: dict[str, str], expected: str) -> None:
    assert client_ip(peer, headers, TRUSTED) == expected


def test_no_trusted_proxies_believes_nobody() -> None:
    assert client_ip("127.0.0.2", {"x-forwarded-for": "1.1.1.1"}, AddressSet()) == "127.0.0.2"


# Header-shaped noise: the pieces a chain is made of, in any order, plus arbitrary text.
PIECES = st.sampled_from([",", ", ", ";", "=", '"', "[", "]", ":", "for=", "For=", "unknown", "_x", "%",
                          "127.0.0.2", "127.0.0.3", "::1", "2001:db8::1", "198.51.100.9", "::ffff:",
                          "4711", "99999", " ", "\x00", "é"])
HEADER = st.one_of(st.none(), st.text(), st.lists(st.one_of(PIECES, st.text(max_size=3))).map("".join))


@settings(max_examples=1000)
@given(xff=HEADER, forwarded=HEADER,
       peer=st.sampled_from(["127.0.0.2", "::1", "198.51.100.1", ""]))
def test_arbitrary_headers_never_raise(xff: str | None, forwarded: str | None, peer: str) -> None:
    headers = {name: value for name, value in (("x-forwarded-for", xff), ("forwarded", forwarded))
               if value is not None}
    result = client_ip(peer, headers, TRUSTED)
    assert isinstance(result, str)
    assert result == peer or result in (xff or "") + (forwarded or "")


@given(st.lists(st.one_of(st.ip_addresses().map(str), st.sampled_from(["127.0.0.2", "::1", "2001:db8::9"])),
                min_size=1, max_size=6))
def test_chain_of_addresses_picks_rightmost_untrusted(hops: list[str]) -> None:
    expected = next((h for h in reversed(hops) if h not in TRUSTED), hops[0])
    assert client_ip("127.0.0.3", {"x-forwarded-for": ", ".join(hops)}, TRUSTED) == expected


NETWORKS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32", "::1/128")]


@given(st.ip_addresses())
def test_membership_agrees_with_ipaddress(address) -> None:
    plain = getattr(address, "ipv4_mapped", None) or address
    expected = any(plain in network for network in NETWORKS if network.version == plain.version)
    assert (str(address) in AddressSet(NETWORKS)) is expected
