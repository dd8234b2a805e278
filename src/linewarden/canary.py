"""The canary: a probe subscriber browsing through the gateway, so a leak is seen in seconds.

O2 leaked every subscriber's number for 15 days in 2012 and learned of it from a subscriber's
header-echo page. The canary is that subscriber, automated. Every round:

  1. for each control URL (default: this gateway's own checker under a reserved `.invalid`
     host, reached *through the proxy* like any non-partner site): send a request through
     the proxy from the probe address, read the checker JSON the control site returns, and
     look for identity. Any identity there is a LEAK -> the kill switch trips;
  2. for each partner's expect URL: the partner's claims must arrive; missing or wrong ones
     are DEGRADED (an alert, never a trip). Skipped while the kill switch is tripped, since
     withheld claims are then the point.

A control site counts as leaking when, in the headers it reports having received:
  * `checker.analyse()` (the same analysis subscribers see) finds any identity, with the
    gateway's identity names, which include every header name a partner is rendered in; or
  * the probe's own number or any of its per-partner pseudonyms appears anywhere in the body.
The probe is a reserved binding (`[canary] probe_ip` -> `probe_msisdn`), a test number that
is nobody's, so its disclosures (to expect URLs) are real ledger rows about no real person.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httptools

from . import tasks
from .alerts import Alerter
from .bindings import Binding
from .checker import analyse
from .claims import pseudonym, render
from .config import Config
from .decide import Rules
from .hostport import connect_address
from .killswitch import KillSwitch
from .metrics import Metrics

log = logging.getLogger("linewarden.canary")

# The default control site: the gateway's own checker, under a name that can never be a real
# host (RFC 6761 §6.4 reserves `.invalid`) and so never a partner. The gateway resolves it to
# its own web listener (serve.py adds it to the resolve map).
CONTROL_HOST = "canary.linewarden.invalid"
DEFAULT_CONTROL_URL = f"http://{CONTROL_HOST}/api/check"
USER_AGENT = "linewarden-canary/1"

# The checker's JSON for one request is a few KiB; a megabyte means the URL is not a checker.
MAX_RESPONSE_BYTES = 1 << 20
# One probe request may take this long (capped by the round interval, so rounds never pile up).
DEFAULT_PROBE_TIMEOUT = 3.0

Outcome = Literal["ok", "leak", "degraded", "error"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "leak", "degraded", "error")
EXIT_CODES: dict[Outcome, int] = {"ok": 0, "leak": 1, "degraded": 2, "error": 2}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    url: str
    role: Literal["control", "expect"]
    outcome: Outcome
    detail: str  # header names and finding kinds only: never a value, never the number
    partner: str = ""


@dataclass(frozen=True, slots=True)
class RoundResult:
    started: float
    seconds: float
    probes: tuple[ProbeResult, ...]
    notes: tuple[str, ...] = ()

    @property
    def outcome(self) -> Outcome:
        found = {p.outcome for p in self.probes}
        worst: tuple[Outcome, ...] = ("leak", "error", "degraded")
        return next((outcome for outcome in worst if outcome in found), "ok")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def problems(self) -> tuple[str, ...]:
        return tuple(f"{p.url}: {p.detail}" for p in self.probes if p.outcome != "ok")

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "started": self.started,
                "seconds": round(self.seconds, 4), "notes": list(self.notes),
                "probes": [{"url": p.url, "role": p.role, "partner": p.partner or None,
                            "outcome": p.outcome, "detail": p.detail} for p in self.probes]}


# ---------------------------------------------------------------- one request via the proxy

@dataclass
class ProbeResponse:
    status: int
    body: bytes


class _ResponseReader:
    """httptools callbacks: the status and the (de-chunked) body."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > MAX_RESPONSE_BYTES:
            raise ValueError("response larger than 1 MiB: not a checker")

    def on_message_complete(self) -> None:
        self.complete = True


