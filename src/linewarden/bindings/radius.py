"""RADIUS accounting (RFC 2866) from the GGSN/PGW/SMF -> subscriber bindings.

One datagram, read top to bottom: size → known client → framing → Request Authenticator
(RFC 2866 §3, with that client's secret) → attributes (pyrad, with the shipped 3GPP
dictionary) → an `AccountingEvent` → the store, in a per-address lane → only then the
Accounting-Response. Anything wrong is dropped without an answer and counted by reason;
nothing about the subscriber is logged.

Why not pyrad's `ServerAsync`: it decodes before it authenticates, logs drops without a
countable reason, and opens its socket with SO_REUSEPORT (a second listener on the same
port would silently take half the accounting). The packet and dictionary classes are
pyrad's; the socket, the checks and the ordering are here.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import ipaddress
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from pyrad.dictionary import Dictionary  # type: ignore[import-untyped]
from pyrad.packet import (  # type: ignore[import-untyped]
    AccountingRequest,
    AcctPacket,
    PacketError,
)

from .. import tasks
from ..identifiers import is_possible_msisdn
from ..logs import RepeatLimiter
from . import Binding, BindingStore

log = logging.getLogger("linewarden.radius")

# RFC 2865 §3: Length is 20..4096 octets; octets beyond Length are padding, fewer is an
# error (silently discarded).
HEADER_LEN = 20
MAX_PACKET = 4096
# Kernel receive buffer: a GGSN sends bursts (every session of a restarted PGW at once);
# 4 MiB holds ~20,000 typical 200-byte requests while the loop catches up. The kernel
# caps it at net.core.rmem_max; raise that sysctl on a busy gateway.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
# Per-address ordering with bounded concurrency: a Start and the Stop that follows it for
# the same address always reach the store in order (same lane), while different addresses
# proceed in parallel (one Redis round trip per lane in flight).
LANES = 32
# Pending accounting per lane; past it packets are dropped ("overloaded") and the NAS
# retransmits (RFC 2866 §2). 32 x 256 = 8192 packets, ~1 s of a busy GGSN.
LANE_DEPTH = 256
_ACCOUNTING_REQUEST = AccountingRequest  # RFC 2866 §4.1: Code 4
_STATUS = {1: "start", 2: "stop", 3: "interim", 7: "accounting_on", 8: "accounting_off"}
_STATUS_NAMES = {"Start": "start", "Stop": "stop", "Interim-Update": "interim",
                 "Accounting-On": "accounting_on", "Accounting-Off": "accounting_off"}
_V4_MAPPED_PREFIX = "::ffff:"
# 3GPP TS 23.401 §5.3.1.2.2: a UE gets one /64; the gateway binds the whole prefix (the
# stores fall back to the /64 when an IPv6 address has no binding of its own). Other
# prefix lengths are refused rather than guessed.
IPV6_PREFIX_LEN = 64


class Drop(enum.StrEnum):
    """Why a datagram got no answer. Label values of linewarden_radius_dropped."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    UNKNOWN_CLIENT = "unknown_client"
    NOT_ACCOUNTING = "not_accounting"
    BAD_LENGTH = "bad_length"
    MALFORMED = "malformed"
    BAD_AUTHENTICATOR = "bad_authenticator"
    DUPLICATE = "duplicate"
    UNKNOWN_STATUS = "unknown_status"
    MISSING_ATTRIBUTE = "missing_attribute"
    BAD_MSISDN = "bad_msisdn"
    BAD_ADDRESS = "bad_address"
    OVERLOADED = "overloaded"
    STORE_FAILED = "store_failed"


class Rejected(Exception):
    def __init__(self, reason: Drop) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccountingEvent:
    """What one Accounting-Request says, decoded and checked; no I/O."""

    status: str  # start | interim | stop | accounting_on | accounting_off
    source: str  # NAS-IP-Address, else the datagram's source address
    ip: str = ""
    msisdn: str = ""
    session_id: str = ""
    imsi: str = ""
    imeisv: str = ""
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def binding(self, expires_at: float) -> Binding:
        return Binding(ip=self.ip, msisdn=self.msisdn, attributes=self.attributes,
                       session_id=self.session_id, source=self.source,
                       expires_at=expires_at)


@dataclass(frozen=True)
class ListenerSettings:
    host: str
    port: int
    secrets: Mapping[str, bytes]  # NAS address -> shared secret
    ttl: float  # seconds a binding lives without an Interim-Update


def default_dictionary() -> Dictionary:
    path = resources.files("linewarden.bindings").joinpath("dictionary")
    with resources.as_file(path) as file:
        return Dictionary(str(file))


# ---------------------------------------------------------------- the checks, pure

def normalise_client(address: str) -> str:
    return address.removeprefix(_V4_MAPPED_PREFIX) if "." in address else address


