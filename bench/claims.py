"""Claims benchmark: what a signed assertion costs compared with the raw-number header.

    .venv/bin/python bench/claims.py            # 5 rounds x 10 s per scenario
    .venv/bin/python bench/claims.py --quick    # 3 rounds x 3 s

Two measurements, in one run:

1. Signatures/s in process: the whole `assertion` claim as the core renders it (pairwise
   pseudonym, claims set, JSON, compact JWS) for ES256 (default) and EdDSA, and the partner
   kit's `verify()` per second.
2. Gateway throughput, wrk → linewarden → nginx, rounds interleaved (raw, assertion, raw, ...):
     raw        partner.test gets `X-Up-Calling-Line-Id: <msisdn>` (legacy raw enrichment)
     assertion  assert.test gets `X-Operator-Assertion: <ES256 JWS>` (sub, age_over_18)
   Both are disclosures recorded in the same SQLite ledger; only the claim differs. The
   ratio is the median over rounds of assertion/raw req/s, each round against its
   neighbour. Target (issue 6): >= 0.70.

wrk: 1 thread, 50 keep-alive connections, pinned to CPU 1; gateway and nginx (1 worker) on
CPU 0. Before measuring, curl checks that each partner gets its header and that the
assertion nginx received verifies with the kit against the gateway's own JWKS. Results:
stdout and `bench/results/claims.md`. Every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
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
from linewarden.assertion import (
    Algorithm,
    KeyRing,
    Signer,
    SigningKey,
    new_private_key,
    public_jwk,
)
from linewarden.bindings import Binding
from linewarden.claims import Secrets, render
from linewarden.partner import KeySet, verify
from linewarden.policy import ClaimSpec, Partner

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "claims.md"
MSISDN = "447400900123"
TARGET = 0.70
SERVER_CPU, CLIENT_CPU = 0, 1
BODY = ORIGIN_BODY
ECHO = "cli=$http_x_up_calling_line_id;assertion=$http_x_operator_assertion;"


def gateway_conf(tmp: Path, proxy_port: int, web_port: int, origin: str) -> str:
    return f"""
state_dir = "{tmp}/state"

