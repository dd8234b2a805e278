"""deploy/prometheus and deploy/grafana against promtool and against the metric names a
running gateway exports (read from its /metrics, not from the source)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lwtest import ROOT, Gateway, free_port

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "linewarden.json"
METRIC = re.compile(r"\blinewarden_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                             "_created"),
            "gauge": ("",), "summary": ("_sum", "_count")}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed (`make debs` installs the prometheus package)")
    return path


def test_promtool_check_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", "linewarden.rules.yml"],
                            cwd=PROMETHEUS, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = subprocess.run([promtool(), "test", "rules", "linewarden.rules.test.yml"],
                            cwd=PROMETHEUS, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """The unit tests have teeth: with the leak rule's expression inverted they fail."""
    for name in ("linewarden.rules.yml", "linewarden.rules.test.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    rules = tmp_path / "linewarden.rules.yml"
    rules.write_text(rules.read_text().replace('{kind="leak"} == 1', '{kind="leak"} == 0'))
    result = subprocess.run([promtool(), "test", "rules", "linewarden.rules.test.yml"],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "LinewardenLeakDetected" in result.stdout + result.stderr


def exported_names(metrics: str) -> set[str]:
    """Every series name /metrics can carry: families from # TYPE lines with their
    suffixes, and every sample name seen."""
    names: set[str] = set()
    for line in metrics.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names |= {base + suffix for suffix in SUFFIXES.get(kind, ("",))}
            names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """A gateway with every part that exports metrics: RADIUS, the canary, the ledger, a
    PROXY protocol listener."""
    from lwtest import Origin, start_gateway

    origin = Origin().start()
    gw: Gateway | None = None
    try:
        gw = start_gateway(
            tmp_path_factory.mktemp("metrics"), origin.port,
            proxy_extra='trusted_proxies = ["127.0.0.7/32"]',
            extra=f'[radius]\nlisten = "127.0.0.1:{free_port()}"\nsecret = "testing123"\n'
                  '[[radius.clients]]\naddress = "127.0.0.1"\n'
                  "[canary]\ninterval = 60.0\n")
        return exported_names(gw.metrics())
    finally:
        if gw is not None:
            gw.stop()
        origin.stop()


def used_names(texts: list[str]) -> set[str]:
    return {m for text in texts for m in METRIC.findall(text)}


def rule_exprs() -> list[str]:
    text = (PROMETHEUS / "linewarden.rules.yml").read_text()
    return [line.split("expr:", 1)[1] for line in text.splitlines() if "expr:" in line]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_rules_name_only_exported_metrics(exported: set[str]) -> None:
    used = used_names(rule_exprs())
    assert len(used) >= 9
    assert used - exported == set()


def test_dashboard_names_only_exported_metrics(exported: set[str]) -> None:
    used = used_names(dashboard_exprs())
    assert used - exported == set()
    # What the issue asks the dashboard to show.
    for needed in ("linewarden_requests_total", "linewarden_disclosures_total",
                   "linewarden_withheld_disclosures_total", "linewarden_request_seconds_bucket",
                   "linewarden_bindings", "linewarden_ledger_rows_committed_total"):
        assert needed in used, needed


def test_a_misspelt_metric_would_be_caught(exported: set[str]) -> None:
    assert "linewarden_request_total" not in exported  # singular: not a name we export
    assert "linewarden_requests_total" in exported


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["targets"], panel
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables or var.startswith("__"), var


def test_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the units as shipped, with ExecStart pointed at this
    checkout's linewarden (verify checks the binary exists)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    units = ROOT / "deploy" / "systemd"
    names = ["linewarden.service", "linewarden-purge.service", "linewarden-purge.timer"]
    for name in names:
        text = (units / name).read_text().replace("/opt/linewarden/.venv", str(ROOT / ".venv"))
        (tmp_path / name).write_text(text)
    result = subprocess.run([analyze, "verify", *names], cwd=tmp_path, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0 and "System has not been booted with systemd" in result.stderr:
        pytest.skip(result.stderr.strip())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either
    # And it has teeth: a relative ExecStart is refused.
    bad = tmp_path / "bad.service"
    bad.write_text((tmp_path / "linewarden.service").read_text().replace(
        f"ExecStart={ROOT / '.venv'}/bin/linewarden", "ExecStart=linewarden-nowhere"))
    refused = subprocess.run([analyze, "verify", "bad.service"], cwd=tmp_path,
                             capture_output=True, text=True, check=False)
    assert refused.returncode != 0


def test_systemd_unit_hardening() -> None:
    text = (ROOT / "deploy" / "systemd" / "linewarden.service").read_text()
    for line in ("User=linewarden", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "StateDirectory=linewarden", "CapabilityBoundingSet=\n",
                 "ExecReload=/bin/kill -HUP $MAINPID", "UMask=0077"):
        assert line in text, line
    dropin = (ROOT / "deploy" / "systemd" / "linewarden.service.d" / "tproxy.conf").read_text()
    assert "CapabilityBoundingSet=CAP_NET_ADMIN\n" in dropin
