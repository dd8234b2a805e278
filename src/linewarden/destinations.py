"""Where the proxy may connect: the destination policy. Sans-IO.

A subscriber can send any bytes, and the proxy reaches everything the gateway host reaches:
its own admin API, loopback services, the cloud metadata address. So the proxy judges the
*resolved* address it is about to connect to (never the spelling in the request: `127.1`,
`2130706433`, `[::ffff:7f00:1]` and `localhost.` all end here as 127.0.0.1 or ::1), and the
adapter connects to exactly the numeric address judged (no second lookup, no DNS-rebinding
gap between check and connect).

Two lines of defence, both here as plain functions of plain data:
1. `DestinationPolicy.judge(ip, port)` before connecting: the gateway's own listeners, then
   the operator's `allow_destinations` / `deny_destinations` and the default-denied ranges,
   longest prefix first (like a routing table; on a tie allow beats deny).
2. `DestinationPolicy.judge_connected(...)` after connect() and before any byte is sent: if the
   socket's local address equals its peer address, the destination is this very host (its
   public address, say, with the gateway listening on 0.0.0.0). That needs no interface
   enumeration and is true whatever the routing tables say.

Hosts mapped in `[proxy.resolve]` are the operator's explicit choice and are not judged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

# Refusal reasons: the `reason` label of linewarden_refused_destinations_total.
GATEWAY = "gateway"  # one of the gateway's own listeners
THIS_HOST = "this-host"  # an address of the gateway host itself (found after connect)
DENIED = "denied"  # the operator's [proxy] deny_destinations

# Denied unless the operator lists an exception in allow_destinations. Private ranges (RFC
# 1918, RFC 4193 ULA, RFC 6598 shared space) are not here: on an operator network the origins
# a subscriber may reach can live there; deny them with deny_destinations.
DEFAULT_DENIED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),  # RFC 1122 §3.2.1.3; Linux connects 0.0.0.0 to itself
    ("127.0.0.0/8", "loopback"),  # RFC 1122 §3.2.1.3
    ("169.254.0.0/16", "link-local"),  # RFC 3927; cloud metadata is 169.254.169.254
    ("224.0.0.0/4", "multicast"),  # RFC 5771
    ("240.0.0.0/4", "reserved"),  # RFC 1112 §4 (class E)
    ("255.255.255.255/32", "broadcast"),  # RFC 919
    ("::/128", "unspecified"),  # RFC 4291 §2.5.2
    ("::1/128", "loopback"),  # RFC 4291 §2.5.3
    ("fe80::/10", "link-local"),  # RFC 4291 §2.5.6
    ("fec0::/10", "reserved"),  # site-local, deprecated by RFC 3879
    ("ff00::/8", "multicast"),  # RFC 4291 §2.7
)

# IPv6 forms that carry an IPv4 address the packet is really going to (or that a translator
# will forward to): the embedded IPv4 address is judged by the IPv4 rules. (prefix, bits of
# prefix, shift to the embedded 32 bits)
_EMBEDDED_V4: tuple[tuple[int, int, int], ...] = (
    (0xFFFF << 32, 96, 0),  # ::ffff:0:0/96 IPv4-mapped, RFC 4291 §2.5.5.2
    (0, 96, 0),  # ::/96 IPv4-compatible, RFC 4291 §2.5.5.1 (deprecated; :: and ::1 aside)
    (0x0064FF9B << 96, 96, 0),  # 64:ff9b::/96 NAT64 well-known prefix, RFC 6052 §2.1
    (0x2002 << 112, 16, 80),  # 2002::/16 6to4, RFC 3056 §2
)

_V6_MAX = (1 << 128) - 1


class Verdict(NamedTuple):
    reason: str | None  # None: allowed
    explicit: bool  # allowed by the operator's allow_destinations (or refused by its deny)


class _Rule(NamedTuple):
    network: int
    bits: int
    mask: int
    reason: str | None  # None: an allow_destinations exception
    rank: int  # tie-break at equal prefix length: allow 0, deny 1, default 2


ALLOWED = Verdict(None, False)


def parse_networks(values: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDR strings (a bare address is a /32 or /128); host bits set is an error, not a
    silent widening: '10.0.0.1/8' most likely means a typo."""
    return [ipaddress.ip_network(v.strip(), strict=True) for v in values]


def _rule(net: ipaddress.IPv4Network | ipaddress.IPv6Network, reason: str | None,
          rank: int) -> tuple[int, _Rule]:
    width = 32 if net.version == 4 else 128
    mask = ((1 << net.prefixlen) - 1) << (width - net.prefixlen)
    return net.version, _Rule(int(net.network_address), net.prefixlen, mask, reason, rank)


