"""A pooled upstream connection belongs to whoever took it last. Regression: a client whose
response ended with a close kept pointing at the connection it had used; when that client's
socket finally went away (or its write buffer drained) it detached or paused the connection
that meanwhile served another client, which then never got its answer. In-process, with
fake transports, so the order of events is exactly the dangerous one."""

from __future__ import annotations

import asyncio

from inprocess import FakeTransport, client, gateway_with_one_pooled_connection

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _scenario() -> tuple[list[bytes], FakeTransport]:
    gateway, upstream, upstream_transport = gateway_with_one_pooled_connection()

    a, a_transport = client(gateway, "127.0.0.2")
    b, b_transport = client(gateway, "127.0.0.3")

    # A: one request with Connection: close, answered on the pooled connection.
    a.data_received(b"GET http://origin.test/a HTTP/1.1\r\nHost: origin.test\r\n"
                    b"Connection: close\r\n\r\n")
    upstream.data_received(RESPONSE)
    assert a_transport.closing  # A is closing, its socket not gone yet
    # B takes the same connection from the pool...
    b.data_received(b"GET http://origin.test/b HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    assert b.active is not None and b.active.upstream is upstream
    # ...then A's write buffer fills and drains, and A's socket goes away.
    a.pause_writing()
    a.resume_writing()
    a.pause_writing()
    a.connection_lost(None)
    # B's answer must still arrive, and the connection must still be reading for it.
    upstream.data_received(RESPONSE)
    await gateway.close()
    return b_transport.out, upstream_transport


def test_a_closed_client_never_touches_the_connection_another_client_took() -> None:
    b_out, upstream_transport = asyncio.run(_scenario())
    assert upstream_transport.reading
    assert b"".join(b_out).startswith(b"HTTP/1.1 200 OK")
    assert b"".join(b_out).endswith(b"\r\n\r\nok")


async def _slow_client_scenario() -> tuple[list[bytes], FakeTransport]:
    gateway, upstream, upstream_transport = gateway_with_one_pooled_connection()
    a, a_transport = client(gateway, "127.0.0.2")
    b, b_transport = client(gateway, "127.0.0.3")
    a.data_received(b"GET http://origin.test/a HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    # The whole response arrives in one read, and writing it fills A's socket: A holds the
    # upstream back (pause_reading) in the same step that hands it back to the pool.
    a_transport.fills_on_write = True
    upstream.data_received(RESPONSE)
    assert a.active is None  # A's exchange is over; A itself is still connected
    b.data_received(b"GET http://origin.test/b HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    assert b.active is not None and b.active.upstream is upstream
    reading_when_b_sent = upstream_transport.reading
    if reading_when_b_sent:
        upstream.data_received(RESPONSE)
    await gateway.close()
    assert reading_when_b_sent, "B's request went out on a connection nobody reads"
    return b_transport.out, upstream_transport


def test_a_slow_client_never_leaves_a_pooled_connection_unread() -> None:
    # Regression for a CI hang (a WebSocket handshake never answered): the pooled
    # connection it took had been paused by an earlier slow client.
    b_out, _ = asyncio.run(_slow_client_scenario())
    assert b"".join(b_out).endswith(b"\r\n\r\nok")
