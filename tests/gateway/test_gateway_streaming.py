"""100 MiB up and down through the gateway with flat memory (back-pressure, not buffering).

The gateway's RSS is sampled from /proc/PID/status during each transfer. To prove the
gateway applies back-pressure rather than just being fast, each transfer starts with a
stalled receiver (the origin waits before reading the upload; the client waits before reading
the download): without flow control the gateway would buffer the whole body meanwhile.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from wire import marker

from lwtest import BLOCK, Gateway, Origin, pattern_sha256

SIZE = 100 * 1024 * 1024
MAX_RSS_GROWTH_KIB = 50 * 1024

RESULTS: dict[str, int] = {}


class RssSampler:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.baseline = gateway.rss_kib()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.gateway.rss_kib())
            time.sleep(0.01)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_kib(self) -> int:
        return self.peak - self.baseline


def _report(name: str, sampler: RssSampler) -> None:
    RESULTS[name] = sampler.growth_kib
    print(f"\n{name}: gateway RSS {sampler.baseline} KiB -> peak {sampler.peak} KiB "
          f"(+{sampler.growth_kib / 1024:.1f} MiB)")


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "upload.bin"
    with path.open("wb") as out:
        for _ in range(SIZE // len(BLOCK)):
            out.write(BLOCK)
    return path


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_upload_100_mib_with_stalled_origin(gateway: Gateway, origin: Origin, big_file: Path,
                                            framing: str) -> None:
    m = marker()
    args = ["curl", "-sS", "--fail-with-body", "--max-time", "60", "-x", gateway.proxy,
            "-T", str(big_file), "-H", "Expect:"]
    if framing == "chunked":
        args += ["-H", "Transfer-Encoding: chunked"]
    url = f"http://other.test/upload/{m}?pause=1.5"
    with RssSampler(gateway) as sampler:
        result = subprocess.run([*args, url], capture_output=True, timeout=90, check=False)
    _report(f"upload-{framing}", sampler)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [str(SIZE), pattern_sha256(SIZE)]
    [rec] = origin.with_marker(m)
    if framing == "chunked":
        assert rec.values("transfer-encoding") == ["chunked"]
    assert sampler.growth_kib < MAX_RSS_GROWTH_KIB


def test_download_100_mib_chunked_with_curl(gateway: Gateway) -> None:
    m = marker()
    proc = subprocess.Popen(["curl", "-sS", "--fail", "--max-time", "60", "-x", gateway.proxy,
                             f"http://other.test/download/{SIZE}/chunked?{m}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    digest, total = hashlib.sha256(), 0
    with RssSampler(gateway) as sampler:
        time.sleep(1.5)  # curl's pipe fills; the gateway must stop reading the origin
        while data := proc.stdout.read(1 << 20):
            digest.update(data)
            total += len(data)
        proc.wait(30)
    _report("download-chunked", sampler)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else b""
    assert total == SIZE
    assert digest.hexdigest() == pattern_sha256(SIZE)
    assert sampler.growth_kib < MAX_RSS_GROWTH_KIB


def test_download_100_mib_with_slow_start_reader(gateway: Gateway) -> None:
    m = marker()
    sock = socket.create_connection(("127.0.0.1", gateway.proxy_port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        with RssSampler(gateway) as sampler:
            sock.sendall(f"GET http://other.test/download/{SIZE}?{m} HTTP/1.1\r\n"
                         f"Host: other.test\r\n\r\n".encode())
            time.sleep(1.5)  # read nothing yet
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            head, rest = buf.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert f"Content-Length: {SIZE}".encode() in head
            digest, total = hashlib.sha256(rest), len(rest)
            view = memoryview(bytearray(1 << 20))
            while total < SIZE:
                n = sock.recv_into(view)
                assert n, "connection closed early"
                digest.update(view[:n])
                total += n
        _report("download-length-slow-reader", sampler)
    finally:
        sock.close()
    assert total == SIZE
    assert digest.hexdigest() == pattern_sha256(SIZE)
    assert sampler.growth_kib < MAX_RSS_GROWTH_KIB
