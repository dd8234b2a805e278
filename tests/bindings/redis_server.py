"""A private redis-server for tests and the bench: free port, temp dir, no automatic
persistence (a test that wants a snapshot sends SAVE; a restart in the same directory loads
it), extra arguments (e.g. `--replicaof`), SIGTERM or SIGKILL by its PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    directory: Path
    port: int = 0
    pid: int = 0
    args: tuple[str, ...] = ()
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start and wait for PONG. A port chosen here can be taken by another job between
        the probe and redis-server's bind: then a new one is tried (three in all)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        chosen = not self.port
        for _attempt in range(3 if chosen else 1):
            self.port = free_port() if chosen else self.port
            if self._start_once():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _start_once(self) -> bool:
        self._proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", "--appendonly", "no",
             "--logfile", str(self.directory / "redis.log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self._proc.pid
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
            self._proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved on the way out."""
        if self._proc is None:
            return
        os.kill(self.pid, signal.SIGKILL)
        self._proc.wait()
        self._proc = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)
