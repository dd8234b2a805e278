"""The journal-first ledger: durable in the journal before identity leaves, indexed after.

Invariant 4 with the journal as the durability point: True only for a record whose batch
was fdatasync'ed; every identity a partner saw has a journal record and, once indexed, a
store row; a torn tail is truncated and the chain (journal and store) still verifies; a
full disk withholds identity while traffic flows; a store outage does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linewarden.claims import subscriber_key
from linewarden.ledger import open_ledger, open_store, open_with_tail
from linewarden.ledger.chain import Signer
from linewarden.ledger.journal import (
    JournalFiles,
    instance_dir,
    instances,
    read_rows,
    segments,
)
from linewarden.ledger.journal_writer import JournalWriter
from linewarden.ledger.reports import subscriber_report, verify_ledger
from linewarden.ledger.store import Store

from .conftest import Backend
from .pg import PrivatePostgres
from .test_gateway_ledger import (
    HEADER,
    HOSTS,
    LEDGER_KEY,
    NUMBERS,
    Origin,
    load,
    start_gateway,
    write_config,
)
from .test_writer import PATIENT, rec, run, until

JOURNAL = Path("journal")


def journal_ledger(base: Path, url: str = "sqlite:///l.db", **options: Any) -> JournalWriter:
    ledger = open_ledger(url, key=b"k", instance_id="gw1", base=base, journal=JOURNAL,
                         **options)
    assert isinstance(ledger, JournalWriter)
    return ledger


def verify(store: Store, base: Path, journal: Path | None = None) -> Any:
    signer = Signer.load_or_create(base / ".linewarden" / "ledger-signing.pem")
    return verify_ledger(store, {signer.key_id: signer.public}, journal)


def test_durable_in_the_journal_then_indexed_on_both_backends(backend: Backend) -> None:
    ledger = journal_ledger(backend.base, backend.url, commit_bound=PATIENT,
                            index_interval=0.05)

    async def main() -> list[bool]:
        await ledger.start()
        results = await asyncio.gather(*(ledger.record(rec(i)) for i in range(3000)))
        await ledger.close()
        return results

    assert all(run(main()))
    assert ledger.counters.committed == 3000
    assert ledger.counters.batches <= 3000 / 20  # one fdatasync carries many records
    rows = list(read_rows(backend.base / JOURNAL / "gw1"))
    assert rows == [] or rows[-1].fields.seq == 3000  # indexed segments may be gone
    store = backend.store()
    assert store.query("SELECT COUNT(*), MAX(seq) FROM disclosures") == [(3000, 3000)]
    report = verify(store, backend.base, backend.base / JOURNAL)
    assert report.ok, report.problems
    assert store.checkpoints("gw1")[-1].kind == "close"


def test_submit_calls_back_exactly_once_and_survives_a_failing_callback(
        tmp_path: Path) -> None:
    ledger = journal_ledger(tmp_path, commit_bound=PATIENT)
    calls: list[tuple[int, bool]] = []

    def done(i: int) -> Callable[[bool], None]:
        def call(ok: bool) -> None:
            calls.append((i, ok))
            if i == 1:
                raise RuntimeError("a caller's bug")
        return call

    async def main() -> bool:
        await ledger.start()
        for i in range(3):
            ledger.submit(rec(i), done(i))
        after = await ledger.record(rec(3))
        await asyncio.sleep(0.05)
        await ledger.close()
        return after

    assert run(main()) is True
    assert sorted(calls) == [(0, True), (1, True), (2, True)]
    bad = dataclasses.replace(rec(9), subscriber_key="447400900123")
    assert run(_record_once(journal_ledger(tmp_path / "b"), bad)) is False


async def _record_once(ledger: JournalWriter, record: Any) -> bool:
    await ledger.start()
    try:
        return await ledger.record(record)
    finally:
        await ledger.close()


class SlowFiles(JournalFiles):
    """Each batch's write takes the next scripted delay first (a disk fast, then slow)."""

    delays: list[float]

    def write(self, data: bytes, first_seq: int) -> None:
        if self.delays:
            time.sleep(self.delays.pop(0))
        super().write(data, first_seq)


