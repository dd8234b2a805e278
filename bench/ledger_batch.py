"""Ledger CPU per row by commit size, with one subscriber or many: `Store.append` directly.

    .venv/bin/python bench/ledger_batch.py [--rows N] [--subscribers N]

Under wrk the proxy benchmarks commit ~25 rows per transaction, all for one subscriber (one
client address). A real gateway's rows belong to many subscribers, and each row then dirties
its own leaf of the subscriber index: SQLite's WAL writes whole pages, so a row costs about
twice as much. This prints CPU µs per row (this process: the chain hash, the INSERTs, COMMIT
with `synchronous=FULL`) for 1/25/100/500-row commits, on SQLite and (when a PostgreSQL
server can be started here) on PostgreSQL's client side, and writes
bench/results/ledger_batch.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from linewarden.decide import DisclosureRecord
from linewarden.ledger.postgres import PostgresStore
from linewarden.ledger.sqlite import SQLiteStore
from linewarden.ledger.store import Store

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.ledger.pg import PrivatePostgres  # noqa: E402  (a private server in a temp dir)

RESULTS = REPO / "bench" / "results" / "ledger_batch.md"
BATCHES = (1, 25, 100, 500)


def records(n: int, subscribers: int, seed: int = 7) -> list[DisclosureRecord]:
    rng = random.Random(seed)
    keys = [hashlib.sha256(b"subscriber %d" % i).hexdigest() for i in range(subscribers)]
    return [DisclosureRecord(time.time(), "bench-partner", "billing", "partner.test",
                             ("msisdn",), "v1", keys[rng.randrange(subscribers)])
            for _ in range(n)]


def per_row(store: Store, recs: list[DisclosureRecord], batch: int, warm: int) -> float:
    """CPU µs per row over `recs` appended `batch` at a time, after `warm` rows in bulk (an
    index that already spans many pages, as a running ledger's does)."""
    store.append("bench", recs[:warm])
    started = time.process_time()
    for at in range(warm, len(recs), batch):
        store.append("bench", recs[at:at + batch])
    return (time.process_time() - started) / (len(recs) - warm) * 1e6


def run(name: str, make: Callable[[], Store], args: argparse.Namespace) -> list[str]:
    lines = []
    for label, subscribers in (("one subscriber", 1), (f"{args.subscribers:,} subscribers",
                                                        args.subscribers)):
        recs = records(args.rows + args.warm, subscribers)
        cells = []
        for batch in BATCHES:
            store = make().open()
            try:
                cells.append(per_row(store, recs, batch, args.warm))
            finally:
                store.close()
            print(f"{name:10s} {label:22s} {batch:4d} rows per commit: "
                  f"{cells[-1]:6.1f} µs CPU per row", flush=True)
        lines.append(f"| {name} | {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000, help="rows measured per cell")
    ap.add_argument("--warm", type=int, default=50_000, help="rows written first, in bulk")
    ap.add_argument("--subscribers", type=int, default=200_000)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="linewarden-ledger-batch-"))
    pg = None
    try:
        counter = iter(range(1_000_000))
        rows = run("SQLite", lambda: SQLiteStore(tmp / f"l{next(counter)}.db"), args)
        if not args.no_postgres:
            pg = PrivatePostgres().start()
            server = pg
            rows += run("PostgreSQL", lambda: PostgresStore(server.create_database()), args)
    finally:
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    report = "\n".join([
        "# Ledger CPU per row by commit size", "",
        f"`.venv/bin/python bench/ledger_batch.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f" on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {args.rows:,} rows per cell "
        f"after {args.warm:,} written in bulk; CPU time of this process (for PostgreSQL the "
        "client side only). SQLite `synchronous=FULL`, PostgreSQL `synchronous_commit=on`.", "",
        "| backend | rows belong to | " + " | ".join(f"{b} rows/commit" for b in BATCHES)
        + " |",
        "|---|---|" + "---:|" * len(BATCHES),
        *rows, ""])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
