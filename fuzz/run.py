"""Coverage-guided fuzzing (atheris, libFuzzer) of the decision core's request path and of
RADIUS packet handling, for a bounded time.

    .venv/bin/python fuzz/run.py [--seconds 60] [--target decide|radius|all]

Each target runs in its own process with `-max_total_time`; seeds are the hostile corpus
(tests/hostile) for `decide` and real Accounting-Requests for `radius`. A crash or a
broken oracle (fuzz/targets.py) stops that target, writes the input to
fuzz/findings/<target>-crash-*, and makes this script exit 1.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FINDINGS = HERE / "findings"


def decide_seeds() -> list[bytes]:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "hostile")]
    from corpus import all_cases

    return [b"\x01" + b"".join(c.render("mseed", 8080)) for c in all_cases()]


def radius_seeds() -> list[bytes]:
    from pyrad.packet import AcctPacket

    from linewarden.bindings.radius import default_dictionary

    seeds = []
    dictionary = default_dictionary()
    for status in ("Start", "Interim-Update", "Stop", "Accounting-On"):
        pkt = AcctPacket(secret=b"fuzz-secret", dict=dictionary, id=7)
        pkt["Acct-Status-Type"] = status
        pkt["NAS-IP-Address"] = "10.0.0.1"
        if status != "Accounting-On":
            pkt["Framed-IP-Address"] = "10.1.2.3"
            pkt["Acct-Session-Id"] = "s1"
            pkt["Calling-Station-Id"] = "447400900123"
            pkt["3GPP-IMSI"] = "234100000000001"
            pkt["3GPP-RAT-Type"] = 6
        raw = pkt.RequestPacket()
        seeds += [b"\x01" + raw, b"\x03" + raw, b"\x00" + raw]
    return seeds


def one(target: str, seconds: int) -> int:
    import atheris

    with atheris.instrument_imports():
        import targets
    fn = {"decide": targets.decide_target, "radius": targets.radius_target}[target]
    seeds = {"decide": decide_seeds, "radius": radius_seeds}[target]()
    corpus = Path(tempfile.mkdtemp(prefix=f"lw-fuzz-{target}-"))
    for seed in seeds:
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    FINDINGS.mkdir(exist_ok=True)
    argv = [sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-max_len=8192",
            f"-artifact_prefix={FINDINGS}/{target}-", "-print_final_stats=1",
            "-rss_limit_mb=2048", "-timeout=10"]
    atheris.Setup(argv, fn)
    atheris.Fuzz()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="per target")
    parser.add_argument("--target", default="all", choices=["all", "decide", "radius"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sys.path.insert(0, str(HERE))
        return one(args.one, args.seconds)
    failed = []
    for target in (["decide", "radius"] if args.target == "all" else [args.target]):
        started = time.monotonic()
        done = subprocess.run([sys.executable, __file__, "--one", target, "--seconds",
                               str(args.seconds)], capture_output=True, text=True,
                              timeout=args.seconds + 600, check=False)
        stats = [line for line in done.stderr.splitlines()
                 if line.startswith(("stat::number_of_executed_units", "stat::peak_rss_mb"))
                 or ("cov:" in line and "DONE" in line)]
        print(f"fuzz {target}: exit {done.returncode} after {time.monotonic() - started:.0f} s; "
              + "; ".join(s.strip() for s in stats), flush=True)
        if done.returncode != 0:
            failed.append(target)
            print(done.stderr[-4000:], flush=True)
    print(f"fuzz: {'FAIL ' + ', '.join(failed) if failed else 'no findings'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
