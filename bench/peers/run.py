"""Peer benchmark: linewarden beside Squid, HAProxy, mitmproxy and proxy.py doing the same job.

    make bench-peers                                   # 3 rounds x 10 s per scenario
    .venv/bin/python bench/peers/run.py --quick        # 3 rounds x 3 s
    .venv/bin/python bench/peers/run.py --rounds 5 --only haproxy,linewarden

The job, for every peer: strip every spelling of the subscriber identity headers a client sent
(X-Msisdn, X_MSISDN, X.MSISDN, x-up-calling-line-id, ...), add `X-Up-Calling-Line-Id:
447400900123` only when the host is partner.test, send partner.test and other.test to the local
origin; no caching, no access logging. Plus direct-to-origin (nginx, ~600 bytes) as the limit.

Steps:
1. Installs what is missing: Debian squid, haproxy, nginx-light, wrk (apt-get); mitmproxy,
   proxy.py and matplotlib into the bench-only venv bench/.venv-peers.
2. Starts every peer on 127.0.0.1 with its own config, pid file and directories (templates in
   bench/peers/), pinned to CPU 1.
3. Verifies each peer against an echo origin on the origin's port: the partner host gets exactly
   the enrichment header, the other host no identity, forged spellings never arrive. A peer that
   fails is still measured, and flagged.
4. Replaces the echo origin by nginx on the same port (pinned to CPU 0) and loads each scenario
   with wrk -t1 -c50 keep-alive (absolute-form requests through the proxies), pinned to CPU 0,
   rounds interleaved. CPU per request: the proxy's process-tree CPU time (utime + stime from
   /proc/PID/stat, all its processes) over the round, divided by the requests. Beside the
   peers, bench/bare_proxy.py (a relay doing no job) is measured as the floor of a Python
   event-loop proxy, and linewarden's CPU is split between its event-loop thread and its
   ledger writer thread.
5. Writes bench/results/peers.md (with issue 7's targets and where linewarden's CPU per
   request goes), peers.json and the bar chart peers.png.

Every process started here is stopped by PID on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # bench/common.py
sys.path.insert(0, str(HERE))  # bench/peers/idnames.py

from idnames import (  # noqa: E402
    ENRICH_HEADER,
    KNOWN,
    MSISDN,
    OTHER_HOST,
    PARTNER_HOST,
    is_identity,
    loose_regex,
    spellings,
)

from common import (  # noqa: E402  (bench/ is not a package; run as a script)
    WRK_DONE_LUA,
    Procs,
    WrkResult,
    cpu_model,
    free_port,
    median,
    pinned,
    run_wrk,
    tool_version,
    wait_port,
)

RESULTS = REPO / "bench" / "results"
VENV = REPO / "bench" / ".venv-peers"
LINEWARDEN = REPO / ".venv" / "bin" / "linewarden"
CLIENT_CPU = 0  # wrk and the origin
PROXY_CPU = 1  # the proxy under test
# ~600 bytes, the size of a small API answer or a redirect page (as bench/proxy.py).
BODY = ("linewarden benchmark origin. " * 21)[:599] + "\n"
USER_AGENT = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126 Mobile"
DEBS = {"squid": "squid", "haproxy": "haproxy", "nginx": "nginx-light", "wrk": "wrk",
        "curl": "curl", "taskset": "util-linux"}
PIP = ["mitmproxy", "proxy.py", "matplotlib"]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Forged identity headers a client sends; none may reach the origin. (name, value, kind)
FORGED = [
    ("X-Msisdn", "447400900901", "known"),
    ("X_MSISDN", "447400900902", "known, underscore"),
    ("X.MSISDN", "447400900903", "known, dot"),
    ("x-up-calling-line-id", "447400900904", "known (the enrichment header itself)"),
    ("X_Up_Calling_Line_Id", "447400900905", "known, underscore"),
    ("X-Wap-Network-Client-MSISDN", "447400900906", "known"),
    ("x-nokia-imsi", "234109000000907", "known"),
    ("X-UIDH", "forged-uidh-908", "known"),
    ("MSISDN", "447400900909", "known"),
    ("X-Acme-Subscriber-Msisdn", "447400900910", "loose (suffix) match only"),
]
BENIGN = ("X-Bench-Benign", "keep-me")


# --------------------------------------------------------------------------- installation


def ensure_installed() -> None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = sorted({pkg for tool, pkg in DEBS.items() if shutil.which(tool, path=path) is None})
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print(f"installing Debian packages: {' '.join(missing)}", flush=True)
        cmd = [*sudo, "apt-get", "install", "-y", "-q", *missing]
        if subprocess.run(cmd, env=env).returncode != 0:
            subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, check=True)
            subprocess.run(cmd, env=env, check=True)
    os.environ["PATH"] = path
    py = VENV / "bin" / "python"
    have = py.exists() and (VENV / "bin" / "mitmdump").exists() \
        and (VENV / "bin" / "proxy").exists() \
        and subprocess.run([str(py), "-c", "import matplotlib"], capture_output=True
                           ).returncode == 0
    if not have:
        print(f"installing {', '.join(PIP)} into {VENV.relative_to(REPO)}", flush=True)
        if not py.exists():
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PIP], check=True)


# --------------------------------------------------------------------------- configs


def render(template: str, **values: str | int) -> str:
    text = (HERE / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if any(v != "@PLACEHOLDERS@" for v in left):
        raise RuntimeError(f"{template}: unfilled {sorted(set(left))}")
    return text


def squid_strip_lines() -> str:
    names: list[str] = []
    for name in KNOWN:
        names += spellings(name)
    return "\n".join(f"request_header_access {n} deny all" for n in dict.fromkeys(names))


# --------------------------------------------------------------------------- process tree CPU


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()  # [0] is field 3 (state)


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of `root` and every live descendant, plus what they reaped."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                stats[int(entry)] = st
                children.setdefault(int(st[1]), []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        st = stats.get(pid)
        if st is None:
            continue
        total += sum(int(x) for x in st[11:15])  # utime stime cutime cstime
        todo += children.get(pid, [])
    return total / CLK_TCK


def thread_cpu_seconds(pid: int) -> float | None:
    """CPU time of a process's main thread alone (for linewarden: the event loop; the ledger
    writer is another thread of the same process)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return None
    return sum(int(x) for x in text[text.rfind(")") + 2:].split()[11:13]) / CLK_TCK


