"""Connections to origin servers: resolving, pooling and parsing their responses.

An `UpstreamConnection` carries one exchange at a time (no pipelining towards origins: a
response that fails midway must not take a second request down with it). It hands the
parsed response to the exchange's `ResponseSink` and goes back to the pool only when the
response ended cleanly and both sides allow keep-alive.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Protocol, cast

import httptools

from ..destinations import same_host
from ..http import HAS_LENGTH, HAS_TRANSFER_ENCODING, split_head
from .limits import (
    MAX_RESPONSE_HEAD_BYTES,
    POOL_IDLE_TIMEOUT,
    POOL_MAX_IDLE_PER_HOST,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
)

Address = tuple[str, int]


class UpstreamError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # 502 or 504, for the client


class DestinationRefused(UpstreamError):
    """The destination policy (destinations.py) refused where the request would connect."""

    def __init__(self, reason: str) -> None:
        super().__init__(403, f"this proxy does not connect to that destination ({reason})")
        self.reason = reason  # the metric label: loopback, gateway, this-host, ...


class ResponseSink(Protocol):
    """What an upstream connection reports to the client side, in order."""

    def response_head(self, status: int, head: bytes, lines: bytes, fields: int) -> None:
        """`head` as received; `lines`: its end-to-end header lines; `fields`: HAS_* bits."""
    def response_body(self, chunk: bytes) -> None: ...
    def response_end(self) -> None: ...
    def flush(self) -> None: ...
    def response_failed(self, status: int, message: str, *, stale: bool = False) -> None:
        """`stale`: a reused connection closed before any byte of the response (the
        keep-alive race); the request may be retried once on a fresh connection."""
    def upstream_writable(self, writable: bool) -> None: ...
    def upgraded(self, rest: bytes) -> None: ...


StaticRoutes = dict[str, tuple[str, int | None]]


def static_routes(resolve: Mapping[str, str]) -> StaticRoutes:
    """[proxy.resolve], parsed once: "host" = "ip" keeps the URI's port (None here),
    "ip:port" overrides it, "[v6]" and "[v6]:port" likewise."""
    routes: StaticRoutes = {}
    for host, target in resolve.items():
        if target.startswith("["):
            addr, _, p = target[1:].partition("]")
            routes[host] = (addr, int(p[1:]) if p.startswith(":") else None)
        elif target.count(":") == 1:
            addr, p = target.split(":")
            routes[host] = (addr, int(p))
        else:
            routes[host] = (target, None)
    return routes


def resolve_static(routes: StaticRoutes, host: str, port: int) -> Address | None:
    route = routes.get(host)
    if route is None:
        return None
    return route[0], route[1] or port


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: Pool, address: Address) -> None:
        self.pool, self.address = pool, address
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.head_request = False  # a response to HEAD has no body whatever it says
        self.idle_since = 0.0
        # Last byte either way while an exchange is on: an upstream silent for read_timeout,
        # before or in the middle of its response, is given up (nginx proxy_read_timeout is
        # per read too). None while we hold the upstream back for a slow client.
        self.quiet_since: float | None = None
        self.got_bytes = False
        self.reused = False  # has served an exchange before (came from the idle pool)
        self._to_self: bool | None = None
        self.held = False
        self.closed = False
        self._raw = b""  # the bytes read while a response head is incomplete
        self._head_at = 0  # where the current head starts in _raw (after a 1xx head)
        self._in_head = True
        self._final = False
        self._close_delimited = False

    # ------------------------------------------------------------ lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's isn't a subclass
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if self._final and self._close_delimited:
            sink.response_end()  # RFC 9112 §6.3 rule 8: the body ends when the connection does
        elif not self.got_bytes:
            sink.response_failed(502, "upstream closed the connection without a response",
                                 stale=self.reused)
        else:
            sink.response_failed(502, "upstream connection broke during the response")

    def to_self(self) -> bool:
        """Whether the peer is this host (local address == peer address), asked once."""
        if self._to_self is None:
            transport = self.transport
            self._to_self = transport is not None and same_host(
                transport.get_extra_info("sockname"), transport.get_extra_info("peername"))
        return self._to_self

    def pause_writing(self) -> None:
        if self.sink:
            self.sink.upstream_writable(False)

    def resume_writing(self) -> None:
        if self.sink:
            self.sink.upstream_writable(True)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ requests

    def begin(self, sink: ResponseSink, head: bytes, *, head_request: bool, now: float) -> None:
        self.sink, self.head_request = sink, head_request
        self.quiet_since, self.got_bytes = now, False
        self._reset_response()
        assert self.transport is not None
        self.transport.write(head)

    def hold(self, held: bool) -> None:
        """Stop or restart reading for a slow client; a held upstream is not 'quiet'."""
        if self.transport is None or held == self.held:
            return
        self.held = held
        if held:
            self.transport.pause_reading()
            self.quiet_since = None
        else:
            self.transport.resume_reading()
            if self.sink is not None:
                self.quiet_since = self.pool.loop.time()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self.quiet_since is not None:
            # A client uploading slowly is not an upstream that fails to answer.
            self.quiet_since = self.pool.loop.time()

    def _reset_response(self) -> None:
        self._raw, self._head_at = b"", 0
        self._in_head, self._final, self._close_delimited = True, False, False

    # ------------------------------------------------------------ parser callbacks

    def data_received(self, data: bytes) -> None:
        if self.sink is None:
            self.abort()  # an origin talking out of turn: the connection is not reusable
            return
        self.got_bytes, self.quiet_since = True, self.pool.loop.time()
        sink = self.sink
        if self._in_head:
            self._raw = self._raw + data if self._raw else data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.sink = None
            sink.upgraded(data[upgrade.args[0]:])
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._fail(*((cause.status, str(cause)) if isinstance(cause, UpstreamError)
                         else (502, "upstream sent a malformed response")))
        else:
            if self._in_head and len(self._raw) - self._head_at > MAX_RESPONSE_HEAD_BYTES:
                self._fail(502, "upstream response head too large")
                return
            sink.flush()

    def on_headers_complete(self) -> None:
        # The head is relayed as received (minus hop-by-hop lines): no callback per field.
        start = self._head_at
        end = self._raw.index(b"\r\n\r\n", start) + 4  # llhttp (strict) saw exactly this
        if end - start > MAX_RESPONSE_HEAD_BYTES:
            raise UpstreamError(502, "upstream response head too large")
        head = self._raw[start:end]
        fields, lines = split_head(head)
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            if self.sink:
                self.sink.response_head(status, head, lines, fields)
            self._head_at = end  # the final head may follow in the same read
            return
        self._raw, self._in_head, self._final = b"", False, True
        no_body = self.head_request or status in (204, 304) or status == 101
        self._close_delimited = not no_body and not fields & (HAS_LENGTH | HAS_TRANSFER_ENCODING)
        if self.sink:
            self.sink.response_head(status, head, lines, fields)
        if self.head_request:
            # llhttp cannot be told the request was HEAD, so it would wait for a body that
            # never comes: finish here and give the next response a fresh parser.
            self.parser = httptools.HttpResponseParser(self)
            self._finish(reusable=not self._close_delimited)

    def on_body(self, body: bytes) -> None:
        if self.sink:
            self.sink.response_body(body)

    def on_message_complete(self) -> None:
        # llhttp ends a 101 "message" here and then raises HttpParserUpgrade: finishing now
        # would close the client before data_received hands both sides over as a tunnel.
        if self._final and not self.head_request and self.parser.get_status_code() != 101:
            self._finish(reusable=self.parser.should_keep_alive())

    def _finish(self, reusable: bool) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.response_end()
        if reusable and not self.closed:
            self.pool.release(self)
        else:
            self.close()

    def _fail(self, status: int, message: str) -> None:
        sink, self.sink = self.sink, None
        self.abort()
        if sink is not None:
            sink.response_failed(status, message)

    def time_out(self) -> None:
        message = "upstream stopped sending" if self.got_bytes else "upstream did not answer"
        self._fail(504, f"{message} within read_timeout")

    def detach(self) -> None:
        """The client went away mid-exchange: this connection's state is unknown, drop it."""
        self.sink = None
        self.abort()