def _canonical(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
               ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """::ffff:a.b.c.d is a.b.c.d on the wire (the kernel connects to the IPv4 address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text[1:-1] if text.startswith("[") else text)


class DestinationPolicy:
    """The ranges and listeners, compiled once; `judge` once per upstream connection."""

    def __init__(self, deny: Iterable[str] = (), allow: Iterable[str] = (),
                 listeners: Iterable[tuple[str, int]] = ()) -> None:
        rules: dict[int, list[_Rule]] = {4: [], 6: []}
        for net in parse_networks(allow):
            version, rule = _rule(net, None, 0)
            rules[version].append(rule)
        for net in parse_networks(deny):
            version, rule = _rule(net, DENIED, 1)
            rules[version].append(rule)
        for cidr, reason in DEFAULT_DENIED:
            version, rule = _rule(ipaddress.ip_network(cidr), reason, 2)
            rules[version].append(rule)
        # Longest prefix first; at equal length allow, then the operator's deny, then ours.
        self._v4 = sorted(rules[4], key=lambda r: (-r.bits, r.rank))
        self._v6 = sorted(rules[6], key=lambda r: (-r.bits, r.rank))
        self._exact: set[tuple[str, int]] = set()
        self._wildcard_ports: set[int] = set()
        self.ports: frozenset[int] = frozenset()
        ports: set[int] = set()
        for host, port in listeners:
            ip = _canonical(parse_address(host))
            ports.add(port)
            if ip.is_unspecified:
                self._wildcard_ports.add(port)
            else:
                self._exact.add((str(ip), port))
        self.ports = frozenset(ports)

    def judge(self, ip_text: str, port: int) -> Verdict:
        """Before connecting to the numeric address `ip_text`:`port`."""
        ip = _canonical(parse_address(ip_text))
        if self._is_listener(ip, port):
            return Verdict(GATEWAY, False)  # never an exception, whatever allow_destinations says
        if isinstance(ip, ipaddress.IPv4Address):
            return self._lookup(self._v4, int(ip))
        value = int(ip)
        verdict = self._lookup(self._v6, value)
        if verdict.reason is not None or verdict.explicit:
            return verdict
        embedded = _embedded_v4(value)
        if embedded is not None:
            return self._lookup(self._v4, embedded)
        return verdict

    def judge_connected(self, to_self: bool, port: int, explicit: bool) -> str | None:
        """After connect(), before any byte: `to_self` is local address == peer address.
        This host on a listener port is the gateway itself; any other port of this host is
        refused too unless the operator allowed the address explicitly."""
        if not to_self:
            return None
        if port in self.ports:
            return GATEWAY
        return None if explicit else THIS_HOST

    def _is_listener(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        if port not in self.ports:
            return False
        if (str(ip), port) in self._exact:
            return True
        # A wildcard listener (0.0.0.0, ::) answers on every local address: loopback and
        # unspecified here; the host's other addresses are caught after connect.
        if port not in self._wildcard_ports:
            return False
        return ip.is_loopback or (int(ip) >> 24 == 0 if ip.version == 4 else ip.is_unspecified)

    @staticmethod
    def _lookup(rules: list[_Rule], value: int) -> Verdict:
        for rule in rules:
            if value & rule.mask == rule.network:
                return Verdict(rule.reason, rule.rank < 2)
        return ALLOWED


def _embedded_v4(value: int) -> int | None:
    for prefix, bits, shift in _EMBEDDED_V4:
        mask = (_V6_MAX >> (128 - bits)) << (128 - bits)
        if value & mask == prefix:
            return (value >> shift) & 0xFFFFFFFF
    return None


def same_host(local: object, peer: object) -> bool:
    """Whether a connected socket's local and peer addresses are one address (the peer is
    this host). Both are socket addresses as asyncio reports them, or None when unknown."""
    if not isinstance(local, tuple) or not isinstance(peer, tuple) or not local or not peer:
        return False
    try:
        return _canonical(parse_address(str(local[0]).split("%")[0])) == \
            _canonical(parse_address(str(peer[0]).split("%")[0]))
    except ValueError:
        return False


def masked_client(ip: str) -> str:
    """A client address for a log line: the /24 (IPv4) or /48 (IPv6) it came from, enough to
    see a pattern, not enough to name a subscriber."""
    try:
        addr = _canonical(ipaddress.ip_address(ip))
    except ValueError:
        return "?"
    if isinstance(addr, ipaddress.IPv4Address):
        return ".".join(str(addr).split(".")[:3]) + ".x"
    return str(ipaddress.ip_network(f"{addr}/48", strict=False).network_address) + "x"
