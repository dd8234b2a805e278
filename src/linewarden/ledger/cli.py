"""`linewarden audit ...`: the ledger's reports from the command line.

Each subcommand opens the ledger the config names, runs one report function from
`reports.py` and prints it as text (default), JSON or CSV. The subscriber's number is
turned into its keyed hash here and goes no further.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from ..claims import subscriber_key
from ..cli_support import config_option, fail, get_config
from ..config import Config
from . import (
    journal_dir,
    open_store,
    open_with_tail,
    signer_from_config,
    trusted_keys_from_config,
)
from .chain import public_key_text
from .migrations import SchemaError
from .reports import (
    Report,
    ReportError,
    access_report,
    incident_report,
    normalise_msisdn,
    parse_duration,
    parse_time,
    purge_ledger,
    stats_report,
    subscriber_report,
    to_csv,
    to_json,
    to_text,
    verify_ledger,
)
from .store import Store

F = TypeVar("F", bound=Callable[..., Any])


def _output_options(func: F) -> F:
    func = click.option("--csv", "as_csv", is_flag=True, help="CSV output.")(func)
    return click.option("--json", "as_json", is_flag=True, help="JSON output.")(func)


def _emit(report: Report, as_json: bool, as_csv: bool, label: str = "") -> None:
    if as_json and as_csv:
        fail("choose one of --json and --csv", 2)
    if as_json:
        click.echo(json.dumps(to_json(report), indent=2))
    elif as_csv:
        click.echo(to_csv(report), nl=False)
    else:
        click.echo(to_text(report, subscriber_label=label), nl=False)


@contextmanager
def _store(config: Config) -> Iterator[Store]:
    """The configured ledger, opened for reading (and migrated if it is older)."""
    try:
        store = open_with_tail(open_store(config.ledger.url, base=config.base,
                                          must_exist=True), journal_dir(config))
    except FileNotFoundError as exc:
        fail(f"{exc} (has the gateway run with this config?)")
    except SchemaError as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"cannot open the ledger: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    try:
        yield store
    except ReportError as exc:
        fail(str(exc), 2)
    finally:
        store.close()


def _time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ReportError as exc:
        fail(str(exc), 2)


@click.group()
def audit() -> None:
    """The disclosure ledger: who received identity, when, and proof it is complete."""


@audit.command()
@click.argument("msisdn")
@click.option("--region", metavar="CC",
              help="Country (ISO 3166, e.g. GB) whose national form MSISDN may be written "
              "in (07400900123), as for `scan --region`. Without it: international only.")
@click.option("--since", metavar="T", help="From T: ISO 8601 or a duration ago (7d).")
@click.option("--until", metavar="T", help="Up to T (exclusive).")
@_output_options
@config_option
@click.pass_context
def subscriber(ctx: click.Context, msisdn: str, region: str | None, since: str | None,
               until: str | None, as_json: bool, as_csv: bool) -> None:
    """Which partners and hosts received MSISDN's identity: first, last, how often."""
    config = get_config(ctx)
    try:
        digits = normalise_msisdn(msisdn, region)
    except ReportError as exc:
        fail(str(exc), 2)
    with _store(config) as store:  # first: no ledger is said before a missing key
        key = subscriber_key(config.ledger_key(), digits)
        report = subscriber_report(store, key, _time(since), _time(until))
    _emit(report, as_json, as_csv, label="+" + digits)


@audit.command()
@click.option("--since", metavar="T", required=True, help="Window start (inclusive).")
@click.option("--until", metavar="T", default="now", show_default=True,
              help="Window end (exclusive).")
@click.option("--host", "host_pattern", metavar="PATTERN",
              help="Only hosts matching this glob, e.g. '*.example.com'.")
@_output_options
@config_option
@click.pass_context
def incident(ctx: click.Context, since: str, until: str, host_pattern: str | None,
             as_json: bool, as_csv: bool) -> None:
    """What a time window exposed: distinct subscribers per host, partner and claim."""
    config = get_config(ctx)
    start, end = _time(since), _time(until)
    assert start is not None and end is not None
    with _store(config) as store:
        report = incident_report(store, start, end, host_pattern)
    _emit(report, as_json, as_csv)


@audit.command()
@click.option("--since", metavar="T", help="From T.")
@click.option("--until", metavar="T", help="Up to T (exclusive).")
@_output_options
@config_option
@click.pass_context
def stats(ctx: click.Context, since: str | None, until: str | None, as_json: bool,
          as_csv: bool) -> None:
    """Disclosures per partner per day (UTC)."""
    config = get_config(ctx)
    with _store(config) as store:
        report = stats_report(store, _time(since), _time(until))
    _emit(report, as_json, as_csv)


@audit.command()
@_output_options
@config_option
@click.pass_context
def verify(ctx: click.Context, as_json: bool, as_csv: bool) -> None:
    """Walk every hash chain and signed checkpoint and report every break (altered,
    deleted, inserted or reordered rows): exit 1 if there is any. The text lists the first
    20; --json and --csv list them all."""
    config = get_config(ctx)
    trusted = trusted_keys_from_config(config)
    with _store(config) as store:
        report = verify_ledger(store, trusted, journal_dir(config))
    _emit(report, as_json, as_csv)
    if not report.ok:
        ctx.exit(1)


@audit.command()
@click.option("--older-than", "older_than", metavar="AGE", required=True,
              help="Delete rows older than AGE, e.g. 90d.")
@_output_options
@config_option
@click.pass_context
def purge(ctx: click.Context, older_than: str, as_json: bool, as_csv: bool) -> None:
    """Retention: delete old rows after signing a checkpoint, so verify still passes."""
    config = get_config(ctx)
    try:
        age = parse_duration(older_than)
    except ReportError as exc:
        fail(str(exc), 2)
    signer = signer_from_config(config)
    with _store(config) as store:
        report = purge_ledger(store, age, signer)
    _emit(report, as_json, as_csv)


@audit.command()
@click.option("--since", metavar="T", help="From T: ISO 8601 or a duration ago (30d).")
@click.option("--until", metavar="T", help="Up to T (exclusive).")
@_output_options
@config_option
@click.pass_context
def access(ctx: click.Context, since: str | None, until: str | None, as_json: bool,
           as_csv: bool) -> None:
    """Every reveal of a subscriber's number by operator staff (admin API, `bindings
    --reveal`): when, who, why, which subscriber key. For a compliance review."""
    config = get_config(ctx)
    with _store(config) as store:
        report = access_report(store, _time(since), _time(until))
    _emit(report, as_json, as_csv)


@audit.command("public-key")
@config_option
@click.pass_context
def public_key(ctx: click.Context) -> None:
    """Print this gateway's checkpoint-signing public key (for other configs'
    `[ledger] trusted_keys`, or to keep off the box)."""
    signer = signer_from_config(get_config(ctx))
    click.echo(f"{public_key_text(signer.public)}  key_id={signer.key_id}")
