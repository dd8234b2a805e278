"""The soak (bench/soak.py) for one minute, in the suite: mixed traffic at half of the
measured capacity, reloads and RADIUS churn, with the invariants checked on every
response. The ten-minute run is `make soak`."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from lwtest import ROOT


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench/soak.py"), "--minutes", "1",
                           "--interval", "10", "--json", str(out)], capture_output=True,
                          text=True, timeout=240, check=False)
    print(done.stdout)
    assert out.exists(), done.stdout + done.stderr
    figures: dict[str, Any] = json.loads(out.read_text())
    figures["stdout"] = done.stdout
    return figures


def test_soak_serves_the_mix_and_recovers_nothing_lost(soak: dict[str, Any]) -> None:
    assert "soak: capacity" in soak["stdout"] and "p99 ms" in soak["stdout"]
    assert len(soak["rows"]) >= 5
    assert soak["requests"] >= 1000
    assert soak["errors"] <= max(3, soak["requests"] // 1000)
    assert soak["radius"]["ok"] >= 20 and soak["radius"]["reloads"] >= 4
    assert max(r["fds"] for r in soak["rows"]) - min(r["fds"] for r in soak["rows"]) < 50
    assert "the gateway died" not in soak["verdicts"]
    assert not any("raw number" in v for v in soak["verdicts"])


def test_soak_no_invariant_breaks(soak: dict[str, Any]) -> None:
    # A partner answer without identity is fail-closed only if the gateway counted it as
    # withheld; the soak turns any uncounted one into a break.
    assert soak["breaks"] == 0, soak["break_samples"]
    assert soak["withheld_seen"] <= soak["withheld_counted"]


def test_soak_rss_flat_after_warm_up(soak: dict[str, Any]) -> None:
    assert soak["rss_growth"] <= 0.10, [r["rss_kib"] for r in soak["rows"]]
