"""The scan, end to end: inputs -> work units -> worker processes -> one report per file.

Work is cut into units so that every core stays busy: a plain file of at least
`files.SPLIT_MIN` bytes is split into newline-aligned byte ranges (`RANGES_PER_WORKER` per
worker), scanned in parallel and merged in order; a gzip file (not seekable) or a file
being redacted is one unit, so several such files run in parallel. Standard input is read
in this process.
"""

from __future__ import annotations

import contextlib
import gzip
import multiprocessing
import os
import signal
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from linewarden.names import IdentityNames
from linewarden.scan import redact
from linewarden.scan.detect import DEFAULT_REGIONS, Detector
from linewarden.scan.files import (
    InputError,
    Source,
    iter_chunks,
    iter_sources,
    open_source,
    split_ranges,
)
from linewarden.scan.report import FileReport

Progress = Callable[[int, bool], None]  # (bytes just scanned, a file just finished)

# A big file is cut into this many ranges per worker, not one: the pool hands the next
# range to whichever worker is free, so a worker slowed by other load on the machine (or a
# denser part of the log) does not leave the others idle at the end. A range is at least
# one 4 MiB chunk (`files.split_ranges`), so the per-unit cost (a report pickled back) is
# noise.
RANGES_PER_WORKER = 4


@dataclass(frozen=True)
class ScanOptions:
    regions: tuple[str, ...] = DEFAULT_REGIONS
    names: IdentityNames | None = None
    redact_to: str | None = None
    in_place: bool = False
    backup_suffix: str | None = ".orig"  # None: no backup (--no-backup)
    token: str = redact.DEFAULT_TOKEN
    hash_key: bytes | None = field(default=None, repr=False)
    workers: int = 1
    locations: bool = False  # keep each finding's line and column (for --json)

    @property
    def redacting(self) -> bool:
        return self.redact_to is not None or self.in_place


@dataclass(frozen=True)
class _Unit:
    index: int  # the source's position, to merge parts and keep output order
    source: Source
    start: int = 0
    end: int = -1  # -1: to the end of the stream


class _Worker:
    """What a process needs to run units; built once per process (compiling is not free)."""

    def __init__(self, options: ScanOptions) -> None:
        self.options = options
        self.detector = Detector(options.regions, options.names)
        self.tokenizer = redact.Tokenizer(options.token, options.hash_key)

    def run(self, unit: _Unit, progress: Progress | None = None) -> FileReport:
        """Scan (or redact) one unit; `progress`, in this process only, hears of each chunk."""
        report = FileReport(unit.source.path, keep_locations=self.options.locations)
        try:
            if self.options.redacting:
                self._redact(unit.source, report, progress)
            else:
                self._scan(unit, report, progress)
        except (InputError, redact.RedactError) as exc:
            report.error = str(exc)
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            report.error = _read_error(unit.source, exc)
        return report

    def _scan(self, unit: _Unit, report: FileReport, progress: Progress | None) -> None:
        stream = open_source(unit.source)
        with contextlib.ExitStack() as stack:
            if not unit.source.is_stdin:
                stack.enter_context(stream)
            if unit.start:
                stream.seek(unit.start)
            limit = -1 if unit.end < 0 else unit.end - unit.start
            for chunk in iter_chunks(stream, limit=limit):
                report.add_chunk(chunk, self.detector.scan(chunk))
                if progress is not None:
                    progress(len(chunk), False)

    def _target(self, source: Source) -> str:
        if self.options.in_place:
            if source.is_stdin:
                raise InputError("standard input cannot be redacted in place; use --redact-to.")
            return source.path
        assert self.options.redact_to is not None
        target = os.path.join(self.options.redact_to, source.relative)
        if not source.is_stdin and os.path.exists(target) and os.path.samefile(target, source.path):
            raise InputError(
                f"{source.path}: --redact-to would overwrite the original; "
                "choose another directory or use --in-place."
            )
        return target

    def _redact(self, source: Source, report: FileReport, progress: Progress | None) -> None:
        target = self._target(source)
        backup = None
        if self.options.in_place and self.options.backup_suffix:
            backup = source.path + self.options.backup_suffix
            if os.path.lexists(backup):
                raise InputError(
                    f"{source.path}: backup {backup} already exists; move it away or "
                    "choose another --backup-suffix."
                )
        mode_from = None if source.is_stdin else source.path
        stream = open_source(source)
        with contextlib.ExitStack() as stack:
            if not source.is_stdin:
                stack.enter_context(stream)
            out = stack.enter_context(redact.AtomicOutput(target, source.gzipped, mode_from))
            for chunk in iter_chunks(stream):
                findings = self.detector.scan(chunk)
                report.add_chunk(chunk, findings)
                out.write(redact.apply(chunk, findings, self.tokenizer))
                if progress is not None:
                    progress(len(chunk), False)
            if self.options.in_place and not report.findings:
                return  # nothing to remove: leave the original untouched, no backup
            out.commit(backup)
        report.redacted_to = target
        report.backup = backup


