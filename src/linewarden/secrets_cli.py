"""`linewarden secrets export|import|status|set-reference`: one set of secrets per cluster.

Instances that share a ledger or a Redis store must hold the same pseudonym secret, ledger
key and signing keys, or they refuse to start (secrets.py). These commands move them from
the first instance to the others and show where each instance stands.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from .cli_support import config_option, fail, get_config
from .config import Config
from .secrets import SIGNING_KEYS, ImportRefused, export_secrets, import_secrets, set_reference
from .secrets import status as secrets_status
from .sourcemap import ConfigError
from .wiring import generate_secrets


def _generated(ctx: click.Context) -> Config:
    """The config, with the secrets it leaves to the gateway generated if missing (as
    `serve` would at start-up): these commands compare or register them."""
    config = get_config(ctx)
    generate_secrets(config)
    return config


@click.group()
def secrets() -> None:
    """Share the secrets every instance on one ledger or store must agree on."""


@secrets.command()
@config_option
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def export(ctx: click.Context, directory: Path) -> None:
    """Write this instance's pseudonym secret, ledger key and signing keys (generating any
    that are missing) as 0600 files in DIRECTORY (new or empty; made 0700), with a
    manifest and a README. Copy it to the other instance and run `secrets import` there."""
    config = get_config(ctx)
    try:
        generate_secrets(config)
        exported = export_secrets(config, directory)
    except (ValueError, OSError, ConfigError) as exc:
        fail(str(exc))
    click.echo(f"exported {len(exported.fingerprints)} secrets of instance "
               f"'{config.proxy.instance_id}' to {directory}:")
    for name, fingerprint in exported.fingerprints.items():
        click.echo(f"  {name:<17} fingerprint {fingerprint}")
    click.echo(f"next, on the other instance: linewarden secrets import {directory} "
               "--config ITS_CONFIG; then delete this copy or keep it as the backup")


@secrets.command(name="import")
@config_option
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Replace secrets this instance already holds that differ (the old "
                   "pseudonym secret and ledger key are kept beside them as .replaced-*).")
@click.pass_context
def import_(ctx: click.Context, directory: Path, force: bool) -> None:
    """Install secrets exported by `secrets export` into this config's files (its state dir,
    or the *_file and key_dir it names). All or nothing: a refused step installs none."""
    try:
        lines = import_secrets(get_config(ctx), directory, force=force)
    except ImportRefused as exc:
        fail(f"nothing imported: {exc}")
    except (OSError, ConfigError) as exc:
        fail(str(exc))
    for line in lines:
        click.echo(line)


@secrets.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Each secret of this config against the reference in each shared store (registers
    nothing). Exit 1 if any differs."""
    try:
        rows = secrets_status(_generated(ctx))
    except (OSError, ConfigError) as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        for r in rows:
            by = f" (reference: '{r.reference_instance}')" if r.reference_instance else ""
            click.echo(f"{r.where}: {r.name}: {r.state}{by}")
    if any(r.state == "differs" for r in rows):
        raise SystemExit(1)


@secrets.command(name="set-reference")
@config_option
@click.option("--only", "names", multiple=True,
              type=click.Choice(["pseudonym secret", "ledger key", SIGNING_KEYS]),
              help="Only this secret (repeatable); default: all.")
@click.pass_context
def set_reference_(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Make this instance's secrets the reference every other instance must match (after
    changing one on purpose). The others then refuse to start until they import them."""
    try:
        lines = set_reference(_generated(ctx), names)
    except (OSError, ConfigError) as exc:
        fail(str(exc))
    for line in lines:
        click.echo(line)
    if any(line.startswith("NOT") for line in lines):
        raise SystemExit(1)
