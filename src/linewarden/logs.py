"""Repeated identical log lines, rate-limited: the first in full, then one summary line
per interval with how many were held back.

A failing disk or database fails every batch, every packet, every retry; one ERROR line
each was 10,270 lines in 14 s in the issue-16 fault run, written to what may be the same
full disk. The exact counts are in /metrics; the log needs to say *that* it is happening,
*what* it is, and *how often*.

One rule bounds it, flapping included: a given message (after %-formatting) is written at
most once per `REPEAT_INTERVAL_S`. The first occurrence is written at once and opens a
window; at the window's end (an event-loop timer) the occurrences held back in it, if any,
are written as one line with their count, and a new window opens; a window with none held
back closes, and the next occurrence is written in full again. Messages carry no
per-request data (no row counts, no addresses), so identical failures read identically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

# One line per distinct message per this many seconds: at most 360 an hour for a fault
# that lasts all hour, and about one Prometheus scrape interval (15-30 s is usual) behind
# what the counters already show.
REPEAT_INTERVAL_S = 10.0
# Distinct messages tracked at once; beyond it the oldest window is closed early (its
# count written). Each owner logs a handful of distinct messages.
MAX_TRACKED = 64


class _Window:
    __slots__ = ("held", "level", "since", "timer")

    def __init__(self, level: int, since: float) -> None:
        self.level, self.since, self.held = level, since, 0
        self.timer: asyncio.TimerHandle | None = None


class RepeatLimiter:
    """`error()` / `warning()` / `log()` like a logger's, each identical message at most
    once per `interval`; `settle()` writes what is held back now (at close)."""

    def __init__(self, logger: logging.Logger, *, interval: float = REPEAT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.interval, self.clock = logger, interval, clock
        self._windows: dict[str, _Window] = {}

    def error(self, msg: str, *args: object) -> None:
        self.log(logging.ERROR, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(logging.WARNING, msg, *args)

    def log(self, level: int, msg: str, *args: object) -> None:
        text = msg % args if args else msg
        now = self.clock()
        window = self._windows.get(text)
        if window is not None and now - window.since >= self.interval:
            self._close(text)  # no loop timer ran (called outside a loop): close it here
            # still repeating: keep counting in a new window; else start over in full
            window = self._open(text, level, now) if window.held else None
        if window is None:
            if len(self._windows) >= MAX_TRACKED:
                self._close(next(iter(self._windows)))
            self._open(text, level, now)
            self.logger.log(level, "%s", text)
            return
        window.held += 1

    def settle(self) -> None:
        for text in list(self._windows):
            self._close(text)

    def _open(self, text: str, level: int, now: float) -> _Window:
        window = self._windows[text] = _Window(level, now)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return window  # no loop: the next occurrence after the interval closes it
        window.timer = loop.call_later(self.interval, self._due, text)
        return window

    def _due(self, text: str) -> None:
        window = self._windows.get(text)
        if window is None:
            return
        window.timer = None
        self._close(text)
        if window.held:  # still repeating: keep counting in a new window
            self._open(text, window.level, self.clock())

    def _close(self, text: str) -> None:
        window = self._windows.pop(text)
        if window.timer is not None:
            window.timer.cancel()
        if window.held:
            self.logger.log(window.level, "%s (%d more times in the last %.0f s)", text,
                            window.held, self.clock() - window.since)