def ledger_counts(admin_socket: str) -> tuple[float, float] | None:
    """(rows committed, commits) from linewarden's /metrics (on its admin socket)."""
    code, text = curl("--unix-socket", admin_socket, "http://admin/metrics")
    if code != 200:
        return None
    found = dict(re.findall(r"^linewarden_ledger_(rows_committed|commits)_total (\S+)$", text,
                            re.MULTILINE))
    if len(found) != 2:
        return None
    return float(found["rows_committed"]), float(found["commits"])


def cpu_busy_seconds(cpu: int) -> float:
    """Busy time (everything but idle and iowait) of one CPU since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(x) for x in line.split()[1:]]
            return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK
    return 0.0


# --------------------------------------------------------------------------- origins


class _Echo(socketserver.BaseRequestHandler):
    """Answers every request with its own request head, so a check sees what arrived."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        body = buf.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)


class EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


echo_holder: list[EchoServer] = []  # at most one; shut down in main's finally


def start_nginx(procs: Procs, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    d = tmp / "nginx"
    d.mkdir()
    body = BODY.replace("\\", "\\\\").replace('"', '\\"')
    conf = d / "nginx.conf"
    conf.write_text(render("nginx.conf.tmpl", DIR=d, PORT=port, BODY=body))
    log = (d / "stderr.log").open("wb")
    proc = procs.start(pinned(CLIENT_CPU, ["nginx", "-e", str(d / "nginx-error.log"),
                                           "-c", str(conf), "-p", str(d)]),
                       stdout=log, stderr=log)
    try:
        wait_port(port)
    except RuntimeError:
        raise RuntimeError("nginx did not start:\n" + tail(d / "stderr.log")
                           + tail(d / "nginx-error.log")) from None
    return proc


# --------------------------------------------------------------------------- peers


@dataclass
class Peer:
    name: str
    label: str
    version: str = ""
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log: Path | None = None
    note: str = ""
    start_error: str = ""
    verified: bool = False
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    metrics_socket: str = ""  # linewarden: its admin socket (/metrics: ledger rows per commit)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    except OSError:
        return ""


def start_haproxy(procs: Procs, tmp: Path, origin_port: int, peer: Peer) -> None:
    d = tmp / "haproxy"
    d.mkdir()
    cfg = d / "haproxy.cfg"
    cfg.write_text(render("haproxy.cfg.tmpl", PORT=peer.port, ORIGIN_PORT=origin_port,
                          REGEX=loose_regex(), ENRICH_HEADER=ENRICH_HEADER, MSISDN=MSISDN,
                          PARTNER=PARTNER_HOST))
    check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True,
                           text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
    peer.log = d / "stderr.log"
    log = peer.log.open("wb")
    peer.proc = procs.start(pinned(PROXY_CPU, ["haproxy", "-db", "-f", str(cfg)]),
                            stdout=log, stderr=log)
    peer.note = "nbthread 1; `del-header <regex> -m reg` + `set-header ... if { req.hdr(host) }`"


def start_squid(procs: Procs, tmp: Path, origin_port: int, peer: Peer) -> None:
    d = tmp / "squid"
    d.mkdir()
    (d / "hosts").write_text(f"127.0.0.1 {PARTNER_HOST} {OTHER_HOST}\n")
    conf = d / "squid.conf"
    conf.write_text(render("squid.conf.tmpl", PORT=peer.port, ORIGIN_PORT=origin_port, DIR=d,
                           STRIP=squid_strip_lines(), ENRICH_HEADER=ENRICH_HEADER,
                           MSISDN=MSISDN, PARTNER=PARTNER_HOST))
    shutil.chown(d, "proxy", "proxy")  # squid drops to cache_effective_user for its files
    check = subprocess.run(["squid", "-k", "parse", "-f", str(conf)], capture_output=True,
                           text=True)
    if check.returncode != 0:
        raise RuntimeError(f"squid -k parse: {(check.stdout + check.stderr)[-2000:]}")
    peer.log = d / "stderr.log"
    log = peer.log.open("wb")
    peer.proc = procs.start(pinned(PROXY_CPU, ["squid", "-N", "-f", str(conf)]),
                            stdout=log, stderr=log)
    n = len(squid_strip_lines().splitlines())
    peer.note = (f"`squid -N`, 1 worker; {n} `request_header_access ... deny all` lines "
                 "(each known name spelled with -, _, . and none) + `request_header_add` "
                 "with a `dstdomain` acl; origin as `cache_peer ... originserver`")


def linewarden_workers_flag() -> list[str]:
    out = subprocess.run([str(LINEWARDEN), "serve", "--help"], capture_output=True, text=True)
    return ["--workers", "1"] if "--workers" in out.stdout else []


def start_linewarden(procs: Procs, tmp: Path, origin_port: int, peer: Peer) -> None:
    d = tmp / "linewarden"
    d.mkdir()
    conf = d / "linewarden.toml"
    web_port = free_port()
    conf.write_text(render("linewarden.toml.tmpl", DIR=d, PORT=peer.port, WEB_PORT=web_port,
                           ORIGIN_PORT=origin_port, PARTNER=PARTNER_HOST, OTHER=OTHER_HOST,
                           MSISDN=MSISDN, ENRICH_HEADER=ENRICH_HEADER))
    peer.log = d / "stderr.log"
    peer.metrics_socket = str(d / "state" / "admin.sock")
    workers = linewarden_workers_flag()
    peer.proc = procs.start(
        pinned(PROXY_CPU, [str(LINEWARDEN), "serve", "--config", str(conf), *workers]),
        stdout=(d / "stdout.log").open("wb"), stderr=peer.log.open("wb"), cwd=str(d))
    peer.note = (f"`linewarden serve {' '.join(workers)}`".replace(" `", "`") +
                 " (one binding, one partner with raw MSISDN; ledger SQLite)")


def start_mitmproxy(procs: Procs, tmp: Path, origin_port: int, peer: Peer) -> None:
    d = tmp / "mitmproxy"
    d.mkdir()
    peer.log = d / "stderr.log"
    log = peer.log.open("wb")
    env = {**os.environ, "LW_PEER_ORIGIN": f"127.0.0.1:{origin_port}"}
    argv = [str(VENV / "bin" / "mitmdump"), "--listen-host", "127.0.0.1", "-p", str(peer.port),
            "-s", str(HERE / "mitm_addon.py"), "-q", "--set", f"confdir={d}",
            "--set", "flow_detail=0", "--set", "connection_strategy=lazy"]
    peer.proc = procs.start(pinned(PROXY_CPU, argv), stdout=log, stderr=log, env=env)
    peer.note = "`mitmdump -q` with an add-on (bench/peers/mitm_addon.py)"


def start_proxypy(procs: Procs, tmp: Path, origin_port: int, peer: Peer) -> None:
    d = tmp / "proxypy"
    d.mkdir()
    peer.log = d / "stderr.log"
    log = peer.log.open("wb")
    env = {**os.environ, "LW_PEER_ORIGIN": f"127.0.0.1:{origin_port}",
           "PYTHONPATH": str(HERE), "HOME": str(d)}
    argv = [str(VENV / "bin" / "proxy"), "--hostname", "127.0.0.1", "--port", str(peer.port),
            "--plugins", "proxypy_plugin.EnrichPlugin", "--num-acceptors", "1",
            "--num-workers", "1", "--log-level", "WARNING"]
    peer.proc = procs.start(pinned(PROXY_CPU, argv), stdout=log, stderr=log, env=env, cwd=str(d))
    peer.note = ("`proxy --num-acceptors 1 --num-workers 1` (threadless) with a plugin "
                 "(bench/peers/proxypy_plugin.py)")


def start_bare(procs: Procs, tmp: Path, origin_port: int) -> Scenario | None:
    """bench/bare_proxy.py: the smallest uvloop + httptools relay, no job at all. Not a peer:
    the floor under any Python event-loop proxy on this machine, for the CPU budget."""
    port = free_port()
    proc = procs.start(pinned(PROXY_CPU, [sys.executable, str(REPO / "bench" / "bare_proxy.py"),
                                          str(port), f"127.0.0.1:{origin_port}"]),
                       stdout=subprocess.DEVNULL, stderr=(tmp / "bare.log").open("wb"))
    try:
        wait_port(port, timeout=30)
    except RuntimeError:
        print("bare relay did not start; its reference row is left out", file=sys.stderr)
        return None
    url = f"http://127.0.0.1:{port}"
    code, body = curl("-x", url, f"http://{OTHER_HOST}/")
    if code != 200 or body != BODY:
        print(f"bare relay answers {code}; its reference row is left out", file=sys.stderr)
        return None
    return Scenario("bare", "bare uvloop + httptools relay (reference; does not do the job)",
                    url, f"http://{OTHER_HOST}/", OTHER_HOST, proc.pid)


Starter = Callable[[Procs, Path, int, Peer], None]
PEERS: list[tuple[str, str, Starter, list[str]]] = [
    ("haproxy", "HAProxy", start_haproxy, ["haproxy", "-v"]),
    ("squid", "Squid", start_squid, ["squid", "-v"]),
    ("linewarden", "linewarden", start_linewarden, [str(LINEWARDEN), "--version"]),
    ("proxypy", "proxy.py", start_proxypy, [str(VENV / "bin" / "proxy"), "--version"]),
    ("mitmproxy", "mitmproxy", start_mitmproxy, [str(VENV / "bin" / "mitmdump"), "--version"]),
]


def start_peers(procs: Procs, tmp: Path, origin_port: int, only: set[str] | None
                ) -> list[Peer]:
    peers: list[Peer] = []
    for name, label, starter, version_argv in PEERS:
        if only and name not in only:
            continue
        peer = Peer(name, label, version=tool_version(version_argv))
        peer.port = free_port()
        peers.append(peer)
        try:
            starter(procs, tmp, origin_port, peer)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            peer.start_error = str(exc)
    for peer in peers:
        if peer.start_error or peer.proc is None:
            continue
        try:
            wait_port(peer.port, timeout=30)
        except RuntimeError as exc:
            log = tail(peer.log) if peer.log else ""
            peer.start_error = f"{exc} (exit {peer.proc.poll()}):\n{log}"
            procs.stop(peer.proc)
    return peers


# --------------------------------------------------------------------------- verification


def curl(*args: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}",
                          *args], capture_output=True, text=True, timeout=20)
    body, _, code = out.stdout.rpartition("\n")
    if out.returncode != 0:
        return 0, out.stderr.strip()
    return int(code or 0), body


