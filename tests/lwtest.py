"""Test support: free ports, an echo origin that keeps the raw bytes it receives, a TLS
origin (trustme), and a real `linewarden serve` subprocess configured in a temp directory.

The origins are written here with plain sockets and threads, independent of the gateway
code, so a test asserts on what actually crossed the wire.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LINEWARDEN = ROOT / ".venv" / "bin" / "linewarden"

MSISDN_1 = "447400900123"  # bound to 127.0.0.1
MSISDN_2 = "447400900456"  # bound to 127.0.0.2

# Big transfers: one 1 MiB block of seeded random bytes, repeated.
BLOCK = random.Random(20120125).randbytes(1 << 20)

GATEWAY_START_TIMEOUT = 30.0

# Debian's Chromium, driven by Playwright; the flags keep it from calling home during a test.
CHROMIUM = os.environ.get("LINEWARDEN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    full, rest = divmod(size, len(BLOCK))
    for _ in range(full):
        digest.update(BLOCK)
    digest.update(BLOCK[:rest])
    return digest.hexdigest()


# ---------------------------------------------------------------- echo origin

@dataclass
class Received:
    """One request as the origin read it off the socket."""

    conn_id: int
    raw: bytes  # head + body exactly as received (upload bodies are hashed, not kept)
    method: str
    target: str
    headers: list[tuple[str, str]]
    body_len: int = 0
    body_sha: str = ""

    def header_names(self) -> list[str]:
        return [n.lower() for n, _ in self.headers]

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class Origin:
    """An HTTP/1.1 origin on 127.0.0.1. By path:

    /hang...            read the request, never answer
    /ws...              101 Switching Protocols, then echo raw bytes
    /download/N         stream N pattern bytes (Content-Length); /download/N/chunked: chunked
    /upload...          hash the body, answer "LEN SHA" (query `pause=S`: wait before reading)
    /close...           echo, then `Connection: close` and close
    anything else       answer with the raw request bytes as the body
    """

    tls: ssl.SSLContext | None = None
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    _sock: socket.socket | None = None
    _conns: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Origin:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self._sock, self.port = sock, sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def with_marker(self, marker: str | bytes) -> list[Received]:
        m = marker.encode() if isinstance(marker, str) else marker
        with self._lock:
            return [r for r in self.requests if m in r.raw]

    def all_raw(self) -> bytes:
        with self._lock:
            return b"".join(r.raw for r in self.requests)

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._next_id += 1
                conn_id = self._next_id
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, conn_id), daemon=True).start()

    def _serve(self, conn: socket.socket, conn_id: int) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            reader = conn.makefile("rb")
            while self._one(conn, reader, conn_id):
                pass
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _one(self, conn: socket.socket, reader: Any, conn_id: int) -> bool:
        raw = bytearray()
        line = reader.readline(65536 + 2)
        if not line:
            return False
        raw += line
        method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers: list[tuple[str, str]] = []
        while True:
            line = reader.readline(65536 + 2)
            if not line:
                return False
            raw += line
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        lower = {n.lower(): v for n, v in headers}
        path, _, query = target.partition("?")
        upload = path.startswith("/upload")
        rec = Received(conn_id, b"", method, target, headers)
        if lower.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if upload and "pause=" in query:
            time.sleep(float(query.split("pause=", 1)[1].split("&")[0]))
        digest = hashlib.sha256()
        body_len = 0

        def take(data: bytes) -> None:
            nonlocal body_len
            body_len += len(data)
            digest.update(data)
            if not upload:
                raw.extend(data)

        if "chunked" in lower.get("transfer-encoding", "").lower():
            while True:
                size_line = reader.readline(1024)
                if not size_line:
                    return False
                if not upload:
                    raw.extend(size_line)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    break
                take(reader.read(size))
                crlf = reader.readline(4)
                if not upload:
                    raw.extend(crlf)
            while True:  # trailers
                line = reader.readline(65536)
                if not line:
                    return False
                raw.extend(line)
                if line in (b"\r\n", b"\n"):
                    break
        elif "content-length" in lower:
            remaining = int(lower["content-length"])
            while remaining:
                data = reader.read(min(remaining, 1 << 20))
                if not data:
                    return False
                take(data)
                remaining -= len(data)
        rec.raw, rec.body_len, rec.body_sha = bytes(raw), body_len, digest.hexdigest()
        with self._lock:
            self.requests.append(rec)

        if path.startswith("/hang"):
            self._stop.wait()
            return False
        if path.startswith("/stall"):  # a head and 10 of 1000 body bytes, then silence
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            self._stop.wait()
            return False
        if path.startswith("/ws") and lower.get("upgrade", "").lower() == "websocket":
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            while True:
                data = conn.recv(65536)
                if not data:
                    return False
                conn.sendall(data)
        close = "close" in lower.get("connection", "").lower() or path.startswith("/close")
        if path.startswith("/download/"):
            parts = path.split("/")
            size = int(parts[2])
            chunked = len(parts) > 3 and parts[3] == "chunked"
            framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
            if method == "HEAD":
                return not close
            sent = 0
            while sent < size:
                piece = BLOCK[: min(len(BLOCK), size - sent)]
                conn.sendall(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            if chunked:
                conn.sendall(b"0\r\n\r\n")
            return not close
        body = f"{body_len} {digest.hexdigest()}\n".encode() if upload else bytes(raw)
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"X-Origin-Conn: %d\r\nContent-Length: %d\r\n" % (conn_id, len(body)))
        if close:
            head += b"Connection: close\r\n"
        conn.sendall(head + b"\r\n" + (b"" if method == "HEAD" else body))
        return not close


@dataclass
class TlsOrigin:
    origin: Origin
    ca_pem: Path

    @property
    def port(self) -> int:
        return self.origin.port



# ---------------------------------------------------------------- the admin listener

def admin_socket(state_dir: Path, worker: int = 0) -> Path:
    """Where `serve` puts the admin socket when [admin] listen is not set."""
    return state_dir / ("admin.sock" if worker == 0 else f"admin-w{worker}.sock")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """The stdlib client over AF_UNIX (the tests' own, independent of linewarden's)."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


