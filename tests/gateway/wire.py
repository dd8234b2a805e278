"""Client-side helpers for the gateway tests: real `curl`, and a raw socket for what curl
will not send (obs-fold, smuggling attempts, pipelining)."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from dataclasses import dataclass

CURL_TIMEOUT = 20


def marker() -> str:
    """A unique path component, to find this test's requests in the origin's record."""
    return "m" + uuid.uuid4().hex[:12]


def curl(proxy: str | None, url: str, *args: str, interface: str | None = None,
         timeout: float = CURL_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    cmd = ["curl", "-sS", "--max-time", str(timeout)]
    if proxy is not None:
        cmd += ["-x", proxy]
    if interface is not None:
        cmd += ["--interface", interface]
    cmd += [*args, url]
    return subprocess.run(cmd, capture_output=True, timeout=timeout + 5, check=False)


def curl_ok(proxy: str | None, url: str, *args: str, interface: str | None = None) -> bytes:
    """The body of a 200 answer (curl fails the test on any other status)."""
    result = curl(proxy, url, "--fail-with-body", *args, interface=interface)
    assert result.returncode == 0, (result.returncode, result.stderr, result.stdout[:500])
    return result.stdout


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None


class RawClient:
    """A blocking socket with a tiny HTTP/1.1 response reader."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 20)
        if not data:
            return False
        self.buf += data
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed mid-line")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed mid-body")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, *, head_request: bool = False) -> Response:
        status_line = self._line()
        status = int(status_line.split(b" ")[1])
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        resp = Response(status, headers, b"")
        if head_request or status in (101, 204, 304) or 100 <= status < 200:
            return resp
        length = resp.header(b"content-length")
        if length is not None:
            resp.body = self._exact(int(length))
        elif (resp.header(b"transfer-encoding") or b"").lower() == b"chunked":
            body = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exact(size)
                self._exact(2)
            resp.body = bytes(body)
        else:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def at_eof(self, wait: float = 5.0) -> bool:
        """True if the peer closed the connection (after any bytes already buffered)."""
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def read_all(self, wait: float = 5.0) -> bytes:
        """Everything until the peer closes (or `wait` passes)."""
        self.at_eof(wait)
        data, self.buf = self.buf, b""
        return data


def exchange(port: int, data: bytes, *, wait: float = 5.0, source: str = "127.0.0.1"
             ) -> tuple[bytes, bool]:
    """Send raw bytes; return everything received and whether the gateway closed."""
    with RawClient(port, source=source) as client:
        client.send(data)
        closed = client.at_eof(wait)
        return client.buf, closed


def wait_until(predicate: object, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