def check_framing(data: bytes) -> bytes:
    """The datagram cut to its Length; raises Rejected for anything RFC 2865 §3 and
    §5 would discard. Every attribute must fit exactly: pyrad alone would truncate."""
    if len(data) < HEADER_LEN:
        raise Rejected(Drop.TOO_SHORT)
    if len(data) > MAX_PACKET:
        raise Rejected(Drop.TOO_LONG)
    if data[0] != _ACCOUNTING_REQUEST:
        raise Rejected(Drop.NOT_ACCOUNTING)
    length = int.from_bytes(data[2:4], "big")
    if not HEADER_LEN <= length <= len(data):
        raise Rejected(Drop.BAD_LENGTH)
    data = data[:length]
    at = HEADER_LEN
    while at < length:
        if length - at < 2 or data[at + 1] < 2 or at + data[at + 1] > length:
            raise Rejected(Drop.MALFORMED)
        at += data[at + 1]
    return data


def authentic(data: bytes, secret: bytes) -> bool:
    """RFC 2866 §3: Request Authenticator = MD5(Code+Identifier+Length+16 zero octets+
    request attributes+shared secret)."""
    expected = hashlib.md5(data[:4] + bytes(16) + data[HEADER_LEN:] + secret).digest()
    return hmac.compare_digest(expected, data[4:HEADER_LEN])


def _first(packet: AcctPacket, name: str) -> Any:
    values = packet.get(name)
    return values[0] if values else None


def _text(packet: AcctPacket, name: str) -> str:
    value = _first(packet, name)
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    if not text.isprintable():
        raise Rejected(Drop.MALFORMED)
    return text


def read_event(packet: AcctPacket, client: str) -> AccountingEvent:
    """The attributes a binding needs (status, Framed-IP-Address, Calling-Station-Id,
    Acct-Session-Id), validated; raises Rejected."""
    try:
        raw_status = _first(packet, "Acct-Status-Type")
        status = (_STATUS.get(raw_status) if isinstance(raw_status, int)
                  else _STATUS_NAMES.get(str(raw_status)))
        if status is None:
            raise Rejected(Drop.UNKNOWN_STATUS if raw_status is not None
                           else Drop.MISSING_ATTRIBUTE)
        source = _text(packet, "NAS-IP-Address") or client
        if status in ("accounting_on", "accounting_off"):
            return AccountingEvent(status=status, source=source)
        return _session_event(packet, status, source)
    except (PacketError, ValueError, KeyError, TypeError, UnicodeError, struct.error) as exc:
        raise Rejected(Drop.MALFORMED) from exc


def _session_event(packet: AcctPacket, status: str, source: str) -> AccountingEvent:
    ip = _framed_address(packet)
    session_id = _text(packet, "Acct-Session-Id")
    if not ip or not session_id:
        raise Rejected(Drop.MISSING_ATTRIBUTE)
    msisdn = _text(packet, "Calling-Station-Id").removeprefix("+")
    # A Stop only needs the address and the session; every other event names the
    # subscriber, and must name a possible one.
    if (status != "stop" or msisdn) and not is_possible_msisdn(msisdn):
        raise Rejected(Drop.BAD_MSISDN)
    attributes: dict[str, str] = {}
    apn = _text(packet, "Called-Station-Id")
    if apn:
        attributes["apn"] = apn
    rat = _first(packet, "3GPP-RAT-Type")
    if rat is not None:
        attributes["rat_type"] = str(rat)
    mcc_mnc = _text(packet, "3GPP-IMSI-MCC-MNC")
    if mcc_mnc:
        attributes["mcc_mnc"] = mcc_mnc
    # IMSI and IMEISV are read and checked but never stored: no claim uses them, and a
    # binding store full of IMSIs would be a second subscriber database to protect.
    return AccountingEvent(status=status, source=source, ip=ip, msisdn=msisdn,
                           session_id=session_id, imsi=_text(packet, "3GPP-IMSI"),
                           imeisv=_text(packet, "3GPP-IMEISV"),
                           attributes=MappingProxyType(attributes))


def _framed_address(packet: AcctPacket) -> str:
    v4 = _first(packet, "Framed-IP-Address")
    if v4:
        return str(ipaddress.IPv4Address(v4))
    prefix = _first(packet, "Framed-IPv6-Prefix")
    if prefix:
        network = ipaddress.IPv6Network(str(prefix), strict=False)
        if network.prefixlen != IPV6_PREFIX_LEN:
            raise Rejected(Drop.BAD_ADDRESS)
        return str(network.network_address)
    v6 = _first(packet, "Framed-IPv6-Address")
    return str(ipaddress.IPv6Address(v6)) if v6 else ""


# ---------------------------------------------------------------- the listener

class RadiusMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.accepted = PromCounter("linewarden_radius_accepted",
                                    "Accounting-Requests stored and answered, by status",
                                    ["status"], registry=registry)
        self.dropped = PromCounter("linewarden_radius_dropped",
                                   "Datagrams dropped without an answer, by reason",
                                   ["reason"], registry=registry)
        self.counts: Counter[str] = Counter()  # the same, for tests and the bench

    def accept(self, status: str) -> None:
        self.counts[status] += 1
        self.accepted.labels(status).inc()

    def drop(self, reason: Drop) -> None:
        self.counts[reason.value] += 1
        self.dropped.labels(reason.value).inc()