def admin_http(where: Path | str, method: str, target: str, body: object = None,
               headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request to an admin listener: a socket path, or "host:port" for TCP.
    Returns (status, body)."""
    if isinstance(where, Path):
        conn: http.client.HTTPConnection = _UnixHTTPConnection(where)
    else:
        host, port = where.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=5.0)
    data = json.dumps(body).encode() if body is not None else None
    sent = {**({"Content-Type": "application/json"} if data is not None else {}),
            **(headers or {})}
    try:
        conn.request(method, target, body=data, headers=sent)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def admin_json(where: Path | str, method: str, target: str, body: object = None,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON answer of a 2xx admin call (AssertionError otherwise)."""
    status, raw = admin_http(where, method, target, body, headers)
    assert 200 <= status < 300, (status, raw[:300])
    doc: dict[str, Any] = json.loads(raw or b"{}")
    return doc


def admin_metrics(where: Path | str, headers: dict[str, str] | None = None) -> str:
    status, raw = admin_http(where, "GET", "/metrics", headers=headers)
    assert status == 200, (status, raw[:300])
    return raw.decode()


# ---------------------------------------------------------------- the gateway subprocess

DEFAULT_PARTNERS = """
[[partners]]
id = "billing-partner"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"

[[partners]]
id = "age-partner"
purpose = "age_verification"
hosts = ["pseudo.test", "*.pseudo.test"]
[partners.headers]
X-Subscriber-Pseudonym = "pseudonym"
X-Operator = "operator"
"""


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    proxy_port: int
    web_port: int
    directory: Path
    config_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def admin_socket(self) -> Path:
        return admin_socket(self.directory / "state")

    def admin(self, method: str, target: str, body: object = None) -> dict[str, Any]:
        return admin_json(self.admin_socket, method, target, body)

    def metrics(self) -> str:
        return admin_metrics(self.admin_socket)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        return (self.directory / "stderr.log").read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, then SIGKILL by PID."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def gateway_config(directory: Path, origin_port: int, *, proxy_port: int, web_port: int,
                   tls_port: int | None = None, connect_ports: list[int] | None = None,
                   proxy_extra: str = "", web_extra: str = "", admin_extra: str = "",
                   partners: str = DEFAULT_PARTNERS, extra: str = "",
                   ledger_options: str = "") -> str:
    dead_port = free_port()  # nothing listens there: "upstream down"
    connect_ports = [443, *([tls_port] if tls_port else []), *(connect_ports or [])]
    return f"""
state_dir = "{directory}/state"

[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "test"
connect_ports = {connect_ports}
{proxy_extra}

[proxy.resolve]
"partner.test" = "127.0.0.1:{origin_port}"
"other.test" = "127.0.0.1:{origin_port}"
"pseudo.test" = "127.0.0.1:{origin_port}"
"a.pseudo.test" = "127.0.0.1:{origin_port}"
"partner.test.evil.test" = "127.0.0.1:{origin_port}"
"evil.test" = "127.0.0.1:{origin_port}"
"xn--prtner-2ua.test" = "127.0.0.1:{origin_port}"
"down.test" = "127.0.0.1:{dead_port}"
"tls.test" = "127.0.0.1"

[identity]
operator = "234-10"
pseudonym_secret = "test-pseudonym-secret"

[[bindings]]
ip = "127.0.0.1"
msisdn = "{MSISDN_1}"

[[bindings]]
ip = "127.0.0.2"
msisdn = "{MSISDN_2}"

[ledger]
url = "sqlite:///{directory}/state/ledger.db{ledger_options}"
key = "test-ledger-key"

[web]
listen = "127.0.0.1:{web_port}"
{web_extra}
{"[admin]" if admin_extra else ""}
{admin_extra}
{extra}
{partners}
"""


