"""Test-only fault injection for the leak drill. Off unless deliberately switched on.

The drill must prove that a leak is caught whatever causes it, so it needs a way to make the
data plane disclose to a non-partner that the normal paths (policy lint, hot reload) refuse.
This module is that way: it wraps the running host matcher so that *every* host matches a
partner — O2's 2012 failure mode, where every site got the number.

It is reachable only when all of these hold:
  * the environment has `LINEWARDEN_TEST_FAULTS=leak-drill` (that exact value: a stray
    `=1` or `=true` from a config template does not enable it);
  * through the admin API (its own listener: the 0600 Unix socket or TCP with the token);
and when enabled, `serve` logs an error at start and prints a warning in its banner, and
`linewarden_test_faults_enabled` reads 1 on /metrics, so it cannot run unnoticed.
A policy reload (SIGHUP or /admin/reload) replaces the faulty rules with the real ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..decide import Rules
from ..policy.model import HostMatcher, Partner, Policy

FAULTS_ENV = "LINEWARDEN_TEST_FAULTS"
FAULTS_VALUE = "leak-drill"


def enabled() -> bool:
    return os.environ.get(FAULTS_ENV) == FAULTS_VALUE


class _MatchEverything(HostMatcher):
    """The injected bug: hosts no partner covers get `victim`'s claims anyway."""

    __slots__ = ("_victim",)

    def __init__(self, partners: tuple[Partner, ...], victim: Partner) -> None:
        super().__init__(partners)
        self._victim = victim

    def match(self, host: str, port: int, path: str | None, now: float) -> Partner | None:
        return super().match(host, port, path, now) or self._victim


def leaky_rules(rules: Rules, partner_id: str = "") -> Rules:
    """`rules` with the fault: every host gets `partner_id`'s claims (default: a partner
    that receives the raw number, else the first)."""
    partners = rules.policy.partners
    if partner_id:
        victim = rules.policy.get(partner_id)
    else:
        victim = next((p for p in partners if p.allow_raw_msisdn), partners[0] if partners
                      else None)
    if victim is None:
        raise LookupError("no partner to leak claims of")
    policy = Policy(partners, rules.policy.version + "+fault", rules.policy.source)
    object.__setattr__(policy, "matcher", _MatchEverything(partners, victim))
    return Rules(policy, rules.settings)


def fault_routes(get_rules: Callable[[], Rules],
                 set_rules: Callable[[Rules], None]) -> list[Route]:
    """`POST /admin/test-faults/leak-everywhere[?partner=ID]`; no route unless enabled."""
    if not enabled():
        return []

    async def inject(request: Request) -> Response:
        partner = request.query_params.get("partner", "")
        try:
            set_rules(leaky_rules(get_rules(), partner))
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse({"injected": "leak-everywhere", "at": time.time()})

    return [Route("/admin/test-faults/leak-everywhere", inject,
                  methods=["POST"])]
