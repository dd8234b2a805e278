"""Shared helpers for the benchmarks: free ports, owned subprocesses, wrk runs, machine facts.

Every process a benchmark starts goes through `Procs.start`, in its own session (so a Ctrl-C in
the terminal reaches only the benchmark script, which then stops them in order), and
`Procs.stop_all` ends each by its PID: SIGTERM, then SIGKILL to its own process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# wrk's `done` hook prints one line with this prefix: requests, duration and latency percentiles
# in microseconds, machine-readable (wrk's own text output rounds and mixes units).
WRK_DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,"
    .. "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"max_us\":%d,"
    .. "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d}\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """argv run under `taskset -c CPU` (taskset execs, so the PID is the program's own)."""
    return list(argv) if cpu is None else ["taskset", "-c", str(cpu), *argv]


@dataclass
class Procs:
    """Processes this benchmark started, stopped by PID in reverse order."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: Sequence[str], *, stdout: IO[bytes] | int | None = None,
              stderr: IO[bytes] | int | None = None, cwd: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(argv), stdout=stdout, stderr=stderr, cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
             grace: float = 5.0) -> None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
                proc.wait(grace)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass
        # The group is the session started for this PID alone (start_new_session): it holds
        # only children of ours, such as nginx's worker.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2.0)
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            self.stop(proc)


@dataclass
class WrkResult:
    requests: int
    duration_us: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(procs: Procs, url: str, script: Path, *, seconds: float, connections: int,
            threads: int, cpu: int | None) -> WrkResult:
    argv = pinned(cpu, ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
                        "--timeout", "5s", "-s", str(script), url])
    proc = procs.start(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    finally:
        procs.stop(proc)
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            data: dict[str, Any] = json.loads(line[len("WRKJSON "):])
            return WrkResult(
                requests=data["requests"], duration_us=data["duration_us"],
                p50_us=data["p50_us"], p90_us=data["p90_us"], p99_us=data["p99_us"],
                max_us=data["max_us"],
                errors={k: data[k] for k in ("connect", "read", "write", "status", "timeout")})
    raise RuntimeError(f"wrk gave no result (exit {proc.returncode}):\n{text}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


# The origin every proxy benchmark loads: nginx answering ~600 bytes from memory.
ORIGIN_BODY = ("linewarden benchmark origin. " * 21)[:599] + "\n"


def nginx_conf(prefix: Path, port: int, echo: str) -> str:
    """One worker, no logs, `return 200` with ORIGIN_BODY; `/__echo` returns `echo` (an
    nginx string with $http_… variables) so a benchmark can check what arrived."""
    body = ORIGIN_BODY.replace("\\", "\\\\").replace('"', '\\"')
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    # Let forged underscore spellings reach $http_x_msisdn, as CGI/PHP back ends would.
    underscores_in_headers on;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /__echo {{
            return 200 "{echo}";
        }}
        location / {{
            return 200 "{body}";
        }}
    }}
}}
"""


def start_nginx(procs: Procs, tmp: Path, echo: str, cpu: int | None
                ) -> tuple[subprocess.Popen[bytes], int]:
    prefix = tmp / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, echo))
    log = (prefix / "nginx-stderr.log").open("wb")
    proc = procs.start(pinned(cpu, ["nginx", "-e", str(prefix / "nginx-error.log"),
                                    "-c", str(conf), "-p", str(prefix)]),
                       stdout=log, stderr=log)
    try:
        wait_port(port)
    except RuntimeError:
        raise RuntimeError("nginx did not start:\n"
                           + (prefix / "nginx-stderr.log").read_text(errors="replace")
                           + (prefix / "nginx-error.log").read_text(errors="replace")) from None
    return proc, port