def _headers(head: str) -> list[tuple[str, str]]:
    out = []
    for line in head.splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out.append((name.strip(), value.strip()))
    return out


def verify(peer: Peer) -> None:
    """Against the echo origin: what arrives for the partner host and for the other host."""
    proxy = f"http://127.0.0.1:{peer.port}"
    forged_args: list[str] = []
    for name, value, _ in FORGED:
        forged_args += ["-H", f"{name}: {value}"]
    benign = ["-H", f"{BENIGN[0]}: {BENIGN[1]}"]
    cases = [
        ("partner.test, clean request: exactly one X-Up-Calling-Line-Id = the MSISDN",
         PARTNER_HOST, []),
        ("partner.test, 10 forged identity headers: only the real enrichment arrives",
         PARTNER_HOST, forged_args),
        ("other.test, 10 forged identity headers: no identity arrives", OTHER_HOST, forged_args),
    ]
    peer.checks = []
    for what, host, extra in cases:
        code, head = curl("-x", proxy, *benign, *extra, f"http://{host}/echo")
        if code != 200:
            peer.checks.append((what, False, f"status {code}: {head[:200]!r}"))
            continue
        got = _headers(head)
        ident = [(n, v) for n, v in got if is_identity(n)]
        leaked = [n for n, v, _ in FORGED if v in head]
        problems = []
        if host == PARTNER_HOST:
            if [(n.lower(), v) for n, v in ident] != [(ENRICH_HEADER.lower(), MSISDN)]:
                problems.append(f"identity headers at origin {ident}")
        elif ident:
            problems.append(f"identity headers at origin {ident}")
        if leaked:
            kinds = {n: k for n, _, k in FORGED}
            problems.append("forged reached origin: "
                            + ", ".join(f"{n} ({kinds[n]})" for n in leaked))
        if (BENIGN[0].lower(), BENIGN[1]) not in [(n.lower(), v) for n, v in got]:
            problems.append(f"benign {BENIGN[0]} lost")
        peer.checks.append((what, not problems, "; ".join(problems) or "ok"))
    peer.verified = all(ok for _, ok, _ in peer.checks)


