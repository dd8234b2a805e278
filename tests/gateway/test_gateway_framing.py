"""Ambiguous framing → 400 and close, nothing forwarded (PRODUCT.md invariant 3); limits."""

from __future__ import annotations

import re
import socket
import time

import pytest
from wire import RawClient, exchange, marker

from lwtest import Gateway, Origin


def attack(m: str, host: str = "partner.test") -> dict[str, bytes]:
    start = f"POST http://{host}/{m} HTTP/1.1\r\nHost: {host}\r\n".encode()
    smuggled = f"GET http://{host}/{m}-smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return {
        "cl-and-te": start + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n" + smuggled,
        "te-and-cl": start + b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"
                     b"0\r\n\r\n" + smuggled,
        "duplicate-cl": start + b"Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello"
                        + smuggled,
        "cl-list": start + b"Content-Length: 5, 40\r\n\r\nhello" + smuggled,
        "cl-not-a-number": start + b"Content-Length: +5\r\n\r\nhello" + smuggled,
        "te-not-chunked": start + b"Transfer-Encoding: gzip\r\n\r\nhello" + smuggled,
        "te-chunked-twice": start + b"Transfer-Encoding: chunked\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
        "te-obfuscated": start + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled,
        "bad-chunk-size": start + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                          + smuggled,
        "chunk-size-overflow": start + b"Transfer-Encoding: chunked\r\n\r\n"
                               b"10000000000000005\r\nhello\r\n0\r\n\r\n" + smuggled,
        "chunk-bare-lf": start + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"
                         + smuggled,
        "bare-lf-head": f"GET http://{host}/{m} HTTP/1.1\nHost: {host}\n\n".encode(),
        "space-before-colon": start + b"Content-Length : 5\r\n\r\nhello" + smuggled,
        "space-before-colon-te": start + b"Transfer-Encoding : chunked\r\nContent-Length: 5"
                                 b"\r\n\r\nhello" + smuggled,
        "obs-fold-te": start + b"X-A: b\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                       + smuggled,
        "two-hosts": f"GET /{m} HTTP/1.1\r\nHost: partner.test\r\nHost: other.test\r\n\r\n"
                     .encode(),
        "no-host-1.1": f"GET /{m} HTTP/1.1\r\n\r\n".encode(),
        "te-in-http-1.0": f"POST http://{host}/{m} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n"
                          f"\r\n0\r\n\r\n".encode() + smuggled,
        "nul-in-value": start + b"X-A: a\x00b\r\n\r\n",
        "bad-version": f"GET http://{host}/{m} HTTP/2.0\r\nHost: {host}\r\n\r\n".encode(),
        "https-uri": f"GET https://{host}/{m} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
    }


ATTACKS = list(attack("x"))


@pytest.mark.parametrize("name", ATTACKS)
def test_ambiguous_framing_is_refused_and_closed(gateway: Gateway, origin: Origin,
                                                 name: str) -> None:
    m = marker()
    data, closed = exchange(gateway.proxy_port, attack(m)[name])
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", data)) == 1  # no smuggled response
    assert closed
    assert origin.with_marker(m) == []


def test_framing_attack_after_a_good_request_forwards_only_the_good_one(
        gateway: Gateway, origin: Origin) -> None:
    m_good, m = marker(), marker()
    good = f"GET http://other.test/{m_good} HTTP/1.1\r\nHost: other.test\r\n\r\n".encode()
    data, closed = exchange(gateway.proxy_port, good + attack(m)["cl-and-te"])
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 400 " in data and closed
    assert len(origin.with_marker(m_good)) == 1
    assert origin.with_marker(m) == []