class RadiusListener(asyncio.DatagramProtocol):
    def __init__(self, settings: ListenerSettings, store: BindingStore, *,
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.dictionary = default_dictionary()
        self.metrics = RadiusMetrics(registry)
        self.address: tuple[str, int] = (settings.host, settings.port)
        self._transport: asyncio.DatagramTransport | None = None
        self._lanes: list[asyncio.Queue[tuple[AccountingEvent, AcctPacket, Any]]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._inflight: set[tuple[Any, int, bytes]] = set()
        self._store_healthy = True
        self._log = RepeatLimiter(log)  # per-packet warnings and errors, rate-limited

    # ---- life cycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.settings.host, self.settings.port), family=family)
        self.address = transport.get_extra_info("sockname")[:2]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        self._lanes = [asyncio.Queue(LANE_DEPTH) for _ in range(LANES)]
        self._workers = [loop.create_task(self._work(q)) for q in self._lanes]
        log.info("radius accounting on %s:%d, %d clients", self.address[0],
                 self.address[1], len(self.settings.secrets))

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        await tasks.stop(self._workers)
        self._workers.clear()
        self._log.settle()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        self._log.warning("radius socket error: %s", exc)

    # ---- one datagram

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._receive(data, addr)
        except Rejected as rejected:
            self.metrics.drop(rejected.reason)

    def _receive(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        # Cheapest checks first, so a flood of junk costs a dict lookup or one MD5 each.
        client = normalise_client(str(addr[0]))
        if len(data) < HEADER_LEN:
            raise Rejected(Drop.TOO_SHORT)
        secret = self.settings.secrets.get(client)
        if secret is None:
            raise Rejected(Drop.UNKNOWN_CLIENT)
        data = check_framing(data)
        if not authentic(data, secret):
            raise Rejected(Drop.BAD_AUTHENTICATOR)
        # RFC 5080 §2.2.2: a retransmission of a request still in progress is the same
        # request; answering it once (when stored) is enough.
        key = (addr, data[1], data[4:HEADER_LEN])
        if key in self._inflight:
            raise Rejected(Drop.DUPLICATE)
        try:
            packet = AcctPacket(secret=secret, dict=self.dictionary, packet=data)
        except PacketError as exc:
            raise Rejected(Drop.MALFORMED) from exc
        event = read_event(packet, client)
        lane = self._lanes[hash(event.ip or event.source) % LANES]
        try:
            lane.put_nowait((event, packet, addr))
        except asyncio.QueueFull:
            raise Rejected(Drop.OVERLOADED) from None
        self._inflight.add(key)

    async def _work(self, lane: asyncio.Queue[tuple[AccountingEvent, AcctPacket, Any]]
                    ) -> None:
        while True:
            event, packet, addr = await lane.get()
            try:
                await self.apply(event)
            except Exception as exc:  # the NAS gets no answer and retransmits
                self.metrics.drop(Drop.STORE_FAILED)
                self._store_healthy = False
                self._log.error("binding store write failed (%s: %s); accounting is left "
                                "unanswered so the NAS retries", type(exc).__name__, exc)
                continue
            finally:
                self._inflight.discard((addr, packet.id, packet.authenticator))
            if not self._store_healthy:
                self._store_healthy = True
                self._log.warning("binding store writes succeed again")
            self.metrics.accept(event.status)
            if self._transport is not None:
                self._transport.sendto(packet.CreateReply().ReplyPacket(), addr)

    async def apply(self, event: AccountingEvent) -> None:
        """Start binds, Interim refreshes only the bound session (another one unbinds: fail
        closed), Stop unbinds. Raises when the store could not take it."""
        store, status = self.store, event.status
        if status == "start":
            await store.write(event.binding(self.clock() + self.settings.ttl))
        elif status == "interim":
            if not await store.refresh(event.binding(self.clock() + self.settings.ttl)):
                self._log.warning("interim for another session than the bound one on an "
                                  "address from %s: binding removed (fail closed)",
                                  event.source)
        elif status == "stop":
            await store.stop(event.ip, event.session_id, event.source,
                             until=self.clock() + self.settings.ttl)
        else:
            dropped = await store.drop_source(event.source)
            log.info("%s from %s: %d bindings dropped", status, event.source, dropped)


def listener_settings(listen: tuple[str, int], default_secret: bytes,
                      clients: Mapping[str, bytes], ttl: float) -> ListenerSettings:
    secrets = {normalise_client(str(ipaddress.ip_address(a))): s or default_secret
               for a, s in clients.items()}
    return ListenerSettings(host=listen[0], port=listen[1], secrets=secrets, ttl=ttl)
