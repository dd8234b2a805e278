"""`linewarden checker`: the leak checker page alone, served by uvicorn.

Registered in the main CLI with `main.add_command(checker)`; also runnable as
`python -m linewarden.checker_cli` (the browser tests start it that way).
"""

from __future__ import annotations

import click
import uvicorn

from linewarden.checker import validate_regions
from linewarden.cli_support import fail
from linewarden.hostport import parse_host_port
from linewarden.listen import ListenError, bind_tcp
from linewarden.names import IdentityNames
from linewarden.web.checker import make_checker_app

__all__ = ["checker", "parse_listen"]

DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` -> (host, port); the host and a non-zero port are
    required (the page is opened at that address)."""
    host, port = parse_host_port(text)
    if port == 0:
        raise ValueError(f"{text!r}: give the port to open the page at, not 0")
    return host, port


def _listen_option(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


def _regions_option(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    try:
        return validate_regions(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@click.command("checker")
@click.option(
    "--listen", default=DEFAULT_LISTEN, show_default=True, callback=_listen_option,
    help="Address to serve the checker on.",
)
@click.option(
    "--region", "regions", multiple=True, default=("GB",), show_default=True,
    callback=_regions_option,
    help="Region hint for national-format numbers such as 07400 900123 (repeatable).",
)
@click.option("--identity-name", "extra_names", multiple=True, metavar="NAME",
              help="Extra header name to treat as identity (repeatable).")
@click.option("--identity-suffix", "extra_suffixes", multiple=True, metavar="SUFFIX",
              help="Extra normalised name suffix to treat as identity (repeatable).")
def checker(
    listen: tuple[str, int],
    regions: tuple[str, ...],
    extra_names: tuple[str, ...],
    extra_suffixes: tuple[str, ...],
) -> None:
    """Serve the leak checker: / for people, /api/check for JSON."""
    host, port = listen
    app = make_checker_app(regions, IdentityNames(extra_names, extra_suffixes))
    # Bound before the banner: a busy port is one line and exit 1, not a banner followed
    # by uvicorn's error.
    try:
        sock = bind_tcp(host, port, "--listen")
    except ListenError as exc:
        fail(str(exc))
    click.echo(f"linewarden checker on http://{listen_url_host(host)}:{port}/", err=True)
    # access_log off: the client address and path of a subscriber's visit are personal data,
    # and this page promises not to log. proxy_headers off: the X-Forwarded-* headers are
    # what we display, not something to trust for the client address.
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, access_log=False, proxy_headers=False,
        server_header=False, log_level="warning",
    ))
    server.run(sockets=[sock])


def listen_url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    checker()