def test_head_over_64_kib_is_431(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    filler = "".join(f"X-Fill-{i}: {'a' * 1000}\r\n" for i in range(70))
    data, closed = exchange(gateway.proxy_port,
                            f"GET http://other.test/{m} HTTP/1.1\r\nHost: other.test\r\n"
                            f"{filler}\r\n".encode())
    assert data.startswith(b"HTTP/1.1 431 ")
    assert closed and origin.with_marker(m) == []


def test_single_huge_header_is_431(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    data, closed = exchange(gateway.proxy_port,
                            f"GET http://other.test/{m} HTTP/1.1\r\nHost: other.test\r\n"
                            f"X-Big: {'b' * 70000}\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 431 ")
    assert closed and origin.with_marker(m) == []


def test_just_under_the_limits_is_accepted(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    filler = "".join(f"X-Fill-{i}: {'a' * 600}\r\n" for i in range(98))
    with RawClient(gateway.proxy_port) as client:
        client.send(f"GET http://other.test/{m} HTTP/1.1\r\nHost: other.test\r\n{filler}\r\n"
                    .encode())
        assert client.response().status == 200
    assert len(origin.with_marker(m)) == 1


def test_more_than_100_headers_is_431(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    filler = "".join(f"X-F{i}: v\r\n" for i in range(101))
    data, closed = exchange(gateway.proxy_port,
                            f"GET http://other.test/{m} HTTP/1.1\r\nHost: other.test\r\n"
                            f"{filler}\r\n".encode())
    assert data.startswith(b"HTTP/1.1 431 ")
    assert closed and origin.with_marker(m) == []


def test_huge_uri_is_refused(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    data, closed = exchange(gateway.proxy_port,
                            f"GET http://other.test/{m}/{'u' * 70000} HTTP/1.1\r\n"
                            f"Host: other.test\r\n\r\n".encode())
    assert data[:12] in (b"HTTP/1.1 414", b"HTTP/1.1 431")
    assert closed and origin.with_marker(m) == []


def test_garbage_is_400_and_gateway_keeps_serving(gateway: Gateway, origin: Origin) -> None:
    data, closed = exchange(gateway.proxy_port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert data.startswith(b"HTTP/1.1 400 ") and closed
    m = marker()
    with RawClient(gateway.proxy_port) as client:
        client.send(f"GET http://other.test/{m} HTTP/1.1\r\nHost: other.test\r\n\r\n".encode())
        assert client.response().status == 200


@pytest.fixture(scope="module")
def tight(tmp_path_factory, origin: Origin):
    """A gateway with short timeouts: slowloris and slow upstreams."""
    from lwtest import start_gateway

    gw = start_gateway(tmp_path_factory.mktemp("tight"), origin.port,
                       proxy_extra="header_timeout = 1.0\nread_timeout = 1.0\n"
                                   "idle_timeout = 1.5\n")
    try:
        yield gw
    finally:
        gw.stop()


def test_slowloris_head_is_closed(tight: Gateway, origin: Origin) -> None:
    m = marker()
    with RawClient(tight.proxy_port) as client:
        start = time.monotonic()
        client.send(f"GET http://other.test/{m} HTTP/1.1\r\nHost: other.test\r\n".encode())
        for i in range(3):  # a header every 0.5 s: never completes within header_timeout
            time.sleep(0.5)
            try:
                client.send(f"X-Slow-{i}: x\r\n".encode())
            except OSError:
                break
        assert client.at_eof(wait=5.0)
        assert time.monotonic() - start < 5.0
        assert client.buf == b"" or client.buf.startswith(b"HTTP/1.1 408 ")
    assert origin.with_marker(m) == []


def test_idle_connection_that_never_sends_is_closed(tight: Gateway) -> None:
    with RawClient(tight.proxy_port) as client:
        start = time.monotonic()
        assert client.at_eof(wait=5.0)
        assert time.monotonic() - start < 4.0


def test_idle_keep_alive_connection_is_closed(tight: Gateway, origin: Origin) -> None:
    m = marker()
    with RawClient(tight.proxy_port) as client:
        client.send(f"GET http://other.test/{m} HTTP/1.1\r\nHost: other.test\r\n\r\n".encode())
        assert client.response().status == 200
        start = time.monotonic()
        assert client.at_eof(wait=6.0)
        assert time.monotonic() - start < 5.0


def test_upstream_that_never_answers_is_504(tight: Gateway, origin: Origin) -> None:
    m = marker()
    start = time.monotonic()
    with RawClient(tight.proxy_port) as client:
        client.send(f"GET http://other.test/hang/{m} HTTP/1.1\r\nHost: other.test\r\n\r\n"
                    .encode())
        resp = client.response()
        assert resp.status == 504
        assert client.at_eof()
    assert time.monotonic() - start < 5.0
    assert len(origin.with_marker(m)) == 1  # it was forwarded; the origin just sat on it
    m2 = marker()  # and the gateway keeps serving
    with RawClient(tight.proxy_port) as client:
        client.send(f"GET http://other.test/{m2} HTTP/1.1\r\nHost: other.test\r\n\r\n".encode())
        assert client.response().status == 200


def test_upstream_that_stalls_mid_response_is_cut(tight: Gateway, origin: Origin) -> None:
    """An origin that goes silent halfway through a body must not hold two connections
    forever: after read_timeout the gateway cuts the client (the only honest signal left)."""
    m = marker()
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", tight.proxy_port), timeout=10) as sock:
        sock.sendall(f"GET http://other.test/stall/{m} HTTP/1.1\r\nHost: other.test\r\n\r\n"
                     .encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    elapsed = time.monotonic() - start
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n" + b"x" * 10)  # the 10 bytes, then the cut
    assert 0.9 < elapsed < 5.0, elapsed
    m2 = marker()
    with RawClient(tight.proxy_port) as client:
        client.send(f"GET http://other.test/{m2} HTTP/1.1\r\nHost: other.test\r\n\r\n".encode())
        assert client.response().status == 200


def test_slow_upload_longer_than_read_timeout_is_not_504(tight: Gateway, origin: Origin) -> None:
    """read_timeout is for an upstream that does not answer, not for a client that uploads
    slowly: a 2.5 s upload through a gateway with read_timeout = 1 s must succeed."""
    m = marker()
    with RawClient(tight.proxy_port) as client:
        client.send(f"POST http://other.test/upload/{m} HTTP/1.1\r\nHost: other.test\r\n"
                    f"Transfer-Encoding: chunked\r\n\r\n".encode())
        for _ in range(5):
            time.sleep(0.5)
            client.send(b"5\r\nhello\r\n")
        client.send(b"0\r\n\r\n")
        resp = client.response()
    assert resp.status == 200, resp.body
    assert resp.body.split()[0] == b"25"
