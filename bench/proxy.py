"""Proxy benchmark: wrk → (linewarden →) nginx, req/s and p50/p99 latency.

    .venv/bin/python bench/proxy.py            # 5 rounds x 10 s per scenario
    .venv/bin/python bench/proxy.py --quick    # 3 rounds x 3 s
    .venv/bin/python bench/proxy.py --profile  # then py-spy the gateway (bench/.venv-tools)

Scenarios, rounds interleaved (A B C A B C ...) because the machine is shared:

  direct      wrk → nginx (origin-form)
  bare        wrk → bench/bare_proxy.py → nginx: the smallest uvloop + httptools relay, the
              runtime's own cost before any linewarden logic (`--no-bare` skips it)
  partner     wrk → linewarden → nginx, absolute-form to `partner.test` (enriched, recorded
              in the default SQLite ledger)
  other       wrk → linewarden → nginx, absolute-form to `other.test` (stripped only)
  partner-pg  as partner, through a second gateway whose ledger is a private PostgreSQL
              server on the load CPU, as a database host would be (`--no-postgres` skips it);
              the server's CPU per request is reported beside the table

wrk runs 1 thread, 50 keep-alive connections; wrk and nginx (one worker) are pinned to CPU 0,
the gateway (or the bare relay) to CPU 1. Before measuring, curl checks through each
proxy that the partner host answers 200, that the partner gets the configured header and the
other host none, and that forged `X-Msisdn` / `X_MSISDN` never reach nginx. Results: a
markdown table on stdout and in `bench/results/proxy.md`. Every process started here is stopped
by PID, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is not a package; run as a script
    ORIGIN_BODY,
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
from common import (
    start_nginx as common_start_nginx,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.ledger.pg import PrivatePostgres  # a private server in a temp dir

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "proxy.md"
PROFILES = REPO / "bench" / "results"
PY_SPY = REPO / "bench" / ".venv-tools" / "bin" / "py-spy"
MSISDN = "447400900123"
TARGET = 0.50
PROFILE_HZ = 200
# As issue #7's reference figures were measured: wrk and the origin share CPU 0, the proxy
# under test has CPU 1 to itself (direct-to-origin: wrk and nginx on CPU 0).
LOAD_CPU = 0  # wrk and nginx
PROXY_CPU = 1  # linewarden, or the bare relay
# ~600 bytes, the size of a small API answer or a redirect page.
BODY = ORIGIN_BODY
ECHO = "cli=$http_x_up_calling_line_id;msisdn=$http_x_msisdn;\\n"  # nginx reads \\n
USER_AGENT = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126 Mobile"


@dataclass
class Scenario:
    name: str
    label: str
    url: str  # what wrk connects to
    path: str  # request target: origin-form or absolute-form
    host: str
    rounds: list[WrkResult] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # whose CPU time serves this scenario
    cpu_us: list[float] = field(default_factory=list)  # CPU µs per request, per round
    # Helpers on the load CPU that serve this scenario too (the PostgreSQL server): their CPU
    # per request is reported beside the table, not in it.
    side_pids: Callable[[], list[int]] | None = None
    side_cpu_us: list[float] = field(default_factory=list)

    def lua(self) -> str:
        return "\n".join([
            'wrk.method = "GET"',
            f'wrk.path = "{self.path}"',
            f'wrk.headers["Host"] = "{self.host}"',
            f'wrk.headers["User-Agent"] = "{USER_AGENT}"',
            'wrk.headers["Accept"] = "text/html,application/json;q=0.9,*/*;q=0.8"',
            WRK_DONE_LUA,
        ])


# --journal: the gateways under test use the journal-first ledger (docs/ledger.md), with
# their `url` store as its index.
JOURNAL = {"on": False}


def gateway_conf(tmp: Path, proxy_port: int, web_port: int, origin: str,
                 ledger_url: str | None = None) -> str:
    ledger_url = ledger_url or f"sqlite:///{tmp}/ledger.db"
    journal = f'journal = "{tmp}/journal"' if JOURNAL["on"] else ""
    return f"""
state_dir = "{tmp}/state"

