"""The `linewarden` command. Each subcommand is a thin call into the modules."""

from __future__ import annotations

import click

from .cli_support import CliState


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE", envvar="LINEWARDEN_CONFIG",
              help="Config file (default: ./linewarden.toml, else the embedded demo).")
@click.version_option(package_name="linewarden")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """linewarden: subscriber identity headers that go only where they belong.

    A header-enrichment gateway: it strips forged identity headers from every request,
    adds the subscriber's claims only for trusted partner hosts, and records every
    disclosure. Run `linewarden serve` to start it; see README.md for a tour.
    """
    ctx.obj = CliState(config_path)
