"""Intercepted connections: port-80 traffic steered to the gateway, not sent to a proxy.

Two ways the kernel hands us a connection whose real destination is elsewhere:
- `intercept`: an iptables/nftables REDIRECT (NAT) rewrote the destination to our listener;
  the original one is read back with getsockopt(SO_ORIGINAL_DST) (netfilter's conntrack;
  IP6T_SO_ORIGINAL_DST for IPv6), as Squid's `http_port ... intercept` and Envoy's
  original_dst listener filter do.
- `tproxy`: an nftables/iptables TPROXY rule delivered the packets unchanged to a socket
  listening with IP_TRANSPARENT; the accepted socket's local address *is* the original
  destination (Squid's `tproxy`). Needs CAP_NET_ADMIN for the listening socket.

The rule for Host (chosen here, stated in docs/operations.md): the gateway always connects to
the original destination — the address the subscriber's own resolver chose — and the
destination policy judges that address (loopback, link-local, the gateway's own listeners are
refused as in forward mode). The Host header still picks the partner, but identity is added
only when the Host's own addresses ([proxy.resolve], else DNS) include the original
destination address and port; otherwise the request goes on without identity (withheld
`host_mismatch`). So a forged `Host: partner.example` towards any other server never carries
a number, and nothing is re-routed behind the subscriber's back (Squid's `host_verify_strict
off` behaviour, minus the enrichment).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct

from ..bindings import Binding
from ..decide import Destination, decide
from ..destinations import masked_client
from .server import ALLOWED, DEFAULT, MAPPED, ClientConnection, Exchange, Gateway, Route
from .upstream import Address, DestinationRefused, resolve_static

log = logging.getLogger("linewarden.proxy")

# linux/netfilter_ipv4.h SO_ORIGINAL_DST and linux/netfilter_ipv6/ip6_tables.h
# IP6T_SO_ORIGINAL_DST: both 80, at SOL_IP and SOL_IPV6.
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
IP_TRANSPARENT = 19  # linux/in.h
IPV6_TRANSPARENT = 75  # linux/in6.h
_SOCKADDR_IN = 16
_SOCKADDR_IN6 = 28


def original_destination(sock: socket.socket) -> Address | None:
    """The destination a REDIRECTed connection had before NAT, or None when the kernel keeps
    none (no conntrack entry: the client connected to the listener itself)."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6)
            port, address = struct.unpack_from("!H", raw, 2)[0], raw[8:24]
        else:
            raw = sock.getsockopt(socket.IPPROTO_IP, SO_ORIGINAL_DST, _SOCKADDR_IN)
            port, address = struct.unpack_from("!H", raw, 2)[0], raw[4:8]
    except OSError:
        return None
    return str(_canonical(ipaddress.ip_address(address))), int(port)


def transparent_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket that accepts connections addressed to any host (TPROXY)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _canonical(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
               ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def same_address(a: Address, b: Address) -> bool:
    """Two socket addresses are one, whatever the IPv4-mapped or zero-compressed spelling."""
    try:
        return a[1] == b[1] and _canonical(ipaddress.ip_address(a[0])) == \
            _canonical(ipaddress.ip_address(b[0]))
    except ValueError:
        return False


class InterceptConnection(ClientConnection):
    """A connection on an `intercept` or `tproxy` listener."""

    def __init__(self, gateway: Gateway, tproxy: bool) -> None:
        super().__init__(gateway)
        self.tproxy = tproxy
        self.original: Address | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.tproxy:
            local = transport.get_extra_info("sockname")
            if isinstance(local, tuple):
                self.original = (str(_canonical(ipaddress.ip_address(local[0]))),
                                 int(local[1]))
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.original = original_destination(sock)

    def _decide(self, exchange: Exchange, binding: Binding | None) -> None:
        gw, rules = self.gw, self.gw.rules
        decision = exchange.decision = decide(
            exchange.head, binding, rules, switch_tripped=gw.switch_tripped(), now=gw.clock(),
            nonce=rules.settings.draw_nonce() if rules.needs_nonce else b"")
        destination = decision.destination
        if not decision.forwarded or destination is None:
            self._admit(exchange)
            return
        if self.original is None:
            self._fail_and_close(421, "this listener intercepts redirected connections; "
                                 "this one has no original destination")
            return
        if destination.mode == "connect":
            self._fail_and_close(405, "CONNECT is not accepted on an intercepting listener")
            return
        if decision.partner is None:
            self._admit(exchange)  # nothing to disclose: no need to ask where Host points
            return
        gw.loop.create_task(self._verify_then_admit(exchange, destination, self.original))

    async def _verify_then_admit(self, exchange: Exchange, destination: Destination,
                                 original: Address) -> None:
        decision = exchange.decision
        assert decision is not None
        metrics = self.gw.metrics
        try:
            reaches = await self._host_reaches(destination, original)
        except Exception:  # a bug must not leave the client waiting, nor let identity out
            log.exception("host check failed; forwarding without identity")
            reaches = False
        if reaches:
            metrics.count(metrics.intercepted, "host-matches")
        else:
            metrics.count(metrics.intercepted, "host-mismatch")
            if decision.identity:
                decision.identity, decision.record = [], None
                decision.withheld = "host_mismatch"
                log.info("identity withheld: Host %s does not resolve to the original "
                         "destination (client %s)", destination.host,
                         masked_client(self.client_ip))
        if not self.closed:
            self._admit(exchange)

    async def _host_reaches(self, destination: Destination, original: Address) -> bool:
        """Do the Host's own addresses include the original destination? Any doubt
        (no answer, a resolver error) is a no."""
        gw = self.gw
        static = resolve_static(gw.routes, destination.host, destination.port)
        if static is not None:
            return same_address(static, original)
        literal = destination.host.strip("[]")
        try:
            infos = await gw.loop.getaddrinfo(literal, destination.port,
                                              type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return False
        return any(same_address((str(i[4][0]), int(i[4][1])), original) for i in infos)

    def _forward(self, exchange: Exchange) -> None:
        decision = exchange.decision
        assert decision is not None and decision.destination is not None
        self.gw.loop.create_task(self._connect_then_send(exchange, decision.destination))

    async def _route(self, destination: Destination) -> Route:
        """The original destination, judged like any resolved address (invariant 6):
        interception is no way to loopback or to the gateway's own listeners."""
        original = self.original
        assert original is not None
        gw = self.gw
        static = resolve_static(gw.routes, destination.host, destination.port)
        if static is not None and same_address(static, original):
            return Route(original, MAPPED)
        verdict = gw.destinations.judge(*original)
        if verdict.reason is not None:
            raise DestinationRefused(verdict.reason)
        return Route(original, ALLOWED if verdict.explicit else DEFAULT)
