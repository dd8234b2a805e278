"""CONNECT to a local TLS origin (trustme), WebSocket Upgrade, h2c refusal, 100-continue,
HEAD, keep-alive and pooling, and upstream failures."""

from __future__ import annotations

import os
import socket
import ssl
import time

from wire import RawClient, curl, curl_ok, exchange, marker

from lwtest import MSISDN_1, Gateway, Origin, TlsOrigin


def test_connect_with_curl_to_tls_origin(gateway: Gateway, tls_origin: TlsOrigin) -> None:
    m = marker()
    body = curl_ok(gateway.proxy, f"https://tls.test:{tls_origin.port}/{m}",
                   "--cacert", str(tls_origin.ca_pem))
    [rec] = tls_origin.origin.with_marker(m)
    assert body == rec.raw  # echoed back through the tunnel unchanged
    # Inside TLS nothing is added: no Via, no identity.
    assert b"linewarden" not in rec.raw
    assert MSISDN_1.encode() not in rec.raw


def test_connect_bytes_unchanged_both_ways(gateway: Gateway, tls_origin: TlsOrigin) -> None:
    m = marker()
    payload = os.urandom(1 << 20)
    with RawClient(gateway.proxy_port) as client:
        client.send(f"CONNECT tls.test:{tls_origin.port} HTTP/1.1\r\n"
                    f"Host: tls.test:{tls_origin.port}\r\nX-MSISDN: 1\r\n\r\n".encode())
        resp = client.response(head_request=True)
        assert resp.status == 200
        assert client.buf == b""
        ctx = ssl.create_default_context(cafile=str(tls_origin.ca_pem))
        with ctx.wrap_socket(client.sock, server_hostname="tls.test") as tls:
            request = (f"POST /{m} HTTP/1.1\r\nHost: tls.test\r\nX-MSISDN: 447700900999\r\n"
                       f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
            tls.sendall(request)
            got = b""
            while b"\r\n\r\n" not in got:
                got += tls.recv(65536)
            head, body = got.split(b"\r\n\r\n", 1)
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += tls.recv(1 << 20)
    assert body == request  # the origin got exactly what we sent, and we got it back
    [rec] = tls_origin.origin.with_marker(m)
    assert rec.raw == request


def test_connect_to_a_port_not_listed_is_403(gateway: Gateway, origin: Origin) -> None:
    data, closed = exchange(gateway.proxy_port,
                            f"CONNECT partner.test:{origin.port} HTTP/1.1\r\n"
                            f"Host: partner.test:{origin.port}\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 403 ") and closed


def test_connect_target_without_port_is_400(gateway: Gateway) -> None:
    data, closed = exchange(gateway.proxy_port,
                            b"CONNECT tls.test HTTP/1.1\r\nHost: tls.test\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 ") and closed


def test_websocket_upgrade_then_raw_bytes_both_ways(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    with RawClient(gateway.proxy_port) as client:
        client.send((f"GET http://partner.test/ws/{m} HTTP/1.1\r\nHost: partner.test\r\n"
                     "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "X-MSISDN: 447700900999\r\n\r\n").encode())
        resp = client.response()
        assert resp.status == 101
        assert (resp.header(b"upgrade") or b"").lower() == b"websocket"
        for size in (1, 1000, 200_000):
            frame = os.urandom(size)
            client.send(frame)
            got = client.buf
            while len(got) < size:
                got += client.sock.recv(1 << 20)
            client.buf = b""
            assert got == frame
    [rec] = origin.with_marker(m)
    assert rec.values("upgrade") == ["websocket"]
    assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_1]  # a partner's handshake is enriched
    assert b"447700900999" not in rec.raw


def test_h2c_upgrade_is_not_tunnelled(gateway: Gateway, origin: Origin) -> None:
    """h2c smuggling: a tunnelled HTTP/2 connection would carry requests past stripping."""
    m, m2 = marker(), marker()
    with RawClient(gateway.proxy_port) as client:
        client.send((f"GET http://other.test/{m} HTTP/1.1\r\nHost: other.test\r\n"
                     "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                     "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
                     f"GET http://other.test/{m2} HTTP/1.1\r\nHost: other.test\r\n"
                     "X-MSISDN: 447700900999\r\n\r\n").encode())
        resp = client.response()
        assert resp.status == 200
        rest = client.read_all()
    [rec] = origin.with_marker(m)
    assert "upgrade" not in rec.header_names()
    assert "http2-settings" not in rec.header_names()
    assert b"h2c" not in rec.raw
    # Whatever followed the upgrade attempt is either refused or parsed and stripped.
    assert b"447700900999" not in origin.all_raw()
    assert b"447700900999" not in rest


def test_expect_100_continue(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    with RawClient(gateway.proxy_port) as client:
        client.send((f"POST http://partner.test/{m} HTTP/1.1\r\nHost: partner.test\r\n"
                     "Expect: 100-continue\r\nContent-Length: 11\r\n\r\n").encode())
        interim = client.response()
        assert interim.status == 100
        client.send(b"hello world")
        final = client.response()
        assert final.status == 200
        assert final.body.endswith(b"\r\n\r\nhello world")
    [rec] = origin.with_marker(m)
    assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_1]


def test_expect_100_continue_with_curl(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    result = curl(gateway.proxy, f"http://other.test/{m}", "--fail-with-body",
                  "-H", "Expect: 100-continue", "--data-binary", "x" * 5000,
                  "-w", "\n%{time_total}")
    assert result.returncode == 0
    body, _, took = result.stdout.rpartition(b"\n")
    assert body.endswith(b"x" * 5000)
    assert float(took) < 0.9  # curl waits 1 s when no 100 Continue arrives


def test_head_has_no_body_and_keeps_the_connection(gateway: Gateway, origin: Origin) -> None:
    m, m2 = marker(), marker()
    with RawClient(gateway.proxy_port) as client:
        client.send(f"HEAD http://other.test/download/5000?{m} HTTP/1.1\r\nHost: other.test"
                    f"\r\n\r\n".encode())
        resp = client.response(head_request=True)
        assert resp.status == 200
        assert resp.header(b"content-length") == b"5000"
        client.send(f"GET http://other.test/{m2} HTTP/1.1\r\nHost: other.test\r\n\r\n".encode())
        resp2 = client.response()  # a body after HEAD would be misread as this response
        assert resp2.status == 200
        assert resp2.body.startswith(f"GET /{m2} HTTP/1.1".encode())


def test_head_with_curl(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    result = curl(gateway.proxy, f"http://partner.test/{m}", "-I", "--fail")
    assert result.returncode == 0
    assert result.stdout.startswith(b"HTTP/1.1 200")
    [rec] = origin.with_marker(m)
    assert rec.method == "HEAD"
    assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_1]


def test_keep_alive_reuse_on_both_sides(gateway: Gateway, origin: Origin) -> None:
    m1, m2, m3 = marker(), marker(), marker()
    result = curl(gateway.proxy, f"http://other.test/{m1}", "-v", "--fail",
                  "-o", "/dev/null", f"http://other.test/{m2}", "-o", "/dev/null",
                  f"http://partner.test/{m3}")
    assert result.returncode == 0
    assert b"Re-using existing connection" in result.stderr
    assert result.stderr.count(b"Connected to 127.0.0.1") == 1
    r1, r2, r3 = (origin.with_marker(m)[0] for m in (m1, m2, m3))
    assert r1.conn_id == r2.conn_id  # the upstream connection was pooled
    assert r3.values("X-Up-Calling-Line-Id") == [MSISDN_1]
    assert r2.values("X-Up-Calling-Line-Id") == []


def test_http_1_0_client(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    data, closed = exchange(gateway.proxy_port,
                            f"GET http://partner.test/{m} HTTP/1.0\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 200 ")
    assert closed
    [rec] = origin.with_marker(m)
    assert rec.values("host") == ["partner.test"]
    assert rec.values("X-Up-Calling-Line-Id") == [MSISDN_1]


def test_upstream_down_is_502_and_gateway_keeps_serving(gateway: Gateway,
                                                        origin: Origin) -> None:
    result = curl(gateway.proxy, "http://down.test/x", "-o", "/dev/null", "-w", "%{http_code}")
    assert result.stdout == b"502"
    # A loopback literal is refused before any connect (destinations.py), not a 502.
    result = curl(gateway.proxy, f"http://127.0.0.1:{_closed_port()}/x", "-o", "/dev/null",
                  "-w", "%{http_code}")
    assert result.stdout == b"403"
    m = marker()
    curl_ok(gateway.proxy, f"http://partner.test/{m}")
    assert len(origin.with_marker(m)) == 1
    assert gateway.alive()


def test_connect_to_down_upstream_is_502(gateway: Gateway) -> None:
    # down.test is mapped in [proxy.resolve] to a closed loopback port (a loopback literal
    # would be refused with 403 before any connect: test_gateway_destinations.py).
    data, closed = exchange(gateway.proxy_port, b"CONNECT down.test:443 HTTP/1.1\r\n"
                            b"Host: down.test:443\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 502 ") and closed


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_client_connection_close_is_honoured(gateway: Gateway, origin: Origin) -> None:
    m = marker()
    with RawClient(gateway.proxy_port) as client:
        client.send(f"GET http://other.test/{m} HTTP/1.1\r\nHost: other.test\r\n"
                    "Connection: close\r\n\r\n".encode())
        resp = client.response()
        assert resp.status == 200
        assert (resp.header(b"connection") or b"").lower() == b"close"
        assert client.at_eof()


def test_origin_closing_after_response_does_not_break_the_next_request(
        gateway: Gateway, origin: Origin) -> None:
    m1, m2, m3 = marker(), marker(), marker()
    with RawClient(gateway.proxy_port) as client:
        for m in (m1, m2, m3):
            path = f"close/{m}" if m != m3 else m
            client.send(f"GET http://other.test/{path} HTTP/1.1\r\nHost: other.test\r\n\r\n"
                        .encode())
            resp = client.response()
            assert resp.status == 200
            assert resp.header(b"connection") is None  # the client connection stays open
    ids = [origin.with_marker(m)[0].conn_id for m in (m1, m2, m3)]
    assert len(set(ids)) == 3  # a closed upstream connection is never reused


def test_chunked_response_to_http_1_0_client(gateway: Gateway) -> None:
    data, closed = exchange(gateway.proxy_port,
                            b"GET http://other.test/download/3000000/chunked HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"chunked" not in head.lower()  # an HTTP/1.0 client cannot read chunked
    assert closed
    assert len(body) == 3000000


def test_chunked_response_is_rechunked_for_http_1_1(gateway: Gateway) -> None:
    with RawClient(gateway.proxy_port) as client:
        client.send(b"GET http://other.test/download/300000/chunked HTTP/1.1\r\n"
                    b"Host: other.test\r\n\r\n")
        resp = client.response()
        assert resp.status == 200 and len(resp.body) == 300000
        client.send(b"GET http://other.test/download/10 HTTP/1.1\r\nHost: other.test\r\n\r\n")
        assert len(client.response().body) == 10


def test_many_pipelined_requests_answered_in_order(gateway: Gateway, origin: Origin) -> None:
    marks = [marker() for _ in range(60)]
    batch = b"".join(f"GET http://{'partner' if i % 2 else 'other'}.test/{m} HTTP/1.1\r\n"
                     f"Host: x\r\n\r\n".encode() for i, m in enumerate(marks))
    with RawClient(gateway.proxy_port) as client:
        client.send(batch)
        for i, m in enumerate(marks):
            resp = client.response()
            assert resp.status == 200
            assert resp.body.startswith(f"GET /{m} ".encode())
            assert (MSISDN_1.encode() in resp.body) == bool(i % 2)


def test_options_star_in_transparent_mode(gateway: Gateway, origin: Origin) -> None:
    with RawClient(gateway.proxy_port) as client:
        client.send(b"OPTIONS * HTTP/1.1\r\nHost: other.test\r\n\r\n")
        resp = client.response()
    assert resp.status == 200
    assert resp.body.startswith(b"OPTIONS * HTTP/1.1\r\n")


def test_idle_tunnel_is_closed_and_a_busy_one_is_not(gateway_factory, tls_origin: TlsOrigin
                                                     ) -> None:
    """A CONNECT tunnel with no byte either way for tunnel_idle_timeout is closed; one that
    keeps talking for longer than that stays open."""
    gw = gateway_factory(connect_ports=[tls_origin.port],
                         proxy_extra="tunnel_idle_timeout = 1.0\n")
    connect = (f"CONNECT tls.test:{tls_origin.port} HTTP/1.1\r\n"
               f"Host: tls.test:{tls_origin.port}\r\n\r\n").encode()
    ctx = ssl.create_default_context(cafile=str(tls_origin.ca_pem))
    with RawClient(gw.proxy_port) as busy, RawClient(gw.proxy_port) as idle:
        for client in (busy, idle):
            client.send(connect)
            assert client.response(head_request=True).status == 200
        with ctx.wrap_socket(busy.sock, server_hostname="tls.test") as tls:
            start = time.monotonic()
            while time.monotonic() - start < 3.0:  # three idle timeouts, never idle
                tls.sendall(b"GET /busy HTTP/1.1\r\nHost: tls.test\r\n\r\n")
                assert tls.recv(65536).startswith(b"HTTP/1.1 200")
                time.sleep(0.3)
        idle.sock.settimeout(5)
        assert idle.sock.recv(1) == b""  # closed by the gateway, within the sweep
