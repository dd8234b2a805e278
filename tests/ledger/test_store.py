"""The stores on SQLite and a real PostgreSQL: chain, tampering, purge, migrations."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import psycopg
import pytest

from linewarden.decide import DisclosureRecord
from linewarden.ledger import open_store
from linewarden.ledger.chain import ChainFields, Signer, row_hash
from linewarden.ledger.migrations import MIGRATIONS, Migration, SchemaError, latest_version
from linewarden.ledger.postgres import PostgresStore
from linewarden.ledger.reports import (
    FOREVER_US,
    SUBSCRIBER_SQL,
    subscriber_report,
    verify_ledger,
)
from linewarden.ledger.sqlite import SQLiteStore
from linewarden.ledger.store import CheckpointPolicy, Store

from .conftest import Backend
from .pg import PrivatePostgres

T0 = 1_700_000_000.0


def rec(i: int, *, t: float | None = None, host: str = "pay.billing.test") -> DisclosureRecord:
    key = hashlib.sha256(f"sub{i % 7}".encode()).hexdigest()
    return DisclosureRecord(T0 + i if t is None else t, "billing-co", "billing", host,
                            ("msisdn", "operator"), "v1", key)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "signing.pem")


def fill(store: Store, signer: Signer, n: int, instance: str = "gw1",
         every: int = 10, first: int = 0) -> None:
    for start in range(first, first + n, 5):
        store.append(instance, [rec(i) for i in range(start, min(first + n, start + 5))],
                     signer,
                     CheckpointPolicy(every_rows=every, every_seconds=3600))


def check(store: Store, signer: Signer) -> list[str]:
    return [str(p) for p in verify_ledger(store, {signer.key_id: signer.public}).problems]


def test_append_and_verify(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, signer, 40)
    fill(store, signer, 12, instance="gw2")
    assert store.query("SELECT COUNT(*) FROM disclosures") == [(52,)]
    assert store.instances() == ["gw1", "gw2"]
    assert [cp.seq for cp in store.checkpoints("gw1")] == [10, 20, 30, 40]
    assert check(store, signer) == []
    assert store.checkpoint("gw2", signer) is not None  # the close checkpoint
    assert store.checkpoint("gw2", signer) is None  # nothing new to sign
    assert check(store, signer) == []


def test_edited_row_is_found(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, signer, 30)
    store.query("UPDATE disclosures SET host = 'evil.test' WHERE seq = 17")
    problems = check(store, signer)
    assert len(problems) == 1 and problems[0].startswith("altered: instance 'gw1', seq 17")


def test_deleted_row_is_found(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, signer, 30)
    store.query("DELETE FROM disclosures WHERE seq = 12")
    assert check(store, signer) == ["deleted: instance 'gw1', seq 12: row(s) seq 12 missing "
                                    "before row id 13"]


def test_deleted_oldest_rows_without_purge_are_found(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, signer, 30)
    store.query("DELETE FROM disclosures WHERE seq <= 3")
    problems = check(store, signer)
    assert len(problems) == 1 and problems[0].startswith("deleted:") and "1..3" in problems[0]


def forge(store: Store, seq: int, prev: bytes, host: str = "forged.test") -> None:
    f = ChainFields("gw1", seq, int(T0 * 1e6), "billing-co", "billing", host, "msisdn",
                    "v1", bytes(32))
    store.query("INSERT INTO disclosures (instance_id, seq, time_us, partner_id, purpose, "
                "host, claims, policy_version, subscriber_key, prev_hash, row_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*f, prev, row_hash(prev, f)))


def test_inserted_rows_are_found(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, signer, 30)
    # A well-formed row appended after the head, hashes and all:
    (last,), = store.query("SELECT row_hash FROM disclosures WHERE seq = 30")
    forge(store, 31, bytes(last))
    problems = check(store, signer)
    assert len(problems) == 1 and problems[0].startswith("inserted: instance 'gw1', seq 31")
    store.query("DELETE FROM disclosures WHERE seq = 31")
    assert check(store, signer) == []
    # One slipped into the middle: later rows renumbered to make room.
    store.query("UPDATE disclosures SET seq = seq + 1000 WHERE seq > 24")
    store.query("UPDATE disclosures SET seq = seq - 999 WHERE seq > 1000")
    (prev,), = store.query("SELECT row_hash FROM disclosures WHERE seq = 24")
    forge(store, 25, bytes(prev))
    problems = check(store, signer)
    assert len(problems) == 1 and problems[0].startswith("inserted: instance 'gw1', seq 25")


def test_rewritten_chain_is_caught_by_a_signed_checkpoint(backend: Backend,
                                                           signer: Signer) -> None:
    store = backend.store()
    fill(store, signer, 30)
    store.query("UPDATE disclosures SET host = 'evil.test' WHERE seq = 5")
    rows = list(store.iter_rows("gw1"))
    prev = rows[3].row_hash
    for r in rows[4:]:  # recompute every hash from the edit on, and the head
        digest = row_hash(prev, r.fields)
        store.query("UPDATE disclosures SET prev_hash = ?, row_hash = ? WHERE id = ?",
                    (prev, digest, r.id))
        prev = digest
    store.query("UPDATE chain_heads SET row_hash = ?", (prev,))
    problems = check(store, signer)
    assert len(problems) == 1 and problems[0].startswith("altered: instance 'gw1', seq 10")
    assert "checkpoint" in problems[0]


def test_purge_keeps_the_chain_verifiable(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, signer, 40)
    fill(store, signer, 3, instance="gw2")
    deleted = store.purge(int((T0 + 25) * 1e6), signer)  # rows with time < T0+25 go
    assert deleted == {"gw1": 25, "gw2": 3}
    assert store.query("SELECT MIN(seq), COUNT(*) FROM disclosures "
                       "WHERE instance_id = 'gw1'") == [(26, 15)]
    assert check(store, signer) == []
    fill(store, signer, 5, first=100)  # the chain carries on after a purge
    assert check(store, signer) == []
    assert store.purge(int((T0 + 10) * 1e6), signer) == {"gw1": 0, "gw2": 0}
    # Deleting beyond the purge anchor is still caught:
    store.query("DELETE FROM disclosures WHERE seq = 26")
    problem, = check(store, signer)
    assert problem.startswith("deleted: instance 'gw1'") and "seq 26 missing" in problem


def test_two_writers_with_one_instance_id_keep_one_chain(backend: Backend,
                                                         signer: Signer) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        store = backend.store()  # one connection per thread, as in the writer
        try:
            for i in range(30):
                store.append("gw1", [rec(i), rec(i + 1)], signer,
                             CheckpointPolicy(every_rows=7))
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = backend.store()
    assert store.query("SELECT COUNT(*), MAX(seq) FROM disclosures") == [(120, 120)]
    assert check(store, signer) == []


def test_refuses_a_raw_number_as_subscriber_key(backend: Backend) -> None:
    store = backend.store()
    bad = DisclosureRecord(T0, "p", "x", "h.test", ("msisdn",), "v1", "447400900123")
    with pytest.raises(ValueError):
        store.append("gw1", [bad])
    assert store.query("SELECT COUNT(*) FROM disclosures") == [(0,)]


# ---------------------------------------------------------------- migrations

def test_migrations_are_idempotent_and_recorded(backend: Backend) -> None:
    store = backend.store()
    backend.store()  # opening again applies nothing
    assert store.query("SELECT version FROM ledger_schema ORDER BY version") == [
        (m.version,) for m in MIGRATIONS]


def test_upgrade_keeps_every_row(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, signer, 25)
    before = store.query("SELECT id, row_hash FROM disclosures ORDER BY id")
    extra = Migration(latest_version() + 1, "test: add a column and an index",
                      ("ALTER TABLE disclosures ADD COLUMN note TEXT",
                       "CREATE INDEX disclosures_partner ON disclosures (partner_id)"),
                      ("ALTER TABLE disclosures ADD COLUMN note TEXT",
                       "CREATE INDEX disclosures_partner ON disclosures (partner_id)"))
    upgraded = type(store)(*_args(store)).open(migrations=[*MIGRATIONS, extra])
    assert upgraded.query("SELECT id, row_hash FROM disclosures ORDER BY id") == before
    assert upgraded.query("SELECT MAX(version) FROM ledger_schema") == [(extra.version,)]
    assert check(upgraded, signer) == []
    # This code refuses a ledger newer than it knows.
    with pytest.raises(SchemaError, match="newer"):
        type(store)(*_args(store)).open()


def test_a_v1_ledger_upgrades_to_the_covering_subscriber_index(
        backend: Backend, signer: Signer) -> None:
    """An existing ledger at schema v1 (written, checkpointed, partly purged) upgrades in
    place: every row and checkpoint kept, the chain still verifies, the reports are the
    same, and the subscriber report now reads only the covering index."""
    v1 = open_store(backend.url, base=backend.base).open(migrations=MIGRATIONS[:1])
    fill(v1, signer, 60)
    v1.append("gw1", [rec(i, host=f"h{i % 3}.billing.test") for i in range(60, 90)], signer)
    v1.purge(round((T0 + 10) * 1_000_000), signer)
    assert _indexes(v1) >= {"disclosures_subscriber"}
    rows = v1.query("SELECT * FROM disclosures ORDER BY id")
    checkpoints = v1.query("SELECT * FROM checkpoints ORDER BY id")
    keys = [hashlib.sha256(f"sub{i}".encode()).hexdigest() for i in range(7)]
    reports = [subscriber_report(v1, k) for k in keys]
    windowed = subscriber_report(v1, keys[2], T0 + 30, T0 + 75)
    v1.close()

    upgraded = open_store(backend.url, base=backend.base).open()
    assert upgraded.query("SELECT version FROM ledger_schema ORDER BY version") == [
        (m.version,) for m in MIGRATIONS]
    assert upgraded.query("SELECT * FROM disclosures ORDER BY id") == rows
    assert upgraded.query("SELECT * FROM checkpoints ORDER BY id") == checkpoints
    assert check(upgraded, signer) == []
    assert [subscriber_report(upgraded, k) for k in keys] == reports
    assert subscriber_report(upgraded, keys[2], T0 + 30, T0 + 75) == windowed
    indexes = _indexes(upgraded)
    assert "disclosures_subscriber_report" in indexes
    assert "disclosures_subscriber" not in indexes  # superseded: one random-keyed index
    if backend.name == "sqlite":
        plan = upgraded.query("EXPLAIN QUERY PLAN " + SUBSCRIBER_SQL,
                              (bytes.fromhex(keys[0]), 0, FOREVER_US))
        assert "COVERING INDEX disclosures_subscriber_report" in str(plan)
        assert "TEMP B-TREE" not in str(plan)  # already in GROUP BY order
    # The writer keeps extending the same chain after the upgrade.
    fill(upgraded, signer, 10, first=90)
    assert check(upgraded, signer) == []


def test_a_long_migration_is_not_cut_by_the_statement_timeout(postgres: PrivatePostgres
                                                              ) -> None:
    """PostgresStore sets statement_timeout for the request path; building v2's index over
    a large ledger takes minutes and must not be cancelled (and rolled back) by it.
    (statement_timeout is PostgreSQL's: this test has no SQLite twin.)"""
    url = postgres.create_database()
    open_store(url).open().close()
    slow = Migration(latest_version() + 1, "test: slow", ("SELECT 1",),
                     ("SELECT pg_sleep(0.3)",))
    store = PostgresStore(url, statement_timeout_ms=100).open(
        migrations=[*MIGRATIONS, slow])
    assert store.query("SELECT MAX(version) FROM ledger_schema") == [(slow.version,)]
    with pytest.raises(psycopg.errors.QueryCanceled):  # outside migrations it still applies
        store.query("SELECT pg_sleep(0.3)")


def _indexes(store: Store) -> set[str]:
    sql = ("SELECT name FROM sqlite_master WHERE type = 'index'" if isinstance(
        store, SQLiteStore) else "SELECT indexname FROM pg_indexes "
        "WHERE tablename = 'disclosures' AND schemaname = current_schema()")
    return {str(r[0]) for r in store.query(sql)}


def test_a_migration_that_loses_rows_is_rolled_back(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, signer, 10)
    bad = Migration(latest_version() + 1, "test: lossy",
                    ("DELETE FROM disclosures WHERE seq = 3",),
                    ("DELETE FROM disclosures WHERE seq = 3",))
    with pytest.raises(SchemaError, match="rolled back"):
        type(store)(*_args(store)).open(migrations=[*MIGRATIONS, bad])
    assert store.query("SELECT COUNT(*) FROM disclosures") == [(10,)]
    assert store.query("SELECT MAX(version) FROM ledger_schema") == [(latest_version(),)]


def _args(store: Store) -> tuple[object, ...]:
    """The constructor argument of a second connection to the same ledger."""
    return (store.path,) if isinstance(store, SQLiteStore) else (store.url,)  # type: ignore[attr-defined]


def test_two_connections_opening_a_new_sqlite_ledger_at_once(tmp_path: Path) -> None:
    # The switch to WAL answers the loser of the race "database is locked" without waiting
    # (it failed 43 times in 300 before the retry); two workers starting on one new ledger.
    errors: list[BaseException] = []
    for n in range(100):
        def open_one(n: int = n) -> None:
            try:
                open_store(f"sqlite:///l{n}.db", base=tmp_path).open().close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
