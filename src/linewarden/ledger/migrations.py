"""A small versioned migration table: `ledger_schema(version, name, applied_us)`.

Each migration runs in one transaction with the version row it adds (SQLite and
PostgreSQL both have transactional DDL), so an upgrade is all-or-nothing. Migrations only
add tables, columns and indexes, or drop an index a new one supersedes; none drops or
rewrites rows, and the runner checks the
disclosure count before and after each step and rolls back if it changed. A ledger newer
than this code is refused rather than guessed at.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Dialect = Literal["sqlite", "postgres"]


class SchemaError(Exception):
    """The ledger's schema cannot be used by this version of linewarden."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgres


_V1_SQLITE = (
    """CREATE TABLE disclosures (
        id INTEGER PRIMARY KEY,
        instance_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        time_us INTEGER NOT NULL,
        partner_id TEXT NOT NULL,
        purpose TEXT NOT NULL,
        host TEXT NOT NULL,
        claims TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        subscriber_key BLOB NOT NULL CHECK (length(subscriber_key) = 32),
        prev_hash BLOB NOT NULL,
        row_hash BLOB NOT NULL,
        UNIQUE (instance_id, seq)
    )""",
    "CREATE INDEX disclosures_subscriber ON disclosures (subscriber_key, time_us)",
    "CREATE INDEX disclosures_time ON disclosures (time_us)",
    """CREATE TABLE chain_heads (
        instance_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        row_hash BLOB NOT NULL,
        checkpoint_seq INTEGER NOT NULL,
        checkpoint_us INTEGER NOT NULL
    )""",
    """CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        instance_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        seq INTEGER NOT NULL,
        row_hash BLOB NOT NULL,
        time_us INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        signature BLOB NOT NULL
    )""",
    "CREATE INDEX checkpoints_instance ON checkpoints (instance_id, seq)",
)

_V1_POSTGRES = (
    """CREATE TABLE disclosures (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        instance_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        time_us BIGINT NOT NULL,
        partner_id TEXT NOT NULL,
        purpose TEXT NOT NULL,
        host TEXT NOT NULL,
        claims TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        subscriber_key BYTEA NOT NULL CHECK (length(subscriber_key) = 32),
        prev_hash BYTEA NOT NULL,
        row_hash BYTEA NOT NULL,
        UNIQUE (instance_id, seq)
    )""",
    "CREATE INDEX disclosures_subscriber ON disclosures (subscriber_key, time_us)",
    "CREATE INDEX disclosures_time ON disclosures (time_us)",
    """CREATE TABLE chain_heads (
        instance_id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        row_hash BYTEA NOT NULL,
        checkpoint_seq BIGINT NOT NULL,
        checkpoint_us BIGINT NOT NULL
    )""",
    """CREATE TABLE checkpoints (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        instance_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        seq BIGINT NOT NULL,
        row_hash BYTEA NOT NULL,
        time_us BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        signature BYTEA NOT NULL
    )""",
    "CREATE INDEX checkpoints_instance ON checkpoints (instance_id, seq)",
)

# v2: the subscriber report reads only the index. Its columns are the report's equality
# key, then its GROUP BY, then the time it filters and aggregates, so the query is an
# index-only range scan already in group order (no table lookups: with v1's
# (subscriber_key, time_us) every row was a random table page, 182 ms / 355 ms for a
# 40,231-row subscriber over 10 M rows). It replaces v1's subscriber index, which it
# covers, so inserts still maintain a single randomly-keyed index.
_V2 = (
    "CREATE INDEX disclosures_subscriber_report ON disclosures "
    "(subscriber_key, partner_id, purpose, host, claims, time_us)",
    "DROP INDEX disclosures_subscriber",
)

# v3: fingerprints of the secrets every instance sharing this ledger must agree on
# (secrets.py says why). The first instance's row is the reference; the
# primary key makes "first" well defined when two instances start at once.
_V3_SQLITE = (
    """CREATE TABLE secret_fingerprints (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        registered_us INTEGER NOT NULL
    )""",
)
_V3_POSTGRES = (
    """CREATE TABLE secret_fingerprints (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        registered_us BIGINT NOT NULL
    )""",
)

