"""Reference point for bench/proxy.py: the smallest uvloop + httptools forward proxy.

    python bench/bare_proxy.py PORT ORIGIN_HOST:ORIGIN_PORT

Absolute-form GETs in, origin-form out to one fixed origin. One upstream keep-alive connection
per client connection, the request head re-serialised from the parser's fields, response bytes
relayed unparsed as they arrive: two reads and two writes per request, no policy, no stripping,
no request bodies. It shows what a Python event-loop proxy costs on this machine before any
linewarden logic, so `linewarden / bare` separates our overhead from the runtime's.
Not a product: it ignores every rule in PRODUCT.md.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Client(asyncio.Protocol):
    origin: tuple[str, int] = ("127.0.0.1", 80)

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.waiting: list[bytes] = []
        self.url = b""
        self.headers: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        upstream, _ = await asyncio.get_running_loop().create_connection(
            lambda: Upstream(self.transport), *self.origin)  # type: ignore[arg-type]
        self.upstream = upstream  # type: ignore[assignment]
        for data in self.waiting:
            upstream.write(data)
        self.waiting = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() != b"proxy-connection":
            self.headers.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        url = httptools.parse_url(self.url)
        target = (url.path or b"/") + (b"?" + url.query if url.query else b"")
        head = b"".join([self.parser.get_method(), b" ", target, b" HTTP/1.1\r\n",
                         *self.headers, b"\r\n"])
        if self.upstream is None:
            self.waiting.append(head)
        else:
            self.upstream.write(head)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
    print(f"bare proxy on 127.0.0.1:{port}", flush=True)
    await server.serve_forever()


def main() -> None:
    port, origin = int(sys.argv[1]), sys.argv[2]
    host, _, origin_port = origin.rpartition(":")
    Client.origin = (host, int(origin_port))
    uvloop.install()
    asyncio.run(serve(port))


if __name__ == "__main__":
    main()