[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "bench-claims"

[proxy.resolve]
"partner.test" = "{origin}"
"assert.test" = "{origin}"

[identity]
operator = "234-10"
pseudonym_secret = "bench-only-secret"

[[bindings]]
ip = "127.0.0.1"
msisdn = "{MSISDN}"
attributes = {{ age_over_18 = "true" }}

[ledger]
url = "sqlite:///{tmp}/ledger.db"

[web]
listen = "127.0.0.1:{web_port}"

[[partners]]
id = "raw-partner"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"

[[partners]]
id = "assert-partner"
purpose = "age_verification"
hosts = ["assert.test"]
[partners.headers]
X-Operator-Assertion = {{ claim = "assertion", include = ["age_over_18"] }}
"""


# ---------------------------------------------------------------- in process

def signatures_per_second(algorithm: Algorithm, seconds: float) -> tuple[float, float]:
    """(assertions rendered/s, assertions verified/s) on one core."""
    private = new_private_key(algorithm)
    jwk = public_jwk(private, algorithm)
    signer = Signer("urn:bench", KeyRing((SigningKey(jwk["kid"], algorithm, jwk, 0.0,
                                                     private=private),)))
    secrets = Secrets(b"bench-secret", b"ledger", "234-10", signer=signer)
    spec = ClaimSpec("X-Operator-Assertion", "assertion", include=("age_over_18",))
    partner = Partner("p", "age_verification", ("p.test",), (), frozenset(), None, False,
                      (spec,))
    binding = Binding("127.0.0.1", MSISDN, {"age_over_18": "true"})
    tokens: list[str] = []
    now = time.time()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            value = render(spec, partner, binding, secrets, now=now, nonce=os.urandom(16))
            assert value is not None
            tokens.append(value)
    signed = len(tokens) / (time.perf_counter() - start)
    keys = KeySet.from_jwks(signer.ring.jwks(now))
    start = time.perf_counter()
    for token in tokens[:5000]:
        verify(token, "p", keys, replay=None, now=now)
    verified = min(len(tokens), 5000) / (time.perf_counter() - start)
    return signed, verified


# ---------------------------------------------------------------- processes

def start_nginx(procs: Procs, tmp: Path) -> int:
    return common_start_nginx(procs, tmp, ECHO, SERVER_CPU)[1]

def start_gateway(procs: Procs, tmp: Path, origin: str) -> tuple[int, int]:
    proxy_port, web_port = free_port(), free_port()
    conf = tmp / "linewarden.toml"
    conf.write_text(gateway_conf(tmp, proxy_port, web_port, origin))
    out, err = tmp / "gateway-stdout.log", tmp / "gateway-stderr.log"
    proc = procs.start(pinned(SERVER_CPU, [str(REPO / ".venv" / "bin" / "linewarden"), "serve",
                                           "--config", str(conf)]),
                       stdout=out.open("wb"), stderr=err.open("wb"), cwd=str(tmp))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if "proxy" in out.read_text(errors="replace"):
            wait_port(proxy_port)
            return proxy_port, web_port
        time.sleep(0.05)
    raise RuntimeError("linewarden did not start:\n" + err.read_text(errors="replace"))


def curl(*args: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", *args],
                         capture_output=True, text=True, timeout=15)
    body, _, code = out.stdout.rpartition("\n")
    return (int(code or 0), body) if out.returncode == 0 else (0, out.stderr.strip())


def checks(proxy: str, web_port: int) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []
    code, body = curl("-x", proxy, "http://partner.test/__echo")
    results.append(("raw: partner.test gets X-Up-Calling-Line-Id = the MSISDN",
                    code == 200 and body == f"cli={MSISDN};assertion=;", body[:60]))
    code, body = curl("-x", proxy, "http://assert.test/__echo")
    token = body.partition("assertion=")[2].rstrip(";")
    detail = f"status {code}, {len(token)}-byte token"
    ok = code == 200 and body.startswith("cli=;") and bool(token)
    if ok:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/.well-known/jwks.json",
                                    timeout=5) as response:
            jwks = json.loads(response.read())
        claims = verify(token, "assert-partner", jwks, replay=None)
        ok = claims.age_over_18 is True and MSISDN not in token
        detail += f", verified: kid {claims.kid}, sub {claims.sub[:12]}…"
    results.append(("assertion: assert.test gets a JWS that verifies with the kit against "
                    "the gateway's JWKS, and no number", ok, detail))
    return results


def lua(host: str, script: Path) -> Path:
    script.write_text("\n".join([
        'wrk.method = "GET"', f'wrk.path = "http://{host}/"',
        f'wrk.headers["Host"] = "{host}"', WRK_DONE_LUA]))
    return script


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="assertion vs raw-number enrichment")
    parser.add_argument("--quick", action="store_true", help="3 rounds x 3 s")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    for tool in ("wrk", "nginx", "curl", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} not found; run `make debs`", file=sys.stderr)
            return 2
    procs = Procs()

    def on_term(signum: int, frame: FrameType | None) -> None:
        procs.stop_all()
        sys.exit(130)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="lw-bench-claims-"))
    try:
        return run(procs, tmp, rounds, seconds, args)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def run(procs: Procs, tmp: Path, rounds: int, seconds: float, args: argparse.Namespace) -> int:
    sig_seconds = 1.0 if args.quick else 3.0
    signing = {alg: signatures_per_second(alg, sig_seconds) for alg in ("ES256", "EdDSA")}
    for alg, (signed, verified) in signing.items():
        print(f"{alg}: {signed:,.0f} assertions signed/s, {verified:,.0f} verified/s")

    origin_port = start_nginx(procs, tmp)
    proxy_port, web_port = start_gateway(procs, tmp, f"127.0.0.1:{origin_port}")
    proxy = f"http://127.0.0.1:{proxy_port}"
    results = checks(proxy, web_port)
    for what, ok, detail in results:
        print(f"[{'ok' if ok else 'FAIL'}] {what} ({detail})")
    if not all(ok for _, ok, _ in results):
        return 1
    scripts = {"raw": lua("partner.test", tmp / "raw.lua"),
               "assertion": lua("assert.test", tmp / "assertion.lua")}
    for script in scripts.values():  # warm-up: pools, caches, the ledger file
        run_wrk(procs, proxy, script, seconds=1, connections=50, threads=1, cpu=CLIENT_CPU)
    measured: dict[str, list[WrkResult]] = {name: [] for name in scripts}
    for i in range(rounds):
        for name, script in scripts.items():
            result = run_wrk(procs, proxy, script, seconds=seconds, connections=50, threads=1,
                             cpu=CLIENT_CPU)
            measured[name].append(result)
            print(f"round {i + 1}/{rounds} {name:<9} {result.rps:8,.0f} req/s "
                  f"p50 {result.p50_us / 1000:.2f} ms p99 {result.p99_us / 1000:.2f} ms "
                  f"errors {result.error_count}")
    ratio = median([a.rps / b.rps for a, b in zip(measured["assertion"], measured["raw"],
                                                  strict=True) if b.rps])
    p50 = {n: median([r.p50_us for r in rs]) for n, rs in measured.items()}
    rps = {n: median([r.rps for r in rs]) for n, rs in measured.items()}
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"assertion/raw throughput ratio {ratio:.2f} ({verdict} the {TARGET:.2f} target); "
          f"added p50 latency {(p50['assertion'] - p50['raw']) / 1000:.3f} ms")
    errors = sum(r.error_count for rs in measured.values() for r in rs)
    write_report(signing, measured, rps, p50, ratio, rounds, seconds, results, errors)
    return 0 if errors == 0 else 1


def write_report(signing: dict[str, tuple[float, float]], measured: dict[str, list[WrkResult]],
                 rps: dict[str, float], p50: dict[str, float], ratio: float, rounds: int,
                 seconds: float, checks_done: list[tuple[str, bool, str]], errors: int) -> None:
    lines = [
        "# Claims benchmark: signed assertion vs raw-number header",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} with "
        f"`.venv/bin/python bench/claims.py{' --quick' if seconds < 10 else ''}`.",
        "",
        "## Signatures (in process, one core)",
        "",
        "| algorithm | assertions rendered/s | verified/s (kit) |",
        "|---|---:|---:|",
        *[f"| {alg} | {s:,.0f} | {v:,.0f} |" for alg, (s, v) in signing.items()],
        "",
        "Rendered = the whole claim: pairwise pseudonym, claims set, JSON, compact JWS "
        "(RFC 6979 deterministic ECDSA for ES256).",
        "",
        "## Gateway throughput (wrk → linewarden → nginx)",
        "",
        "| scenario | median req/s | median p50 | median p99 |",
        "|---|---:|---:|---:|",
        *[f"| {n} | {rps[n]:,.0f} | {p50[n] / 1000:.2f} ms | "
          f"{median([r.p99_us for r in rs]) / 1000:.2f} ms |" for n, rs in measured.items()],
        "",
        f"**assertion / raw throughput: {ratio:.2f}** (paired median over {rounds} interleaved "
        f"rounds of {seconds:g} s; target ≥ {TARGET:.2f}). Added latency per enriched "
        f"request (p50): {(p50['assertion'] - p50['raw']) / 1000:.3f} ms. "
        f"wrk errors: {errors}.",
        "",
        "Rounds (req/s): " + "; ".join(
            f"{n}: " + ", ".join(f"{r.rps:,.0f}" for r in rs) for n, rs in measured.items()),
        "",
        "## Setup",
        "",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs). Gateway and nginx (1 worker) "
        "pinned to CPU 0, wrk (1 thread, 50 keep-alive connections) to CPU 1.",
        f"- {tool_version(['wrk', '--version'])}; {tool_version(['nginx', '-v'])}.",
        "- Both partners' disclosures go to the same SQLite ledger; the raw scenario sends "
        "`X-Up-Calling-Line-Id`, the assertion scenario an ES256 JWS with `sub` and "
        "`age_over_18` (~490 bytes).",
        "- Pre-flight checks: " + "; ".join(f"{w} [{'ok' if ok else 'FAIL'}]"
                                            for w, ok, _ in checks_done),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