# --------------------------------------------------------------------------- load


@dataclass
class Round:
    wrk: WrkResult
    cpu_s: float | None  # proxy (or, for direct, origin) process-tree CPU seconds
    others_s: float = 0.0  # CPU 1 busy time not spent by the proxy (other tenants' work)
    loop_s: float | None = None  # linewarden: its event-loop thread's share of cpu_s
    ledger: tuple[float, float] | None = None  # linewarden: (rows, commits) in the round

    @property
    def core_share(self) -> float:
        """Share of one core the proxy used during the round."""
        wall = self.wrk.duration_us / 1e6
        return (self.cpu_s or 0.0) / wall if wall else 0.0

    @property
    def others_share(self) -> float:
        wall = self.wrk.duration_us / 1e6
        return max(self.others_s, 0.0) / wall if wall else 0.0

    @property
    def cpu_us_per_req(self) -> float | None:
        if self.cpu_s is None or not self.wrk.requests:
            return None
        return self.cpu_s * 1e6 / self.wrk.requests


@dataclass
class Scenario:
    name: str
    label: str
    url: str
    path: str
    host: str
    cpu_pid: int
    peer: Peer | None = None
    rounds: list[Round] = field(default_factory=list)

    def lua(self) -> str:
        return "\n".join([
            'wrk.method = "GET"',
            f'wrk.path = "{self.path}"',
            f'wrk.headers["Host"] = "{self.host}"',
            f'wrk.headers["User-Agent"] = "{USER_AGENT}"',
            'wrk.headers["Accept"] = "text/html,application/json;q=0.9,*/*;q=0.8"',
            WRK_DONE_LUA,
        ])

    def rps(self) -> list[float]:
        return [r.wrk.rps for r in self.rounds]

    def cpu(self) -> float | None:
        vals = [c for c in (r.cpu_us_per_req for r in self.rounds) if c is not None]
        return median(vals) if vals else None


def paired_ratio(a: Scenario | None, b: Scenario | None) -> float | None:
    """Median over rounds of a/b req/s, each round against the same round of b: the rounds are
    interleaved, so a pair shares the machine's noise of that moment."""
    if a is None or b is None:
        return None
    vals = [x.wrk.rps / y.wrk.rps for x, y in zip(a.rounds, b.rounds, strict=False)
            if y.wrk.rps]
    return median(vals) if vals else None


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    return f"{r:.2f}\u00d7" if r >= 0.1 else f"{r:.3f}\u00d7"


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


