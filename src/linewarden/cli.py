"""The `linewarden` command. Each subcommand is a thin call into the modules."""

from __future__ import annotations

import sys

import click

from .bindings.cli import bindings
from .canary_cli import canary
from .checker_cli import checker
from .cli_support import CliState, admin_call, config_option, fail, get_config
from .keys_cli import keys
from .killswitch_cli import killswitch
from .ledger.cli import audit
from .policy.cli import policy
from .scan.cli import scan
from .secrets_cli import secrets
from .sourcemap import ConfigError, ConfigErrors


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
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes sharing the proxy port (SO_REUSEPORT); default [proxy] workers "
                   "(1). More than one needs [store] url = redis://...")
@click.pass_context
def serve(ctx: click.Context, workers: int | None) -> None:
    """Run the gateway: proxy, checker, metrics and admin API, as the config says.

    With no config file (and no ./linewarden.toml) it runs the embedded demo: proxy on
    127.0.0.1:3128, checker on http://127.0.0.1:8080/, admin API and metrics on the 0600
    Unix socket .linewarden/admin.sock. Stop with Ctrl-C or SIGTERM; SIGHUP (or
    `linewarden reload`) re-reads the policy.
    """
    from .serve import serve as run

    config = get_config(ctx)
    try:
        code = run(config, workers)
    except (OSError, ValueError, ConfigError, ConfigErrors) as exc:  # a missing *_file, ...
        fail(f"cannot start: {exc}")
    sys.exit(code)


@main.command()
@config_option
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Make the running gateway re-read its policy (like SIGHUP), through the admin API.

    Exit 0 with the new policy version; 1 if the file was refused (the lint message is
    printed; the running policy stays) or the gateway cannot be reached.
    """
    doc = admin_call(get_config(ctx), "POST", "/admin/reload") or {}
    click.echo(f"policy reloaded: version {doc.get('policy_version', '?')}")


main.add_command(policy)
main.add_command(checker)
main.add_command(scan)
main.add_command(killswitch)
main.add_command(canary)
main.add_command(keys)
main.add_command(bindings)
main.add_command(audit)
main.add_command(secrets)


if __name__ == "__main__":
    main()