BOUND = 0.1


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delays=st.lists(st.sampled_from([0.0, 0.0, 0.03, 0.15]), min_size=1, max_size=6),
       gaps=st.lists(st.sampled_from([0.0, 0.0, 0.005, 0.04]), min_size=5, max_size=40))
def test_every_record_is_answered_once_and_true_only_when_synced(
        tmp_path_factory: pytest.TempPathFactory, delays: list[float],
        gaps: list[float]) -> None:
    """The writer's property, with the journal as the durability point: each caller
    hears once, True only for a record that is in the journal, never long past its
    bound."""
    base = tmp_path_factory.mktemp("slow")
    files = SlowFiles(base / JOURNAL, "gw1")
    files.delays = list(delays)
    ledger = journal_ledger(base, commit_bound=BOUND, files=files, index_interval=3600)
    answers: dict[int, list[tuple[bool, float]]] = {i: [] for i in range(len(gaps))}

    async def main() -> None:
        await ledger.start()
        for i, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            sent = time.monotonic()
            ledger.submit(rec(i), lambda ok, i=i, sent=sent: answers[i].append(
                (ok, time.monotonic() - sent)))
        await asyncio.sleep(BOUND + 0.05)
        late = {i for i, got in answers.items() if not got}
        assert not late, f"records {sorted(late)} had no answer after their bound"
        # What the journal holds before close (close flushes the rest too).
        journaled = {r.fields.subscriber_key.hex() for r in read_rows(base / JOURNAL / "gw1")}
        for i, got in answers.items():
            if got and got[0][0]:
                assert rec(i).subscriber_key in journaled, f"record {i}: True, not synced"
        await ledger.close()

    run(main())
    for i, got in answers.items():
        assert len(got) == 1, f"record {i} answered {len(got)} times"
        assert got[0][1] < BOUND + 1.0, f"record {i} waited {got[0][1]:.3f} s"
    falses = sum(not ok for ((ok, _),) in answers.values())
    assert falses == ledger.counters.withheld


def test_a_torn_tail_is_truncated_and_the_chain_verifies(tmp_path: Path) -> None:
    async def write(n: int, offset: int) -> None:
        ledger = journal_ledger(tmp_path, commit_bound=PATIENT, index_interval=3600)
        await ledger.start()
        assert all(await asyncio.gather(*(ledger.record(rec(offset + i)) for i in range(n))))
        # A crash: no close, so nothing is indexed; release the lock as the kernel would.
        ledger._files.close()

    run(write(50, 0))
    newest = segments(tmp_path / JOURNAL / "gw1")[-1].path
    good = newest.stat().st_size
    with newest.open("ab") as f:
        f.write(b"\x00\x00\x00\x90\x12\x34")  # a frame header cut short by the crash
    run(write(30, 50))  # reopening truncates, then the chain continues
    rows = list(read_rows(tmp_path / JOURNAL / "gw1"))
    assert [r.fields.seq for r in rows] == list(range(1, 81))
    with newest.open("rb") as f:
        f.seek(good)
        assert f.read(4) != b"\x00\x00\x00\x90"  # the torn bytes are gone
    store = open_with_tail(open_store("sqlite:///l.db", base=tmp_path), tmp_path / JOURNAL)
    assert store.query(f"SELECT COUNT(*) FROM {store.source}") == [(80,)]
    assert verify(store, tmp_path, tmp_path / JOURNAL).ok
    # And after a normal start and close everything is indexed and still verifies.
    ledger = journal_ledger(tmp_path, commit_bound=PATIENT)
    assert run(_record_once(ledger, rec(80))) is True
    store = open_store("sqlite:///l.db", base=tmp_path).open()
    assert store.query("SELECT COUNT(*), MAX(seq) FROM disclosures") == [(81, 81)]
    assert verify(store, tmp_path, tmp_path / JOURNAL).ok


