"""`serve --workers 2`: two processes on one port, one shared view of bindings and policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings"))
from redis_server import RedisServer

from lwtest import LINEWARDEN, Origin, admin_socket, free_port, gateway_config, stop_process


@dataclass
class Got:
    status: int
    body: bytes


def curl(*args: str) -> Got:
    """Real curl; the status rides on the last line of the output."""
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args],
                         capture_output=True, timeout=20, check=False).stdout
    body, _, status = out.rpartition(b"\n")
    return Got(int(status or 0), body)


def admin(directory: Path, worker: int, path: str, *args: str) -> Got:
    """Worker K's admin socket: admin.sock for worker 0, admin-wK.sock for the others."""
    sock = admin_socket(directory / "state", worker)
    return curl("--unix-socket", str(sock), *args, f"http://admin{path}")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def start(tmp_path: Path, origin: Origin, store: str, workers: int
          ) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    proxy_port, web_port = free_port(), free_port()
    config = tmp_path / "linewarden.toml"
    config.write_text(gateway_config(tmp_path, origin.port, proxy_port=proxy_port,
                                     web_port=web_port, extra=f'[store]\nurl = "{store}"\n'))
    out = (tmp_path / "stdout.log").open("wb")
    proc = subprocess.Popen([str(LINEWARDEN), "serve", "--config", str(config),
                             "--workers", str(workers)], stdout=out,
                            stderr=(tmp_path / "stderr.log").open("wb"), cwd=tmp_path)
    deadline = time.monotonic() + 30
    while "proxy" not in (tmp_path / "stdout.log").read_text(errors="replace"):
        assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
        assert time.monotonic() < deadline, "no banner"
        time.sleep(0.05)
    # every worker listens before we measure: each has its own admin socket for metrics
    for k in range(1, workers):
        while admin(tmp_path, k, "/healthz").status != 200:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
            assert time.monotonic() < deadline, f"worker {k} never listened"
            time.sleep(0.05)
    return proc, proxy_port, web_port, config


def test_two_workers_share_port_bindings_and_reloads(tmp_path: Path, origin: Origin,
                                                     redis: RedisServer) -> None:
    proc, proxy_port, _web_port, config = start(tmp_path, origin, redis.url, 2)
    try:
        workers = children(proc.pid)
        assert len(workers) == 2
        # Both workers answer: fresh connections are spread across them by the kernel.
        served_by: set[int] = set()
        for _ in range(40):
            got = curl("-x", f"http://127.0.0.1:{proxy_port}", "http://partner.test/w")
            assert got.status == 200
            assert b"x-up-calling-line-id: 447400900123" in got.body.lower()
        for k, _pid in enumerate(workers):
            metrics = admin(tmp_path, k, "/metrics").body.decode()
            line = next(x for x in metrics.splitlines()
                        if x.startswith('linewarden_requests_total{mode="forward",status="ok"}'))
            if float(line.split()[-1]) > 0:
                served_by.add(k)
        assert served_by == {0, 1}

        # A binding added through worker 0's admin API is seen by every worker (Redis).
        added = admin(tmp_path, 0, "/admin/bindings", "-X", "POST", "-H",
                      "content-type: application/json", "--data",
                      '{"ip": "127.0.0.3", "msisdn": "447400900789"}')
        assert added.status == 201
        for _ in range(20):
            got = curl("--interface", "127.0.0.3", "-x", f"http://127.0.0.1:{proxy_port}",
                       "http://partner.test/b")
            assert b"447400900789" in got.body

        # POST /admin/reload on worker 0 reloads every worker: the partner header is gone.
        text = config.read_text().replace('X-Up-Calling-Line-Id = "msisdn"',
                                          'X-Partner-Pseudonym = "pseudonym"')
        config.write_text(text)
        assert admin(tmp_path, 0, "/admin/reload", "-X", "POST").status == 200
        time.sleep(0.5)  # the supervisor passes SIGHUP on to the other worker
        for _ in range(20):
            got = curl("-x", f"http://127.0.0.1:{proxy_port}", "http://partner.test/r")
            assert b"447400900123" not in got.body
            assert b"x-partner-pseudonym" in got.body.lower()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    # Each worker removed its own socket on the way out.
    assert not admin_socket(tmp_path / "state", 0).exists()
    assert not admin_socket(tmp_path / "state", 1).exists()


def test_workers_refuse_an_unshared_store(tmp_path: Path, origin: Origin) -> None:
    proxy_port, web_port = free_port(), free_port()
    config = tmp_path / "linewarden.toml"
    config.write_text(gateway_config(tmp_path, origin.port, proxy_port=proxy_port,
                                     web_port=web_port))
    result = subprocess.run([str(LINEWARDEN), "serve", "--config", str(config), "--workers",
                             "2"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "need a shared store" in result.stderr and "Traceback" not in result.stderr


def test_a_dying_worker_stops_the_gateway(tmp_path: Path, origin: Origin,
                                          redis: RedisServer) -> None:
    proc, _proxy, _web, _config = start(tmp_path, origin, redis.url, 2)
    try:
        workers = children(proc.pid)
        os.kill(workers[1], signal.SIGKILL)
        assert proc.wait(15) == 1  # loudly, for the service manager to restart
    finally:
        stop_process(proc)