# --------------------------------------------------------------------------- report


def table(scenarios: list[Scenario]) -> str:
    by = {sc.name: sc for sc in scenarios}
    direct, squid, haproxy = by.get("direct"), by.get("squid"), by.get("haproxy")
    lines = ["| scenario | verified | req/s (median) | req/s min\u2013max | p50 | p99 "
             "| CPU µs/request | req/s per core | core used | others on CPU 1 "
             "| vs direct | vs Squid | vs HAProxy | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sc in scenarios:
        rps = sc.rps()
        cpu = sc.cpu()
        cpu_text = "—" if cpu is None else f"{cpu:,.1f}"
        if sc.name == "direct" and cpu is not None:
            cpu_text = f"({cpu:,.1f} origin)"
        per_core = "—" if not cpu or sc.name == "direct" else f"{1e6 / cpu:,.0f}"
        verified = ("no job" if sc.name == "bare" else "—" if sc.peer is None
                    else "yes" if sc.peer.verified else "**NO** (flagged)")
        errors = sum(r.wrk.error_count for r in sc.rounds)
        lines.append(
            f"| {sc.label} | {verified} | {median(rps):,.0f} "
            f"| {min(rps):,.0f}\u2013{max(rps):,.0f} "
            f"| {fmt_ms(median([r.wrk.p50_us for r in sc.rounds]))} "
            f"| {fmt_ms(median([r.wrk.p99_us for r in sc.rounds]))} | {cpu_text} "
            f"| {per_core} | {median([r.core_share for r in sc.rounds]):.0%} "
            f"| {median([r.others_share for r in sc.rounds]):.0%} "
            f"| {fmt_ratio(paired_ratio(sc, direct))} | {fmt_ratio(paired_ratio(sc, squid))} "
            f"| {fmt_ratio(paired_ratio(sc, haproxy))} | {errors} |")
    return "\n".join(lines)


def rounds_table(scenarios: list[Scenario]) -> str:
    lines = ["| round | " + " | ".join(sc.name for sc in scenarios) + " |",
             "|---:|" + "---:|" * len(scenarios)]
    for i in range(max(len(sc.rounds) for sc in scenarios)):
        cells = []
        for sc in scenarios:
            if i >= len(sc.rounds):
                cells.append("")
                continue
            r = sc.rounds[i]
            cpu = r.cpu_us_per_req
            cells.append(f"{r.wrk.rps:,.0f}/s, p99 {fmt_ms(r.wrk.p99_us)}"
                         + ("" if cpu is None else f", {cpu:,.1f} µs"))
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(scenarios: list[Scenario]) -> list[str]:
    """Issue 7's targets for one linewarden worker, from this run's paired ratios."""
    by = {sc.name: sc for sc in scenarios}
    lw, other = by.get("linewarden"), by.get("linewarden-other")
    hap, squid, mitm = by.get("haproxy"), by.get("squid"), by.get("mitmproxy")
    out: list[str] = []
    if lw is None:
        return out

    def row(what: str, value: float | None, ok: bool | None, shown: str) -> None:
        mark = "—" if ok is None else ("met" if ok else "**not met**")
        out.append(f"| {what} | {shown if value is not None else '—'} | {mark} |")

    r = paired_ratio(lw, hap)
    row("req/s ≥ 0.8\u00d7 HAProxy", r, None if r is None else r >= 0.8, fmt_ratio(r))
    r = paired_ratio(lw, squid)
    row("req/s ≥ 3\u00d7 Squid", r, None if r is None else r >= 3, fmt_ratio(r))
    lc, hc = lw.cpu(), (hap.cpu() if hap else None)
    r = lc / hc if lc and hc else None
    row("CPU/request ≤ 1.5\u00d7 HAProxy's", r, None if r is None else r <= 1.5,
        f"{r:.2f}\u00d7 ({lc:.1f} vs {hc:.1f} µs)" if r else "")
    if hap:
        lp = median([x.wrk.p99_us for x in lw.rounds])
        hp = median([x.wrk.p99_us for x in hap.rounds])
        row("p99 ≤ HAProxy p99 + 1 ms", lp, lp <= hp + 1000,
            f"{fmt_ms(lp)} vs {fmt_ms(hp)}")
    r = paired_ratio(lw, other)
    row("partner within 10% of non-partner req/s", r, None if r is None else r >= 0.9,
        fmt_ratio(r))
    r = paired_ratio(lw, mitm)
    row("req/s ≥ 40\u00d7 mitmproxy", r, None if r is None else r >= 40, fmt_ratio(r))
    return ["| target (issue 7, one worker) | this run | |", "|---|---:|---|", *out]


def budget(scenarios: list[Scenario], connections: int) -> list[str]:
    """Where linewarden's CPU per request goes, against issue 7's limit of 1.5x HAProxy's:
    the Python floor (the bare relay), the event loop, and the ledger writer's thread."""
    by = {sc.name: sc for sc in scenarios}
    hap, bare, lw, other = (by.get(n) for n in ("haproxy", "bare", "linewarden",
                                                 "linewarden-other"))
    hc = hap.cpu() if hap else None
    if not hc or lw is None or not lw.rounds or any(r.loop_s is None for r in lw.rounds):
        return []
    limit = 1.5 * hc
    loop = median([(r.loop_s or 0.0) * 1e6 / r.wrk.requests for r in lw.rounds])
    writer = median([((r.cpu_s or 0.0) - (r.loop_s or 0.0)) * 1e6 / r.wrk.requests
                     for r in lw.rounds])
    counted = [r.ledger for r in lw.rounds if r.ledger and r.ledger[1]]
    per_commit = (sum(c[0] for c in counted) / sum(c[1] for c in counted)) if counted else None
    rows = [("HAProxy: the whole job", hc), ("issue 7's limit for linewarden (1.5\u00d7 HAProxy)",
                                            limit)]
    if bare and bare.cpu():
        rows.append(("bare relay: a Python event loop relaying, no job (the floor)",
                     bare.cpu() or 0.0))
    if other and other.cpu():
        rows.append(("linewarden → non-partner: stripping, no disclosure", other.cpu() or 0.0))
    commits = f"{per_commit:.0f} rows per commit" if per_commit else "rows per commit unknown"
    rows += [("linewarden → partner: event-loop thread", loop),
             (f"linewarden → partner: ledger writer thread (SQLite, {commits}, fsync each)",
              writer),
             ("linewarden → partner: the whole process", lw.cpu() or 0.0)]
    out = ["| where | CPU µs/request | \u00d7 HAProxy's |", "|---|---:|---:|",
           *(f"| {what} | {us:,.1f} | {us / hc:.2f}\u00d7 |" for what, us in rows), ""]
    floor = (bare.cpu() or 0.0) if bare else 0.0
    out.append(
        f"The ledger writer alone spends {writer:,.1f} µs per disclosure, "
        f"{writer / limit:.0%} of the limit: committing each disclosure before it is sent "
        "(PRODUCT.md invariant 4) costs that much CPU at the commit sizes this load allows "
        f"(wrk's {connections} connections bound a batch)."
        + (f" With the bare relay's floor of {floor:,.1f} µs, a partner request costs at least "
           f"{floor + writer:,.1f} µs ({(floor + writer) / hc:.2f}\u00d7 HAProxy's) before any "
           "parsing, stripping, policy or claims." if floor else ""))
    return out


def write_outputs(args: argparse.Namespace, scenarios: list[Scenario], peers: list[Peer],
                  meta: dict[str, Any], seconds: float, rounds: int) -> None:
    out_dir: Path = args.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    by = {sc.name: sc for sc in scenarios}
    data = {
        "meta": meta,
        "scenarios": [{
            "name": sc.name, "label": sc.label,
            "verified": None if sc.peer is None else sc.peer.verified,
            "rps_median": median(sc.rps()), "rps": sc.rps(),
            "p50_us": median([r.wrk.p50_us for r in sc.rounds]),
            "p99_us": median([r.wrk.p99_us for r in sc.rounds]),
            "cpu_us_per_request": sc.cpu(),
            "cpu_is_origin": sc.name == "direct",
            "rps_per_core": (1e6 / sc.cpu()) if sc.cpu() and sc.name != "direct" else None,
            "core_share": median([r.core_share for r in sc.rounds]),
            "others_on_proxy_cpu": median([r.others_share for r in sc.rounds]),
            "vs_direct": paired_ratio(sc, by.get("direct")),
            "vs_squid": paired_ratio(sc, by.get("squid")),
            "vs_haproxy": paired_ratio(sc, by.get("haproxy")),
        } for sc in scenarios],
    }
    (out_dir / "peers.json").write_text(json.dumps(data, indent=2) + "\n")
    chart = out_dir / "peers.png"
    python = VENV / "bin" / "python"  # matplotlib lives in the bench-only venv
    res = subprocess.run([str(python), str(HERE / "chart.py"), str(out_dir / "peers.json"),
                          str(chart)], capture_output=True, text=True) if python.exists() else None
    chart_note = (f"![req/s and CPU per request]({chart.name})" if res and res.returncode == 0
                  else f"(chart failed: {res.stderr.strip()[-300:]})" if res
                  else f"(no chart: {python} is missing; run without --no-install)")

    peer_lines = []
    for p in peers:
        status = ("did not start: " + p.start_error.splitlines()[0] if p.start_error
                  else "passed" if p.verified else "**FAILED — measured anyway, flagged**")
        peer_lines.append(f"- **{p.label}** ({p.version}): {status}. {p.note}")
        for what, ok, detail in p.checks:
            peer_lines.append(f"  - {'ok' if ok else '**FAIL**'}: {what}"
                              + ("" if ok else f" — {detail}"))
    la0, la1 = meta["loadavg_before"], meta["loadavg_after"]
    spent = budget(scenarios, args.connections)
    report = "\n".join([
        "# Peer benchmark: the header-enrichment job, side by side",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} (UTC), commit `{meta['commit']}`; "
        f"{rounds} interleaved rounds \u00d7 {seconds:g} s per scenario.",
        "",
        table(scenarios),
        "",
        "Median over rounds; p50/p99 are wrk's per-round percentiles (median over rounds). "
        "Ratios are the median of each round's ratio to the same round of the base scenario "
        "(rounds are interleaved, so each pair shares the machine's noise of that moment). "
        "CPU µs/request: the proxy's whole process tree (user + system CPU time from "
        "/proc/PID/stat, every process of a multi-process peer) during the round, divided by "
        "the requests wrk completed; for direct, nginx's own figure. *req/s per core* = "
        "1 s / CPU per request, what the proxy would do with a whole core to itself. *core used*: "
        "the proxy's CPU time / wall time during the round. *others on CPU 1*: CPU 1's busy "
        "time (/proc/stat) not spent by the proxy — other tenants of this shared machine; "
        "where it is high, req/s is limited by the proxy's share of the core, and CPU per "
        "request is the comparable figure. Every proxied row is "
        f"absolute-form `GET http://{PARTNER_HOST}/` (enriched) unless it says otherwise.",
        "",
        chart_note,
        "",
        *(["## linewarden against issue 7's targets", "", *targets(scenarios), ""]
          if targets(scenarios) else []),
        *(["## Where linewarden's CPU per request goes", "", *spent, ""] if spent else []),
        "## Machine and setup",
        "",
        f"- Date: {meta['date']} UTC. CPU: {meta['cpu']}, {meta['cores']} cores; "
        "shared, noisy VM (other sessions run their own work on it).",
        f"- Load average (1/5/15 min) before: {la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}; "
        f"after: {la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f}.",
        f"- Pinning (`taskset -c`): wrk and the nginx origin (1 worker) on CPU {CLIENT_CPU}; "
        f"the proxy under test (all its processes and threads) on CPU {PROXY_CPU}. Every "
        "peer stays running (idle) while the others are measured.",
        f"- Load: `wrk -t1 -c{args.connections} -d{seconds:g}s`, keep-alive, Lua script "
        "setting the request target (absolute-form through the proxies, origin-form direct), "
        "Host, User-Agent, Accept; 2 s warm-up per scenario, not counted; then rounds "
        f"interleaved ({', '.join(sc.name for sc in scenarios)}, {scenarios[0].name}, …).",
        f"- Origin: {meta['nginx']}, `return 200` with a {len(BODY)}-byte body, access_log off. "
        f"Client: {meta['wrk']}.",
        f"- Job: strip every identity header a client sent (loose match over {len(KNOWN)} known "
        "names and 11 suffixes where the peer can express it), add "
        f"`{ENRICH_HEADER}: {MSISDN}` only for `{PARTNER_HOST}`, send `{PARTNER_HOST}` and "
        f"`{OTHER_HOST}` to the origin; no cache, no access log. Configs: "
        "`bench/peers/*.tmpl`, `mitm_addon.py`, `proxypy_plugin.py`.",
        "",
        "## Verification (echo origin on the origin's port, before the load)",
        "",
        "Each peer got a clean request to the partner host, then 10 forged identity headers "
        "(" + ", ".join(f"`{n}`" for n, _, _ in FORGED) + f") plus a benign `{BENIGN[0]}` to "
        "both hosts; the echo origin returned the request head it received.",
        "",
        *peer_lines,
        "",
        "## Every round",
        "",
        rounds_table(scenarios),
        "",
    ])
    (out_dir / "peers.md").write_text(report)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="3 rounds x 3 s per scenario")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (default 3)")
    ap.add_argument("--seconds", type=float, help="seconds per round (default 10; quick 3)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--only", help="comma-separated peers: " + ",".join(p[0] for p in PEERS))
    ap.add_argument("--no-install", action="store_true", help="do not apt-get / pip install")
    ap.add_argument("--output-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    rounds = args.rounds or 3
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    if rounds < 3:
        ap.error("--rounds must be at least 3 (the median needs them)")
    only = set(args.only.split(",")) if args.only else None
    if only and only - {p[0] for p in PEERS}:
        ap.error(f"unknown peers: {sorted(only - {p[0] for p in PEERS})}")
    if len(os.sched_getaffinity(0)) < 2:
        print("needs 2 CPUs (wrk + origin on CPU 0, proxy on CPU 1)", file=sys.stderr)
        return 2
    if not LINEWARDEN.exists():
        print(f"{LINEWARDEN} missing; run `make venv`", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_term)
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="linewarden-peers-"))
    tmp.chmod(0o755)  # squid's effective user must reach its directory
    try:
        if not args.no_install:
            ensure_installed()
        else:
            os.environ["PATH"] += ":/usr/sbin:/sbin"
        return run(args, procs, tmp, rounds, seconds, only)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything this benchmark started", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for echo in echo_holder:
            echo.shutdown()
            echo.server_close()
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, procs: Procs, tmp: Path, rounds: int, seconds: float,
        only: set[str] | None) -> int:
    started = dt.datetime.now(dt.UTC)
    loadavg_before = os.getloadavg()
    origin_port = free_port()

    # 1. The echo origin on the origin's port; every peer is configured for that port.
    echo = EchoServer(("127.0.0.1", origin_port), _Echo)
    echo_holder.append(echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    peers = start_peers(procs, tmp, origin_port, only)
    for p in peers:
        state = f"error: {p.start_error}" if p.start_error else \
            f"127.0.0.1:{p.port} pid {p.proc.pid if p.proc else '?'}"
        print(f"{p.label:11} {state}", flush=True)

    # 2. Verify the job.
    print("verification against the echo origin:")
    for p in peers:
        if p.start_error:
            continue
        verify(p)
        for what, ok, detail in p.checks:
            print(f"  {p.label:11} [{'ok' if ok else 'FAIL'}] {what}"
                  + ("" if ok else f": {detail}"), flush=True)

    # 3. nginx takes over the same port.
    echo.shutdown()
    echo.server_close()
    echo_holder.clear()
    nginx = start_nginx(procs, tmp, origin_port)
    code, body = curl(f"http://127.0.0.1:{origin_port}/")
    if code != 200 or body != BODY:
        raise RuntimeError(f"nginx origin answers {code} with {len(body)} bytes")

    scenarios = [Scenario("direct", "direct to nginx (the limit)",
                          f"http://127.0.0.1:{origin_port}", "/", "origin.test", nginx.pid)]
    bare = start_bare(procs, tmp, origin_port)
    if bare is not None:
        scenarios.append(bare)
    for p in peers:
        if p.start_error or p.proc is None:
            continue
        url = f"http://127.0.0.1:{p.port}"
        reachable = True
        for host in (PARTNER_HOST, OTHER_HOST):
            code, body = curl("-x", url, f"http://{host}/")
            if code != 200 or body != BODY:
                p.checks.append((f"{host} through the proxy reaches nginx (200, same body)",
                                 False, f"status {code}"))
                p.verified = False
                reachable = False
        if not reachable:
            print(f"  {p.label}: does not reach nginx; not measured", file=sys.stderr)
            continue
        label = p.label + (" → partner host (enriched)" if p.name == "linewarden" else "")
        scenarios.append(Scenario(p.name, label, url, f"http://{PARTNER_HOST}/", PARTNER_HOST,
                                  p.proc.pid, p))
        if p.name == "linewarden":
            scenarios.append(Scenario("linewarden-other",
                                      "linewarden → non-partner host (stripped only)", url,
                                      f"http://{OTHER_HOST}/", OTHER_HOST, p.proc.pid, p))
    scripts = {}
    for sc in scenarios:
        scripts[sc.name] = tmp / f"{sc.name}.lua"
        scripts[sc.name].write_text(sc.lua())

    def load(sc: Scenario, secs: float) -> Round:
        if sc.peer and sc.peer.proc and sc.peer.proc.poll() is not None:
            raise RuntimeError(f"{sc.peer.label} exited ({sc.peer.proc.returncode}):\n"
                               + (tail(sc.peer.log) if sc.peer.log else ""))
        metrics = sc.peer.metrics_socket if sc.peer else ""
        cpu0, busy0 = tree_cpu_seconds(sc.cpu_pid), cpu_busy_seconds(PROXY_CPU)
        loop0, led0 = thread_cpu_seconds(sc.cpu_pid), metrics and ledger_counts(metrics)
        res = run_wrk(procs, sc.url, scripts[sc.name], seconds=secs,
                      connections=args.connections, threads=1, cpu=CLIENT_CPU)
        cpu1, busy1 = tree_cpu_seconds(sc.cpu_pid), cpu_busy_seconds(PROXY_CPU)
        loop1, led1 = thread_cpu_seconds(sc.cpu_pid), metrics and ledger_counts(metrics)
        own = cpu1 - cpu0 if sc.name != "direct" else 0.0
        r = Round(res, cpu1 - cpu0, (busy1 - busy0) - own)
        if metrics and loop0 is not None and loop1 is not None:
            r.loop_s = loop1 - loop0
        if led0 and led1:
            r.ledger = (led1[0] - led0[0], led1[1] - led0[1])
        return r

    print(f"load: wrk -t1 -c{args.connections}, {rounds} x {seconds:g} s, interleaved; "
          f"wrk + nginx on CPU {CLIENT_CPU}, proxies on CPU {PROXY_CPU}", flush=True)
    for sc in scenarios:
        load(sc, 2)
    for i in range(rounds):
        for sc in scenarios:
            r = load(sc, seconds)
            sc.rounds.append(r)
            cpu = r.cpu_us_per_req
            print(f"  round {i + 1}/{rounds} {sc.name:17} {r.wrk.rps:10,.0f} req/s  "
                  f"p50 {fmt_ms(r.wrk.p50_us)}  p99 {fmt_ms(r.wrk.p99_us)}  "
                  + ("" if cpu is None else f"CPU {cpu:,.1f} µs/req, "
                                            f"{r.core_share:.0%} of a core")
                  + f"; others on CPU {PROXY_CPU}: {r.others_share:.0%}"
                  + (f"  errors {r.wrk.errors}" if r.wrk.error_count else ""), flush=True)

    command = ".venv/bin/python bench/peers/run.py" + (
        " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    meta = {
        "command": command, "date": f"{started:%Y-%m-%d %H:%M}", "commit": commit,
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(),
        "pinning": {"wrk": CLIENT_CPU, "origin": CLIENT_CPU, "proxy": PROXY_CPU},
        "rounds": rounds, "seconds": seconds, "connections": args.connections,
        "nginx": tool_version(["nginx", "-v"]), "wrk": tool_version(["wrk", "-v"]),
    }
    write_outputs(args, scenarios, peers, meta, seconds, rounds)
    print()
    print(table(scenarios))
    print("\n" + "\n".join(targets(scenarios)))
    print("\n" + "\n".join(budget(scenarios, args.connections)))
    print(f"\nwritten to {args.output_dir / 'peers.md'} and peers.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