def test_an_altered_journal_row_is_reported(tmp_path: Path) -> None:
    ledger = journal_ledger(tmp_path, commit_bound=PATIENT, index_interval=3600)

    async def main() -> None:
        await ledger.start()
        assert all(await asyncio.gather(*(ledger.record(rec(i)) for i in range(20))))
        ledger._files.close()

    run(main())
    path = segments(tmp_path / JOURNAL / "gw1")[-1].path
    data = bytearray(path.read_bytes())
    at = data.index(b"h3.test")
    data[at:at + 7] = b"h9.test"  # content edited, CRC recomputed by a careful forger
    path.write_bytes(bytes(data))
    import struct
    import zlib
    # Recompute the CRC of the edited frame so only the chain can tell.
    pos = data.index(b"LWJ1") + 6 + len(b"gw1")
    while pos < len(data):
        n = struct.unpack_from(">I", data, pos)[0]
        if pos + 8 <= at < pos + 8 + n:
            struct.pack_into(">I", data, pos + 4, zlib.crc32(bytes(data[pos + 8:pos + 8 + n])))
            break
        pos += 8 + n
    path.write_bytes(bytes(data))
    store = open_store("sqlite:///l.db", base=tmp_path).open()
    report = verify(store, tmp_path, tmp_path / JOURNAL)
    assert not report.ok
    assert any(p.kind == "altered" and p.instance_id == "gw1" for p in report.problems)


def test_reports_include_the_unindexed_tail(tmp_path: Path) -> None:
    """'Who received my number' is complete while the indexer has not run yet."""
    ledger = journal_ledger(tmp_path, commit_bound=PATIENT, index_interval=3600)
    key = rec(3).subscriber_key

    async def main() -> None:
        await ledger.start()
        assert all(await asyncio.gather(*(ledger.record(rec(i)) for i in range(40))))
        assert ledger.index_lag == 40
        store = open_with_tail(open_store("sqlite:///l.db", base=tmp_path),
                               tmp_path / JOURNAL)
        assert store.query("SELECT COUNT(*) FROM disclosures") == [(0,)]  # nothing indexed
        report = subscriber_report(store, key)
        assert report.total == 1 and report.entries[0].host == "h3.test"
        store.close()
        await ledger.close()

    run(main())
    store = open_store("sqlite:///l.db", base=tmp_path).open()
    assert subscriber_report(store, key).total == 1  # indexed at close


def test_continues_the_chain_of_the_per_row_writer(tmp_path: Path) -> None:
    old = open_ledger("sqlite:///l.db", key=b"k", instance_id="gw1", base=tmp_path,
                      commit_bound=PATIENT)

    async def first() -> None:
        await old.start()
        assert all(await asyncio.gather(*(old.record(rec(i)) for i in range(25))))
        await old.close()

    run(first())
    ledger = journal_ledger(tmp_path, commit_bound=PATIENT)

    async def second() -> None:
        await ledger.start()
        assert all(await asyncio.gather(*(ledger.record(rec(i)) for i in range(25, 60))))
        await ledger.close()

    run(second())
    store = open_store("sqlite:///l.db", base=tmp_path).open()
    assert store.query("SELECT COUNT(*), MAX(seq) FROM disclosures") == [(60, 60)]
    assert verify(store, tmp_path, tmp_path / JOURNAL).ok


def test_a_second_writer_on_one_instance_journal_is_refused(tmp_path: Path) -> None:
    from linewarden.ledger.journal import JournalError

    first = JournalFiles(tmp_path, "gw1")
    first.open()
    with pytest.raises(JournalError, match="another process"):
        JournalFiles(tmp_path, "gw1").open()
    first.close()
    assert instance_dir(tmp_path, "gw/../x").name.startswith("x-")  # no path escapes