# v4: access records, one per reveal of a subscriber's number outside the data plane
# (ledger/access.py): when, which operator principal, which subscriber key, why. Written
# before the number is shown; never the number itself.
_V4_SQLITE = (
    """CREATE TABLE access_records (
        id INTEGER PRIMARY KEY,
        time_us INTEGER NOT NULL,
        instance_id TEXT NOT NULL,
        principal TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        subscriber_key BLOB NOT NULL CHECK (length(subscriber_key) = 32)
    )""",
    "CREATE INDEX access_records_subscriber ON access_records (subscriber_key, time_us)",
    "CREATE INDEX access_records_time ON access_records (time_us)",
)
_V4_POSTGRES = (
    """CREATE TABLE access_records (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time_us BIGINT NOT NULL,
        instance_id TEXT NOT NULL,
        principal TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        subscriber_key BYTEA NOT NULL CHECK (length(subscriber_key) = 32)
    )""",
    "CREATE INDEX access_records_subscriber ON access_records (subscriber_key, time_us)",
    "CREATE INDEX access_records_time ON access_records (time_us)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "disclosures, chain heads and checkpoints", _V1_SQLITE, _V1_POSTGRES),
    Migration(2, "covering index for the subscriber report", _V2, _V2),
    Migration(3, "fingerprints of the shared secrets", _V3_SQLITE, _V3_POSTGRES),
    Migration(4, "access records (reveals of a number outside the data plane)",
              _V4_SQLITE, _V4_POSTGRES),
)

_SCHEMA_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS ledger_schema (version INTEGER PRIMARY KEY, "
              "name TEXT NOT NULL, applied_us INTEGER NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS ledger_schema (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_us BIGINT NOT NULL)",
}


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return max(m.version for m in migrations)


def migrate(conn: Any, dialect: Dialect, *, begin: str, param: str,
            migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring the schema to the newest version; returns the versions applied.

    `conn` is a DB-API connection in autocommit mode; `begin` the statement that starts a
    write transaction (SQLite's BEGIN IMMEDIATE takes the write lock up front, so two
    processes never migrate at once). PostgreSQL serialises on an advisory lock."""
    applied: list[int] = []
    cur = conn.cursor()
    cur.execute(begin)
    try:
        if dialect == "postgres":
            cur.execute("SELECT pg_advisory_xact_lock(7349071)")  # "ledger" on a keypad
            # Once the lock is ours (waiting for it stays bounded by the connection's
            # statement_timeout), no timeout: building an index over a large ledger takes
            # minutes (v2 on 10 M rows), and a timeout would roll it back every time.
            cur.execute("SET LOCAL statement_timeout = 0")
        cur.execute(_SCHEMA_TABLE[dialect])
        cur.execute("SELECT version FROM ledger_schema")
        done = {int(row[0]) for row in cur.fetchall()}
        current = max(done, default=0)
        newest = latest_version(migrations)
        if current > newest:
            raise SchemaError(f"the ledger has schema version {current}, newer than this "
                              f"linewarden knows ({newest}); upgrade linewarden")
        # Every migration not yet recorded, in version order: by set, not "above the
        # highest", so a number left free for a migration developed in parallel is still
        # applied to a ledger that already has a later one (they are independent tables).
        for m in sorted(migrations, key=lambda m: m.version):
            if m.version in done:
                continue
            before = _count(cur, dialect)
            for statement in m.statements(dialect):
                cur.execute(statement)
            if before is not None and _count(cur, dialect) != before:
                raise SchemaError(f"migration {m.version} ({m.name}) changed the number of "
                                  "ledger rows; rolled back")
            cur.execute(f"INSERT INTO ledger_schema (version, name, applied_us) "
                        f"VALUES ({param}, {param}, {param})",
                        (m.version, m.name, int(time.time() * 1_000_000)))
            applied.append(m.version)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return applied


_TABLE_EXISTS = {
    "sqlite": "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'disclosures'",
    "postgres": "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'disclosures' "
                "AND schemaname = current_schema()",
}


def _count(cur: Any, dialect: Dialect) -> int | None:
    """Rows in `disclosures`, or None before the table exists."""
    cur.execute(_TABLE_EXISTS[dialect])
    if not int(cur.fetchone()[0]):
        return None
    cur.execute("SELECT COUNT(*) FROM disclosures")
    return int(cur.fetchone()[0])
