"""Failures the corpus once found in the data plane, now fixed, pinned down with a raw
upstream that keeps every byte (the echo origin only records complete requests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from run import start_hostile_gateway
from wire import RawClient

from lwtest import Gateway


class RawUpstream:
    """Accepts connections and keeps every byte; answers 200 (empty) to a request for
    `/first`, nothing else."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.data = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            while chunk := conn.recv(65536):
                with self.lock:
                    self.data += chunk
                if b"/first" in chunk:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_gateway(tmp_path: Path) -> Iterator[tuple[Gateway, RawUpstream]]:
    upstream = RawUpstream()
    gw = start_hostile_gateway(tmp_path, upstream.port, proxy_extra="read_timeout = 2.0\n")
    try:
        yield gw, upstream
    finally:
        gw.stop()
        upstream.close()


def test_pipelined_request_with_broken_body_never_reaches_upstream(
        raw_gateway: tuple[Gateway, RawUpstream]) -> None:
    gw, upstream = raw_gateway
    first = b"GET /first HTTP/1.1\r\nHost: other.test\r\n\r\n"
    broken = (b"POST http://partner.test/second HTTP/1.1\r\nHost: partner.test\r\n"
              b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    with RawClient(gw.proxy_port, timeout=10) as client:
        client.send(first + broken)
        data = client.read_all(wait=6)
    time.sleep(0.2)
    with upstream.lock:
        seen = bytes(upstream.data)
    assert b"/first" in seen  # the good request went
    assert b"/second" not in seen, "the malformed request's head reached the upstream"
    assert b"HTTP/1.1 400 " in data
