"""`linewarden killswitch trip|clear|status` and `linewarden canary [--once]`.

The kill switch commands act on the *running* gateway through its admin API (`[web] listen`,
with `[web] admin_token` when set), so the change takes effect at once and propagates from
there to every instance sharing its Redis. `canary` probes the running gateway's proxy.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import click

from .canary import Canary, CanarySettings, RoundResult, canary_settings, listen_address
from .cli_support import config_option, fail, get_config
from .config import CanarySection, Config
from .decide import Rules

# The admin API is on this host or next to it: a few seconds is plenty.
ADMIN_TIMEOUT = 5.0


def _person() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class _AdminError(Exception):
    pass


def _admin(config: Config, method: str, path: str,
           body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the admin API; failures end the command with one clear sentence."""
    try:
        return _call_admin(config, method, path, body)
    except _AdminError as exc:
        fail(str(exc))


def _call_admin(config: Config, method: str, path: str,
                body: dict[str, Any] | None = None) -> dict[str, Any]:
    host, port = listen_address(config.web.listen)
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{port}{path}"
    headers = {"Content-Type": "application/json"}
    if config.web.admin_token:
        headers["Authorization"] = f"Bearer {config.web.admin_token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    # The admin API is never reached through an http_proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=ADMIN_TIMEOUT) as response:
            doc = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise _AdminError(f"{url}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _AdminError(f"cannot reach the gateway's admin API at {url} ({exc}); is "
             f"`linewarden serve --config {config.path}` running?") from None
    return doc if isinstance(doc, dict) else {}


def _show(doc: dict[str, Any]) -> None:
    if doc.get("tripped"):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["at"])) \
            if doc.get("at") else "start-up"
        click.echo(f"kill switch TRIPPED since {since} by {doc.get('by') or '?'}: "
                   f"{doc.get('reason') or '(no reason)'}")
        if doc.get("shared_unreachable"):
            click.echo("  (the shared state in Redis cannot be confirmed: identity withheld "
                       "on this instance until it answers)")
        click.echo("No identity is disclosed. Clear it with: "
                   "linewarden killswitch clear --reason '...'")
    else:
        click.echo("kill switch clear: identity is disclosed to partners as the policy says")
        if doc.get("at"):
            click.echo(f"  last change by {doc.get('by')}: {doc.get('reason')}")


# Tripping is the safe direction, so it works without a reason; the state still says so.
NO_REASON = "tripped by hand, no reason given"


@click.group()
def killswitch() -> None:
    """Stop every identity disclosure at once (trip), resume it (clear), or look (status).

    Acts on the running gateway named by the config's [web] listen; instances sharing its
    Redis follow within a second.
    """


@killswitch.command()
@config_option
@click.option("--reason", default=NO_REASON, show_default=True,
              help="Why (logged, and shown by status). Optional: stopping a leak must never "
                   "wait for paperwork; clearing needs one.")
@click.option("--by", default=_person, show_default="user@host", help="Who is tripping.")
@click.pass_context
def trip(ctx: click.Context, reason: str, by: str) -> None:
    """Trip the switch: requests keep flowing, no identity is added to any of them."""
    _show(_admin(get_config(ctx), "POST", "/admin/killswitch/trip",
                 {"reason": reason, "by": by}))


@killswitch.command()
@config_option
@click.option("--reason", required=True,
              help="What was found and fixed (logged with your name).")
@click.option("--by", default=_person, show_default="user@host", help="Who is clearing.")
@click.pass_context
def clear(ctx: click.Context, reason: str, by: str) -> None:
    """Clear the switch. Only a person does this, with a reason; it is logged."""
    _show(_admin(get_config(ctx), "POST", "/admin/killswitch/clear",
                 {"reason": reason, "by": by}))


@killswitch.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show whether the switch is tripped, since when, by whom and why."""
    doc = _admin(get_config(ctx), "GET", "/admin/killswitch")
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _show(doc)


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
    rules = Rules(config.policy, config.settings())
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
            _admin(config, "POST", "/admin/killswitch/trip",
                   {"reason": "canary: " + "; ".join(result.problems()), "by": "canary"})
        time.sleep(max(0.0, settings.interval - (time.monotonic() - started)))


def _ensure_probe_binding(config: Config, settings: CanarySettings) -> None:
    """The probe is a reserved binding; (re)state it so a round never depends on luck."""
    probe = settings.probe
    try:
        _call_admin(config, "POST", "/admin/bindings", {"ip": probe.ip, "msisdn": probe.msisdn})
    except _AdminError as exc:
        click.echo(f"linewarden: probe binding not (re)registered ({exc}); probing anyway",
                   err=True)
