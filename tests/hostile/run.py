"""Send the hostile corpus to a running gateway and judge every case on what crossed the
wire: the responses the client got, and the raw bytes the echo origin received.

    .venv/bin/python tests/hostile/run.py [--only SUBSTRING] [--verbose]

starts its own echo origin and `linewarden serve`, prints `hostile: N passed, M failed`
and a table by category and group, and exits 1 if anything failed. The tests import
`start_hostile_gateway` and `run_corpus` from here.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent, HERE.parent / "gateway"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from corpus import (  # noqa: E402
    EXPECTED_VALUES,
    EXTRA_HOSTS,
    EXTRA_PARTNERS,
    FORGED_B,
    PARTNER_HEADERS,
    SMUGGLED,
    Case,
    all_cases,
)
from wire import RawClient, Response, marker  # noqa: E402

from lwtest import (  # noqa: E402
    DEFAULT_PARTNERS,
    Gateway,
    Origin,
    Received,
    gateway_config,
    launch_serve,
)

# Bounds per case: a gateway that neither answers nor closes costs at most this.
READ_TIMEOUT = 3.0
SEGMENT_PAUSE = 0.1  # between the segments of a keep-alive case (after the first answer)

# ---------------------------------------------------------------- reference loose match
# Written apart from linewarden.names on purpose (STYLE.md: a differential reference):
# PRODUCT.md's rule, spelled as a regular expression over the raw name.
_REFERENCE_TEXT = (
        "x-up-calling-line-id x-msisdn msisdn x-nokia-msisdn x-wap-msisdn x-h3g-msisdn "
        "x-up-subno x-imsi x-nokia-imsi x-uidh x-acr x-vf-acr x-hts-clid x-nx-clid "
        "x-wap-3gpp-msisdn x-wap-3gpp-imsi x-wap-network-client-msisdn "
        "user-identity-forward-msisdn x-msp-msisdn x-wte-msisdn x-fh-msisdn mscope-msisdn "
        "i-msisdn x-bam-msisdn x-up-vodacomgw-subid x-jinny-cid x-orange-id x-access-subnym "
        "x-internet-msisdn x-msisdn-alias x-h3g-party-id x-nokia-alias x-subscriber-id "
        "x-forwarded-msisdn x-imei x-att-deviceid")
_REFERENCE_NAMES = {re.sub(r"[^a-z0-9]", "", n) for n in _REFERENCE_TEXT.split(" ")}
_REFERENCE_SUFFIX = re.compile(
    r"(callinglineid|callingline|msisdn|subno|subid|subscriberid|imsi|imei|clid|uidh|acr)$")


def looks_like_identity(name: str) -> bool:
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    return squashed in _REFERENCE_NAMES or bool(_REFERENCE_SUFFIX.search(squashed))


# ---------------------------------------------------------------- the gateway

def start_hostile_gateway(directory: Path, origin_port: int, *, proxy_extra: str = "",
                          extra: str = "") -> Gateway:
    """`linewarden serve` as lwtest configures it, plus the corpus's hosts and partners."""
    resolve = "".join(f'"{h}" = "127.0.0.1:{origin_port}"\n' for h in EXTRA_HOSTS)

    def write(proxy_port: int, web_port: int) -> Path:
        text = gateway_config(directory, origin_port, proxy_port=proxy_port,
                              web_port=web_port, proxy_extra=proxy_extra, extra=extra,
                              partners=DEFAULT_PARTNERS + EXTRA_PARTNERS)
        text = text.replace("[proxy.resolve]\n", "[proxy.resolve]\n" + resolve, 1)
        config = directory / "linewarden.toml"
        config.write_text(text)
        return config

    proc, proxy_port, web_port, config = launch_serve(directory, write)
    return Gateway(proc, proxy_port, web_port, directory, config)


# ---------------------------------------------------------------- one case

@dataclass
class Result:
    case: Case
    marker: str
    ok: bool
    detail: str = ""


def _exchange(port: int, case: Case, segments: tuple[bytes, ...]
              ) -> tuple[list[Response], bool]:
    head_request = segments[0].startswith(b"HEAD ")
    responses: list[Response] = []
    with RawClient(port, source=case.source, timeout=READ_TIMEOUT) as client:
        for i, segment in enumerate(segments):
            try:
                client.send(segment)
            except OSError:
                break
            if i < len(segments) - 1:
                try:
                    responses.append(client.response(head_request=head_request))
                except (EOFError, OSError):
                    break
                time.sleep(SEGMENT_PAUSE)
        while True:
            try:
                resp = client.response(head_request=head_request)
            except (EOFError, OSError, ValueError, IndexError):
                break
            if 100 <= resp.status < 200:
                continue
            responses.append(resp)
            if resp.header(b"connection") == b"close":
                break
        try:
            closed = client.at_eof(wait=READ_TIMEOUT)
        except OSError:
            closed = True
    return responses, closed


