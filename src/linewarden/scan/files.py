"""Log inputs: paths, directories, gzip and stdin, read as chunks of whole lines.

Memory stays constant whatever the file size: a chunk is at most `CHUNK_SIZE` bytes plus
the tail of one line carried to the next chunk (bounded by `MAX_CARRY`).
"""

from __future__ import annotations

import gzip
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# 4 MiB: large enough that per-chunk overhead (regex setup, pickling between processes) is
# noise, small enough that a worker's memory stays in the tens of MiB.
CHUNK_SIZE = 4 << 20
# A "line" longer than this (a binary file, a minified blob) is cut at a byte that cannot
# be inside a number or a header value; past 1 MiB we stop looking and cut anyway.
MAX_CARRY = 1 << 20
# Plain files at least this big are split into byte ranges scanned by several workers.
SPLIT_MIN = 4 * CHUNK_SIZE

GZIP_MAGIC = b"\x1f\x8b"
STDIN = "-"


class InputError(Exception):
    """A path that cannot be read; the message is one sentence for the user."""


@dataclass(frozen=True)
class Source:
    """One input: `path` is the file (or "-"), `relative` its path under the argument given,
    used to place its redacted copy under `--redact-to`."""

    path: str
    relative: str
    gzipped: bool

    @property
    def is_stdin(self) -> bool:
        return self.path == STDIN


def _is_gzip(path: str) -> bool:
    if path.endswith(".gz"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError:
        return False


def _inside(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or below it; both already `os.path.realpath`ed."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def iter_sources(paths: Iterable[str], exclude: str | None = None) -> Iterator[Source]:
    """Every file named or found under a named directory (sorted, symlinks not followed).

    `exclude` (the `--redact-to` directory) is never entered, however it or the scanned
    path is spelled (relative, through a symlink): a rerun would otherwise scan last run's
    copies and nest `clean/clean`. Compared on resolved paths, so spellings cannot differ.
    """
    skip = os.path.realpath(exclude) if exclude is not None else None
    for arg in paths:
        if arg == STDIN:
            yield Source(STDIN, "stdin", False)
            continue
        if os.path.isdir(arg):
            if skip is not None and _inside(os.path.realpath(arg), skip):
                raise InputError(
                    f"{arg}: is the --redact-to directory {exclude} (or inside it); "
                    "scan the originals, or choose another --redact-to."
                )
            root = Path(arg)
            for dirpath, dirnames, filenames in os.walk(arg):
                dirnames.sort()
                if skip is not None:
                    dirnames[:] = [
                        d for d in dirnames
                        if os.path.realpath(os.path.join(dirpath, d)) != skip
                    ]
                for name in sorted(filenames):
                    full = os.path.join(dirpath, name)
                    if os.path.isfile(full) and not os.path.islink(full):
                        rel = str(Path(full).relative_to(root))
                        yield Source(full, rel, _is_gzip(full))
        elif os.path.isfile(arg):
            yield Source(arg, os.path.basename(arg), _is_gzip(arg))
        elif not os.path.exists(arg):
            raise InputError(f"{arg}: no such file or directory.")
        else:
            raise InputError(f"{arg}: not a regular file or directory.")


def open_source(source: Source) -> BinaryIO:
    if source.is_stdin:
        return sys.stdin.buffer
    try:
        if source.gzipped:
            return gzip.open(source.path, "rb")  # type: ignore[return-value]
        return open(source.path, "rb")
    except OSError as exc:
        raise InputError(f"{source.path}: cannot open ({exc.strerror or exc}).") from exc


def _cut(buf: bytes | bytearray) -> int:
    """Where to end a chunk: after the last newline, else after the last byte that cannot
    belong to a number or header value, else (a giant token) at the end."""
    nl = buf.rfind(b"\n")
    if nl >= 0:
        return nl + 1
    if len(buf) < MAX_CARRY:
        return 0
    for sep in (b" ", b"\t", b'"', b","):
        at = buf.rfind(sep)
        if at >= 0:
            return at + 1
    return len(buf)


def iter_chunks(stream: BinaryIO, size: int = CHUNK_SIZE, limit: int = -1) -> Iterator[bytes]:
    """Chunks of whole lines from `stream`; at most `limit` bytes are read if `limit` >= 0.

    The last chunk may lack a final newline. Concatenating the chunks gives the stream back.
    """
    carry = b""
    remaining = limit
    while True:
        want = size if remaining < 0 else min(size, remaining)
        block = stream.read(want) if want else b""
        if remaining >= 0:
            remaining -= len(block)
        if not block:
            if carry:
                yield carry
            return
        buf = carry + block
        cut = _cut(buf)
        if cut == 0:
            carry = buf
            continue
        yield buf[:cut]
        carry = buf[cut:]


def split_ranges(path: str, parts: int) -> list[tuple[int, int]]:
    """Byte ranges of a plain file, each ending after a newline, for parallel scanning."""
    size = os.path.getsize(path)
    if parts <= 1 or size < SPLIT_MIN:
        return [(0, size)]
    step = max(size // parts, CHUNK_SIZE)
    bounds = [0]
    with open(path, "rb") as f:
        at = step
        while at < size:
            f.seek(at)
            tail = f.read(MAX_CARRY)
            nl = tail.find(b"\n")
            if nl < 0:
                break
            cut = at + nl + 1
            if cut >= size:
                break
            bounds.append(cut)
            at = cut + step
    bounds.append(size)
    return list(itertools.pairwise(bounds))
