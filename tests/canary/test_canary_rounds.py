"""The canary's judgement and its alerts, without sockets: what counts as a leak at a
control site, what counts as degraded at a partner, and what an alert may carry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from linewarden import alerts
from linewarden.alerts import Alerter
from linewarden.canary import (
    Canary,
    CanarySettings,
    ProbeResponse,
    ProbeResult,
    RoundResult,
    judge_control,
    judge_expect,
    probe_binding,
    probe_secrets,
)
from linewarden.claims import Secrets
from linewarden.decide import Rules, Settings
from linewarden.killswitch import KillSwitch
from linewarden.metrics import Metrics
from linewarden.policy.load import parse_policy

PROBE = probe_binding("127.0.0.9", "447400900999")
POLICY = """
[[partners]]
id = "billing"
purpose = "billing"
hosts = ["billing.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"

[[partners]]
id = "age"
purpose = "age_verification"
hosts = ["age.test"]
[partners.headers]
X-Subscriber-Pseudonym = "pseudonym"
X-Operator = "operator"
"""


@pytest.fixture(scope="module")
def rules() -> Rules:
    policy, _ = parse_policy(POLICY)
    secrets = Secrets(pseudonym_secret=b"p" * 32, ledger_key=b"l" * 32, operator="234-10")
    return Rules(policy, Settings(secrets=secrets))


def _checker(headers: list[tuple[str, str]], status: int = 200) -> ProbeResponse:
    body = {"headers": [{"name": n, "value": v, "flagged": False} for n, v in headers]}
    return ProbeResponse(status, json.dumps(body).encode())


CLEAN = [("host", "canary.linewarden.invalid"), ("user-agent", "linewarden-canary/1"),
         ("accept", "application/json"), ("via", "1.1 linewarden")]


def test_clean_control_is_ok(rules: Rules) -> None:
    assert judge_control("u", _checker(CLEAN), rules, PROBE).outcome == "ok"


@pytest.mark.parametrize("extra", [
    ("X-Up-Calling-Line-Id", "447400900999"),  # the O2 header
    ("X-Msisdn", "447400900999"),
    ("X-Anything", "+44 7400 900999"),  # the number under any name
    ("X-Subscriber-Pseudonym", "not-the-probes-but-a-partner-header-name"),
    ("X-Operator", "234-10"),  # any partner header name at a non-partner
    ("X-UIDH", "opaque-tracking-id"),
])
def test_identity_at_a_control_site_is_a_leak(rules: Rules, extra: tuple[str, str]) -> None:
    result = judge_control("u", _checker([*CLEAN, extra]), rules, PROBE)
    assert result.outcome == "leak"
    assert "447400900999" not in result.detail  # names and kinds only


def test_probe_pseudonym_under_an_innocent_name_is_a_leak(rules: Rules) -> None:
    pseudonym = probe_secrets(rules, PROBE)[2]
    result = judge_control("u", _checker([*CLEAN, ("X-Ref", pseudonym)]), rules, PROBE)
    assert result.outcome == "leak" and "pseudonym" in result.detail


@pytest.mark.parametrize("response", [ProbeResponse(502, b"bad gateway"),
                                      ProbeResponse(200, b"<html>"),
                                      ProbeResponse(200, b'{"headers": 5}')])
def test_unusable_control_answer_is_an_error_not_ok(rules: Rules,
                                                    response: ProbeResponse) -> None:
    assert judge_control("u", response, rules, PROBE).outcome == "error"


def test_expected_claims(rules: Rules) -> None:
    secrets = rules.settings.secrets
    from linewarden.claims import pseudonym

    good = [*CLEAN, ("X-Subscriber-Pseudonym", pseudonym(secrets, "age", PROBE.msisdn)),
            ("X-Operator", "234-10")]
    assert judge_expect("age", "u", _checker(good), rules, PROBE).outcome == "ok"
    missing = judge_expect("age", "u", _checker(CLEAN), rules, PROBE)
    assert missing.outcome == "degraded" and "X-Subscriber-Pseudonym" in missing.detail
    wrong = [*CLEAN, ("X-Subscriber-Pseudonym", "someone-else"), ("X-Operator", "234-10")]
    assert "unexpected value" in judge_expect("age", "u", _checker(wrong), rules,
                                              PROBE).detail
    assert judge_expect("nope", "u", _checker(good), rules, PROBE).outcome == "degraded"


def test_round_outcome_and_exit_code() -> None:
    def round_of(*outcomes: str) -> RoundResult:
        return RoundResult(0.0, 0.0, tuple(ProbeResult("u", "control", o, "d")  # type: ignore[arg-type]
                                           for o in outcomes))

    assert round_of("ok", "ok").exit_code == 0
    assert round_of("ok", "degraded", "leak").outcome == "leak"
    assert round_of("leak").exit_code == 1
    assert round_of("degraded").exit_code == 2 and round_of("error", "ok").exit_code == 2


class _FakeCanary(Canary):
    def __init__(self, outcomes: list[str], switch: KillSwitch, alerter: Alerter) -> None:
        settings = CanarySettings(proxy=("127.0.0.1", 9), probe=PROBE)
        super().__init__(settings, lambda: None, switch=switch,  # type: ignore[arg-type,return-value]
                         alerter=alerter, metrics=Metrics())
        self.outcomes = outcomes

    async def run_round(self) -> RoundResult:
        outcome = self.outcomes.pop(0)
        return RoundResult(0.0, 0.0, (ProbeResult("http://c/", "control", outcome,  # type: ignore[arg-type]
                                                  "x-msisdn"),))


def test_leak_trips_once_and_alert_holds_until_a_person_clears(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[str, str]]:
        switch = KillSwitch(tmp_path)
        alerter = Alerter()
        fired: list[tuple[str, str]] = []
        original = alerter._emit

        def spy(alert: alerts.Alert, level: int) -> None:
            fired.append((alert.kind, alert.status))
            original(alert, level)

        alerter._emit = spy  # type: ignore[method-assign]
        canary = _FakeCanary(["ok", "leak", "ok", "ok", "ok", "degraded", "ok"], switch,
                             alerter)
        await canary.react(await canary.run_round())  # ok
        await canary.react(await canary.run_round())  # leak: trip + alert
        assert switch.tripped and switch.state.by == "canary"
        await canary.react(await canary.run_round())  # contained, still tripped: held
        assert "leak" in alerter.active
        await switch.clear("fixed", by="ops")
        await canary.react(await canary.run_round())  # cleared and ok: resolved
        await canary.react(await canary.run_round())
        await canary.react(await canary.run_round())  # degraded: alert, no trip
        assert not switch.tripped
        await canary.react(await canary.run_round())
        return fired

    assert asyncio.run(scenario()) == [("leak", "firing"), ("leak", "resolved"),
                                       ("degraded", "firing"), ("degraded", "resolved")]


def test_webhook_retries_with_backoff_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [0, 503, 500, 204]
    sent: list[bytes] = []

    def fake_post(url: str, payload: bytes) -> int:
        sent.append(payload)
        return answers.pop(0)

    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(alerts, "_post", fake_post)
    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    alerter = Alerter(webhook="http://hook.test/", metrics=Metrics())
    body: dict[str, Any] = alerts.Alert("leak", "firing", "saw 447400900123",
                                        ("x 447400900123",)).to_json()
    assert asyncio.run(alerter.deliver(body)) is True
    assert len(sent) == 4 and sleeps == [0.5, 1.0, 2.0]
    assert all(b"447400900123" not in payload for payload in sent)

    answers[:] = [400]
    assert asyncio.run(alerter.deliver(body)) is False  # a 4xx is final
    answers[:] = [503] * alerts.WEBHOOK_ATTEMPTS
    sleeps.clear()
    assert asyncio.run(alerter.deliver(body)) is False
    assert sleeps == [0.5, 1.0, 2.0, 4.0]
