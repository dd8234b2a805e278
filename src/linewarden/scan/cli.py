"""`linewarden scan`: find identity in logs, report it masked, and write redacted copies."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from linewarden.names import IdentityNames
from linewarden.scan.detect import DEFAULT_REGIONS
from linewarden.scan.files import InputError
from linewarden.scan.progress import ProgressLine, known_total
from linewarden.scan.redact import DEFAULT_TOKEN
from linewarden.scan.report import FileReport, render_json, render_text
from linewarden.scan.scanner import ScanOptions, collect_sources, scan_paths

EXIT_CLEAN = 0
EXIT_FOUND = 1
EXIT_ERROR = 2


def _fail(message: str) -> NoReturn:
    click.echo(f"linewarden scan: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


@click.command(
    "scan",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Exit status: 0 nothing found, 1 identity found, 2 error. "
        "Example: linewarden scan /var/log/nginx --region GB --redact-to /srv/clean"
    ),
)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--region", "regions", multiple=True, metavar="CC",
    help="Country (ISO 3166, e.g. GB, FR) whose national (0...) and country-code-without-"
    "plus (44...) forms count as phone numbers. Repeat for several. Numbers written with "
    "+ or 00 are found for every country. [default: GB]",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report for machines.")
@click.option(
    "--redact-to", type=click.Path(file_okay=False), metavar="DIR",
    help="Write redacted copies under DIR (same relative paths, gzip kept). Originals are "
    "never touched.",
)
@click.option(
    "--in-place", is_flag=True,
    help="Replace each file that has findings by its redacted copy (atomic rename), "
    "keeping the original as FILE + --backup-suffix.",
)
@click.option(
    "--backup-suffix", default=".orig", show_default=True, metavar="SUFFIX",
    help="Suffix of the backup that --in-place keeps.",
)
@click.option("--no-backup", is_flag=True, help="With --in-place, keep no backup.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, metavar="N",
    help="Processes to scan with. [default: number of CPUs]",
)
@click.option(
    "--reveal", is_flag=True,
    help="Show numbers in full in the report (they are masked by default, e.g. "
    "+44 74** ***123).",
)
@click.option(
    "--token", default=DEFAULT_TOKEN, show_default=True, metavar="TEMPLATE",
    help="What replaces each finding when redacting: {KIND} (MSISDN, IMSI, IMEI, IDENTITY), "
    "{kind}, or {hash}, a keyed hash of the value so analytics can still join.",
)
@click.option(
    "--hash-key-file", type=click.Path(dir_okay=False), metavar="FILE",
    help="Secret key for {hash} in --token (keep it out of the logs' reach).",
)
@click.option(
    "--header-name", "extra_names", multiple=True, metavar="NAME",
    help="Another header name that carries identity (in addition to the built-in list).",
)
@click.option(
    "--header-suffix", "extra_suffixes", multiple=True, metavar="SUFFIX",
    help="Another name ending that marks an identity header (matched loosely).",
)
@click.option(
    "--progress/--no-progress", default=None,
    help="Show a progress line on stderr: files, bytes done of the total, rate and ETA "
    "(total and ETA when every input's size is known: plain files). "
    "[default: when stderr is a terminal]",
)
def scan(
    paths: tuple[str, ...],
    regions: tuple[str, ...],
    as_json: bool,
    redact_to: str | None,
    in_place: bool,
    backup_suffix: str,
    no_backup: bool,
    workers: int | None,
    reveal: bool,
    token: str,
    hash_key_file: str | None,
    extra_names: tuple[str, ...],
    extra_suffixes: tuple[str, ...],
    progress: bool | None,
) -> None:
    """Find subscriber identity in web server logs: identity headers logged by name,
    phone numbers (validated), IMSI and IMEI. Reads plain and .gz files, directories
    (recursively) and - for standard input, in constant memory.
    """
    if redact_to and in_place:
        _fail("--redact-to and --in-place cannot be used together; pick one.")
    if no_backup and not in_place:
        _fail("--no-backup only applies to --in-place.")
    if in_place and not no_backup and not backup_suffix:
        _fail("--backup-suffix cannot be empty; use --no-backup to keep no backup.")
    key = None
    if hash_key_file:
        try:
            with open(hash_key_file, "rb") as f:
                key = f.read().strip()
        except OSError as exc:
            _fail(f"cannot read the hash key file {hash_key_file} ({exc.strerror}).")
        if not key:
            _fail(f"the hash key file {hash_key_file} is empty.")
    names = IdentityNames(extra_names, extra_suffixes) if extra_names or extra_suffixes else None
    options = ScanOptions(
        regions=tuple(regions) or DEFAULT_REGIONS,
        names=names,
        redact_to=redact_to,
        in_place=in_place,
        backup_suffix=None if no_backup else backup_suffix,
        token=token,
        hash_key=key,
        workers=workers or os.cpu_count() or 1,
        locations=as_json,
    )
    show_progress = sys.stderr.isatty() if progress is None else progress
    bar: ProgressLine | None = None
    reports: list[FileReport] = []
    try:
        if show_progress:
            sources = collect_sources(paths, redact_to)
            bar = ProgressLine(sys.stderr, len(sources), known_total(sources))
        reports.extend(scan_paths(paths, options, bar))
    except (InputError, ValueError) as exc:
        _fail(str(exc).rstrip(".") + ".")
    except KeyboardInterrupt:
        _fail("interrupted; every original file is intact.")
    finally:
        if bar is not None:
            bar.close()
    click.echo(render_json(reports, reveal) if as_json else render_text(reports, reveal), nl=False)
    for r in reports:
        if r.error:
            click.echo(f"linewarden scan: error: {r.error}", err=True)
    if any(r.error for r in reports):
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_FOUND if any(r.findings for r in reports) else EXIT_CLEAN)


if __name__ == "__main__":
    scan()
