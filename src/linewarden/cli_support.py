"""What every subcommand shares: the config it runs against, how it fails, and how it
reaches the running gateway's admin API."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import click

from .admin_client import AdminClient, AdminError
from .config import Config, load_config
from .sourcemap import ConfigError, ConfigErrors

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> NoReturn:
    """Bad input ends in one clear sentence on stderr, never a traceback."""
    click.echo(f"linewarden: {message}", err=True)
    sys.exit(code)


@dataclass
class CliState:
    config_path: str | None
    _config: Config | None = field(default=None, repr=False)

    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except (ConfigError, ConfigErrors) as exc:
                fail(f"invalid config:\n{exc}")
        return self._config


def _set_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(CliState).config_path = value


# Appended to the help of every command that takes `config_option`, so that `--help` says
# which commands read a config and which one they read.
READS_CONFIG = ("Reads the config: --config FILE, else $LINEWARDEN_CONFIG, else "
                "./linewarden.toml, else the embedded demo.")


def config_option(func: F) -> F:
    """`--config FILE` accepted after the subcommand too (`linewarden serve --config f`).

    Apply it below the `@command` decorator: it adds `READS_CONFIG` to the help text."""
    func.__doc__ = f"{inspect.cleandoc(func.__doc__ or '')}\n\n{READS_CONFIG}"
    option = click.option("--config", "_config", metavar="FILE", expose_value=False,
                          callback=_set_config, is_eager=True,
                          help="Config file (default: ./linewarden.toml, else the embedded "
                               "demo).")
    return option(func)


def get_config(ctx: click.Context) -> Config:
    """The config named by --config (on the group or the subcommand), or the default."""
    return ctx.ensure_object(CliState).config()


def admin_call(config: Config, method: str, path: str, body: dict[str, Any] | None = None,
               *, missing_ok: bool = False) -> dict[str, Any] | None:
    """One admin API call over `[admin] listen`; any failure ends the command with one
    sentence. With `missing_ok`, a 404 is None instead."""
    try:
        return AdminClient(config).request(method, path, body)
    except AdminError as exc:
        if missing_ok and exc.status == 404:
            return None
        fail(str(exc))