async def fetch_via_proxy(proxy: tuple[str, int], source_ip: str, url: str,
                          timeout: float) -> ProbeResponse:
    """GET `url` through the forward proxy, from `source_ip`, exactly as a subscriber would."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url}: only http:// URLs can be probed (https is a blind tunnel)")
    request = (f"GET {url} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: {USER_AGENT}\r\n"
               "Accept: application/json\r\nConnection: close\r\n\r\n").encode("ascii")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(proxy[0], proxy[1],
                                                       local_addr=(source_ip, 0))
        try:
            writer.write(request)
            sink = _ResponseReader()
            parser = httptools.HttpResponseParser(sink)
            while not sink.complete:
                data = await reader.read(65536)
                if not data:
                    parser.feed_data(b"")  # EOF ends a body without length
                    break
                parser.feed_data(data)
            return ProbeResponse(parser.get_status_code(), bytes(sink.body))
        finally:
            writer.close()


# ---------------------------------------------------------------- judging what arrived

def _received_headers(response: ProbeResponse) -> tuple[list[tuple[str, str]], str] | str:
    """The headers a checker-style JSON body reports, and the body text; or a problem."""
    if response.status != 200:
        return f"answered HTTP {response.status}, not the checker JSON"
    text = response.body.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
        headers = [(str(h["name"]), str(h["value"])) for h in doc["headers"]]
    except (ValueError, KeyError, TypeError):
        return "did not answer with the checker JSON ({\"headers\": [...]})"
    return headers, text


def probe_secrets(rules: Rules, probe: Binding) -> tuple[str, ...]:
    """Values that would be the probe's identity anywhere: its number and its pseudonyms."""
    secrets = rules.settings.secrets
    return (probe.msisdn, *(pseudonym(secrets, p.id, probe.msisdn)
                            for p in rules.policy.partners))


def judge_control(url: str, response: ProbeResponse, rules: Rules,
                  probe: Binding) -> ProbeResult:
    received = _received_headers(response)
    if isinstance(received, str):
        return ProbeResult(url, "control", "error", received)
    headers, text = received
    report = analyse(headers, names=rules.names)
    reasons = [f"{f.kind} in {f.header}" for f in report.findings]
    if any(secret in text for secret in probe_secrets(rules, probe)):
        reasons.append("the probe's own number or pseudonym in the response")
    if reasons:
        return ProbeResult(url, "control", "leak", "identity reached a non-partner: "
                           + "; ".join(reasons))
    return ProbeResult(url, "control", "ok", f"no identity ({len(headers)} headers)")


def judge_expect(partner_id: str, url: str, response: ProbeResponse, rules: Rules,
                 probe: Binding) -> ProbeResult:
    partner = rules.policy.get(partner_id)
    if partner is None:
        return ProbeResult(url, "expect", "degraded",
                           f"no partner '{partner_id}' in the running policy", partner_id)
    received = _received_headers(response)
    if isinstance(received, str):
        return ProbeResult(url, "expect", "error", received, partner_id)
    got: dict[str, str] = {}
    for name, value in received[0]:
        got.setdefault(name.lower(), value)
    missing: list[str] = []
    wrong: list[str] = []
    for spec in partner.claims:
        expected = render(spec, partner, probe, rules.settings.secrets)
        if expected is None:
            continue  # the probe has no such fact (e.g. no age attribute): nothing to expect
        arrived = got.get(spec.header.lower())
        if arrived is None:
            missing.append(spec.header)
        elif spec.claim != "assertion" and arrived != expected:
            wrong.append(spec.header)  # assertions are fresh tokens: presence only
    if missing or wrong:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected value in {', '.join(wrong)}"] if wrong else [])
        return ProbeResult(url, "expect", "degraded",
                           f"partner '{partner_id}' claims not delivered: " + "; ".join(parts),
                           partner_id)
    return ProbeResult(url, "expect", "ok", f"partner '{partner_id}' claims delivered",
                       partner_id)


# ---------------------------------------------------------------- the canary

@dataclass
class CanarySettings:
    """`[canary]`, resolved against the rest of the config."""

    proxy: tuple[str, int]
    probe: Binding
    control_urls: tuple[str, ...] = (DEFAULT_CONTROL_URL,)
    expect_urls: dict[str, tuple[str, ...]] = field(default_factory=dict)
    interval: float = 5.0
    timeout: float = DEFAULT_PROBE_TIMEOUT