[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "bench"

[proxy.resolve]
"partner.test" = "{origin}"
"other.test" = "{origin}"

[identity]
operator = "234-10"
pseudonym_secret = "bench-only-secret"

[[bindings]]
ip = "127.0.0.1"
msisdn = "{MSISDN}"

[ledger]
url = "{ledger_url}"
{journal}

[web]
listen = "127.0.0.1:{web_port}"

[[partners]]
id = "bench-partner"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
"""


def start_nginx(procs: Procs, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    return common_start_nginx(procs, tmp, ECHO, LOAD_CPU)

def start_gateway(procs: Procs, tmp: Path, origin: str, ledger_url: str | None = None
                  ) -> tuple[subprocess.Popen[bytes], int, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    proxy_port, web_port = free_port(), free_port()
    while web_port == proxy_port:
        web_port = free_port()
    conf = tmp / "linewarden.toml"
    conf.write_text(gateway_conf(tmp, proxy_port, web_port, origin, ledger_url))
    out_path, err_path = tmp / "gateway-stdout.log", tmp / "gateway-stderr.log"
    proc = procs.start(
        pinned(PROXY_CPU, [str(REPO / ".venv" / "bin" / "linewarden"), "serve",
                            "--config", str(conf)]),
        stdout=out_path.open("wb"), stderr=err_path.open("wb"), cwd=str(tmp))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"linewarden exited with {proc.returncode}:\n"
                               + out_path.read_text(errors="replace")
                               + err_path.read_text(errors="replace"))
        if any("proxy" in line for line in out_path.read_text(errors="replace").splitlines()):
            wait_port(proxy_port)
            return proc, proxy_port, err_path
        time.sleep(0.05)
    raise RuntimeError("linewarden printed no banner within 30 s:\n"
                       + out_path.read_text(errors="replace")
                       + err_path.read_text(errors="replace"))


def curl(*args: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}",
                          *args], capture_output=True, text=True, timeout=15)
    body, _, code = out.stdout.rpartition("\n")
    if out.returncode != 0:
        return 0, out.stderr.strip()
    return int(code or 0), body


def checks(origin_port: int, proxy_port: int) -> list[tuple[str, bool, str]]:
    """(what, passed, detail) for each pre-flight check."""
    proxy = f"http://127.0.0.1:{proxy_port}"
    forged = ["-H", "X-Msisdn: 447400900999", "-H", "X_MSISDN: 447400900998",
              "-H", "X-Up-Calling-Line-Id: 447400900997"]
    results: list[tuple[str, bool, str]] = []

    code, body = curl(f"http://127.0.0.1:{origin_port}/")
    results.append(("direct: nginx answers 200 with the ~600-byte body",
                    code == 200 and body == BODY, f"status {code}, {len(body)} bytes"))
    code, body = curl("-x", proxy, "http://partner.test/")
    results.append(("proxy → partner.test reaches nginx (200, same body)",
                    code == 200 and body == BODY, f"status {code}"))
    code, body = curl("-x", proxy, "http://other.test/")
    results.append(("proxy → other.test reaches nginx (200, same body)",
                    code == 200 and body == BODY, f"status {code}"))
    code, body = curl("-x", proxy, *forged, "http://partner.test/__echo")
    body = body.strip()
    want = f"cli={MSISDN};msisdn=;"
    results.append(("partner.test gets X-Up-Calling-Line-Id = the binding's MSISDN; "
                    "forged X-Msisdn/X_MSISDN/X-Up-Calling-Line-Id stripped",
                    code == 200 and body == want, f"status {code}, origin saw {body!r}"))
    code, body = curl("-x", proxy, *forged, "http://other.test/__echo")
    body = body.strip()
    want = "cli=;msisdn=;"
    results.append(("other.test gets no identity; forged headers stripped",
                    code == 200 and body == want, f"status {code}, origin saw {body!r}"))
    return results


def gateway_died(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Why the gateway is gone: exit status and its last non-disclosure log lines."""
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if '"event": "disclosure"' not in line]
    return (f"linewarden exited during the run with status {proc.returncode}; "
            f"last log lines:\n" + "\n".join(lines[-30:]))


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes and their threads (/proc/PID/stat fields 14-15)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rps_median(scenarios: list[Scenario], name: str) -> float:
    return next((median([r.rps for r in sc.rounds]) for sc in scenarios if sc.name == name), 0.0)


