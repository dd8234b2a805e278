"""Ledger benchmark: sustained disclosures/s through the writer, and report query times.

    .venv/bin/python bench/ledger.py                  # full: 10 M rows per backend
    .venv/bin/python bench/ledger.py --quick          # 1 M rows, shorter write runs
    .venv/bin/python bench/ledger.py --rows 10000000 --no-postgres

1. Sustained write rate: `--write-rows` records through `Ledger.record()` from
   `--producers` concurrent tasks on uvloop (as the proxy calls it), on SQLite
   (synchronous=FULL and NORMAL) and on a private PostgreSQL server (fsync on). Every
   record must return True; reports rows/s, batches and record() latency p50/p99/max.
   Schema v1 (index on (subscriber_key, time_us)) and the current schema run interleaved,
   `--rounds` times each, so a noisy shared machine slows both alike.
2. Query time over `--rows` rows (default 10 M) across `--subscribers` subscribers with a
   long-tailed distribution: the subscriber report for 200 random subscribers (median,
   p99) and for the heaviest one, plus one incident report over a 24 h window. The bulk
   load uses the same `Store.append` the writer uses (hash chain and all), 20,000 rows per
   transaction, into a schema-v1 ledger; the reports run, then the ledger is upgraded in
   place to the current schema by the ordinary migration runner (timed, rows counted
   before and after) and the reports run again.

Results: markdown on stdout and in bench/results/ledger.md. The private PostgreSQL server
started here is stopped by PID, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import functools
import hashlib
import hmac
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ledger.pg import PrivatePostgres  # noqa: E402

from linewarden.decide import DisclosureRecord  # noqa: E402
from linewarden.ledger import SIGNING_KEY_NAME, open_store  # noqa: E402
from linewarden.ledger.chain import Signer  # noqa: E402
from linewarden.ledger.migrations import MIGRATIONS, Migration, latest_version  # noqa: E402
from linewarden.ledger.reports import incident_report, subscriber_report  # noqa: E402
from linewarden.ledger.store import Store  # noqa: E402
from linewarden.ledger.writer import LedgerWriter  # noqa: E402

V1 = MIGRATIONS[:1]  # the schema before the covering subscriber index
SCHEMAS: list[tuple[str, tuple[Migration, ...]]] = [
    ("v1", V1), (f"v{latest_version()}", MIGRATIONS)]

KEY = b"bench-ledger-key"
START = 1_700_000_000.0
PARTNERS = [("billing-co", "billing", ("msisdn", "operator")),
            ("age-check", "age_verification", ("age_over_18", "pseudonym")),
            ("selfcare", "own_services", ("msisdn",)),
            ("games", "billing", ("pseudonym",))]
LOAD_BATCH = 20_000
# A refused record (the proxy would have forwarded it without identity) is offered again
# after this pause, so the rate measured is what the ledger sustains, not how fast it refuses.
RETRY_AFTER_S = 0.01


def subscriber_keys(count: int) -> list[str]:
    return [hmac.new(KEY, f"+447400{i:06d}".encode(), hashlib.sha256).hexdigest()
            for i in range(count)]


def records(rows: int, keys: list[str], days: float, seed: int = 1) -> Iterator[
        DisclosureRecord]:
    """A long tail: subscriber i is chosen with weight 1/(i+1)^0.6 (a few heavy users)."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** 0.6 for i in range(len(keys))]
    cum = list(_accumulate(weights))
    span = days * 86_400
    step = span / rows
    for n in range(0, rows, 100_000):
        chunk = min(100_000, rows - n)
        chosen = rng.choices(keys, cum_weights=cum, k=chunk)
        for j, key in enumerate(chosen):
            partner, purpose, claims = PARTNERS[(n + j) % len(PARTNERS)]
            host = f"h{(n + j) % 50}.{partner}.test"
            yield DisclosureRecord(START + (n + j) * step, partner, purpose, host, claims,
                                   "policy-v1", key)


def _accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


# ---------------------------------------------------------------- write rate

def _at_schema(store: Store, migrations: tuple[Migration, ...]) -> Store:
    """A copy of `store` whose open() migrates only as far as `migrations` go."""
    fresh = copy.copy(store)
    fresh.open = functools.partial(type(store).open, fresh,  # type: ignore[method-assign]
                                   migrations=migrations)
    return fresh


