"""`linewarden canary [--once]`: probe the running gateway's proxy like a subscriber.

A leak found by the rounds trips the running gateway's kill switch (`killswitch_cli`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click

from .admin_client import AdminClient, AdminError
from .canary import Canary, CanarySettings, RoundResult, canary_settings
from .cli_support import config_option, get_config
from .config import CanarySection, Config
from .decide import Rules
from .killswitch_cli import trip_switch
from .wiring import settings as wiring_settings


def _print_round(result: RoundResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json(), sort_keys=True))
        return
    click.echo(f"canary round: {result.outcome.upper()} ({result.seconds * 1000:.0f} ms)")
    for probe in result.probes:
        click.echo(f"  {probe.outcome:<8} {probe.role:<7} {probe.url}: {probe.detail}")
    for note in result.notes:
        click.echo(f"  note: {note}")


@click.command()
@config_option
@click.option("--once", is_flag=True, help="One round, then exit 0 ok / 1 leak / 2 degraded "
                                           "or error.")
@click.option("--json", "as_json", is_flag=True, help="Print each round as JSON.")
@click.pass_context
def canary(ctx: click.Context, once: bool, as_json: bool) -> None:
    """Probe the running gateway like a subscriber and look for identity at control sites.

    Uses the config's [canary] section (defaults if absent): requests go through [proxy]
    listen from probe_ip. Without --once, rounds repeat every interval and a leak trips the
    running gateway's kill switch through its admin API.
    """
    config = get_config(ctx)
    if config.model.canary is None:
        config.model.canary = CanarySection()
    settings = canary_settings(config)
    _ensure_probe_binding(config, settings)
    rules = Rules(config.policy, wiring_settings(config))
    probe = Canary(settings, lambda: rules)
    if once:
        result = asyncio.run(probe.run_round())
        _print_round(result, as_json)
        sys.exit(result.exit_code)
    while True:  # pragma: no cover - interactive loop, each part tested through --once
        started = time.monotonic()
        result = asyncio.run(probe.run_round())
        _print_round(result, as_json)
        if result.outcome == "leak":
            trip_switch(config, "canary: " + "; ".join(result.problems()), "canary")
        time.sleep(max(0.0, settings.interval - (time.monotonic() - started)))


def _ensure_probe_binding(config: Config, settings: CanarySettings) -> None:
    """The probe is a reserved binding; (re)state it so a round never depends on luck."""
    probe = settings.probe
    try:
        AdminClient(config).request("POST", "/admin/bindings",
                                    {"ip": probe.ip, "msisdn": probe.msisdn})
    except AdminError as exc:
        click.echo(f"linewarden: probe binding not (re)registered ({exc}); probing anyway",
                   err=True)