@pytest.fixture
def own_postgres() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as server:
        yield server


def test_a_postgres_outage_does_not_withhold_identity(own_postgres: PrivatePostgres,
                                                      tmp_path: Path) -> None:
    ledger = journal_ledger(tmp_path, own_postgres.url(), commit_bound=PATIENT,
                            index_interval=0.05)

    async def main() -> None:
        await ledger.start()
        assert await ledger.record(rec(0)) is True
        assert await until(lambda: ledger.index_lag == 0, 10)
        await asyncio.to_thread(own_postgres.stop)
        results = await asyncio.gather(*(ledger.record(rec(i)) for i in range(1, 200)))
        assert all(results)  # durable in the journal: identity flows
        await asyncio.sleep(0.3)
        assert ledger.index_lag == 199 and not ledger.indexer.healthy
        await asyncio.to_thread(own_postgres.start)
        assert await until(lambda: ledger.index_lag == 0, 20)
        await ledger.close()

    run(main())
    store = open_store(own_postgres.url()).open()
    assert store.query("SELECT COUNT(*), MAX(seq) FROM disclosures") == [(200, 200)]
    assert verify(store, tmp_path, tmp_path / JOURNAL).ok


# ---------------------------------------------------------------- through the gateway

def journal_config(tmp: Path, origin_port: int, url: str, journal: str,
                   extra: str = "") -> tuple[Path, int]:
    config, port = write_config(tmp, origin_port, url)
    text = config.read_text().replace(f'url = "{url}"\n',
                                      f'url = "{url}"\njournal = "{journal}"\n{extra}')
    config.write_text(text)
    return config, port


def store_counts(url: str, base: Path, journal: Path | None = None) -> Counter[tuple[str, str]]:
    keys = {subscriber_key(LEDGER_KEY.encode(), n): n for n in NUMBERS}
    store = open_store(url, base=base)
    store = open_with_tail(store, journal) if journal else store.open()
    rows = store.query(f"SELECT subscriber_key, host, COUNT(*) FROM {store.source} "
                       "GROUP BY subscriber_key, host")
    store.close()
    return Counter({(keys[bytes(k).hex()], h): int(c) for k, h, c in rows})


def journal_counts(journal: Path) -> Counter[tuple[str, str]]:
    keys = {subscriber_key(LEDGER_KEY.encode(), n): n for n in NUMBERS}
    counts: Counter[tuple[str, str]] = Counter()
    for directory in instances(journal).values():
        for row in read_rows(directory):
            counts[(keys[row.fields.subscriber_key.hex()], row.fields.host)] += 1
    return counts


def test_sigkill_under_load_every_identity_is_journaled_then_indexed(tmp_path: Path) -> None:
    origin = Origin()
    url = "sqlite:///state/ledger.db"
    journal = tmp_path / "state" / "journal"
    # The indexer lingers long, so the kill leaves an unindexed tail to recover.
    config, proxy_port = journal_config(tmp_path, origin.port, url, "state/journal")
    gateway = start_gateway(config, proxy_port)
    stop, statuses = threading.Event(), []
    try:
        threads = load(proxy_port, stop, statuses)
        time.sleep(1.5)
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait(5)
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        stop.set()
        if gateway.poll() is None:
            gateway.kill()
    received = origin.identities()
    assert sum(received.values()) > 100, "the load never reached the partner"
    # Store rows plus the journal's unindexed tail: every identity is there already.
    recorded = store_counts(url, tmp_path, journal)
    missing = {k: n - recorded[k] for k, n in received.items() if recorded[k] < n}
    assert missing == {}, f"identities received without a journal record: {missing}"
    # Restart: the torn tail (if any) goes, the indexer loads the rest into the store.
    gateway = start_gateway(config, proxy_port)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(store_counts(url, tmp_path).values()) \
                < sum(recorded.values()):
            time.sleep(0.1)
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(15)
        except subprocess.TimeoutExpired:
            gateway.kill()
        origin.close()
    indexed = store_counts(url, tmp_path)
    missing = {k: n - indexed[k] for k, n in received.items() if indexed[k] < n}
    assert missing == {}, f"identities received without an indexed row: {missing}"
    from click.testing import CliRunner

    from .test_cli import root
    result = CliRunner().invoke(root, ["audit", "verify", "--config", str(config)])
    assert result.exit_code == 0, result.output


