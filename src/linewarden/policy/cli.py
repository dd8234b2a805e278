"""`linewarden policy check|explain|diff`: a partners file before it goes live."""

from __future__ import annotations

import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import click

from .. import review
from ..cli_support import fail
from ..config import load_config
from ..review import privacy_level
from ..sourcemap import ConfigError, ConfigErrors, load_toml
from .load import CONFIG_SECTIONS, load_policy
from .model import Finding, Policy, PolicyError


@click.group()
def policy() -> None:
    """Check, explain and diff partner policy files before they go live."""


def _load(path: str, as_json: bool = False) -> tuple[Policy, list[Finding]]:
    try:
        return load_policy(path)
    except PolicyError as exc:
        if as_json:
            _echo_json({"file": path, "ok": False,
                        "findings": [_finding_json(f) for f in exc.findings]})
            sys.exit(1)
        for finding in exc.findings:
            click.echo(str(finding), err=True)
        fail(f"{path}: {len(exc.findings)} problem(s); the policy was not accepted")
    except ConfigError as exc:
        fail(str(exc))


def _echo_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2))


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {"level": finding.level, "file": finding.path, "line": finding.line,
            "partner": finding.partner, "message": finding.message, "fix": finding.fix}


_JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_JSON
def check(file: str, as_json: bool) -> None:
    """Validate and lint FILE (a partners file or a whole linewarden.toml).

    Reads FILE only, not the --config. Refuses catch-all hosts (`*`, public suffixes such as
    `*.co.uk`), unknown claims or purposes, duplicate ids, a host claimed by two partners,
    invalid header names and a raw phone number without `allow_raw_msisdn = true`. Exit 0
    when accepted, 1 otherwise; every problem is printed with file:line and the partner id.
    """
    loaded, findings = _load(file, as_json)
    if _is_full_config(file):
        try:
            load_config(file)
        except (ConfigError, ConfigErrors) as exc:
            fail(f"invalid config:\n{exc}")
    raw = sum(1 for p in loaded.partners if privacy_level(p) == "raw number")
    if as_json:
        _echo_json({"file": file, "ok": True, "partners": len(loaded.partners),
                    "raw_number_partners": raw, "policy_version": loaded.version,
                    "findings": [_finding_json(f) for f in findings]})
        return
    for finding in findings:
        click.echo(str(finding), err=True)
    click.echo(f"{file}: OK, {len(loaded.partners)} partners ({raw} with the raw number), "
               f"policy version {loaded.version}")


def _is_full_config(path: str) -> bool:
    """A linewarden.toml (not just partners): check its other sections too."""
    try:
        data, _ = load_toml(path)
    except ConfigError:
        return False
    return any(key in CONFIG_SECTIONS for key in data)


def _host_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """`--host` is what the gateway matches: a name, not a URL (its path is --path)."""
    if "://" in value or "/" in value:
        parts = urlsplit(value if "://" in value else "//" + value)
        hint = ""
        if parts.hostname:
            path = f" --path {parts.path}" if parts.path else ""
            hint = f" (e.g. --host {parts.hostname}{path})"
        raise click.BadParameter(f"give a host name, not a URL{hint}")
    return value


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--host", required=True, callback=_host_name,
              help="Destination host name, as in the request URI (not a URL).")
@click.option("--path", default="/", show_default=True, help="Request path.")
@click.option("--port", default=80, show_default=True, type=int, help="Destination port.")
@_JSON
def explain(file: str, host: str, path: str, port: int, as_json: bool) -> None:
    """Show which partner FILE gives HOST to, and exactly which headers would be sent.

    Reads FILE only, not the --config."""
    loaded, _ = _load(file, as_json)
    result = review.explain(loaded, host, path=path, port=port, now=time.time())
    if as_json:
        _echo_json(result.to_json())
    else:
        click.echo("\n".join(result.lines()))


@policy.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@_JSON
def diff(old: str, new: str, as_json: bool) -> None:
    """List, per host pattern, the claims NEW newly exposes, withdraws or narrows (fewer
    ports or paths) compared to OLD. Reads OLD and NEW only, not the --config.

    Exit 0: nothing newly exposed; 3: something is newly exposed (a deployment pipeline
    should then demand sign-off); 1: either file is invalid.
    """
    before, _ = _load(old, as_json)
    after, _ = _load(new, as_json)
    changes = review.diff(before, after, time.time())
    counts = {kind: sum(1 for c in changes if c.kind == kind)
              for kind in ("added", "withdrawn", "narrowed")}
    if as_json:
        _echo_json({"old": old, "new": new, "old_version": before.version,
                    "new_version": after.version, "newly_exposed": counts["added"],
                    "withdrawn": counts["withdrawn"], "narrowed": counts["narrowed"],
                    "changes": [c.to_json() for c in changes]})
    else:
        for change in changes:
            click.echo(str(change))
        click.echo(f"{counts['added']} newly exposed, {counts['withdrawn']} withdrawn, "
                   f"{counts['narrowed']} narrowed")
    if counts["added"]:
        sys.exit(3)