def paired_ratio(scenarios: list[Scenario], name: str, base: str) -> float:
    """Median over rounds of name/base req/s, each round against its own neighbour: the rounds
    are interleaved, so a pair shares the machine's noise of that moment."""
    by = {sc.name: sc for sc in scenarios}
    if name not in by or base not in by:
        return 0.0
    pairs = zip(by[name].rounds, by[base].rounds, strict=False)
    return median([a.rps / b.rps for a, b in pairs if b.rps])


def table(scenarios: list[Scenario]) -> str:
    bare = rps_median(scenarios, "bare")
    lines = ["| scenario | req/s (median) | req/s min-max | p50 latency | p99 latency "
             "| server CPU µs/req | vs direct |" + (" vs bare relay |" if bare else "")
             + " errors |",
             "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if bare else "") + "---:|"]
    for sc in scenarios:
        rps = [r.rps for r in sc.rounds]
        errors = sum(r.error_count for r in sc.rounds)
        ratio = paired_ratio(scenarios, sc.name, "direct")
        vs_bare = "" if not bare else (
            f" {paired_ratio(scenarios, sc.name, 'bare'):.0%} |"
            if sc.name not in ("direct", "bare") else " |")
        lines.append(f"| {sc.label} | {median(rps):,.0f} | {min(rps):,.0f}-{max(rps):,.0f} "
                     f"| {fmt_ms(median([r.p50_us for r in sc.rounds]))} "
                     f"| {fmt_ms(median([r.p99_us for r in sc.rounds]))} "
                     f"| {median(sc.cpu_us) if sc.cpu_us else 0:.1f} "
                     f"| {ratio:.0%} |{vs_bare} {errors} |")
    return "\n".join(lines)


def side_notes(scenarios: list[Scenario]) -> list[str]:
    return [f"`{sc.name}`: server CPU in the table is the gateway's alone (it commits every "
            f"disclosure to PostgreSQL, whose server ran on CPU {LOAD_CPU} beside wrk and "
            f"nginx and used another **{median(sc.side_cpu_us):.1f} µs CPU per request**, "
            "as a database host would).\n"
            for sc in scenarios if sc.side_cpu_us]


def rounds_table(scenarios: list[Scenario]) -> str:
    lines = ["| round | " + " | ".join(sc.name for sc in scenarios) + " |",
             "|---:|" + "---:|" * len(scenarios)]
    for i in range(len(scenarios[0].rounds)):
        cells = [f"{sc.rounds[i].rps:,.0f} req/s, p99 {fmt_ms(sc.rounds[i].p99_us)}"
                 for sc in scenarios if i < len(sc.rounds)]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile(procs: Procs, gateway_pid: int, scenario: Scenario, script: Path, seconds: float,
            connections: int, tmp: Path) -> Path | None:
    """py-spy the gateway while wrk loads it; top functions to bench/results/profile-*.txt."""
    if not PY_SPY.exists():
        print(f"profile: {PY_SPY} missing; create it with:\n"
              f"  python3 -m venv bench/.venv-tools && bench/.venv-tools/bin/pip install py-spy",
              file=sys.stderr)
        return None
    raw = tmp / f"profile-{scenario.name}.raw"
    spy_log_path = tmp / f"py-spy-{scenario.name}.log"
    spy_log = spy_log_path.open("wb")
    argv = [str(PY_SPY), "record", "--pid", str(gateway_pid), "--duration", f"{seconds + 1:g}",
            "--rate", str(PROFILE_HZ), "--format", "raw", "--function", "--native",
            "--output", str(raw)]
    spy = procs.start(pinned(LOAD_CPU, argv), stdout=spy_log, stderr=spy_log)
    time.sleep(0.5)
    result = run_wrk(procs, scenario.url, script, seconds=seconds, connections=connections,
                     threads=1, cpu=LOAD_CPU)
    try:
        spy.wait(seconds + 20)
    finally:
        procs.stop(spy)
    if not raw.exists():
        print(f"profile: py-spy wrote nothing for {scenario.name}:\n"
              + spy_log_path.read_text(errors="replace"), file=sys.stderr)
        return None
    shutil.copyfile(raw, PROFILES / f"profile-{scenario.name}.raw")  # collapsed stacks
    out = PROFILES / f"profile-{scenario.name}.txt"
    out.write_text(summarize_profile(raw, scenario, result))
    return out


def _frame_name(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"; keep the path from src/ or
    # site-packages/ on so the table reads as file:function.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/src/", "/site-packages/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    path = where.rsplit(":", 1)[0]
    return f"{path}:{name}" if path else name


def summarize_profile(raw: Path, scenario: Scenario, result: WrkResult, top: int = 30) -> str:
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    nearest: dict[str, int] = {}  # self time (C included) charged to the deepest Python frame
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + count
        py = next((f for f in reversed(frames) if ".py:" in f), frames[-1])
        nearest[py] = nearest.get(py, 0) + count
        for name in set(frames):
            total[name] = total.get(name, 0) + count

    def rows(counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"{100 * n / samples:6.1f}%  {name}" for name, n in ranked]

    head = (f"py-spy (--native --function, {PROFILE_HZ} Hz, blocking) of the gateway, "
            f"scenario {scenario.name}, "
            f"{samples} samples; load {result.rps:,.0f} req/s during the profile\n")
    return "\n".join([head, "self time by deepest Python frame (C callees charged to it):",
                      *rows(nearest), "", "self time:", *rows(own), "",
                      "inclusive time:", *rows(total), ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="3 rounds x 3 s per scenario")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (default 5; quick 3)")
    ap.add_argument("--seconds", type=float, help="seconds per round (default 10; quick 3)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--no-bare", action="store_true",
                    help="skip the bare uvloop + httptools relay reference scenario")
    ap.add_argument("--no-postgres", action="store_true",
                    help="skip the partner scenario with a PostgreSQL ledger (server on the "
                         "load CPU)")
    ap.add_argument("--profile", action="store_true",
                    help="after measuring, py-spy the gateway for 10 s per proxied scenario")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--journal", action="store_true",
                    help="the gateways use the journal-first ledger ([ledger] journal)")
    args = ap.parse_args(argv)
    JOURNAL["on"] = args.journal
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    if rounds < 3:
        ap.error("--rounds must be at least 3 (the median needs them)")
    for tool in ("wrk", "nginx", "curl", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} not found; run `make debs` (Debian packages curl wrk nginx-light)",
                  file=sys.stderr)
            return 2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Also SIGINT explicitly: a shell that starts us in the background leaves it ignored.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_term)
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="linewarden-bench-"))
    try:
        return run(args, procs, tmp, rounds, seconds)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything this benchmark started", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def start_postgres() -> PrivatePostgres:
    """A private PostgreSQL (durable commits: fsync and synchronous_commit on, as in
    production) pinned to the load CPU, so the gateway's core does only the client side."""
    pg = PrivatePostgres(settings={"shared_buffers": "256MB"}).start()
    for pid in (pg.pid, *children(pg.pid)):  # backends forked later inherit the mask
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {LOAD_CPU})
    return pg