@contextlib.contextmanager
def tiny_filesystem(path: Path, size_kib: int) -> Iterator[Path]:
    """A real tmpfs of `size_kib`: writes past it fail with ENOSPC, as on a full disk."""
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                           str(path)], capture_output=True, text=True)
    assert done.returncode == 0, (
        "this test mounts a small tmpfs to make the disk really full, which needs root "
        f"(CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_withholds_identity_and_traffic_flows(tmp_path: Path) -> None:
    origin = Origin()
    url = "sqlite:///state/ledger.db"
    with tiny_filesystem(tmp_path / "disk", 1024) as disk:
        config, proxy_port = journal_config(tmp_path, origin.port, url, str(disk / "j"),
                                            "journal_segment_bytes = 65536\n")
        gateway = start_gateway(config, proxy_port)
        import http.client

        def fetch(i: int) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10,
                                              source_address=("127.0.0.10", 0))
            conn.request("GET", f"http://{HOSTS[i % len(HOSTS)]}/x/{i}")
            response = conn.getresponse()
            response.read()
            conn.close()
            return response.status

        try:
            assert fetch(0) == 200
            assert origin.identities()[(NUMBERS[0], HOSTS[0])] == 1  # enriched
            filler = disk / "filler"
            with filler.open("wb") as f, contextlib.suppress(OSError):
                while True:  # until ENOSPC
                    f.write(b"\0" * 65536)
                    f.flush()
            # The open segment's preallocated room still takes records (they are
            # durable); once a new segment is needed, every record is refused.
            before = len(origin.received)
            stop, statuses = threading.Event(), []
            threads = load(proxy_port, stop, statuses)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (
                    len(statuses) < 1_000 or origin.received[-1][1] is not None):
                time.sleep(0.1)
            stop.set()
            for t in threads:
                t.join(10)
            assert len(statuses) >= 1_000
            assert all(s == 200 for s in statuses), "traffic must flow on a full disk"
            tail = origin.received[-50:]
            assert all(value is None for _, value in tail), \
                "identity left while the journal could not take its record"
            journaled = journal_counts(disk / "j")
            sent = Counter((value, host) for host, value in origin.received[before:] if value)
            sent[(NUMBERS[0], HOSTS[0])] += 1
            assert all(journaled[k] >= n for k, n in sent.items())
            filler.unlink()  # space again: identity comes back after a retry
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                fetch(0)
                if origin.received[-1][1] is not None:
                    break
                time.sleep(0.2)
            assert origin.received[-1][1] == NUMBERS[0]
        finally:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(15)
            except subprocess.TimeoutExpired:
                gateway.kill()
            origin.close()
    assert HEADER


def test_a_store_that_refuses_this_instance_is_fatal_at_start(tmp_path: Path) -> None:
    """Invariant 7 with the journal: the secrets check runs when the store is opened (at
    start for the chain's head), and a refusal stops the start as with the per-row
    writer, although the store is off the request path."""
    from linewarden.ledger.migrations import SchemaError

    def refuse(store: Store) -> None:
        raise SchemaError("secrets disagree with the ledger's reference")

    ledger = open_ledger("sqlite:///l.db", key=b"k", instance_id="gw1", base=tmp_path,
                         journal=JOURNAL, after_open=refuse)

    async def main() -> None:
        with pytest.raises(SchemaError, match="secrets disagree"):
            await ledger.start()

    run(main())
