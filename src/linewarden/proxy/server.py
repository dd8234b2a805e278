"""The client side of the data plane: parse → decide → record → forward, per request.

One `ClientConnection` per client socket. `httptools` (llhttp, strict) parses; each complete
request head becomes an `Exchange` and goes to `decide()` — the only place that knows about
partners. Exchanges on one connection run strictly in order (pipelined requests wait their
turn). Bodies stream in both directions with back-pressure: when one side's write buffer is
full the other side stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple, cast

import httptools

from ..bindings import Binding, BindingStore
from ..decide import Decision, Destination, RequestHead, Rules, decide
from ..destinations import DestinationPolicy, masked_client, same_host
from ..http import (
    HAS_LENGTH,
    REASONS,
    error_response,
    serialize_head,
    status_reason,
    upgrade_values,
)
from ..ledger import Recorder
from ..ledger.writer import submitter
from ..metrics import Metrics
from .limits import (
    DRAIN_POLL,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_PENDING_BODY,
    SWEEP_INTERVAL,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
)
from .upstream import (
    Address,
    DestinationRefused,
    Pool,
    UpstreamConnection,
    UpstreamError,
    resolve_static,
    static_routes,
)

log = logging.getLogger("linewarden.proxy")

# RFC 9110 §9.2.2: methods a proxy may repeat when a connection fails before the response.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

# How far the destination policy trusts a route (destinations.py):
MAPPED = 0  # [proxy.resolve]: the operator's explicit map, not judged
ALLOWED = 1  # in allow_destinations: judged only against the gateway's own listeners
DEFAULT = 2  # allowed by default: this host's own addresses refused after connect too


Resolver = Callable[[str, int], Awaitable[list[Address]]]


class Route(NamedTuple):
    address: Address  # the numeric address judged, and the one connected to
    trust: int  # MAPPED, ALLOWED or DEFAULT


class _HeadTooLarge(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Exchange:
    """One request and its response on a client connection."""

    __slots__ = ("body_done", "chunked_out", "close_after", "decision", "head", "keep_alive",
                 "pending", "pending_bytes", "response_started", "retried", "started",
                 "upstream")

    def __init__(self, head: RequestHead, keep_alive: bool) -> None:
        self.head = head
        self.keep_alive = keep_alive
        self.decision: Decision | None = None
        self.upstream: UpstreamConnection | None = None
        self.pending: list[bytes] = []  # request body received before the upstream is ready
        self.pending_bytes = 0
        self.body_done = False
        self.response_started = False
        self.chunked_out = False
        self.retried = False  # sent again once after a stale pooled connection closed
        self.close_after = not keep_alive or head.version == "1.0"
        self.started = 0.0


class Gateway:
    """Everything the connections share. `rules` is replaced whole on reload (atomic)."""

    def __init__(self, rules: Rules, store: BindingStore, recorder: Recorder, *,
                 resolve: dict[str, str] | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, header_timeout: float = 10.0,
                 idle_timeout: float = 60.0, tunnel_idle_timeout: float = 600.0,
                 metrics: Metrics | None = None,
                 destinations: DestinationPolicy | None = None,
                 resolver: Resolver | None = None,
                 switch_tripped: Callable[[], bool] = lambda: False,
                 switch_cause: Callable[[], str] = lambda: "killswitch",
                 clock: Callable[[], float] = time.time) -> None:
        self.rules = rules
        self.store = store
        self.recorder = recorder
        self.submit_record = submitter(recorder)
        self.routes = static_routes(resolve or {})
        self.destinations = destinations or DestinationPolicy()
        # Name -> candidate addresses (getaddrinfo by default); a seam for tests only.
        self.resolver: Resolver = resolver or self._getaddrinfo
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.header_timeout, self.idle_timeout = header_timeout, idle_timeout
        self.tunnel_idle_timeout = tunnel_idle_timeout
        self.metrics = metrics or Metrics()
        self.switch_tripped = switch_tripped
        # The withheld-disclosure reason for a tripped switch: "killswitch", or
        # "killswitch_unknown" when only the shared state could not be confirmed.
        self.switch_cause = switch_cause
        self.clock = clock
        self.connections: set[ClientConnection] = set()
        # What each accepted socket becomes: a plain client unless the listener intercepts
        # or sits behind a balancer (proxy/intercept.py, proxy/proxied.py; serve.py wires it).
        self.new_connection: Callable[[], ClientConnection] = lambda: ClientConnection(self)
        self.draining = False  # drain(): each connection closes once its requests are done
        self.loop: asyncio.AbstractEventLoop  # set by start(): the loop we serve on
        self.pool: Pool
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False,
                    sock: socket.socket | None = None) -> asyncio.Server:
        """`reuse_port`: several worker processes listen on one port; the kernel spreads
        connections across them (SO_REUSEPORT). `sock`: a listening socket made elsewhere
        (tproxy's IP_TRANSPARENT one); host and port are then only its description."""
        self.loop = asyncio.get_running_loop()
        self.pool = Pool(self.loop, self.connect_timeout)
        if sock is not None:
            self._server = await self.loop.create_server(self.new_connection, sock=sock,
                                                         backlog=1024)
        else:
            self._server = await self.loop.create_server(
                self.new_connection, host, port, reuse_address=True,
                reuse_port=reuse_port or None, backlog=1024)
        self._sweeper = self.loop.create_task(self._sweep())
        return self._server

    async def drain(self, timeout: float) -> tuple[int, int]:
        """Graceful stop: accept no connection, close idle ones, let every request already
        received finish (its connection closes after its last response), for at most
        `timeout` seconds; then cut what is left. Returns (finished, cut), counted in
        requests (a tunnel counts as one)."""
        self.draining = True
        if self._server:
            self._server.close()
        for conn in list(self.connections):
            if not conn.in_flight():
                conn.close()
        pending = sum(conn.in_flight() for conn in self.connections)
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:  # closed ones flush first
            await asyncio.sleep(DRAIN_POLL)
        cut = sum(conn.in_flight() for conn in self.connections)
        for conn in list(self.connections):
            conn.abort()
        return pending - cut, cut

    async def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self._server:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        self.pool.close()

    async def route(self, host: str, port: int) -> Route:
        """Where to connect for `host`:`port`: the static map, else the first address the
        resolver gives that the destination policy allows. Every numeric spelling a
        resolver accepts (`127.1`, `0x7f000001`, `2130706433`) arrives here as the address
        it means; the caller connects to exactly the address judged, so no later lookup can
        answer differently (DNS rebinding). Raises DestinationRefused (403) when no
        candidate is allowed."""
        static = resolve_static(self.routes, host, port)
        if static is not None:
            return Route(static, MAPPED)
        literal = host[1:-1] if host.startswith("[") else host
        try:
            candidates = await self.resolver(literal, port)
        except (OSError, UnicodeError):
            raise UpstreamError(502, f"cannot resolve host '{host}'") from None
        refusal = ""
        for ip, candidate_port in candidates:
            verdict = self.destinations.judge(ip, candidate_port)
            if verdict.reason is None:
                return Route((ip, candidate_port), ALLOWED if verdict.explicit else DEFAULT)
            refusal = refusal or verdict.reason
        if refusal:
            raise DestinationRefused(refusal)
        raise UpstreamError(502, f"cannot resolve host '{host}'")

    async def _getaddrinfo(self, host: str, port: int) -> list[Address]:
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(str(info[4][0]), int(info[4][1])) for info in infos]

    def vet(self, route: Route, to_self: bool) -> None:
        """After connect() and before any byte is sent: is the peer this very host?"""
        if route.trust != MAPPED:
            reason = self.destinations.judge_connected(to_self, route.address[1],
                                                       route.trust == ALLOWED)
            if reason is not None:
                raise DestinationRefused(reason)

    async def _sweep(self) -> None:
        """One timer for every timeout: slowloris heads, idle keep-alive, slow upstreams."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = self.loop.time()
            busy = []
            for conn in list(self.connections):
                conn.check_timeouts(now)
                if conn.active is not None and conn.active.upstream is not None:
                    busy.append(conn.active.upstream)
            self.pool.sweep(now, self.read_timeout, busy)


class ClientConnection(asyncio.Protocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.active: Exchange | None = None  # the exchange whose response is in progress
        self.receiving: Exchange | None = None  # the exchange whose body is being read
        self.tunnel: asyncio.Transport | None = None  # CONNECT or 101 Upgrade: raw bytes
        self.upgraded_data: list[bytes] | None = None  # bytes after an Upgrade/CONNECT head
        self.broken: tuple[int, str] | None = None  # parse error waiting its turn
        self.closed = False
        self.head_since: float | None = None
        self.idle_since: float | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._in_head = False
        self._reading_paused = False
        self._out: list[bytes] = []  # response bytes gathered during one upstream read
        # Tunnel liveness: set by any byte either way, turned into a time by the sweeper
        # (a flag per chunk is cheaper than reading the clock per chunk).
        self.tunnel_busy = False
        self.tunnel_seen = 0.0

    # ------------------------------------------------------------ connection lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's isn't a subclass
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head_since = self.gw.loop.time()
        self.gw.connections.add(self)
        self.gw.metrics.connections.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gw.connections.discard(self)
        self.gw.metrics.connections.dec()
        if self.tunnel is not None:
            self.tunnel.close()
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.detach()  # mid-response: the upstream's state is unknown

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close once what is written has been sent."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def in_flight(self) -> int:
        """Requests received and not yet answered whole (a tunnel is one)."""
        if self.closed:
            return 0
        return (self.tunnel is not None or self.active is not None) + len(self.queue)

    def check_timeouts(self, now: float) -> None:
        if self.closed:
            return
        if self.tunnel is not None:
            if self.tunnel_busy:
                self.tunnel_busy, self.tunnel_seen = False, now
            elif now - self.tunnel_seen > self.gw.tunnel_idle_timeout:
                self.tunnel.abort()  # an idle tunnel holds two sockets for nothing
                self.abort()
            return
        if self.head_since is not None and now - self.head_since > self.gw.header_timeout:
            if self.active is None and not self.queue:
                self._fail_and_close(408, "request head not received in time")
            else:
                self.abort()
        elif self.idle_since is not None and now - self.idle_since > self.gw.idle_timeout:
            self.abort()

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.pause_reading()
        elif self.active is not None and self.active.upstream is not None:
            self.active.upstream.hold(True)

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.resume_reading()
        elif self.active is not None and self.active.upstream is not None:
            self.active.upstream.hold(False)

    def _pause_reading(self, pause: bool) -> None:
        if self.transport is None or self._reading_paused == pause or self.closed:
            return
        self._reading_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # ------------------------------------------------------------ parse

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            self.tunnel_busy = True
            return
        if self.upgraded_data is not None:
            self._hold_upgraded(data)
            return
        if self.broken is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgraded_data = []
            self._hold_upgraded(data[upgrade.args[0]:])
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self._broken(cause.status, str(cause))
            else:
                self._broken(400, f"malformed request: {exc}")

    def _hold_upgraded(self, data: bytes) -> None:
        assert self.upgraded_data is not None
        if data:
            self.upgraded_data.append(data)
            if sum(map(len, self.upgraded_data)) > MAX_PENDING_BODY:
                self._pause_reading(True)

    def on_message_begin(self) -> None:
        self._url, self._headers, self._head_bytes = b"", [], 0
        self._in_head = True
        self.idle_since = None
        if self.head_since is None:
            self.head_since = self.gw.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # chunked trailers: dropped whole, so nothing can hide in them
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge(431, "request header block larger than 64 KiB")
        if len(self._headers) >= MAX_HEADERS:
            raise _HeadTooLarge(431, f"more than {MAX_HEADERS} request header fields")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.head_since = None
        parser = self.parser
        head = RequestHead(parser.get_method(), self._url, parser.get_http_version(),
                           self._headers)
        exchange = Exchange(head, parser.should_keep_alive())
        exchange.started = self.gw.loop.time()
        self.receiving = exchange
        self.queue.append(exchange)
        if self.active is None:
            self._next()

    def on_body(self, body: bytes) -> None:
        exchange = self.receiving
        if exchange is None:
            return
        upstream = exchange.upstream
        if upstream is not None:
            upstream.write(_frame(exchange, body))
            return
        exchange.pending.append(body)
        exchange.pending_bytes += len(body)
        if exchange.pending_bytes > MAX_PENDING_BODY:
            self._pause_reading(True)

    def on_message_complete(self) -> None:
        exchange = self.receiving
        if exchange is None:
            return
        exchange.body_done = True
        self.receiving = None
        if exchange.upstream is not None and exchange.decision is not None \
                and exchange.decision.body == "chunked":
            exchange.upstream.write(b"0\r\n\r\n")
        if exchange is not self.active:
            # A pipelined request is fully read; stop reading until it's its turn, so a
            # client cannot queue unbounded requests behind a slow one.
            self._pause_reading(True)

    def _broken(self, status: int, message: str) -> None:
        self.broken = (status, message)
        self._pause_reading(True)
        active, receiving = self.active, self.receiving
        if receiving is not None and receiving is not active:
            # A pipelined request whose body turned out malformed while an earlier one is in
            # flight: it must never be forwarded. The earlier ones finish, then the 400.
            with contextlib.suppress(ValueError):
                self.queue.remove(receiving)
            self.receiving = None
        if active is None:
            self._fail_and_close(status, message)
        elif active is self.receiving:
            # The error is inside the body we are forwarding (e.g. a bad chunk size): the
            # upstream holds half a request and will never get the rest, so waiting for its
            # answer would hang. Cut it (the origin never sees a whole request) and answer now.
            if active.upstream is not None:
                active.upstream.detach()
            if active.response_started:
                self.abort()
            else:
                self._fail_and_close(status, message)

    # ------------------------------------------------------------ decide and forward

    def _next(self) -> None:
        if self.closed:
            return
        if not self.queue:
            self.active = None
            if self.broken is not None:
                self._fail_and_close(*self.broken)
                return
            if self.gw.draining:  # answered everything it had asked: close
                self.close()
                return
            self.idle_since = self.gw.loop.time()
            self._pause_reading(False)
            return
        exchange = self.active = self.queue.popleft()
        if self.broken is not None and not exchange.body_done:
            self.queue.clear()  # never forward a request whose body we could not read whole
            self._fail_and_close(*self.broken)
            return
        self._pause_reading(False)
        if self.gw.store.local:
            self._decide(exchange, self.gw.store.get(self.client_ip))
        else:
            self.gw.loop.create_task(self._lookup_then_decide(exchange))

    async def _lookup_then_decide(self, exchange: Exchange) -> None:
        try:
            binding = await self.gw.store.lookup(self.client_ip)
        except Exception:  # an unreachable store means no identity, never a stalled request
            log.exception("binding lookup failed; forwarding without identity")
            binding = None
        if not self.closed:
            self._decide(exchange, binding)

    def _decide(self, exchange: Exchange, binding: Binding | None) -> None:
        gw, rules = self.gw, self.gw.rules
        exchange.decision = decide(
            exchange.head, binding, rules, switch_tripped=gw.switch_tripped(), now=gw.clock(),
            nonce=rules.settings.draw_nonce() if rules.needs_nonce else b"")
        self._admit(exchange)

    def _admit(self, exchange: Exchange) -> None:
        """The decision made: refuse, tunnel, or record then forward."""
        gw, decision = self.gw, exchange.decision
        assert decision is not None
        self._count(decision)
        if not decision.forwarded:
            self._fail_and_close(decision.status, decision.reason)
            return
        destination = decision.destination
        assert destination is not None
        if destination.mode == "connect":
            gw.loop.create_task(self._open_tunnel(exchange))
            return
        if decision.record is not None:
            gw.submit_record(decision.record, lambda ok: self._recorded(exchange, ok))
        else:
            self._forward(exchange)

    def _recorded(self, exchange: Exchange, committed: bool) -> None:
        """The ledger's answer for a disclosure: identity goes out only once its row is
        committed (invariant 4: no ledger, no disclosure)."""
        if self.closed:
            return
        try:
            if not committed:
                assert exchange.decision is not None
                exchange.decision.identity = []
                self.gw.metrics.count(self.gw.metrics.withheld, "ledger")
            self._forward(exchange)
        except Exception:  # a bug must not leave the client waiting for an answer forever
            log.exception("forwarding failed")
            self.response_failed(502, "the gateway could not forward this request")

    def _forward(self, exchange: Exchange) -> None:
        destination = exchange.decision.destination if exchange.decision else None
        assert destination is not None
        gw = self.gw
        address = resolve_static(gw.routes, destination.host, destination.port)
        conn = gw.pool.take(address) if address is not None else None
        if conn is not None:  # the common case needs no task: nothing to wait for
            self._send(exchange, conn)
        else:
            gw.loop.create_task(self._connect_then_send(exchange, destination))

    async def _connect_then_send(self, exchange: Exchange, destination: Destination, *,
                                 fresh: bool = False) -> None:
        """`fresh`: a new connection even if one is idle (the retry after a stale one)."""
        gw = self.gw
        try:
            route = await self._route(destination)
            conn = None if fresh else gw.pool.take(route.address)
            conn = conn or await gw.pool.connect(route.address)
            try:
                gw.vet(route, conn.to_self())
            except DestinationRefused:
                conn.abort()  # nothing was sent on it
                raise
        # One name per handler: compiled (mypyc), a name shared by handlers of different
        # exception types keeps the first one's type and the second handler fails.
        except DestinationRefused as refused:
            self._refuse(refused)
            return
        except UpstreamError as failed:
            self.response_failed(failed.status, str(failed))
            return
        except Exception:  # a bug must not leave the client waiting for an answer forever
            log.exception("forwarding failed")
            self.response_failed(502, "the gateway could not forward this request")
            return
        if self.closed:
            conn.close()
            return
        self._send(exchange, conn)

    def _route(self, destination: Destination) -> Awaitable[Route]:
        """Where this request's upstream connection goes (intercept.py: the original
        destination instead of the Host's addresses)."""
        return self.gw.route(destination.host, destination.port)

    def _send(self, exchange: Exchange, conn: UpstreamConnection) -> None:
        decision = exchange.decision
        assert decision is not None
        if decision.identity and self.gw.switch_tripped():
            # Tripped while the ledger committed or the upstream connected: the switch
            # stops every disclosure not yet on the wire, this one included.
            decision.identity = []
            self.gw.metrics.count(self.gw.metrics.withheld, self.gw.switch_cause())
        head = exchange.head
        start = head.method + b" " + decision.target + b" HTTP/1.1"
        exchange.upstream = conn
        conn.begin(self, serialize_head(start, [*decision.headers, *decision.identity]),
                   head_request=head.method == b"HEAD", now=self.gw.loop.time())
        if decision.record is not None and decision.identity and not exchange.retried:
            metrics = self.gw.metrics
            for claim in decision.record.claims:
                metrics.count(metrics.disclosures, decision.record.partner_id, claim)
        for chunk in exchange.pending:
            conn.write(_frame(exchange, chunk))
        exchange.pending, exchange.pending_bytes = [], 0
        if exchange.body_done and decision.body == "chunked":
            conn.write(b"0\r\n\r\n")
        if exchange is self.receiving:
            self._pause_reading(False)

    def _count(self, decision: Decision) -> None:
        metrics = self.gw.metrics
        for reason, n in decision.stripped.items():
            metrics.count(metrics.strips, reason, amount=n)
        if decision.withheld is not None:
            metrics.count(metrics.withheld, self.gw.switch_cause()
                          if decision.withheld == "killswitch" else decision.withheld)
        if not decision.forwarded:
            metrics.count(metrics.rejected, str(decision.status))

    # ------------------------------------------------------------ responses (ResponseSink)

    def response_head(self, status: int, head: bytes, lines: bytes, fields: int) -> None:
        exchange = self.active
        if exchange is None or self.transport is None:
            return
        if status < 200:
            if status != 101 and exchange.head.version == "1.1":
                self._out.append(_status_line(status, head) + b"\r\n")
            if status != 101:
                return
        decision = exchange.decision
        assert decision is not None
        if status == 101 and not decision.upgrade:
            self.response_failed(502, "upstream switched protocols without being asked")
            return
        lines, chunked_out = _response_lines(exchange, status, lines, fields)
        exchange.chunked_out = chunked_out
        if decision.upgrade or self.upgraded_data is not None:
            exchange.close_after = True  # after an Upgrade attempt the parser can't resume
        if self.gw.draining and not self.queue:
            exchange.close_after = True  # the last answer before a graceful stop
        if status == 101:
            lines += b"Connection: upgrade\r\n" + b"".join(
                b"Upgrade: %b\r\n" % v for v in upgrade_values(head))
        elif exchange.close_after:
            lines += b"Connection: close\r\n"
        exchange.response_started = True
        self._out.append(b"%b%b\r\n" % (_status_line(status, head), lines))

    def response_body(self, chunk: bytes) -> None:
        exchange = self.active
        if exchange is None or self.transport is None or not chunk:
            return
        if exchange.chunked_out:
            self._out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self._out.append(chunk)

    def response_end(self) -> None:
        exchange = self.active
        if exchange is None or self.transport is None:
            return
        if exchange.chunked_out:
            self._out.append(b"0\r\n\r\n")
        self.flush()
        self._finish(exchange, exchange.close_after or not exchange.body_done)

    def flush(self) -> None:
        """One write per upstream read: head and body leave in one segment (a write per
        piece cost a syscall each and was the largest item in the profile)."""
        out = self._out
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def response_failed(self, status: int, message: str, *, stale: bool = False) -> None:
        exchange = self.active
        if exchange is None:
            return
        if stale and self._retry(exchange):
            return
        self.gw.metrics.count(self.gw.metrics.upstream_errors, str(status))
        log.info("upstream error: %s", message, extra={"status": status})
        if exchange.response_started:
            self.abort()  # the client already has part of a response: only a cut is honest
        else:
            self._fail_and_close(status, message)

    def _retry(self, exchange: Exchange) -> bool:
        """A reused keep-alive connection closed before any byte of the response: the origin
        most likely closed it as idle just as we sent (the keep-alive race). RFC 9112 §9.3.1
        lets a proxy retry then if the method is idempotent (RFC 9110 §9.2.2); we also need
        the whole request again, so only a request without a body is retried (a body was
        streamed on and is gone). Once, on a fresh connection; the ledger row and the
        disclosure counts belong to the first attempt, so neither is repeated."""
        decision = exchange.decision
        if (exchange.retried or exchange.response_started or decision is None
                or decision.destination is None or decision.body != "none"
                or exchange.head.method not in IDEMPOTENT_METHODS):
            return False
        exchange.retried = True
        exchange.upstream = None
        self.gw.metrics.count(self.gw.metrics.upstream_retries, "stale")
        self.gw.loop.create_task(
            self._connect_then_send(exchange, decision.destination, fresh=True))
        return True

    def _refuse(self, refusal: DestinationRefused) -> None:
        """403 for a destination the policy refuses; one log line, no subscriber in it."""
        metrics = self.gw.metrics
        metrics.count(metrics.refused_destinations, refusal.reason)
        log.warning("destination refused (%s) for client %s", refusal.reason,
                    masked_client(self.client_ip))
        self._fail_and_close(403, str(refusal))

    def upstream_writable(self, writable: bool) -> None:
        self._pause_reading(not writable)

    def upgraded(self, rest: bytes) -> None:
        """101 Switching Protocols: from here on both sides are a raw byte pipe."""
        exchange = self.active
        if exchange is None or exchange.upstream is None or self.transport is None:
            return
        upstream = exchange.upstream
        assert upstream.transport is not None
        self.flush()  # the 101 head goes before any tunnelled byte
        self._become_tunnel(upstream.transport)
        if rest:
            self.transport.write(rest)

    def _become_tunnel(self, transport: asyncio.Transport) -> None:
        assert self.transport is not None
        transport.set_protocol(Pipe(self.transport, self))
        self.tunnel = transport
        self.tunnel_seen = self.gw.loop.time()
        held, self.upgraded_data = self.upgraded_data or [], None
        for data in held:
            transport.write(data)
        self.active = None
        self._pause_reading(False)

    async def _open_tunnel(self, exchange: Exchange) -> None:
        """CONNECT: bytes pass untouched both ways; no enrichment is possible inside TLS."""
        destination = exchange.decision.destination if exchange.decision else None
        assert destination is not None and self.transport is not None
        gw = self.gw
        try:
            route = await gw.route(destination.host, destination.port)
            # The first Pipe holds what the upstream says before we are sure of it: nothing
            # reaches the client, and nothing the client sent reaches the upstream, until
            # the destination is vetted and the 200 is out.
            transport, early = await asyncio.wait_for(
                gw.loop.create_connection(lambda: Pipe(None, self), *route.address),
                gw.connect_timeout)
            try:
                gw.vet(route, same_host(transport.get_extra_info("sockname"),
                                        transport.get_extra_info("peername")))
            except DestinationRefused:
                transport.abort()
                raise
        except DestinationRefused as refused:  # one name per handler (see above)
            self._refuse(refused)
            return
        except UpstreamError as failed:
            self._fail_and_close(failed.status, str(failed))
            return
        except TimeoutError:
            self._fail_and_close(504, "upstream did not accept the connection in time")
            return
        except OSError as error:
            self._fail_and_close(502, f"upstream unreachable ({error.strerror or error})")
            return
        if self.closed:
            transport.close()
            return
        self.gw.metrics.count(self.gw.metrics.requests, "connect", "200")
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._become_tunnel(transport)
        for data in early.held:
            self.transport.write(data)

    # ------------------------------------------------------------ endings

    def _finish(self, exchange: Exchange, close: bool) -> None:
        decision = exchange.decision
        mode = decision.destination.mode if decision and decision.destination else "forward"
        metrics = self.gw.metrics
        metrics.count(metrics.requests, mode, "ok")
        metrics.latency.observe(self.gw.loop.time() - exchange.started)
        if exchange.upstream is not None and not exchange.body_done:
            exchange.upstream.detach()  # our request body was cut short: not reusable
        # The upstream connection goes back to the pool now and may serve another client at
        # once: nothing of ours (flow control, connection_lost, the sweeper) may touch it.
        exchange.upstream = None
        self.active = None
        if close:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return
        self._next()

    def _fail_and_close(self, status: int, message: str) -> None:
        if self.transport is None or self.closed:
            return
        self.gw.metrics.count(self.gw.metrics.requests, "error", str(status))
        self._out.clear()  # at most an interim 1xx head: the error replaces it
        self.transport.write(error_response(status, message))
        self.closed = True
        self.transport.close()