def launch_serve(directory: Path, write_config: Callable[[int, int], Path], *,
                 env: dict[str, str] | None = None, args: Sequence[str] = (),
                 ports: tuple[int | None, int | None] = (None, None),
                 timeout: float = GATEWAY_START_TIMEOUT
                 ) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    """Pick the proxy and web ports, write the config (`write_config(proxy, web)` returns
    its path), run `linewarden serve` in `directory` until its banner names the proxy.
    Returns (process, proxy port, web port, config path)."""
    directory.mkdir(parents=True, exist_ok=True)
    last = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind: retry
        proxy_port, web_port = ports[0] or free_port(), ports[1] or free_port()
        config = write_config(proxy_port, web_port)
        with (directory / "stdout.log").open("wb") as out, \
                (directory / "stderr.log").open("wb") as err:
            proc = subprocess.Popen([str(LINEWARDEN), "serve", "--config", str(config), *args],
                                    stdout=out, stderr=err, cwd=directory,
                                    env=None if env is None else {**os.environ, **env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if "proxy" in (directory / "stdout.log").read_text(errors="replace"):
                return proc, proxy_port, web_port, config
            time.sleep(0.05)
        stop_process(proc)
        last = (directory / "stderr.log").read_text(errors="replace")
    raise AssertionError(f"linewarden serve did not start:\n{last}")


def start_gateway(directory: Path, origin_port: int, **options: Any) -> Gateway:
    """Write linewarden.toml in `directory` and run `linewarden serve` until its banner."""
    def write(proxy_port: int, web_port: int) -> Path:
        config = directory / "linewarden.toml"
        config.write_text(gateway_config(directory, origin_port, proxy_port=proxy_port,
                                         web_port=web_port, **options))
        return config

    proc, proxy_port, web_port, config = launch_serve(directory, write)
    return Gateway(proc, proxy_port, web_port, directory, config)


# ---------------------------------------------------------------- browser

@contextlib.contextmanager
def chromium_browser(*extra_args: str) -> Iterator[Any]:
    """A headless Chromium (a Playwright `Browser`) for as long as the block runs."""
    if not os.access(CHROMIUM, os.X_OK):
        import pytest
        pytest.fail(f"{CHROMIUM} not found: install the Debian package `chromium` (make debs)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()
