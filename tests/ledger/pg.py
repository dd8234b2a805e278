"""A private PostgreSQL server for tests and benchmarks: own data dir, own port, own PID.

`initdb` refuses to run as root, so as root the server runs as the `postgres` user
(created by the Debian package) on a temp dir chowned to it. Stopped by its PID only.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

DEBIAN_PACKAGE = "postgresql"
START_TIMEOUT_S = 30.0  # initdb + first start on a slow CI disk


def find_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin, or the directory of `postgres` on
    PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    if versions:
        return versions[-1].parent
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise FileNotFoundError("PostgreSQL server binaries not found: install the Debian "
                            f"package '{DEBIAN_PACKAGE}' (make debs)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    def __init__(self, *, fsync: bool = True, settings: dict[str, str] | None = None) -> None:
        self.bin = find_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="linewarden-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.fsync = fsync
        self.settings = settings or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self._databases = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PrivatePostgres:
        if not self.data.exists():
            subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                            "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"],
                           check=True, capture_output=True, cwd=self.dir, **self._user)
        args = [str(self.bin / "postgres"), "-D", str(self.data), "-k", str(self.dir),
                "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                "-c", f"fsync={'on' if self.fsync else 'off'}"]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 (the server keeps it)
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=self.dir,
                                     **self._user)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited at start:\n" + self.log_tail())
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("postgres did not become ready:\n" + self.log_tail())

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, prefix: str = "ledger") -> str:
        import psycopg

        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """SIGINT is PostgreSQL's "fast" shutdown: sessions are terminated at once."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()
        os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def pause(self) -> None:
        """Freeze the server (alive, not answering): the hung-backend case."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        # The backends are separate processes; freeze them too.
        for pid in self._children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in [self.proc.pid, *self._children()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _children(self) -> list[int]:
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.dir / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