class Pipe(asyncio.Protocol):
    """One direction of a tunnel: whatever arrives is written to the peer."""

    def __init__(self, peer: asyncio.Transport | None, owner: ClientConnection) -> None:
        self.peer = peer
        self.owner = owner  # the client side, which keeps the tunnel's idle clock
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] = []  # bytes received while there is no peer yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's isn't a subclass

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)
        else:
            self.held.append(data)
        self.owner.tunnel_busy = True

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.can_write_eof():
            self.peer.write_eof()
            return True  # half-close: the other direction may still be talking
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()


def _frame(exchange: Exchange, body: bytes) -> bytes:
    """Request body bytes for the upstream; llhttp hands us chunked bodies decoded."""
    decision = exchange.decision
    if decision is not None and decision.body == "chunked":
        return b"%x\r\n%b\r\n" % (len(body), body)
    return body


# The origin's status line -> ours. Origins repeat a few lines ("HTTP/1.1 200 OK"), so the
# reason phrase is checked and the line rebuilt once each, not per response.
_STATUS_LINES: dict[bytes, bytes] = {}
_STATUS_LINES_MAX = 1_024


def _status_line(status: int, head: bytes) -> bytes:
    """`HTTP/1.1 <status> <reason>` and CRLF: always 1.1 (we speak it to the client whatever
    the origin spoke), with the origin's reason phrase if it is short printable text."""
    raw = head[:head.index(b"\r\n")]
    line = _STATUS_LINES.get(raw)
    if line is None:
        text = status_reason(head).decode("latin-1").strip()
        if not (text and text.isprintable() and len(text) < 64):
            text = REASONS.get(status, "Unknown")
        line = f"HTTP/1.1 {status} {text}\r\n".encode()
        if len(_STATUS_LINES) >= _STATUS_LINES_MAX:
            _STATUS_LINES.clear()
        _STATUS_LINES[raw] = line
    return line


def _response_lines(exchange: Exchange, status: int, lines: bytes,
                    fields: int) -> tuple[bytes, bool]:
    """The header lines for the client (hop-by-hop dropped) and whether the body is
    re-chunked: chunked or close-delimited upstream bodies are re-chunked for HTTP/1.1
    clients so the client connection stays reusable; HTTP/1.0 clients get the raw body and
    a close."""
    no_body = exchange.head.method == b"HEAD" or status in (101, 204, 304)
    if no_body or fields & HAS_LENGTH:
        return lines, False
    if exchange.head.version == "1.1":
        return lines + b"Transfer-Encoding: chunked\r\n", True
    exchange.close_after = True
    return lines, False
