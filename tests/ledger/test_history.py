"""A generated history of 100,000 disclosures across 1,000 subscribers, written through
the writer on both backends: every report matches a plain-Python reference, the chain
verifies, and no raw phone number is anywhere in the database's bytes."""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from linewarden.claims import subscriber_key
from linewarden.ledger import open_ledger
from linewarden.ledger.chain import Signer
from linewarden.ledger.reports import (
    incident_report,
    stats_report,
    subscriber_report,
    verify_ledger,
)

from .conftest import Backend
from .history import DAY, LEDGER_KEY, START, History, expected_incident, expected_subscriber
from .history import generate as generate_history
from .pg import PrivatePostgres

ROWS = 100_000
SUBSCRIBERS = 1_000
PRODUCERS = 500  # concurrent requests feeding the writer, as a busy gateway would


@pytest.fixture(scope="module")
def history() -> History:
    return generate_history(ROWS, SUBSCRIBERS)


async def _load(backend: Backend, history: History) -> None:
    # This test is about the reports, not latency: a generous bound, so a loaded CI
    # machine cannot turn a slow commit into a missing (or late, duplicated) row.
    ledger = open_ledger(backend.url, key=LEDGER_KEY, instance_id="gw1", base=backend.base,
                         commit_bound=60.0, abandon_after=60.0)
    await ledger.start()
    queue = iter(history.records)

    async def producer() -> None:
        for rec in queue:  # the shared iterator hands out each record once
            assert await ledger.record(rec)

    await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    await ledger.close()


def test_reports_over_a_generated_history(backend: Backend, history: History) -> None:
    asyncio.run(_load(backend, history))
    store = backend.store()
    assert store.query("SELECT COUNT(*) FROM disclosures") == [(ROWS,)]

    # Every subscriber's "who received my number" report.
    for number in history.numbers:
        key = subscriber_key(LEDGER_KEY, number)
        got = {(e.partner_id, e.purpose, e.host):
               (e.first_us, e.last_us, e.count, e.claims)
               for e in subscriber_report(store, key).entries}
        want = {k: (round(v["first"] * 1e6), round(v["last"] * 1e6), v["count"],
                    sorted(v["claims"]))
                for k, v in expected_subscriber(history, key).items()}
        assert got == want, number
    # ...and windowed, for a few.
    since, until = START + 3 * DAY, START + 10 * DAY
    for number in history.numbers[:20]:
        key = subscriber_key(LEDGER_KEY, number)
        got_counts = {(e.partner_id, e.purpose, e.host): e.count
                      for e in subscriber_report(store, key, since, until).entries}
        assert got_counts == {k: v["count"] for k, v in
                              expected_subscriber(history, key, since, until).items()}

    for since, until, pattern, suffix in [
            (START, START + 31 * DAY, None, None),
            (START + 10 * DAY, START + 12.5 * DAY, None, None),
            (START, START + 31 * DAY, "*.games.test", ".games.test")]:
        report = incident_report(store, since, until, pattern)
        want = expected_incident(history, since, until, suffix)
        assert report.disclosures == want["disclosures"]
        assert report.subscribers == want["subscribers"]
        assert {(e.host, e.partner_id, e.purpose): (e.disclosures, e.subscribers, e.claims)
                for e in report.hosts} == want["hosts"]
        assert {c.claim: (c.disclosures, c.subscribers) for c in report.claims} == \
            want["claims"]
        assert f"{want['subscribers']:,} distinct subscribers" in report.summary

    days = Counter((int(r.time // DAY), r.partner_id) for r in history.records)
    stats = stats_report(store)
    assert sum(r.disclosures for r in stats) == ROWS
    assert len(stats) == len(days)

    signer = Signer.load_or_create(backend.base / ".linewarden" / "ledger-signing.pem")
    report = verify_ledger(store, {signer.key_id: signer.public})
    assert report.ok and report.instances[0].checkpoints_checked >= ROWS // 10_000

    raw_numbers_found = find_numbers(database_files(backend, store), history.numbers)
    assert raw_numbers_found == set()


# ---------------------------------------------------------------- the byte grep

_DIGIT_RUN = re.compile(rb"\d{10,}")


def find_numbers(files: list[Path], numbers: list[str]) -> set[str]:
    """Every number (international 447400xxxxxx or national 07400xxxxxx digits) that
    occurs anywhere in the files' raw bytes."""
    wanted = {n.encode(): n for n in numbers}
    wanted |= {b"0" + n[2:].encode(): n for n in numbers if n.startswith("44")}
    lengths = {len(w) for w in wanted}
    found: set[str] = set()
    for path in files:
        data = path.read_bytes()
        for match in _DIGIT_RUN.finditer(data):
            run = match.group()
            for n in lengths:
                for i in range(len(run) - n + 1):
                    if run[i:i + n] in wanted:
                        found.add(wanted[run[i:i + n]])
    return found


def database_files(backend: Backend, store: object) -> list[Path]:
    if backend.name == "sqlite":
        files = store.files()  # type: ignore[attr-defined]
        assert files and files[0].stat().st_size > 10_000_000
        return list(files)
    backend.store().query("CHECKPOINT")  # flush shared buffers to the data files
    server_dir = Path(os.environ.get("PGDATA", "")) if os.environ.get("PGDATA") else None
    data = server_dir or _pg_data_dir(backend)
    files = [p for p in data.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) > 10_000_000
    return files


def _pg_data_dir(backend: Backend) -> Path:
    (path,), = backend.store().query("SHOW data_directory")
    return Path(path)


def test_the_byte_grep_finds_a_number_when_there_is_one(tmp_path: Path) -> None:
    leak = tmp_path / "leak.bin"
    leak.write_bytes(b"\x00\x01row\x00+447400123456\x00" + b"07400654321" + os.urandom(64))
    assert find_numbers([leak], ["447400123456", "447400654321", "447400111111"]) == {
        "447400123456", "447400654321"}


def test_private_postgres_is_used(postgres: PrivatePostgres) -> None:
    assert postgres.port and postgres.data.exists()