def _read_error(source: Source, exc: BaseException) -> str:
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return f"{source.path}: not a complete gzip file ({exc})."
    if isinstance(exc, OSError):
        return f"{source.path}: cannot read ({exc.strerror or exc})."
    return f"{source.path}: {exc}."


# One _Worker per pool process, set by the pool initializer.
_WORKER: _Worker | None = None


def _init_worker(options: ScanOptions) -> None:
    global _WORKER
    _WORKER = _Worker(options)
    # The parent handles Ctrl-C and then terminates the pool; a worker dying of SIGTERM
    # must still run its `finally` blocks, which remove its temporary files.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_term)


def _exit_on_term(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


def _run_unit(unit: _Unit) -> tuple[_Unit, FileReport]:
    assert _WORKER is not None
    return unit, _WORKER.run(unit)


def plan(sources: Sequence[Source], options: ScanOptions) -> list[_Unit]:
    units: list[_Unit] = []
    for index, source in enumerate(sources):
        if source.is_stdin or source.gzipped or options.redacting:
            units.append(_Unit(index, source))
            continue
        parts = options.workers * RANGES_PER_WORKER if options.workers > 1 else 1
        for start, end in split_ranges(source.path, parts):
            units.append(_Unit(index, source, start, end))
    return units


def collect_sources(paths: Sequence[str], redact_to: str | None = None) -> list[Source]:
    """The inputs, without our own temporary files (left by a killed earlier run) and
    without anything under the `--redact-to` directory (our own output)."""
    return [
        s for s in iter_sources(paths, exclude=redact_to)
        if redact.TEMP_MARK not in os.path.basename(s.path)
    ]


def scan_paths(
    paths: Sequence[str], options: ScanOptions, progress: Progress | None = None
) -> Iterator[FileReport]:
    """One report per input file, in input order. Raises InputError for a bad argument."""
    sources = collect_sources(paths, options.redact_to)
    if options.in_place and any(s.is_stdin for s in sources):
        raise InputError("standard input cannot be redacted in place; use --redact-to.")
    units = plan(sources, options)
    parts_left = [0] * len(sources)
    for unit in units:
        parts_left[unit.index] += 1
    merged: dict[int, FileReport] = {}
    next_index = 0
    for unit, part, told in _execute(units, options, progress):
        if progress is not None:
            # A unit run in this process told its bytes chunk by chunk already.
            progress(0 if told else part.size, parts_left[unit.index] == 1)
        if unit.index in merged:
            merged[unit.index].merge(part)
        else:
            merged[unit.index] = part
        parts_left[unit.index] -= 1
        # Units complete in order, so files complete in order too.
        while next_index < len(sources) and parts_left[next_index] == 0:
            yield merged.pop(next_index)
            next_index += 1


def worker_start_method() -> str:
    """fork: workers inherit the compiled detector's inputs without pickling them. But a fork
    copies every lock as it stands, and one held by another thread (logging, a client
    library) stays held in the child for ever; so a caller that runs threads (an embedding
    application, a test process) gets fresh "spawn" workers instead."""
    return "fork" if threading.active_count() == 1 else "spawn"


def _execute(
    units: list[_Unit], options: ScanOptions, progress: Progress | None
) -> Iterator[tuple[_Unit, FileReport, bool]]:
    """(unit, its report, whether `progress` already heard of its bytes), in unit order."""
    local = [u for u in units if u.source.is_stdin]
    pooled = [u for u in units if not u.source.is_stdin]
    worker = _Worker(options)  # validates the options here, before any process starts
    for unit in local:
        yield unit, worker.run(unit, progress), True
    if options.workers <= 1 or len(pooled) <= 1:
        for unit in pooled:
            yield unit, worker.run(unit, progress), True
        return
    ctx = multiprocessing.get_context(worker_start_method())
    pool = ctx.Pool(min(options.workers, len(pooled)), _init_worker, (options,))
    try:
        for unit, report in pool.imap(_run_unit, pooled):
            yield unit, report, False
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
