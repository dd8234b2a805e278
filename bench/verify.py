"""`audit verify` on a large SQLite ledger: time and memory, intact and with planted breaks.

    .venv/bin/python bench/verify.py [--rows N] [--breaks K] [--dir DIR]

Builds an N-row single-instance ledger (kept in DIR and reused), verifies it, then a copy
with K rows edited and K deleted, spread evenly (2K breaks, all reported). Prints wall and
CPU time per row (the walk, the row decoding and SQLite's reads, in this process) and the
peak RSS, which includes SQLite's 64 MiB page cache.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from linewarden.decide import DisclosureRecord
from linewarden.ledger import open_store
from linewarden.ledger.chain import Signer
from linewarden.ledger.reports import verify_ledger
from linewarden.ledger.store import CheckpointPolicy


def build(path: Path, rows: int, signer: Signer) -> None:
    store = open_store(f"sqlite:///{path}?synchronous=normal", base=Path("/")).open()
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(1000)]
    for start in range(0, rows, 5000):
        store.append("gw1", [DisclosureRecord(1.7e9 + i, "p", "billing", f"h{i % 50}.test",
                                              ("msisdn",), "v1", keys[i % 1000])
                             for i in range(start, min(rows, start + 5000))],
                     signer, CheckpointPolicy())
    store.close()


def measure(path: Path, signer: Signer, label: str) -> None:
    store = open_store(f"sqlite:///{path}", base=Path("/")).open()
    wall, cpu = time.perf_counter(), time.process_time()
    report = verify_ledger(store, {signer.key_id: signer.public})
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    store.close()
    rows = sum(s.rows for s in report.instances)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"{label:8s} {rows:>10,} rows  {len(report.problems):>6,} breaks  wall {wall:6.1f} s"
          f"  CPU {cpu:6.1f} s ({cpu / rows * 1e6:.1f} µs/row)  peak RSS {rss} MiB",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--breaks", type=int, default=1_000, help="rows edited, and as many deleted")
    ap.add_argument("--dir", type=Path, default=None, help="keep the ledger here for reruns")
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="lw-verify-"))
    work.mkdir(parents=True, exist_ok=True)
    signer = Signer.load_or_create(work / "signing.pem")
    intact = work / f"ledger-{args.rows}.db"
    if not intact.exists():
        build(intact, args.rows, signer)
    measure(intact, signer, "intact")
    tampered = work / "tampered.db"
    shutil.copyfile(intact, tampered)
    step = args.rows // args.breaks
    db = sqlite3.connect(tampered)
    db.execute("UPDATE disclosures SET host = 'x.test' WHERE seq % ? = 7", (step,))
    db.execute("DELETE FROM disclosures WHERE seq % ? = ?", (step, step // 2))
    db.commit()
    db.close()
    measure(tampered, signer, "tampered")
    if args.dir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