async def _write(url: str, base: Path, total: int, producers: int,
                 migrations: tuple[Migration, ...]) -> dict[str, float]:
    # As open_ledger() builds it, but with the schema pinned to `migrations`.
    template = open_store(url, base=base)
    signer = Signer.load_or_create(base / ".linewarden" / SIGNING_KEY_NAME)
    ledger = LedgerWriter(lambda: _at_schema(template, migrations), "bench", signer=signer)
    await ledger.start()
    source = iter(records(total, subscriber_keys(10_000), days=1.0))
    latencies: list[float] = []
    refused = 0

    async def producer() -> None:
        nonlocal refused
        for rec in source:
            while True:  # offered load with back-pressure: a refused record is retried
                t = time.perf_counter()
                if await ledger.record(rec.__class__(time.time(), *_rest(rec))):
                    latencies.append(time.perf_counter() - t)
                    break
                refused += 1
                await asyncio.sleep(RETRY_AFTER_S)

    t0 = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    elapsed = time.perf_counter() - t0
    await ledger.close()
    latencies.sort()
    committed = ledger.counters.committed
    return {"rows": committed, "seconds": elapsed, "rate": committed / elapsed,
            "refused": refused,
            "batches": ledger.counters.batches,
            "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
            "max_ms": latencies[-1] * 1e3}


def _rest(rec: DisclosureRecord) -> tuple[str, str, str, tuple[str, ...], str, str]:
    return (rec.partner_id, rec.purpose, rec.host, rec.claims, rec.policy_version,
            rec.subscriber_key)


def write_rate(url: str, base: Path, total: int, producers: int,
               migrations: tuple[Migration, ...] = MIGRATIONS) -> dict[str, float]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_write(url, base, total, producers, migrations))


# ---------------------------------------------------------------- queries

