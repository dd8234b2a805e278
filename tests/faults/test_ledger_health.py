"""Issue 16 §2-3: while the ledger cannot commit, `linewarden_ledger_healthy` reads 0 (and 1
again after the first commit that succeeds), and the failure is logged a bounded number of
times however many batches fail.

The "disk" is the SQLite file capped with `PRAGMA max_page_count` (fault_support.LAUNCHER):
a commit then fails with SQLITE_FULL exactly as on a full file system, while the process,
the connection and every ping stay fine — the case the old gauge missed.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from pathlib import Path

from fault_support import get, metric_sum, metrics, no_raw_numbers, start_ledger_gateway, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from linewarden.logs import REPEAT_INTERVAL_S, RepeatLimiter
from lwtest import MSISDN_1, Gateway, Origin

IDENTITY = f"X-Up-Calling-Line-Id: {MSISDN_1}".encode()
FAULT_SECONDS = 6.0
LOAD_THREADS = 6
# Lines the failure may write: per distinct message the first in full, one summary per
# logs.REPEAT_INTERVAL_S (10 s) and one when the fault ends; a few distinct messages.
MAX_LEDGER_LINES = 10


def healthy(gw: Gateway) -> float:
    return metric_sum(metrics(gw), "linewarden_ledger_healthy")


def test_full_disk_health_gauge_and_a_bounded_log(tmp_path: Path, origin: Origin) -> None:
    cap = tmp_path / "max_pages"
    cap.write_text("0")
    env = {"LW_SQLITE_MAX_PAGES": str(cap)}
    gw = start_ledger_gateway(tmp_path / "gw", origin.port, env=env)
    try:  # learn the schema's size, then give the "disk" no room at all
        assert IDENTITY in get(gw.proxy_port, "http://partner.test/init")[1]
        assert healthy(gw) == 1
        with sqlite3.connect(tmp_path / "gw/state/ledger.db") as db:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
        cap.write_text(str(pages))
        lines_before = gw.log().count("\n")

        stop = threading.Event()
        answers: list[tuple[int, bool]] = []

        def load(n: int) -> None:
            i = 0
            while not stop.is_set():
                status, body = get(gw.proxy_port, f"http://partner.test/full/{n}/{i}")
                answers.append((status, IDENTITY in body))
                i += 1

        threads = [threading.Thread(target=load, args=(n,)) for n in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        try:
            assert wait_for(lambda: healthy(gw) == 0, timeout=10)
            stop.wait(FAULT_SECONDS)
            assert healthy(gw) == 0  # still failing: still 0
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        failed = metric_sum(metrics(gw), "linewarden_ledger_records_refused", reason="failed")
        assert answers and {s for s, _ in answers} == {200}
        assert not any(enriched for _, enriched in answers[len(answers) // 2:])

        cap.write_text("0")  # the disk is freed: the next commit succeeds
        assert wait_for(lambda: IDENTITY in get(gw.proxy_port, "http://partner.test/back")[1],
                        timeout=15)
        assert healthy(gw) == 1

        def ledger_lines() -> list[str]:
            new_lines = gw.log().splitlines()[lines_before:]
            return [line for line in new_lines if "linewarden.ledger" in line]

        # The failures held back are counted on one line when their window ends.
        assert wait_for(lambda: any("more times" in line for line in ledger_lines()),
                        timeout=REPEAT_INTERVAL_S + 5)
        lines = ledger_lines()
        print(f"full ledger for {FAULT_SECONDS:.0f}+ s under {LOAD_THREADS} clients: "
              f"{len(answers)} requests, {failed:.0f} rows refused as failed, "
              f"{len(lines)} ledger log lines:\n" + "\n".join(lines))
        assert failed > 50, "the fault was too small to show a storm"
        assert 1 <= len(lines) <= MAX_LEDGER_LINES, "\n".join(lines)
        assert any("commits succeed again" in line for line in lines)
        held = sum(int(m.group(1)) for line in lines
                   if (m := re.search(r"\((\d+) more times", line)))
        assert held > 0
        assert no_raw_numbers(gw) == []
    finally:
        gw.stop()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 25), st.sampled_from(["disk full", "locked", "gone"])),
                max_size=300))
def test_repeat_limiter_bounds_lines_and_loses_no_count(
        events: list[tuple[float, str]]) -> None:
    """Without an event loop (the window closes on the next occurrence): per message at most
    one line per interval started, and after settle() the full lines plus the counts on the
    summary lines add up to every occurrence (a reference count kept apart)."""
    logger = logging.getLogger(f"test.repeat.{id(events)}")
    logger.propagate = False
    handler = _Lines()
    logger.addHandler(handler)
    now = [0.0]
    limiter = RepeatLimiter(logger, interval=10.0, clock=lambda: now[0])
    occurrences: dict[str, int] = {}
    for step, text in events:
        now[0] += step
        occurrences[text] = occurrences.get(text, 0) + 1
        limiter.error(text)
    span = now[0]
    limiter.settle()
    for text, count in occurrences.items():
        mine = [line for line in handler.lines if line.startswith(text)]
        written = sum(int(m.group(1)) if (m := re.search(r"\((\d+) more times", line))
                      else 1 for line in mine)
        assert written == count
        # a full line opens a window, a summary closes one; windows start >= 10 s apart
        assert len(mine) <= 2 * (1 + span // 10.0) + 1
