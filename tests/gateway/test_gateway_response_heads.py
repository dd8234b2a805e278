"""Response heads are relayed verbatim minus hop-by-hop lines (RFC 9110 §7.6.1), with the
framing chosen for the client. In-process, so every split of the origin's bytes is ours."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from inprocess import client, gateway_with_one_pooled_connection

from linewarden.http import HOP_BY_HOP
from linewarden.proxy import server

GET = b"GET http://origin.test/x HTTP/1.1\r\nHost: origin.test\r\n\r\n"


def relay(response: bytes, *, request: bytes = GET, split: int = 0) -> tuple[bytes, bool]:
    """What the client receives for `response` (fed whole, or `split` bytes at a time),
    and whether the gateway closed the client connection."""
    async def scenario() -> tuple[bytes, bool]:
        gateway, upstream, _ = gateway_with_one_pooled_connection()
        conn, transport = client(gateway)
        conn.data_received(request)
        step = split or len(response)
        for i in range(0, len(response), step):
            upstream.data_received(response[i:i + step])
        closed = transport.closing
        await gateway.close()
        return transport.written, closed
    return asyncio.run(scenario())


def head_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]


def test_nginx_like_head_keeps_order_and_spelling_and_loses_connection() -> None:
    out, closed = relay(b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: x\r\n"
                        b"Content-Type: text/plain\r\nContent-Length: 2\r\n"
                        b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                        b"X-Mixed-CASE: Value  with  spaces\r\n\r\nok")
    assert out == (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: x\r\n"
                   b"Content-Type: text/plain\r\nContent-Length: 2\r\n"
                   b"X-Mixed-CASE: Value  with  spaces\r\n\r\nok")
    assert not closed


def test_fields_named_by_connection_are_dropped() -> None:
    out, _ = relay(b"HTTP/1.1 200 OK\r\nConnection: close, X-Internal , x-other\r\n"
                   b"X-Internal: secret\r\nX-Other: 1\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n")
    assert head_lines(out) == [b"X-Kept: 2", b"Content-Length: 0"]


def test_chunked_upstream_is_rechunked_once() -> None:
    out, _ = relay(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n"
                   b"Trailer: X-T\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n", split=3)
    assert head_lines(out) == [b"Transfer-Encoding: chunked"]
    assert out.endswith(b"\r\n\r\n2\r\nok\r\n0\r\n\r\n")  # trailers are not relayed


def test_close_delimited_body_is_chunked_for_a_keep_alive_client() -> None:
    async def scenario() -> bytes:
        gateway, upstream, _ = gateway_with_one_pooled_connection()
        conn, transport = client(gateway)
        conn.data_received(GET)
        upstream.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello")
        upstream.connection_lost(None)
        await gateway.close()
        return transport.written
    out = asyncio.run(scenario())
    assert head_lines(out) == [b"Transfer-Encoding: chunked"]
    assert out.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_interim_then_final_head_in_one_read() -> None:
    out, _ = relay(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok")
    assert out == (b"HTTP/1.1 103 Early Hints\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok")


def test_http10_status_line_and_odd_reason_are_normalised() -> None:
    out, _ = relay(b"HTTP/1.0 404 \x01weird\r\nContent-Length: 0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404 Not Found\r\n")
    out, _ = relay(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")


def test_status_lines_are_remembered_per_origin_line_and_stay_bounded() -> None:
    # The same status with another reason is another line; the first answer is not reused.
    for _ in range(2):
        assert relay(b"HTTP/1.1 200 Fine\r\nContent-Length: 0\r\n\r\n")[0].startswith(
            b"HTTP/1.1 200 Fine\r\n")
        assert relay(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")[0].startswith(
            b"HTTP/1.1 200 OK\r\n")
    for i in range(server._STATUS_LINES_MAX + 5):  # an origin inventing reason phrases
        head = b"HTTP/1.1 200 R%d\r\n\r\n" % i
        assert server._status_line(200, head) == b"HTTP/1.1 200 R%d\r\n" % i
    assert len(server._STATUS_LINES) <= server._STATUS_LINES_MAX


def test_oversized_head_is_502_whole_or_in_pieces() -> None:
    big = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n"
    for split in (0, 1000):
        out, closed = relay(big, split=split)
        assert out.startswith(b"HTTP/1.1 502 ") and b"too large" in out and closed


def test_head_request_ends_without_body() -> None:
    out, closed = relay(
        b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\nConnection: keep-alive\r\n\r\n",
        request=b"HEAD http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\n\r\n" and not closed


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
                 min_size=1, max_size=12)
_names = st.one_of(_token, st.sampled_from(sorted(n.decode().title() for n in HOP_BY_HOP)))
_value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ,;=/-", max_size=20).map(str.strip)


@settings(max_examples=150, deadline=None)
@given(fields=st.lists(st.tuples(_names, _value), max_size=12),
       split=st.integers(min_value=0, max_value=40))
def test_every_end_to_end_field_arrives_in_order_and_nothing_hop_by_hop(
        fields: list[tuple[str, str]], split: int) -> None:
    fields = [(n, v) for n, v in fields
              if n.lower() not in ("content-length", "transfer-encoding")]
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(
        f"{n}: {v}\r\n".encode() for n, v in fields) + b"Content-Length: 2\r\n\r\n"
    out, _ = relay(head + b"ok", split=split)
    named = {t.strip().lower() for n, v in fields if n.lower() == "connection"
             for t in v.split(",") if t.strip()}
    expected = [f"{n}: {v}".encode() for n, v in fields
                if n.lower().encode() not in HOP_BY_HOP and n.lower() not in named]
    assert head_lines(out) == [*expected, b"Content-Length: 2"]
    assert out.endswith(b"\r\n\r\nok")


def test_ambiguous_framing_from_the_origin_is_502_never_relayed() -> None:
    # Relaying these heads verbatim would hand the client two framings of one body.
    for response in (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"):
        out, closed = relay(response)
        assert out.startswith(b"HTTP/1.1 502 ") and closed, response
        assert b"hello" not in out
