"""`linewarden keys generate|rotate|list`: the assertion signing keys in `[signing] key_dir`.

The commands work on the key directory; a running gateway notices a rotation within a
second (it polls `keyring.json`) and starts signing with the new key, while the JWKS keeps
the previous public key until every assertion it signed has expired.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click

from .assertion import ALGORITHMS, Algorithm, SigningKey
from .cli_support import config_option, fail, get_config
from .keys import KeyDirectory, KeyDirectoryError, key_dir
from .secrets import SIGNING_KEYS, set_reference
from .wiring import generate_secrets


def _directory(ctx: click.Context) -> KeyDirectory:
    return KeyDirectory(key_dir(get_config(ctx)))


def _algorithm(ctx: click.Context, chosen: str | None) -> Algorithm:
    if chosen is not None:
        return "EdDSA" if chosen == "EdDSA" else "ES256"
    return get_config(ctx).model.signing.algorithm


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(key: SigningKey, now: float) -> str:
    if key.retired is None:
        return "active"
    until = key.published_until() or 0.0
    return f"retired, published until {_when(until)}" if now < until else "expired"


_ALG = click.option("--algorithm", type=click.Choice(ALGORITHMS), default=None,
                    help="Signature algorithm (default: [signing] algorithm, ES256).")


@click.group()
def keys() -> None:
    """Signing keys for identity assertions (published at /.well-known/jwks.json)."""


@keys.command()
@config_option
@_ALG
@click.pass_context
def generate(ctx: click.Context, algorithm: str | None) -> None:
    """Create the first signing key (refused if one is active: use rotate)."""
    directory = _directory(ctx)
    try:
        key = directory.generate(_algorithm(ctx, algorithm), now=time.time())
    except (KeyDirectoryError, OSError) as exc:
        fail(str(exc))
    click.echo(f"generated {key.algorithm} key {key.kid} in {directory.path}")


@keys.command()
@config_option
@_ALG
@click.pass_context
def rotate(ctx: click.Context, algorithm: str | None) -> None:
    """Make a new active key; the previous one stops signing at once (its private key is
    deleted) and stays published until its assertions have expired."""
    directory = _directory(ctx)
    try:
        key, old = directory.rotate(_algorithm(ctx, algorithm), now=time.time())
    except (KeyDirectoryError, OSError) as exc:
        fail(str(exc))
    click.echo(f"active: {key.algorithm} key {key.kid}")
    if old is not None:
        until = old.published_until() or time.time()
        click.echo(f"retired: {old.kid}, published until {_when(until)}")
    # The new ring is now what every instance sharing a store must hold (secrets.py).
    config = get_config(ctx)
    generate_secrets(config)
    for line in set_reference(config, [SIGNING_KEYS]):
        click.echo(line)
    click.echo("next: `linewarden secrets export DIR` here and `linewarden secrets import "
               "DIR` on every other instance sharing the ledger or store")


@keys.command(name="list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@click.pass_context
def list_keys(ctx: click.Context, as_json: bool) -> None:
    """Every key in the directory, newest first, with its state."""
    directory = _directory(ctx)
    try:
        ring = directory.load()
    except KeyDirectoryError as exc:
        fail(str(exc))
    now = time.time()
    if as_json:
        click.echo(json.dumps([{"kid": k.kid, "alg": k.algorithm, "created": k.created,
                                "retired": k.retired, "state": _state(k, now).split(",")[0],
                                "published_until": k.published_until()}
                               for k in ring.keys], indent=2))
        return
    if not ring.keys:
        click.echo(f"no keys in {directory.path} (linewarden keys generate)")
        return
    for k in ring.keys:
        click.echo(f"{k.kid}  {k.algorithm:<5}  created {_when(k.created)}  {_state(k, now)}")
