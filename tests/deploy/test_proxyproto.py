"""The PROXY protocol parser against headers built here from the specification's layout
(struct packing and string formatting, not the parser's code), over generated inputs."""

from __future__ import annotations

import ipaddress
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linewarden.proxy.proxyproto import (
    V1_MAX_BYTES,
    V2_MAX_BYTES,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    parse,
)

ipv4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1))
ports = st.integers(0, 65535)
http = st.sampled_from([b"", b"GET / HTTP/1.1\r\nHost: partner.test\r\n\r\n", b"\x00garbage"])


def v2(command: int, family: int, body: bytes) -> bytes:
    """spec §2.2: signature, version 2 << 4 | command, family << 4 | protocol, length."""
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_proxy(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if a.version == 4 else 0x21
    return v2(1, family, a.packed + b.packed + struct.pack("!HH", sport, dport) + tlvs)


V1_REFERENCE = re.compile(rb"PROXY (TCP4|TCP6) (\S+) (\S+) (0|[1-9]\d{0,4}) (0|[1-9]\d{0,4})\r\n")


@given(ipv4, ipv4, ports, ports, http)
def test_v1_tcp4(src: str, dst: str, sport: int, dport: int, rest: bytes) -> None:
    line = f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()
    assert parse(line + rest) == ProxyHeader(1, (src, sport), (dst, dport), len(line))


@given(ipv6, ipv6, ports, ports, http)
def test_v1_tcp6(src: str, dst: str, sport: int, dport: int, rest: bytes) -> None:
    line = f"PROXY TCP6 {src} {dst} {sport} {dport}\r\n".encode()
    header = parse(line + rest)
    assert header is not None and header.length == len(line)
    assert header.source is not None and header.destination is not None
    assert ipaddress.ip_address(header.source[0]) == ipaddress.ip_address(src)
    assert (header.source[1], header.destination[1]) == (sport, dport)


@given(st.one_of(ipv4, ipv6), st.one_of(ipv4, ipv6), ports, ports, st.binary(max_size=64), http)
def test_v2_proxy(src: str, dst: str, sport: int, dport: int, tlvs: bytes, rest: bytes) -> None:
    if ipaddress.ip_address(src).version != ipaddress.ip_address(dst).version:
        dst = src
    raw = v2_proxy(src, dst, sport, dport, tlvs)
    header = parse(raw + rest)
    assert header is not None and header.length == len(raw) and header.version == 2
    assert header.source is not None and header.destination is not None
    assert ipaddress.ip_address(header.source[0]) == ipaddress.ip_address(src)
    assert ipaddress.ip_address(header.destination[0]) == ipaddress.ip_address(dst)
    assert (header.source[1], header.destination[1]) == (sport, dport)


@given(st.one_of(ipv4, ipv6), ports, st.binary(max_size=40))
def test_every_proper_prefix_waits(src: str, port: int, tlvs: bytes) -> None:
    """A header split anywhere by TCP is never judged early."""
    for raw in (v2_proxy(src, src, port, 80, tlvs),
                f"PROXY {'TCP4' if '.' in src else 'TCP6'} {src} {src} {port} 80\r\n".encode()):
        for cut in range(len(raw)):
            assert parse(raw[:cut]) is None


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    """Only a header, None (a prefix of one), or ProxyProtocolError; nothing else escapes."""
    try:
        header = parse(data)
    except ProxyProtocolError:
        return
    if header is None:
        assert V2_SIGNATURE.startswith(data[:12]) or b"PROXY ".startswith(data[:6]) \
            or data.startswith(b"PROXY ")
        return
    assert 0 < header.length <= len(data)
    if header.version == 1 and header.source is not None:
        assert V1_REFERENCE.fullmatch(data[:header.length])


@given(st.integers(0, 27), st.integers(0, 255), ipv4, ports)
def test_v2_mutated_byte(position: int, value: int, src: str, port: int) -> None:
    """One byte changed anywhere in a header: still a header with addresses of the right
    kind, or refused; never an exception of another type."""
    raw = bytearray(v2_proxy(src, src, port, 80))
    raw[position] = value
    try:
        header = parse(bytes(raw))
    except ProxyProtocolError:
        return
    if header is not None and header.source is not None:
        ipaddress.ip_address(header.source[0])


MALFORMED = [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",  # a port missing
    b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 9\r\n",  # a field too many
    b"PROXY TCP4 1.2.3.4  5.6.7.8 80 443\r\n",  # two spaces
    b"PROXY TCP4 ::1 ::1 80 443\r\n",  # family mismatch
    b"PROXY TCP6 1.2.3.4 5.6.7.8 80 443\r\n",
    b"PROXY TCP4 1.2.3.256 5.6.7.8 80 443\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 80 443\r\n",  # leading zero: octal in some parsers
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 443\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 443\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n",
    b"PROXY TCP6 fe80::1%eth0 ::1 80 443\r\n",  # a zone is no client address
    b"PROXY UDP4 1.2.3.4 5.6.7.8 80 443\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n",  # bare LF
    b"PROXY " + b"A" * (V1_MAX_BYTES + 10),  # no CRLF in 107 bytes
    b"proxy TCP4 1.2.3.4 5.6.7.8 80 443\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # plain HTTP from a peer that must send a header
    V2_SIGNATURE + b"\x10\x11\x00\x0c" + b"\x00" * 12,  # version 1 in a v2 header
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
    V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,  # INET block too short
    V2_SIGNATURE + b"\x21\x21\x00\x0c" + b"\x00" * 12,  # INET6 block too short
    V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\x00" * 12,  # DGRAM
    V2_SIGNATURE + b"\x21\x31\x00\xd8" + b"\x00" * 216,  # UNIX
    V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_BYTES),  # longer than we accept
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_refused(raw: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(raw + b"GET / HTTP/1.1\r\n\r\n")


def test_local_and_unknown_keep_the_peer() -> None:
    assert parse(v2(0, 0x11, b"\x00" * 12)) == ProxyHeader(2, None, None, 28)  # LOCAL
    assert parse(v2(1, 0x00, b"")) == ProxyHeader(2, None, None, 16)  # AF_UNSPEC
    line = b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n"
    assert parse(line + b"GET") == ProxyHeader(1, None, None, len(line))