def bulk_load(store: Store, rows: int, keys: list[str], days: float) -> float:
    t0 = time.perf_counter()
    batch: list[DisclosureRecord] = []
    done = 0
    for rec in records(rows, keys, days):
        batch.append(rec)
        if len(batch) == LOAD_BATCH:
            store.append("bench", batch)
            done += len(batch)
            batch = []
            if done % 1_000_000 == 0:
                print(f"  loaded {done:,} rows ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
    if batch:
        store.append("bench", batch)
    return time.perf_counter() - t0


def query_times(store: Store, keys: list[str], days: float) -> dict[str, float]:
    rng = random.Random(5)
    sample = rng.sample(keys, 200)
    times = []
    sizes = []
    for key in sample:
        t = time.perf_counter()
        report = subscriber_report(store, key)
        times.append((time.perf_counter() - t) * 1e3)
        sizes.append(report.total)
    t = time.perf_counter()
    heavy = subscriber_report(store, keys[0])
    heavy_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    since = START + (days / 2) * 86_400
    incident = incident_report(store, since, since + 86_400)
    incident_ms = (time.perf_counter() - t) * 1e3
    times.sort()
    return {"median_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99)],
            "max_ms": times[-1], "median_rows": statistics.median(sizes),
            "heavy_ms": heavy_ms, "heavy_rows": heavy.total, "incident_ms": incident_ms,
            "incident_rows": incident.disclosures}


def _rows(store: Store) -> int:
    return int(store.query("SELECT COUNT(*) FROM disclosures")[0][0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--subscribers", type=int, default=100_000)
    ap.add_argument("--days", type=float, default=90.0)
    ap.add_argument("--write-rows", type=int, default=300_000)
    ap.add_argument("--producers", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=3,
                    help="write runs per backend and schema, interleaved")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--no-query", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    # SIGTERM runs the `finally` below too, so the private PostgreSQL server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.quick:
        args.rows, args.write_rows = 1_000_000, 100_000

    work = Path(tempfile.mkdtemp(prefix="linewarden-bench-ledger-"))
    pg = None if args.no_postgres else PrivatePostgres(
        settings={"shared_buffers": "512MB", "max_wal_size": "4GB"}).start()
    lines = [f"# Ledger benchmark ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"`{' '.join(['.venv/bin/python', 'bench/ledger.py', *sys.argv[1:]])}` on "
             f"{platform.python_implementation()} {platform.python_version()}, "
             f"{os.cpu_count()} CPUs (shared machine: load average "
             f"{os.getloadavg()[0]:.1f} at start).", "",
             "## Sustained write rate through `Ledger.record()`", "",
             f"{args.write_rows:,} records from {args.producers:,} concurrent tasks (uvloop);"
             " each record returns only after its batch's COMMIT.", "",
             "Rate = committed rows / wall time. A refused record (the proxy would have "
             "forwarded that request without identity) is counted and offered again 10 ms "
             "later; latency is of the record() calls that returned True.", "",
             f"Schemas v1 and v{latest_version()} alternate, {args.rounds} runs each, every run "
             "into a new empty ledger; the last column is the median of each schema's runs.",
             "",
             "| backend | schema | committed rows/s per run | batches | refused | "
             "record() p50 | p99 | max | median rows/s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    try:
        targets = [("SQLite, synchronous=FULL (default)", "sqlite:///w-full-{}.db"),
                   ("SQLite, synchronous=NORMAL", "sqlite:///w-normal-{}.db?synchronous=normal")]
        if args.no_sqlite:
            targets = []
        if pg is not None:
            targets.append(("PostgreSQL 15 (fsync on)", "postgres"))
        for name, pattern in [] if args.no_write else targets:
            runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in SCHEMAS}
            for n in range(args.rounds):
                for label, migrations in SCHEMAS if n % 2 == 0 else SCHEMAS[::-1]:
                    run_id = f"{label}-{n}"
                    url = (pg.create_database(f"write_{run_id.replace('-', '_')}")
                           if pattern == "postgres" and pg is not None
                           else pattern.format(run_id))
                    print(f"write rate: {name}, schema {label}, run {n + 1}", flush=True)
                    r = write_rate(url, work, args.write_rows, args.producers, migrations)
                    print(f"  {r['rate']:,.0f} rows/s", flush=True)
                    runs[label].append(r)
            for label, _ in SCHEMAS:
                rs = runs[label]
                per_run = " / ".join(f"{r['rate']:,.0f}" for r in rs)
                lines.append(
                    f"| {name} | {label} | {per_run} | "
                    f"{sum(r['batches'] for r in rs):,.0f} | "
                    f"{sum(r['refused'] for r in rs):,.0f} | "
                    f"{statistics.median(r['p50_ms'] for r in rs):.1f} ms | "
                    f"{statistics.median(r['p99_ms'] for r in rs):.1f} ms | "
                    f"{max(r['max_ms'] for r in rs):.1f} ms | "
                    f"**{statistics.median(r['rate'] for r in rs):,.0f}** |")
                print(lines[-1], flush=True)
        if not args.no_query:
            lines += ["", f"## Report query time over {args.rows:,} rows", "",
                      f"{args.subscribers:,} subscribers, long-tailed (weight 1/(i+1)^0.6), "
                      f"over {args.days:.0f} days. Subscriber report: 200 random subscribers "
                      "and the heaviest; incident report: one 24 h window. Loaded at schema v1, "
                      "measured, upgraded in place by the migration runner, measured again "
                      "(ANALYZE, and VACUUM on PostgreSQL, before each measurement).", "",
                      "| backend | schema | load rows/s | subscriber median | p99 | max | "
                      "rows (median) | heaviest | its rows | incident 24 h | its rows |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            upgrades: list[str] = []
            keys = subscriber_keys(args.subscribers)
            stores = [] if args.no_sqlite else [
                ("SQLite", open_store("sqlite:///q.db?synchronous=normal", base=work))]
            if pg is not None:
                stores.append(("PostgreSQL 15", open_store(pg.create_database("query"))))
            for name, unopened in stores:
                store = _at_schema(unopened, V1).open()
                print(f"bulk load: {name}", flush=True)
                load_s = bulk_load(store, args.rows, keys, args.days)
                load = f"{args.rows / load_s:,.0f}"
                for label, migrations in SCHEMAS:
                    if migrations is not V1:
                        before = _rows(store)
                        store.close()
                        print(f"upgrade: {name} to {label}", flush=True)
                        t = time.perf_counter()
                        store = _at_schema(unopened, migrations).open()
                        upgrade_s = time.perf_counter() - t
                        after = _rows(store)
                        assert after == before, (before, after)
                        upgrades.append(f"- {name}: v1 → {label} over {before:,} rows in "
                                        f"{upgrade_s:.0f} s; rows before {before:,}, after "
                                        f"{after:,}.")
                        print(upgrades[-1], flush=True)
                        load = "—"
                    if name.startswith("PostgreSQL"):
                        store.query("VACUUM ANALYZE disclosures")
                    else:
                        store.query("ANALYZE")
                    subscriber_report(store, keys[1])  # warm the connection
                    q = query_times(store, keys, args.days)
                    lines.append(
                        f"| {name} | {label} | {load} | {q['median_ms']:.1f} ms | "
                        f"{q['p99_ms']:.1f} ms | {q['max_ms']:.1f} ms | "
                        f"{q['median_rows']:,.0f} | {q['heavy_ms']:.0f} ms | "
                        f"{q['heavy_rows']:,} | {q['incident_ms']:,.0f} ms | "
                        f"{q['incident_rows']:,} |")
                    print(lines[-1], flush=True)
                store.close()
            lines += ["", "In-place upgrade (the migration runner, one transaction):", "",
                      *upgrades]
    finally:
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)  # the 10 M-row database is gigabytes
    text = "\n".join(lines) + "\n"
    out = ROOT / "bench" / "results" / "ledger.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
