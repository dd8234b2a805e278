"""The scan's progress line on stderr: files, bytes done of the total, rate and ETA.

Written by hand rather than with rich or tqdm: neither is a dependency, and one
self-rewriting line is all a log scan needs. The command shows it only when stderr is a
terminal, or when asked (`--progress`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from linewarden.scan.files import Source

# Redrawing more often than this costs time and flickers.
REDRAW_INTERVAL = 0.2
# No ETA before this much of the run: the first chunks' rate (cold memos, workers still
# forking) says little about the rest.
ETA_AFTER_SECONDS = 1.0


def known_total(sources: Sequence[Source]) -> int | None:
    """Bytes the scan will read, when every input's size is known ahead: plain files.
    A gzip file's uncompressed size is not (its trailer holds it modulo 4 GiB, and only
    for one member), nor is standard input's."""
    if any(s.is_stdin or s.gzipped for s in sources):
        return None
    try:
        return sum(os.path.getsize(s.path) for s in sources)
    except OSError:
        return None


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """One self-rewriting line: `scanning: 3/10 files, 120.0/400.0 MB (30%), 85.2 MB/s,
    ETA 0:03`. Without a known total: bytes and rate only."""

    def __init__(
        self,
        stream: TextIO,
        total_files: int,
        total_bytes: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.files = 0
        self.bytes = 0
        self._clock = clock
        self.started = clock()
        self._drawn: float | None = None

    def __call__(self, scanned: int, file_done: bool) -> None:
        self.bytes += scanned
        self.files += file_done
        now = self._clock()
        due = self._drawn is None or now - self._drawn >= REDRAW_INTERVAL
        if due or self.files == self.total_files:
            self._drawn = now
            self.stream.write("\r" + self.render(now) + " \033[K")
            self.stream.flush()

    def render(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.bytes / elapsed
        parts = [f"scanning: {self.files}/{self.total_files} files"]
        if self.total_bytes:
            done = min(self.bytes, self.total_bytes)
            share = 100 * done // self.total_bytes
            parts.append(f"{_mb(done)}/{_mb(self.total_bytes)} MB ({share}%)")
        else:
            parts.append(f"{_mb(self.bytes)} MB")
        parts.append(f"{_mb(rate)} MB/s")
        if self.total_bytes and rate > 0 and elapsed >= ETA_AFTER_SECONDS:
            left = max(self.total_bytes - self.bytes, 0)
            parts.append(f"ETA {_clock(left / rate)}")
        return ", ".join(parts)

    def close(self) -> None:
        if self._drawn is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()