def check_record(rec: Received, partner: str | None) -> str:
    """'' if the origin's view of one request is clean; else what is wrong."""
    if FORGED_B in rec.raw:
        return f"forged number reached the origin in {rec.target}"
    if SMUGGLED in rec.target:
        return f"smuggled request reached the origin: {rec.target}"
    hosts = rec.values("host")
    if len(hosts) != 1:
        return f"origin saw {len(hosts)} Host headers"
    allowed = PARTNER_HEADERS.get(partner or "", ())
    every_partner_header = {h for names in PARTNER_HEADERS.values() for h in names}
    seen: Counter[str] = Counter()
    for name, value in rec.headers:
        lname = name.lower()
        if looks_like_identity(lname) or lname in every_partner_header:
            if lname not in allowed:
                return f"identity-looking header {name!r} reached the origin ({rec.target})"
            seen[lname] += 1
            want = EXPECTED_VALUES.get(partner or "", {}).get(lname)
            if want is not None and value != want:
                return f"{name} carried {value!r}, not the bound subscriber's claim"
    if partner is not None and any(seen[h] != 1 for h in allowed):
        return f"partner {partner} got its headers {dict(seen)} times (want each once)"
    return ""


def judge(case: Case, responses: list[Response], closed: bool,
          received: list[Received]) -> str:
    statuses = [r.status for r in responses]
    before = sum(1 for s in statuses if 200 <= s < 300)
    refused = [s for s in statuses if s >= 400]
    outcome = case.outcome
    if outcome == "either":
        outcome = "reject" if refused else "clean"
    elif outcome == "safe":
        if refused:
            return "" if not received else f"refused ({refused}) yet the origin got a request"
        outcome = "clean"
    if outcome == "reject":
        if len(refused) != 1 or not 400 <= refused[0] < 500 or statuses[-1] != refused[0]:
            return f"want one 4xx last, got {statuses}"
        if not closed:
            return "connection left open after the refusal"
        if len(received) != before:
            return f"origin got {len(received)} requests, want {before} (those before)"
        for rec in received:
            problem = check_record(rec, None)
            if problem:
                return problem
        return ""
    want = len(case.partners)
    if refused or before != want:
        return f"want {want} x 2xx, got {statuses}"
    if len(received) != want:
        return f"origin got {len(received)} requests, want {want}"
    ordered = sorted(received, key=lambda r: r.target)
    for rec, partner in zip(ordered, case.partners, strict=True):
        problem = check_record(rec, partner)
        if problem:
            return problem
    return ""


def run_case(port: int, origin: Origin, case: Case) -> Result:
    m = marker()
    try:
        responses, closed = _exchange(port, case, case.render(m, origin.port))
    except OSError as exc:
        return Result(case, m, False, f"client error: {exc}")
    problem = judge(case, responses, closed, origin.with_marker(m))
    return Result(case, m, not problem, problem)


def run_corpus(port: int, origin: Origin, cases: list[Case]) -> list[Result]:
    results = [run_case(port, origin, case) for case in cases]
    # Late arrivals: a request forwarded after its client was answered still counts.
    time.sleep(0.3)
    smuggled = [r for r in origin.requests if SMUGGLED in r.target]
    for result in results:
        if not result.ok:
            continue
        late = origin.with_marker(result.marker)
        if any(SMUGGLED in r.target or FORGED_B in r.raw for r in late) or \
                (result.case.outcome == "reject" and len(late) > 1):
            result.ok, result.detail = False, "late or smuggled request at the origin"
    if smuggled:
        for result in results:
            if any(result.marker in r.target for r in smuggled):
                result.ok, result.detail = False, "smuggled request at the origin"
    return results


def table(results: list[Result]) -> str:
    rows: dict[tuple[str, str], list[int]] = {}
    for r in results:
        row = rows.setdefault((r.case.category, r.case.group), [0, 0])
        row[0 if r.ok else 1] += 1
    lines = [f"{'category':<16} {'group':<18} {'passed':>6} {'failed':>6}"]
    totals: dict[str, list[int]] = {}
    for (category, group), (ok, bad) in sorted(rows.items()):
        lines.append(f"{category:<16} {group:<18} {ok:>6} {bad:>6}")
        t = totals.setdefault(category, [0, 0])
        t[0] += ok
        t[1] += bad
    lines.append("-" * 49)
    for category, (ok, bad) in sorted(totals.items()):
        lines.append(f"{category:<16} {'(all)':<18} {ok:>6} {bad:>6}")
    return "\n".join(lines)


def summary(results: list[Result]) -> str:
    passed = sum(r.ok for r in results)
    return f"hostile: {passed} passed, {len(results) - passed} failed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run cases whose name contains this")
    parser.add_argument("--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    origin = Origin().start()
    with tempfile.TemporaryDirectory(prefix="lw-hostile-") as tmp:
        gateway = start_hostile_gateway(Path(tmp), origin.port)
        try:
            cases = [c for c in all_cases() if args.only in c.name]
            started = time.monotonic()
            results = run_corpus(gateway.proxy_port, origin, cases)
            elapsed = time.monotonic() - started
            alive = gateway.alive()
        finally:
            gateway.stop()
            origin.stop()
    for r in results:
        if args.verbose or not r.ok:
            print(f"{'PASS' if r.ok else 'FAIL'} [{r.case.category}/{r.case.group}] "
                  f"{r.case.name!r}: {r.detail}")
    print(table(results))
    print(f"({len(results)} cases in {elapsed:.1f} s; gateway alive after: {alive})")
    print(summary(results))
    return 0 if all(r.ok for r in results) and alive else 1


if __name__ == "__main__":
    sys.exit(main())
