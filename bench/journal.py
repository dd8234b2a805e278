"""Journal-first ledger vs the SQLite-per-row writer, side by side in one run.

    .venv/bin/python bench/journal.py                 # 200,000 records per run, 3 rounds
    .venv/bin/python bench/journal.py --records 50000 --rounds 1

Each run drives one writer on uvloop the way the proxy does: `--concurrency` callers,
each submitting its next record from the previous one's `done` callback (the callback
form, no task per record), until `--records` are answered. Every answer must be True.

- per-row:  `LedgerWriter` on SQLite (synchronous=FULL): the store is the durability
  point, one transaction per batch in the writer thread.
- journal:  `JournalWriter`: chained and framed on the loop, written and fdatasync'ed per
  batch by the flusher thread, the SQLite index loaded afterwards. The append phase runs
  with the indexer idle (its linger longer than the run), then the indexer loads
  everything at close and its own thread CPU is measured: indexing µs/row, separately.

Figures: records/s (wall), process CPU µs/record (every thread: what a core pays),
loop-thread CPU µs/record (what the proxy's event loop pays), batches (= fdatasyncs or
COMMITs). Runs alternate, so a busy shared machine slows both alike; the median round is
reported. Markdown on stdout and in bench/results/journal.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from linewarden.decide import DisclosureRecord  # noqa: E402
from linewarden.ledger import open_ledger  # noqa: E402
from linewarden.ledger.journal_writer import JournalWriter  # noqa: E402
from linewarden.ledger.writer import LedgerWriter  # noqa: E402

HOSTS = [f"h{i}.partner.test" for i in range(20)]


@dataclass
class Run:
    kind: str
    records: int
    wall_s: float
    cpu_s: float
    loop_cpu_s: float
    batches: int
    index_cpu_us_row: float | None = None
    index_wall_s: float | None = None

    @property
    def rate(self) -> float:
        return self.records / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.records * 1e6

    @property
    def loop_us(self) -> float:
        return self.loop_cpu_s / self.records * 1e6


def records(n: int) -> list[DisclosureRecord]:
    now = time.time()
    return [DisclosureRecord(now, "billing-co", "billing", HOSTS[i % len(HOSTS)],
                             ("pseudonym", "age_over_18"), "v1",
                             hashlib.sha256(str(i % 50_000).encode()).hexdigest())
            for i in range(n)]


async def drive(ledger: LedgerWriter, recs: list[DisclosureRecord], concurrency: int
                ) -> tuple[float, float, float]:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    n = len(recs)
    state = {"sent": 0, "answered": 0, "false": 0}

    def on_done(ok: bool) -> None:
        state["answered"] += 1
        state["false"] += not ok
        if state["sent"] < n:
            i = state["sent"]
            state["sent"] += 1
            loop.call_soon(ledger.submit, recs[i], on_done)  # not inside the callback
        elif state["answered"] == n and not finished.done():
            finished.set_result(None)

    wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    for _ in range(min(concurrency, n)):
        i = state["sent"]
        state["sent"] += 1
        ledger.submit(recs[i], on_done)
    await finished
    result = (time.perf_counter() - wall, time.process_time() - cpu,
              time.thread_time() - loop_cpu)
    if state["false"]:
        raise SystemExit(f"{state['false']} records answered False: not a valid run")
    return result


async def one(kind: str, base: Path, recs: list[DisclosureRecord], concurrency: int) -> Run:
    options: dict[str, object] = {"commit_bound": 30.0, "queue_max": concurrency * 2}
    if kind == "journal":
        options.update(journal=Path("journal"), index_interval=3_600.0)
    ledger = open_ledger("sqlite:///ledger.db", key=b"bench", instance_id="bench",
                         base=base, **options)  # type: ignore[arg-type]
    await ledger.start()
    wall, cpu, loop_cpu = await drive(ledger, recs, concurrency)
    run = Run(kind, len(recs), wall, cpu, loop_cpu, ledger.counters.batches)
    start = time.perf_counter()
    await ledger.close()  # the journal's indexer loads everything here
    if isinstance(ledger, JournalWriter):
        indexer = ledger.indexer
        assert indexer.rows == len(recs), (indexer.rows, len(recs))
        run.index_cpu_us_row = indexer.cpu_s / indexer.rows * 1e6
        run.index_wall_s = time.perf_counter() - start
    return run


def table(runs: list[Run]) -> str:
    lines = ["| writer | records/s | process CPU µs/record | loop CPU µs/record | "
             "records per batch | indexing CPU µs/row |", "|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        index = f"{r.index_cpu_us_row:.1f}" if r.index_cpu_us_row is not None else \
            "(in the commit)"
        lines.append(f"| {r.kind} | {r.rate:,.0f} | {r.cpu_us:.1f} | {r.loop_us:.1f} | "
                     f"{r.records / max(r.batches, 1):,.0f} | {index} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "journal.md")
    args = parser.parse_args()
    recs = records(args.records)
    per_kind: dict[str, list[Run]] = {"per-row (SQLite)": [], "journal (+ SQLite index)": []}
    for round_ in range(args.rounds):
        for kind, label in (("per-row", "per-row (SQLite)"),
                            ("journal", "journal (+ SQLite index)")):
            with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
                run = uvloop.run(one(kind, Path(tmp), recs, args.concurrency))
            run.kind = label
            per_kind[label].append(run)
            print(f"round {round_ + 1} {label}: {run.rate:,.0f} records/s, "
                  f"{run.cpu_us:.1f} µs CPU/record", file=sys.stderr)
    medians = [sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
               for runs in per_kind.values()]
    old, new = medians
    load = os.getloadavg()
    text = "\n".join([
        "# Journal-first ledger vs SQLite per-row writer (bench/journal.py)",
        "",
        f"`.venv/bin/python bench/journal.py --records {args.records} --rounds "
        f"{args.rounds} --concurrency {args.concurrency}`; {time.strftime('%Y-%m-%d %H:%M')}"
        f" UTC, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores shared, load average {load[0]:.1f}; median of "
        f"{args.rounds} alternating rounds.",
        "",
        table(medians),
        "",
        f"Journal / per-row: **{new.rate / old.rate:.1f}x** records/s, process CPU per "
        f"record **{new.cpu_us / old.cpu_us:.2f}x**, loop CPU per record "
        f"**{new.loop_us / old.loop_us:.2f}x**; indexing adds "
        f"{new.index_cpu_us_row or 0:.1f} µs/row in its own thread "
        f"({new.index_wall_s or 0:.1f} s wall for {new.records:,} rows at close).",
        "",
        "Rounds (records/s): " + "; ".join(
            f"{label}: {', '.join(f'{r.rate:,.0f}' for r in runs)}"
            for label, runs in per_kind.items()),
        ""])
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
