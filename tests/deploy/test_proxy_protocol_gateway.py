"""PROXY protocol on the proxy listener of a real gateway: raw v1/v2 headers from trusted and
untrusted peers, and HAProxy (the Debian package) in front sending `send-proxy-v2`."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from wire import curl, marker

from linewarden.proxy.proxyproto import V2_SIGNATURE
from lwtest import MSISDN_1, MSISDN_2, Gateway, Origin, free_port, stop_process

BALANCER = "127.0.0.7"  # the only trusted peer
CLID = "x-up-calling-line-id"


def v2_header(src: str, sport: int, dst: str, dport: int) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


def raw_exchange(port: int, data: bytes, *, source: str) -> bytes:
    """Send `data` from `source`, read until the gateway closes (or 10 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk
            if b"\r\n\r\n" in out and b"Connection: close" not in out:
                return out  # a complete keep-alive answer: enough


def request(m: str, host: str = "partner.test") -> bytes:
    return (f"GET http://{host}/{m} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"X-MSISDN: 447400900999\r\n\r\n").encode()


@pytest.fixture
def gw(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(proxy_extra=f'trusted_proxies = ["{BALANCER}/32"]')


def clid(origin: Origin, m: str) -> list[str]:
    found = origin.with_marker(m)
    assert len(found) == 1, f"origin saw {len(found)} requests for {m}"
    assert "447400900999" not in found[0].raw.decode("latin-1")  # forged copy stripped
    return found[0].values(CLID)


def test_v1_header_names_the_client(gw: Gateway, origin: Origin) -> None:
    m = marker()
    header = b"PROXY TCP4 127.0.0.2 127.0.0.1 50000 3128\r\n"
    answer = raw_exchange(gw.proxy_port, header + request(m), source=BALANCER)
    assert answer.startswith(b"HTTP/1.1 200")
    assert clid(origin, m) == [MSISDN_2]  # 127.0.0.2's number, not the balancer's (none)


def test_v2_header_names_the_client(gw: Gateway, origin: Origin) -> None:
    m = marker()
    answer = raw_exchange(gw.proxy_port, v2_header("127.0.0.1", 40000, "10.0.0.1", 80)
                          + request(m), source=BALANCER)
    assert answer.startswith(b"HTTP/1.1 200")
    assert clid(origin, m) == [MSISDN_1]
    assert 'linewarden_proxy_protocol_headers_total{result="v2"}' in gw.metrics()


def test_v2_local_keeps_the_balancer_address(gw: Gateway, origin: Origin) -> None:
    m = marker()
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    answer = raw_exchange(gw.proxy_port, local + request(m), source=BALANCER)
    assert answer.startswith(b"HTTP/1.1 200")
    assert clid(origin, m) == []  # the balancer has no binding


@pytest.mark.parametrize("preamble", [
    b"",  # a trusted balancer that lost its header
    b"PROXY TCP4 127.0.0.2 127.0.0.1 50000\r\n",
    b"PROXY TCP4 127.0.0.2 127.0.0.1 50000 99999\r\n",
    V2_SIGNATURE + b"\x21\x11\x00\x04\x7f\x00\x00\x02",
    V2_SIGNATURE + b"\x21\x31\x00\x00",
])
def test_trusted_peer_without_valid_header_is_closed(gw: Gateway, origin: Origin,
                                                     preamble: bytes) -> None:
    m = marker()
    answer = raw_exchange(gw.proxy_port, preamble + request(m), source=BALANCER)
    assert answer == b""  # closed, nothing said
    assert origin.with_marker(m) == []


def test_trusted_peer_that_stalls_mid_header_is_closed_unanswered(
        gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(proxy_extra=f'trusted_proxies = ["{BALANCER}/32"]\n'
                                     "header_timeout = 0.5")
    answer = raw_exchange(gw.proxy_port, b"PROXY TCP4 127.0.0.2", source=BALANCER)
    assert answer == b""  # no 408 for the balancer to pass on
    assert 'linewarden_proxy_protocol_headers_total{result="timeout"} 1.0' in gw.metrics()


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 127.0.0.2 127.0.0.1 50000 3128\r\n",
    v2_header("127.0.0.2", 50000, "127.0.0.1", 3128),
])
def test_header_from_untrusted_peer_is_400(gw: Gateway, origin: Origin, header: bytes) -> None:
    m = marker()
    answer = raw_exchange(gw.proxy_port, header + request(m), source="127.0.0.3")
    assert answer.startswith(b"HTTP/1.1 400")
    assert origin.with_marker(m) == []


def test_untrusted_peer_is_an_ordinary_client(gw: Gateway, origin: Origin) -> None:
    m = marker()
    answer = raw_exchange(gw.proxy_port, request(m), source="127.0.0.2")
    assert answer.startswith(b"HTTP/1.1 200")
    assert clid(origin, m) == [MSISDN_2]


@pytest.fixture
def haproxy(tmp_path: Path, gw: Gateway) -> Iterator[int]:
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.fail("haproxy is not installed (make debs installs it)")
    port = free_port("127.0.0.8")
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
global
    log stderr format raw local0 warning
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend subscribers
    bind 127.0.0.8:{port}
    default_backend gateways
backend gateways
    server gw1 127.0.0.1:{gw.proxy_port} send-proxy-v2 source {BALANCER}
""")
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "haproxy.log").open("wb"))
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.8", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        stop_process(proc)


def test_haproxy_in_front_sends_the_subscriber(haproxy: int, gw: Gateway,
                                               origin: Origin) -> None:
    """curl from two subscriber addresses through HAProxy: each gets its own number, the
    other host none, and the ledger records the subscribers, not the balancer."""
    for source, msisdn in (("127.0.0.1", MSISDN_1), ("127.0.0.2", MSISDN_2)):
        m = marker()
        result = curl(f"http://127.0.0.8:{haproxy}", f"http://partner.test/{m}",
                      "-H", "X-MSISDN: 447400900999", interface=source)
        assert result.returncode == 0, result.stderr
        assert clid(origin, m) == [msisdn]
        m = marker()
        result = curl(f"http://127.0.0.8:{haproxy}", f"http://other.test/{m}",
                      interface=source)
        assert result.returncode == 0, result.stderr
        assert clid(origin, m) == []
    m = marker()
    curl(f"http://127.0.0.8:{haproxy}", f"http://partner.test/{m}", interface="127.0.0.3")
    assert clid(origin, m) == []  # no binding for 127.0.0.3: none, and not the balancer's
    metrics = gw.metrics()
    assert 'linewarden_proxy_protocol_headers_total{result="v2"}' in metrics
    assert 'linewarden_disclosures_total{claim="msisdn",partner="billing-partner"} 2.0' \
        in metrics
