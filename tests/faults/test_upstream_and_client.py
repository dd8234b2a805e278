"""Upstream and client faults (issue 9, item 2): every fault ends in a definite answer or
cut within its bound, never leaks identity, and the gateway serves normally afterwards."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_support import (
    FORGED,
    FaultOrigin,
    fd_count,
    get,
    metric_sum,
    metrics,
    no_raw_numbers,
    rss_kib,
    wait_for,
)
from wire import RawClient

from lwtest import MSISDN_1, Gateway, Origin, start_gateway

READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FaultOrigin]]:
    origin = FaultOrigin().start()
    gw = start_gateway(tmp_path_factory.mktemp("faulty"), origin.port,
                       proxy_extra=f"read_timeout = {READ_TIMEOUT}\nconnect_timeout = 1.0\n")
    try:
        yield gw, origin
    finally:
        gw.stop()
        origin.stop()


def _healthy(gw: Gateway, origin: FaultOrigin) -> None:
    """After any fault: a partner request gets the real number, once; no forged one."""
    status, body = get(gw.proxy_port, "http://partner.test/after",
                       headers=f"X-MSISDN: {FORGED}\r\n")
    assert status == 200
    assert body.count(f"X-Up-Calling-Line-Id: {MSISDN_1}".encode()) == 1
    assert FORGED.encode() not in origin.all_heads()
    status, body = get(gw.proxy_port, "http://other.test/after")
    assert status == 200 and MSISDN_1.encode() not in body


@pytest.mark.parametrize(("url", "statuses", "bound"), [
    ("http://down.test/refused", {502}, 3.0),  # nothing listens there
    ("http://partner.test/garbage", {502}, 3.0),
    ("http://partner.test/bighead", {502}, 3.0),
    ("http://partner.test/silent-close", {502}, 3.0),
    ("http://other.test/reset", {0, 200}, 3.0),  # 200 head then the cut: the client sees it
])
def test_upstream_fault_answers_within_bound(faulty: tuple[Gateway, FaultOrigin], url: str,
                                             statuses: set[int], bound: float) -> None:
    gw, origin = faulty
    start = time.monotonic()
    status, body = get(gw.proxy_port, url, headers=f"X_MSISDN: {FORGED}\r\n")
    assert status in statuses, (status, body[:200])
    assert time.monotonic() - start < bound
    if status == 200:  # /reset: the body must be cut short, never padded or completed
        assert len(body) < 1000
    assert MSISDN_1.encode() not in body or "partner.test" in url
    assert gw.alive()
    _healthy(gw, origin)


def test_upstream_reset_mid_body_cuts_the_client(faulty: tuple[Gateway, FaultOrigin]) -> None:
    gw, _ = faulty
    with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as sock:
        sock.sendall(b"GET http://other.test/reset2 HTTP/1.1\r\nHost: other.test\r\n\r\n")
        received = b""
        start = time.monotonic()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"x" * 10)  # the 10 bytes, then the cut: no fake completion
    assert time.monotonic() - start < 3.0


def test_upstream_timeout_is_504_and_recovers(tmp_path: Path, origin: Origin) -> None:
    gw = start_gateway(tmp_path, origin.port, proxy_extra=f"read_timeout = {READ_TIMEOUT}\n")
    try:
        start = time.monotonic()
        status, _ = get(gw.proxy_port, "http://partner.test/hang/t")
        assert status == 504
        assert time.monotonic() - start < READ_TIMEOUT + 2.0
        status, body = get(gw.proxy_port, "http://partner.test/fine")
        assert status == 200 and f"X-Up-Calling-Line-Id: {MSISDN_1}".encode() in body
    finally:
        gw.stop()


def test_client_disconnects_mid_request_and_mid_response(tmp_path: Path, origin: Origin
                                                         ) -> None:
    """200 clients vanish half-way (head, body, response): no fd or memory is kept."""
    gw = start_gateway(tmp_path, origin.port, proxy_extra="idle_timeout = 2.0\n")
    try:
        assert get(gw.proxy_port, "http://other.test/warm")[0] == 200
        fds, rss = fd_count(gw.pid), rss_kib(gw.pid)
        for _ in range(50):  # mid-head
            with socket.create_connection(("127.0.0.1", gw.proxy_port)) as s:
                s.sendall(b"GET http://partner.test/half-head HTTP/1.1\r\nHost: part")
        for _ in range(50):  # mid-body (Content-Length promised, half sent)
            with socket.create_connection(("127.0.0.1", gw.proxy_port)) as s:
                s.sendall(b"POST http://partner.test/upload/half HTTP/1.1\r\nHost: "
                          b"partner.test\r\nContent-Length: 100000\r\n\r\n" + b"a" * 50000)
        for _ in range(50):  # mid-chunked-body
            with socket.create_connection(("127.0.0.1", gw.proxy_port)) as s:
                s.sendall(b"POST http://other.test/upload/chunk HTTP/1.1\r\nHost: other.test"
                          b"\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc")
        for _ in range(50):  # mid-response: 8 MiB download, read 64 KiB, RST
            s = socket.create_connection(("127.0.0.1", gw.proxy_port))
            s.sendall(b"GET http://other.test/download/8388608 HTTP/1.1\r\n"
                      b"Host: other.test\r\n\r\n")
            s.recv(65536)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        assert wait_for(lambda: fd_count(gw.pid) <= fds + 4, timeout=15), \
            (fds, fd_count(gw.pid))
        assert gw.alive()
        assert rss_kib(gw.pid) < rss + 64 * 1024  # no 8 MiB bodies kept per dropped client
        text = metrics(gw)
        assert "linewarden_client_connections " in text
        assert wait_for(lambda: metric_sum(metrics(gw), "linewarden_client_connections") <= 1,
                        timeout=10)
        status, body = get(gw.proxy_port, "http://partner.test/after-disconnects")
        assert status == 200 and f"X-Up-Calling-Line-Id: {MSISDN_1}".encode() in body
        # The half-sent uploads never reached the origin as complete requests.
        assert origin.with_marker("/upload/half") == []
        assert no_raw_numbers(gw) == []
    finally:
        gw.stop()


def test_slow_reader_does_not_grow_memory(tmp_path: Path, origin: Origin) -> None:
    """A client that reads 1 byte in 1000 of a 64 MiB download: back-pressure holds RSS."""
    gw = start_gateway(tmp_path, origin.port)
    try:
        rss = rss_kib(gw.pid)
        with RawClient(gw.proxy_port) as client:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            client.send(b"GET http://other.test/download/67108864 HTTP/1.1\r\n"
                        b"Host: other.test\r\n\r\n")
            client.sock.recv(4096)
            time.sleep(2.0)  # the origin could push 64 MiB in this time
            grown = rss_kib(gw.pid) - rss
        assert grown < 16 * 1024, f"RSS grew {grown} KiB for one slow reader"
    finally:
        gw.stop()