def run(args: argparse.Namespace, procs: Procs, tmp: Path, rounds: int, seconds: float) -> int:
    pg = None if args.no_postgres else start_postgres()
    try:
        return measure(args, procs, tmp, rounds, seconds, pg)
    finally:
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.dir, ignore_errors=True)


def measure(args: argparse.Namespace, procs: Procs, tmp: Path, rounds: int, seconds: float,
            pg: PrivatePostgres | None) -> int:
    started = dt.datetime.now(dt.UTC)
    _nginx, origin_port = start_nginx(procs, tmp)
    origin = f"127.0.0.1:{origin_port}"
    gateway, proxy_port, gateway_log = start_gateway(procs, tmp, origin)
    print(f"nginx on {origin} (pid {_nginx.pid}), linewarden proxy on 127.0.0.1:{proxy_port} "
          f"(pid {gateway.pid}); proxy on CPU {PROXY_CPU}, nginx and wrk on CPU {LOAD_CPU}")

    bare_port = bare_pid = 0
    if not args.no_bare:
        bare_port = free_port()
        relay = [sys.executable, str(REPO / "bench" / "bare_proxy.py"), str(bare_port), origin]
        bare = procs.start(pinned(PROXY_CPU, relay),
                           stdout=subprocess.DEVNULL, stderr=(tmp / "bare.log").open("wb"))
        wait_port(bare_port)
        bare_pid = bare.pid
        print(f"bare relay on 127.0.0.1:{bare_port} (pid {bare.pid}), CPU {PROXY_CPU}")

    pg_gateway = pg_port = None
    if pg is not None:
        pg_gateway, pg_port, _ = start_gateway(procs, tmp / "pg", origin, pg.create_database())
        print(f"linewarden with a PostgreSQL ledger on 127.0.0.1:{pg_port} "
              f"(pid {pg_gateway.pid}); postgres (pid {pg.pid}) on CPU {LOAD_CPU}")

    results = checks(origin_port, proxy_port)
    if pg_port is not None:
        results += [(f"PostgreSQL-ledger gateway: {what}", ok, detail)
                    for what, ok, detail in checks(origin_port, pg_port)[1:]]
    if bare_port:
        code, body = curl("-x", f"http://127.0.0.1:{bare_port}", "http://other.test/")
        results.append(("bare relay → other.test reaches nginx (200, same body)",
                        code == 200 and body == BODY, f"status {code}"))
    for what, ok, detail in results:
        print(f"  [{'ok' if ok else 'FAIL'}] {what} ({detail})")
    if not results[1][1]:
        print("the proxy does not reach the origin; not measuring", file=sys.stderr)
        return 1

    proxy_url = f"http://127.0.0.1:{proxy_port}"
    scenarios = [
        Scenario("direct", "direct to nginx", f"http://{origin}", "/", "origin.test"),
        *([Scenario("bare", "bare uvloop+httptools relay (reference)",
                    f"http://127.0.0.1:{bare_port}", "http://other.test/", "other.test")]
          if bare_port else []),
        Scenario("partner", "linewarden → partner host (enriched)", proxy_url,
                 "http://partner.test/", "partner.test"),
        Scenario("other", "linewarden → non-partner host (stripped)", proxy_url,
                 "http://other.test/", "other.test"),
        *([Scenario("partner-pg", "linewarden → partner host, PostgreSQL ledger",
                    f"http://127.0.0.1:{pg_port}", "http://partner.test/", "partner.test",
                    side_pids=lambda: [pg.pid, *children(pg.pid)])]
          if pg is not None and pg_port is not None else []),
    ]
    scripts = {}
    for sc in scenarios:
        scripts[sc.name] = tmp / f"{sc.name}.lua"
        scripts[sc.name].write_text(sc.lua())

    for sc in scenarios:
        sc.pids = ({"direct": children(_nginx.pid), "bare": [bare_pid],
                    "partner-pg": [pg_gateway.pid] if pg_gateway else []}.get(sc.name)
                   or [gateway.pid])

    def load(sc: Scenario, secs: float) -> WrkResult:
        if gateway.poll() is not None:
            raise RuntimeError(gateway_died(gateway, gateway_log))
        side = sc.side_pids() if sc.side_pids else []
        before, side_before = cpu_seconds(sc.pids), cpu_seconds(side)
        result = run_wrk(procs, sc.url, scripts[sc.name], seconds=secs,
                         connections=args.connections, threads=1, cpu=LOAD_CPU)
        if result.requests:
            sc.cpu_us.append((cpu_seconds(sc.pids) - before) * 1e6 / result.requests)
            if side:
                sc.side_cpu_us.append((cpu_seconds(side) - side_before) * 1e6
                                      / result.requests)
        return result

    for sc in scenarios:  # warm-up: connections, pools, caches; not counted
        load(sc, 2)
    for i in range(rounds):
        for sc in scenarios:
            res = load(sc, seconds)
            sc.rounds.append(res)
            print(f"  round {i + 1}/{rounds} {sc.name:8} {res.rps:10,.0f} req/s  "
                  f"p50 {fmt_ms(res.p50_us)}  p99 {fmt_ms(res.p99_us)}  "
                  f"cpu {sc.cpu_us[-1] if sc.cpu_us else 0:.1f} µs/req"
                  + (f"  errors {res.errors}" if res.error_count else ""), flush=True)
    if gateway.poll() is not None:
        raise RuntimeError(gateway_died(gateway, gateway_log))

    ratio = paired_ratio(scenarios, "partner", "direct")
    bare_note = ""
    if bare_port:
        bare_ratio = paired_ratio(scenarios, "bare", "direct")
        bare_note = (f" For scale: the bare relay, with no linewarden logic at all, reaches "
                     f"{bare_ratio:.0%} of direct on this machine; linewarden's partner path "
                     f"reaches {paired_ratio(scenarios, 'partner', 'bare'):.0%}"
                     " of the bare relay.")
    log_bytes = gateway_log.stat().st_size
    command = ".venv/bin/python bench/proxy.py" + (
        " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    report = "\n".join([
        "# Proxy benchmark",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC, commit `{commit}`.",
        "",
        table(scenarios),
        "",
        f"Partner host through linewarden: **{ratio:.0%} of direct-to-origin req/s** — "
        + (f"meets the ≥ {TARGET:.0%} target." if ratio >= TARGET
           else f"**below the ≥ {TARGET:.0%} target**.") + bare_note,
        "",
        *side_notes(scenarios),
        "## Setup",
        "",
        f"- CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores "
        "available; shared, noisy VM.",
        f"- Pinning (`taskset -c`), as issue #7's reference figures: linewarden (one process, "
        f"one event loop) or the bare relay alone on CPU {PROXY_CPU}; wrk and nginx "
        f"(1 worker) on CPU {LOAD_CPU}.",
        f"- Load: `wrk -t1 -c{args.connections} -d{seconds:g}s` with a Lua script "
        "(absolute-form `GET http://partner.test/` or `http://other.test/` through the proxy, "
        "origin-form `GET /` direct), keep-alive, Host, User-Agent and Accept headers; "
        f"{rounds} rounds per scenario, interleaved ({', '.join(sc.name for sc in scenarios)}, "
        f"{scenarios[0].name}, …) after a 2 s warm-up each. Table: medians over rounds "
        "(latency: wrk's per-round percentiles); ratios: median over rounds of each round's "
        "ratio to the neighbouring direct (or bare) round, which cancels slow drift in the "
        "machine's load.",
        f"- Origin: {tool_version(['nginx', '-v'])}, `return 200` with a {len(BODY)}-byte "
        "body, access_log off.",
        f"- Client: {tool_version(['wrk', '-v'])}.",
        f"- Gateway: `linewarden serve` (Python {sys.version.split()[0]}, uvloop, httptools), "
        "one `[[bindings]]` for 127.0.0.1, one partner (`partner.test`, raw "
        "`X-Up-Calling-Line-Id`); disclosures go to the service's recorder "
        f"({log_bytes / 1e6:,.1f} MB of gateway log written during the run).",
        "",
        "## Pre-flight checks (curl through the proxy)",
        "",
        *[f"- {'ok' if ok else '**FAIL**'}: {what} ({detail})" for what, ok, detail in results],
        "",
        "## Every round",
        "",
        rounds_table(scenarios),
        "",
    ])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print()
    print(table(scenarios))
    print(*side_notes(scenarios), sep="\n")
    print(f"\npartner / direct = {ratio:.0%} (target ≥ {TARGET:.0%}); written to {args.output}")

    if args.profile:
        for sc in (sc for sc in scenarios if sc.name in ("partner", "other")):
            out = profile(procs, gateway.pid, sc, scripts[sc.name], 10.0, args.connections, tmp)
            if out:
                print(f"profile of {sc.name}: {out}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
