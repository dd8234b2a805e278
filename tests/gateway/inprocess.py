"""The data plane in-process: a real `Gateway`, `ClientConnection` and `UpstreamConnection`
with fake transports, so a test controls the exact order and split of every byte."""

from __future__ import annotations

import asyncio
from typing import Any

from linewarden.bindings.memory import MemoryStore
from linewarden.claims import Secrets
from linewarden.decide import DisclosureRecord, Rules, Settings
from linewarden.policy.load import parse_policy
from linewarden.proxy.server import ClientConnection, Gateway
from linewarden.proxy.upstream import Pool, UpstreamConnection


class FakeTransport:
    def __init__(self, peer: Any = None) -> None:
        self.out: list[bytes] = []
        self.closing = False
        self.reading = True
        self.peer = peer
        self.protocol: Any = None
        self.fills_on_write = False  # the next write finds the socket full: pause_writing

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if self.fills_on_write:
            self.fills_on_write = False
            self.protocol.pause_writing()

    @property
    def written(self) -> bytes:
        return b"".join(self.out)

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return self.peer if key == "peername" else default

    def set_write_buffer_limits(self, *args: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Recorder:
    async def record(self, rec: DisclosureRecord) -> bool:
        return True


def gateway_with_one_pooled_connection() -> tuple[Gateway, UpstreamConnection, FakeTransport]:
    """Call inside a running loop. Both test hosts resolve to the one pooled connection."""
    policy, _ = parse_policy("")
    gateway = Gateway(Rules(policy, Settings(Secrets(b"p", b"l"))), MemoryStore(), Recorder(),
                      resolve={"origin.test": "127.0.0.1:9"})
    gateway.loop = asyncio.get_running_loop()
    gateway.pool = Pool(gateway.loop, 1.0)
    upstream = UpstreamConnection(gateway.pool, ("127.0.0.1", 9))
    upstream_transport = FakeTransport()
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    gateway.pool.release(upstream)
    return gateway, upstream, upstream_transport


def client(gateway: Gateway, ip: str = "127.0.0.2") -> tuple[ClientConnection, FakeTransport]:
    conn = ClientConnection(gateway)
    transport = FakeTransport((ip, 40000))
    transport.protocol = conn
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport
