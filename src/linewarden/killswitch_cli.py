"""`linewarden killswitch trip|clear|status`.

The kill switch commands act on the *running* gateway through its admin API (`[admin]
listen`), so the change takes effect at once and propagates from there to every instance
sharing its Redis. `trip` never gives up: when the admin API cannot be reached it writes the
shared state itself (the state file every instance on this state_dir watches and reads at
start, and the Redis record and channel when `[store]` is Redis). `canary` probes the running
gateway's proxy.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from typing import Any

import click

from .admin_client import AdminClient, AdminError
from .cli_support import admin_call, config_option, fail, get_config
from .config import Config
from .killswitch import DEFAULT_KEY, STATE_FILE, SwitchState, mask_numbers, share_state, write_state


def _person() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _admin(config: Config, method: str, path: str,
           body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the admin API; failures end the command with one clear sentence."""
    return admin_call(config, method, path, body) or {}


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

    Acts on the running gateway through the config's [admin] listen; instances sharing its
    Redis follow within a second. `trip` works without the admin API too.
    """


@killswitch.command()
@config_option
@click.option("--reason", default=NO_REASON, show_default=True,
              help="Why (logged, and shown by status). Optional: stopping a leak must never "
                   "wait for paperwork; clearing needs one.")
@click.option("--by", default=_person, show_default="user@host", help="Who is tripping.")
@click.pass_context
def trip(ctx: click.Context, reason: str, by: str) -> None:
    """Trip the switch: requests keep flowing, no identity is added to any of them.

    Through the running gateway's admin API; if that cannot be reached, by writing the
    shared state directly (exit 0 if anything was written)."""
    trip_switch(get_config(ctx), reason, by)


def trip_switch(config: Config, reason: str, by: str) -> None:
    try:
        doc = AdminClient(config).request("POST", "/admin/killswitch/trip",
                                          {"reason": reason, "by": by})
    except AdminError as exc:
        click.echo(f"linewarden: the admin API did not take the trip: {exc}", err=True)
        _trip_without_gateway(config, reason, by)
        return
    _show(doc)


def _trip_without_gateway(config: Config, reason: str, by: str) -> None:
    """Write the trip where running and future instances will find it; fail only if it
    could be written nowhere."""
    state = SwitchState(True, mask_numbers(reason.strip()) or NO_REASON, by.strip() or "cli",
                        time.time(), f"cli@{socket.gethostname()}")
    done: list[str] = []
    path = config.state_dir / STATE_FILE
    try:
        write_state(path, state)
        done.append(f"wrote {path}: gateways running on this state_dir trip within a "
                    "second (they watch it); any gateway started with it starts tripped")
    except OSError as exc:
        click.echo(f"linewarden: cannot write {path}: {exc.strerror or exc}", err=True)
    store = config.model.store.url
    if store.startswith(("redis://", "rediss://")):
        try:
            share_state(store, state)
            done.append(f"set and published Redis key {DEFAULT_KEY} ([store] url): every "
                        "instance sharing that Redis trips within a second")
        except Exception as exc:  # any Redis failure: say it, keep what the file gave
            click.echo(f"linewarden: cannot write the kill switch to Redis: "
                       f"{type(exc).__name__}: {exc}", err=True)
    if not done:
        fail("kill switch NOT tripped: neither the admin API, the state file nor Redis could "
             "be reached. Stop disclosures another way (stop the gateways).")
    click.echo("kill switch TRIPPED without the admin API:")
    for line in done:
        click.echo(f"  {line}")
    click.echo("Check with: linewarden killswitch status (once the admin API answers)")


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
