"""A client connection behind an L4 balancer: the PROXY protocol header first, then HTTP.

Only peers in `[proxy] trusted_proxies` are asked for a header; their connections must start
with one (proxyproto.py) or are closed without an answer. Everyone else is an ordinary client,
so a header from an untrusted peer reaches the HTTP parser and is refused there with 400 and a
close: nobody can claim another subscriber's address by writing `PROXY TCP4 ...` themselves.
A listener without trusted_proxies never uses this class (the forward hot path is untouched).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from ..destinations import masked_client
from . import proxyproto
from .server import ClientConnection, Gateway

log = logging.getLogger("linewarden.proxy")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedPeers:
    """The balancers allowed to speak for a client, as CIDR networks (parsed by config)."""

    def __init__(self, networks: list[Network]) -> None:
        self.networks = networks

    def __contains__(self, ip: str) -> bool:
        try:
            address = canonical_ip(ip)
        except ValueError:
            return False
        return any(address in net for net in self.networks)


def canonical_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """::ffff:a.b.c.d is the IPv4 client a.b.c.d (a dual-stack socket reports it so)."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ProxiedConnection(ClientConnection):
    def __init__(self, gateway: Gateway, trusted: TrustedPeers) -> None:
        super().__init__(gateway)
        self.trusted = trusted
        self.preamble: bytes | None = None  # bytes of a header still arriving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.client_ip in self.trusted:
            self.preamble = b""

    def check_timeouts(self, now: float) -> None:
        # A header still incomplete after header_timeout: closed unanswered like any other
        # broken header (a 408 would go to the balancer, which may hand it to a subscriber).
        if self.preamble is not None and self.head_since is not None and \
                now - self.head_since > self.gw.header_timeout:
            metrics = self.gw.metrics
            metrics.count(metrics.proxy_headers, "timeout")
            self.abort()
            return
        super().check_timeouts(now)

    def data_received(self, data: bytes) -> None:
        if self.preamble is None:
            super().data_received(data)
            return
        self.preamble += data
        metrics = self.gw.metrics
        try:
            header = proxyproto.parse(self.preamble)
        except proxyproto.ProxyProtocolError as exc:
            metrics.count(metrics.proxy_headers, "invalid")
            log.warning("closing a connection from balancer %s: %s",
                        masked_client(self.client_ip), exc)
            self.abort()  # no answer: the balancer would hand it to a subscriber as ours
            return
        if header is None:
            return
        rest, self.preamble = self.preamble[header.length:], None
        if header.source is not None:
            self.client_ip = str(canonical_ip(header.source[0]))
            metrics.count(metrics.proxy_headers, f"v{header.version}")
        else:
            metrics.count(metrics.proxy_headers, f"v{header.version}-local")
        if rest:
            super().data_received(rest)
