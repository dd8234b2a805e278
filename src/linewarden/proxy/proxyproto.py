"""The PROXY protocol header (versions 1 and 2), sans-IO: bytes in, a header or an error out.

An L4 balancer in front of the gateway (HAProxy `send-proxy-v2`, Envoy, NGINX `proxy_protocol`,
cloud balancers) connects from its own address; the subscriber's address, which names the
binding, arrives in this header before the first HTTP byte. The format is HAProxy's
specification, doc/proxy-protocol.txt (2020-03-05).

Rules chosen here, where the specification leaves room:
- Only the listener's `[proxy] trusted_proxies` may send a header (server.py decides who is
  asked); a peer that must send one and sends anything else is closed without an answer,
  because a balancer that lost the header would otherwise bind every request to itself.
- v1 `UNKNOWN`, v2 `LOCAL` and v2 `AF_UNSPEC` (the balancer's own health checks) keep the
  real peer address (spec §2.1 and §2.2): `source` is None.
- v2 UNIX or DGRAM addresses are refused: this is a TCP HTTP listener.
- TLVs are skipped, not interpreted: nothing in them is needed to find a subscriber.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

V1_PREFIX = b"PROXY "
# Spec §2.1: "a receiver ... must not try to read more than 107 bytes" for a v1 line.
V1_MAX_BYTES = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # spec §2.2, the 12 bytes no HTTP request starts with
V2_FIXED_BYTES = 16
# Spec §2.2 allows a 64 KiB header; HAProxy's TLVs (unique-id <= 128 bytes, authority <= 255,
# ALPN, SSL) stay within a few hundred bytes, so 4 KiB refuses nothing real and bounds what an
# idle trusted peer can make us buffer.
V2_MAX_BYTES = 4_096
# Bytes of the address block by family (spec §2.2): AF_INET 12, AF_INET6 36, AF_UNIX 216.
_V2_ADDRESS_BYTES = {0x1: 12, 0x2: 36}
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_V2_UNSPEC, _V2_UNIX = 0x0, 0x3
_V2_STREAM = 0x1
_MAX_PORT = 65_535

Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """The peer had to send a PROXY header and sent something else: close, answer nothing."""


class ProxyHeader(NamedTuple):
    version: int  # 1 or 2
    source: Address | None  # the client; None: use the real peer (LOCAL, UNKNOWN, UNSPEC)
    destination: Address | None  # the address the client connected to, at the balancer
    length: int  # bytes of the stream the header took; HTTP starts after them


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`, None while `data` could still become one, or
    ProxyProtocolError once it cannot."""
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data[:12]) or V1_PREFIX.startswith(data[:6]):
        return None  # a prefix of one of the two signatures: wait for more
    raise ProxyProtocolError("no PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX_BYTES)
    if end < 0:
        if len(data) >= V1_MAX_BYTES or b"\n" in data[:V1_MAX_BYTES]:
            raise ProxyProtocolError("PROXY v1 line without CRLF within 107 bytes")
        return None
    fields = data[len(V1_PREFIX):end].split(b" ")
    if fields[0] == b"UNKNOWN":
        return ProxyHeader(1, None, None, end + 2)  # spec: the rest of the line is ignored
    if len(fields) != 5 or fields[0] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("PROXY v1 line is not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT'")
    version = 4 if fields[0] == b"TCP4" else 6
    source = _v1_address(fields[1], fields[3], version)
    destination = _v1_address(fields[2], fields[4], version)
    return ProxyHeader(1, source, destination, end + 2)


def _v1_address(ip: bytes, port: bytes, version: int) -> Address:
    try:
        text = ip.decode("ascii")
        address = ipaddress.ip_address(text)
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError("PROXY v1 address is not an IP address") from None
    if address.version != version or "%" in text:
        raise ProxyProtocolError("PROXY v1 address does not match its protocol")
    # Spec §2.1: ports are decimal; a sign, a space or 6+ digits is no port.
    if not port.isdigit() or len(port) > 5 or int(port) > _MAX_PORT or \
            (len(port) > 1 and port.startswith(b"0")):
        raise ProxyProtocolError("PROXY v1 port is not a number from 0 to 65535")
    return str(address), int(port)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED_BYTES:
        return None
    version_command, family_protocol = data[12], data[13]
    if version_command >> 4 != 2:
        raise ProxyProtocolError("PROXY v2 header with a version other than 2")
    command = version_command & 0x0F
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyProtocolError("PROXY v2 header with an unknown command")
    length = V2_FIXED_BYTES + int.from_bytes(data[14:16], "big")
    if length > V2_MAX_BYTES:
        raise ProxyProtocolError(f"PROXY v2 header longer than {V2_MAX_BYTES} bytes")
    if len(data) < length:
        return None
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    if command == _V2_LOCAL or family == _V2_UNSPEC:
        return ProxyHeader(2, None, None, length)  # the balancer speaking for itself
    if family == _V2_UNIX or protocol != _V2_STREAM or family not in _V2_ADDRESS_BYTES:
        raise ProxyProtocolError("PROXY v2 header is not TCP over IPv4 or IPv6")
    size = _V2_ADDRESS_BYTES[family]
    if length - V2_FIXED_BYTES < size:
        raise ProxyProtocolError("PROXY v2 address block shorter than its family needs")
    block = data[V2_FIXED_BYTES:V2_FIXED_BYTES + size]
    half = (size - 4) // 2  # two addresses, then two 16-bit ports
    src = ipaddress.ip_address(block[:half])
    dst = ipaddress.ip_address(block[half:2 * half])
    sport = int.from_bytes(block[2 * half:2 * half + 2], "big")
    dport = int.from_bytes(block[2 * half + 2:], "big")
    return ProxyHeader(2, (str(src), sport), (str(dst), dport), length)
