"""The `linewarden` command. Each subcommand is a thin call into the modules."""

from __future__ import annotations

import click

from .cli_support import CliState, config_option, fail, get_config


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


@main.command()
@config_option
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the gateway: proxy, checker, metrics and admin API, as the config says.

    With no config file (and no ./linewarden.toml) it runs the embedded demo: proxy on
    127.0.0.1:3128, checker on http://127.0.0.1:8080/. Stop with Ctrl-C or SIGTERM;
    SIGHUP (or POST /admin/reload) re-reads the policy.
    """
    from .serve import serve as run

    config = get_config(ctx)
    try:
        run(config)
    except OSError as exc:
        fail(f"cannot start: {exc}")
