"""The whole hostile corpus against one real gateway (issue 9, item 1): every case is a
test of its own, judged on the raw bytes the echo origin read off its socket."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus import FORGED_B, SMUGGLED, Case, all_cases
from run import Result, run_case, start_hostile_gateway

from lwtest import ROOT, Gateway, Origin

CASES = all_cases()
_results: list[Result] = []


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[Gateway]:
    gw = start_hostile_gateway(tmp_path_factory.mktemp("hostile"), origin.port)
    try:
        yield gw
    finally:
        gw.stop()


def test_corpus_has_what_issue_9_asks_for() -> None:
    by_category = Counter(c.category for c in CASES)
    assert by_category["forged-identity"] >= 150
    assert by_category["framing"] >= 50
    assert by_category["destination"] >= 60  # issue 15: every spelling, every mode
    groups = {c.group for c in CASES}
    for needed in ("spelling", "trailers", "keep-alive", "pipelined", "obs-fold",
                   "value-bytes", "http-1.0", "cl-te", "te-te", "content-length", "chunk",
                   "size", "look-alike", "ip-literal", "spelling", "path-scope"):
        assert needed in groups, needed
    modes = {b"GET /" in p[:6] or b"POST /" in p[:7] for c in CASES for p in c.payload}
    assert modes == {True, False}  # both transparent (origin-form) and absolute-form


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_hostile_case(hostile: Gateway, origin: Origin, case: Case) -> None:
    result = run_case(hostile.proxy_port, origin, case)
    _results.append(result)
    assert result.ok, f"[{case.category}/{case.group}] {result.detail}"


def test_after_the_corpus_nothing_arrived_late(hostile: Gateway, origin: Origin) -> None:
    """Runs after every case (file order): a request forwarded after its client was
    answered would show up here, and the gateway must still serve."""
    assert len(_results) == len(CASES)
    markers = {r.marker for r in _results}
    ours = [r for r in origin.requests if r.target.lstrip("/")[:13] in markers]
    assert ours, "no corpus request reached the origin at all"
    assert [r.target for r in ours if SMUGGLED in r.target] == []
    assert [r.target for r in ours if FORGED_B in r.raw] == []
    assert hostile.alive()
    assert FORGED_B.decode() not in hostile.log()  # invariant 5 for the forged number too
    assert "linewarden" in hostile.metrics()


def test_runner_prints_summary_and_table(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tests/hostile/run.py"), "--only",
                           "suffix:"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hostile: 16 passed, 0 failed" in done.stdout
    assert "forged-identity  suffix" in done.stdout
