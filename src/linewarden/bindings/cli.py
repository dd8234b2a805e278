"""`linewarden bindings list|show IP|drop IP`: the running gateway's bindings, through its
admin API (`[admin] listen`: the 0600 Unix socket, or TCP with the token). Numbers are
masked to their last three digits unless `--reveal --reason TEXT` is given; the gateway
then records the access in the ledger (who, when, why) before it answers, and answers
nothing unmasked if it cannot (docs/ledger.md, access records).

Registered in the main CLI with `main.add_command(bindings)`.
"""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.parse
from typing import Any

import click

from ..cli_support import admin_call, config_option, fail, get_config
from ..config import Config

DEFAULT_LIMIT = 100


def _admin(config: Config, method: str, path: str) -> dict[str, Any] | None:
    """Call the admin API; None for 404; anything else wrong ends the command."""
    return admin_call(config, method, path, missing_ok=True)


_REASON_HELP = ("Why the number must be seen (a ticket or case, never a number); required "
                "with --reveal and kept in the ledger's access records.")


def _reveal_query(reveal: bool, reason: str | None) -> dict[str, str]:
    """The query parameters that ask for whole numbers, or none."""
    if reason is not None and not reveal:
        fail("--reason goes with --reveal (masked views are not recorded)", code=2)
    if not reveal:
        return {}
    if not (reason or "").strip():
        fail("--reveal needs --reason TEXT (e.g. --reason 'ticket 4711'): every reveal of a "
             "number is recorded in the ledger with who asked and why", code=2)
    return {"reveal": "1", "reason": str(reason)}


def _address(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        fail(f"'{ip}' is not an IP address")


def _expiry(expires_at: float | None) -> str:
    if expires_at is None:
        return "never"
    left = expires_at - time.time()
    return f"in {left:.0f}s" if left > 0 else "expired"


def _state(b: dict[str, Any]) -> str:
    """Unconfirmed: written before the store's restart or failover (docs/bindings.md)."""
    return "unconfirmed" if b.get("confirmed") is False else _expiry(b.get("expires_at"))


def _line(b: dict[str, Any]) -> str:
    return (f"{b['ip']:<39} {b['msisdn']:<16} {b.get('source', ''):<15} "
            f"{_state(b):<11} {b.get('session_id', '')}")


@click.group()
def bindings() -> None:
    """Subscriber bindings (client address -> subscriber) held by the running gateway."""


@bindings.command("list")
@config_option
@click.option("--reveal", is_flag=True, help="Show whole numbers, not just the last 3 digits "
              "(one access record per subscriber listed).")
@click.option("--reason", metavar="TEXT", help=_REASON_HELP)
@click.option("--limit", default=DEFAULT_LIMIT, show_default=True, type=click.IntRange(1),
              help="At most this many bindings (the gateway caps it at 1000).")
@click.option("--json", "as_json", is_flag=True, help="The admin API's JSON.")
@click.pass_context
def list_(ctx: click.Context, reveal: bool, reason: str | None, limit: int,
          as_json: bool) -> None:
    """List bindings: address, number (masked), NAS, expiry, session."""
    query = urllib.parse.urlencode({"limit": limit, **_reveal_query(reveal, reason)})
    doc = _admin(get_config(ctx), "GET", f"/admin/bindings?{query}") or {}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    found = doc.get("bindings", [])
    click.echo(f"{'ADDRESS':<39} {'MSISDN':<16} {'SOURCE':<15} {'EXPIRES':<10} SESSION")
    for b in found:
        click.echo(_line(b))
    click.echo(f"{len(found)} shown, {doc.get('count', len(found))} held")


@bindings.command()
@config_option
@click.argument("ip")
@click.option("--reveal", is_flag=True, help="Show the whole number (an access record).")
@click.option("--reason", metavar="TEXT", help=_REASON_HELP)
@click.option("--json", "as_json", is_flag=True, help="The admin API's JSON.")
@click.pass_context
def show(ctx: click.Context, ip: str, reveal: bool, reason: str | None, as_json: bool) -> None:
    """Show the binding of one client address."""
    ip = _address(ip)
    query = urllib.parse.urlencode(_reveal_query(reveal, reason))
    doc = _admin(get_config(ctx), "GET",
                 f"/admin/bindings/{urllib.parse.quote(ip)}" + (f"?{query}" if query else ""))
    if doc is None:
        fail(f"no binding for {ip}", code=2)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for key in ("ip", "msisdn", "session_id", "source"):
        click.echo(f"{key:<11} {doc.get(key, '')}")
    click.echo(f"{'expires':<11} {_state(doc)}")
    for name, value in sorted(doc.get("attributes", {}).items()):
        click.echo(f"{name:<11} {value}")


@bindings.command()
@config_option
@click.argument("ip")
@click.pass_context
def drop(ctx: click.Context, ip: str) -> None:
    """Remove the binding of one client address (identity stops at once)."""
    ip = _address(ip)
    if _admin(get_config(ctx), "DELETE", f"/admin/bindings/{urllib.parse.quote(ip)}") is None:
        fail(f"no binding for {ip}", code=2)
    click.echo(f"dropped the binding of {ip}")