class Canary:
    """Rounds every `interval`; a leak trips the switch and raises an alert."""

    def __init__(self, settings: CanarySettings, rules: Callable[[], Rules], *,
                 switch: KillSwitch | None = None, alerter: Alerter | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.switch = switch
        self.alerter = alerter or Alerter()
        self.metrics = metrics
        self.last: RoundResult | None = None
        self._task: asyncio.Task[None] | None = None

    async def run_round(self) -> RoundResult:
        started, t0 = time.time(), time.monotonic()
        rules, probe, s = self.rules(), self.settings.probe, self.settings
        timeout = min(s.timeout, s.interval)
        jobs: list[tuple[str, str, str]] = [("control", "", url) for url in s.control_urls]
        notes: list[str] = []
        if self.switch is not None and self.switch.tripped:
            notes.append("kill switch tripped: partner claims not expected")
        else:
            jobs += [("expect", pid, url) for pid, urls in s.expect_urls.items() for url in urls]

        async def one(role: str, partner_id: str, url: str) -> ProbeResult:
            kind: Literal["control", "expect"] = "control" if role == "control" else "expect"
            try:
                response = await fetch_via_proxy(s.proxy, probe.ip, url, timeout)
            except (OSError, TimeoutError, ValueError, httptools.HttpParserError) as exc:
                return ProbeResult(url, kind, "error", f"request through the proxy failed: "
                                   f"{type(exc).__name__}: {exc}".rstrip(": "), partner_id)
            if kind == "control":
                return judge_control(url, response, rules, probe)
            return judge_expect(partner_id, url, response, rules, probe)

        probes = await asyncio.gather(*(one(*job) for job in jobs))
        result = RoundResult(started, time.monotonic() - t0, tuple(probes), tuple(notes))
        self.last = result
        self._measure(result)
        return result

    async def react(self, result: RoundResult) -> None:
        """Trip on a leak; alert on every change of condition (firing, then resolved)."""
        outcome = result.outcome
        if outcome == "leak":
            reason = "canary: " + "; ".join(result.problems())
            if self.switch is not None and not self.switch.state.tripped:
                await self.switch.trip(reason, by="canary")
            tripped = self.switch is not None and self.switch.tripped
            if "leak" not in self.alerter.active:
                self.alerter.fire("leak", "identity reached a non-partner control site; "
                                  + ("kill switch tripped" if tripped else "no kill switch"),
                                  result.problems(), killswitch_tripped=tripped)
            return
        tripped = self.switch is not None and self.switch.tripped
        # A contained leak stays an alert until a person has cleared the switch: the gauge
        # then reads 1 for as long as disclosures are stopped because of it.
        if "leak" in self.alerter.active and not tripped:
            self.alerter.resolve("leak", "control sites receive no identity and the kill "
                                 "switch was cleared")
        if outcome in ("degraded", "error"):
            if "degraded" not in self.alerter.active:
                self.alerter.fire("degraded", f"canary round {outcome}", result.problems(),
                                  killswitch_tripped=tripped)
        elif "degraded" in self.alerter.active:
            self.alerter.resolve("degraded", "canary rounds ok again",
                                 killswitch_tripped=tripped)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="canary")

    async def stop(self) -> None:
        await tasks.stop([self._task])
        self._task = None
        await self.alerter.close()

    async def _run(self) -> None:
        interval = self.settings.interval
        next_at = time.monotonic()
        while True:
            try:
                await self.react(await self.run_round())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("canary round failed")
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # a slow round: skip ahead, do not burst to catch up
                next_at = now
            await asyncio.sleep(next_at - now)

    def _measure(self, result: RoundResult) -> None:
        level = logging.ERROR if result.outcome == "leak" else \
            logging.WARNING if result.outcome != "ok" else logging.DEBUG
        log.log(level, json.dumps({"event": "canary_round", "outcome": result.outcome,
                                   "seconds": round(result.seconds, 4),
                                   "problems": list(result.problems())}))
        m = self.metrics
        if m is None:
            return
        m.count(m.canary_rounds, result.outcome)
        for outcome in OUTCOMES:
            m.canary_last.labels(outcome).set(1 if outcome == result.outcome else 0)
        m.canary_last_time.set(result.started + result.seconds)
        m.canary_round_seconds.observe(result.seconds)


def probe_binding(ip: str, msisdn: str) -> Binding:
    """The reserved probe subscriber (source "canary", so the admin API can tell it apart)."""
    return Binding(ip=ip, msisdn=msisdn.lstrip("+"), source="canary")


def expect_map(raw: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {pid: tuple(urls) for pid, urls in raw.items()}


def control_list(urls: Iterable[str]) -> tuple[str, ...]:
    return tuple(urls) or (DEFAULT_CONTROL_URL,)


def canary_settings(config: Config) -> CanarySettings:
    """`[canary]` of `config` (which must have one) as the canary needs it."""
    section = config.model.canary
    if section is None:
        raise ValueError("the config has no [canary] section")
    return CanarySettings(
        proxy=connect_address(config.proxy.listen),
        probe=probe_binding(section.probe_ip, section.probe_msisdn),
        control_urls=control_list(section.control_urls),
        expect_urls=expect_map(section.expect_urls),
        interval=section.interval, timeout=section.timeout)
