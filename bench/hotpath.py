"""The data plane's own CPU per request, without sockets: `linewarden serve`'s objects (Service
from bench/proxy.py's config, the real ledger writer on SQLite) driven in-process
with fake transports, so what is measured is our Python, not the kernel or wrk.

    .venv/bin/python bench/hotpath.py [--requests N] [--profile other|partner]

Prints CPU µs per request for the partner path (identity added, ledger row committed) and the
non-partner path (stripped) — the whole process, and the event loop's thread alone (the rest is
the ledger writer's thread) — and a cProfile summary of the loop's thread with --profile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "gateway"))
from inprocess import FakeTransport

from linewarden.config import load_config
from linewarden.proxy.server import ClientConnection
from linewarden.proxy.upstream import UpstreamConnection
from linewarden.serve import Service
from proxy import gateway_conf  # bench/proxy.py: the same gateway, the same partner

ORIGIN_PORT = 9


# What wrk sends in bench/proxy.py, and what nginx answers there.
REQUEST = ("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wrk-linewarden-bench/1\r\n"
           "Accept: text/html,application/json;q=0.9,*/*;q=0.8\r\n\r\n")
BODY = b"x" * 600
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 10:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 600\r\nConnection: keep-alive\r\n\r\n"
            + BODY)


class NullRecorder:
    """--ledger none: every record 'commits' at once, to separate the ledger's cost."""

    async def record(self, rec: Any) -> bool:
        return True

    def submit(self, rec: Any, done: Any) -> None:  # the writer's callback form
        done(True)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class CountingTransport(FakeTransport):
    """Counts what is written instead of keeping it: 50,000 responses would be 36 MB."""

    def __init__(self, peer: Any = None) -> None:
        super().__init__(peer)
        self.count = 0

    def write(self, data: bytes) -> None:
        self.count += len(data)


async def drive(service: Service, host: str, n: int, conns: int,
                sent: Sent) -> tuple[float, float, int]:
    """n requests over `conns` keep-alive client connections, each with its own upstream
    (as wrk -c50 does); (CPU seconds, bytes to the clients)."""
    gateway = service.gateway
    pairs = []
    for i in range(conns):
        upstream = UpstreamConnection(gateway.pool, ("127.0.0.1", ORIGIN_PORT))
        upstream.connection_made(UpstreamTransport(sent))  # type: ignore[arg-type]
        gateway.pool.release(upstream)
        client = ClientConnection(gateway)
        client.connection_made(CountingTransport(("127.0.0.1", 40000 + i)))  # type: ignore[arg-type]
        pairs.append(client)
    request = REQUEST.format(host=host).encode()
    started, loop_started = time.process_time(), time.thread_time()
    for _ in range(n // conns):
        sent.expect(len(pairs))
        for client in pairs:
            client.data_received(request)
        # The partner path: requests wait for the ledger's group commit; the last one to
        # reach its upstream wakes us (polling here would be most of the loop's CPU).
        assert sent.all_sent is not None
        await sent.all_sent
        for client in pairs:
            assert client.active is not None and client.active.upstream is not None
            client.active.upstream.data_received(RESPONSE)
    cpu, loop_cpu = time.process_time() - started, time.thread_time() - loop_started
    assert all(c.active is None and not c.closed for c in pairs), "an exchange did not finish"
    return cpu, loop_cpu, sum(c.transport.count for c in pairs)  # type: ignore[union-attr]


class Sent:
    """Counts requests reaching their upstream in this round: each is one write of its head
    to the upstream's transport (`UpstreamTransport`, a seam: no method is patched, so the
    same harness drives the compiled build)."""

    def __init__(self) -> None:
        self.expected = 0
        self.count = 0
        self.all_sent: asyncio.Future[None] | None = None

    def expect(self, expected: int) -> None:
        """A new round: count from zero, and a fresh future to wait on. One `Sent` serves
        every round and drive: pooled upstreams from earlier drives write here too."""
        self.expected = expected
        self.count = 0
        self.all_sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def note(self) -> None:
        self.count += 1
        if (self.count == self.expected and self.all_sent is not None
                and not self.all_sent.done()):
            self.all_sent.set_result(None)


class UpstreamTransport(CountingTransport):
    """An upstream's transport: every write is a request head going out (GET, no body)."""

    def __init__(self, sent: Sent) -> None:
        super().__init__()
        self.sent = sent

    def write(self, data: bytes) -> None:
        super().write(data)
        self.sent.note()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "linewarden.toml"
        conf = gateway_conf(Path(tmp), 0, 0, f"127.0.0.1:{ORIGIN_PORT}")
        if args.ledger == "journal":  # the journal-first ledger, SQLite as its index
            conf = conf.replace("[ledger]\n", '[ledger]\njournal = "journal"\n', 1)
        path.write_text(conf)
        recorder = NullRecorder() if args.ledger == "none" else None
        service = Service(load_config(str(path)), recorder)
        gateway = service.gateway
        await service.store.start()
        for binding in service.config.bindings():
            await service.store.write(binding)
        await service.recorder.start()  # type: ignore[attr-defined]
        await gateway.start("127.0.0.1", 0)
        sent = Sent()
        try:
            for host in ("partner.test", "other.test"):
                # warm-up: memos, the ledger file, the pool
                await drive(service, host, 2000, args.connections, sent)
            results = {}
            for host, name in (("partner.test", "partner"), ("other.test", "other")):
                if args.profile == name:
                    profiler = cProfile.Profile()
                    profiler.enable()
                cpu, loop_cpu, written = await drive(service, host, args.requests,
                                                     args.connections, sent)
                if args.profile == name:
                    profiler.disable()
                    stats = pstats.Stats(profiler, stream=sys.stdout)
                    stats.sort_stats("tottime").print_stats(25)
                results[name] = cpu
                per_response = written / args.requests
                print(f"{name:8s} {cpu / args.requests * 1e6:7.2f} µs CPU/request, of which "
                      f"the event loop's thread {loop_cpu / args.requests * 1e6:.2f} "
                      f"({args.requests} requests, {per_response:.0f} bytes per response)")
            print(f"partner / other CPU: {results['partner'] / results['other']:.2f}")
        finally:
            await gateway.close()
            await service.recorder.close()  # type: ignore[attr-defined]
            await service.store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--ledger", choices=["sqlite", "journal", "none"],
                        default="sqlite")
    parser.add_argument("--profile", choices=["partner", "other"])
    uvloop.run(main(parser.parse_args()))