class Pool:
    """Idle keep-alive connections per upstream address (LIFO: the warmest first)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connect_timeout: float) -> None:
        self.loop, self.connect_timeout = loop, connect_timeout
        self._idle: dict[Address, list[UpstreamConnection]] = {}

    def take(self, address: Address) -> UpstreamConnection | None:
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self, address: Address) -> UpstreamConnection:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConnection(self, address), *address),
                self.connect_timeout)
        except TimeoutError:
            raise UpstreamError(504, "upstream did not accept the connection in time") from None
        except OSError as exc:
            raise UpstreamError(502, f"upstream unreachable ({exc.strerror or exc})") from None
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        idle = self._idle.setdefault(conn.address, [])
        if len(idle) >= POOL_MAX_IDLE_PER_HOST:
            conn.close()
            return
        # A slow client may have held it back in the very write that ended its response;
        # an idle connection must read, to see the origin close it and to get the next
        # client's answer.
        conn.hold(False)
        conn.reused = True
        conn.idle_since = self.loop.time()
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.address)
        if idle and conn in idle:
            idle.remove(conn)

    def sweep(self, now: float, read_timeout: float, busy: list[UpstreamConnection]) -> None:
        for idle in self._idle.values():
            for conn in [c for c in idle if now - c.idle_since > POOL_IDLE_TIMEOUT]:
                conn.close()
        for conn in busy:
            if conn.quiet_since is not None and now - conn.quiet_since > read_timeout:
                conn.time_out()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
