"""The SQL both backends share: append a batch to the chain, checkpoint, read, purge.

A `Store` is synchronous and owned by one thread (the writer's worker, or the CLI). The
dialects differ only in how they connect, lock the chain head and bulk-insert; see
`sqlite.py` and `postgres.py`.

Every write transaction reads the chain head from the database under a lock (SQLite's
write lock, PostgreSQL's row lock on `chain_heads`), never from memory: two writers with
the same instance id, or the CLI purging while the gateway writes, still extend one chain.
"""

from __future__ import annotations

import contextlib
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .chain import (
    CHECKPOINT_EVERY_ROWS,
    CHECKPOINT_EVERY_SECONDS,
    ZERO_HASH,
    ChainFields,
    Checkpoint,
    CheckpointKind,
    Head,
    Signer,
    StoredRow,
    row_hash,
)
from .migrations import MIGRATIONS, Dialect, Migration, migrate

if TYPE_CHECKING:
    from ..decide import DisclosureRecord

# Rows deleted per purge transaction: each chunk holds SQLite's write lock for tens of
# milliseconds, well inside the writer's commit bound, so a purge never withholds
# disclosures for long while the gateway runs.
PURGE_CHUNK_ROWS = 5_000
# Rows fetched per round trip when walking the chain (verify): memory stays flat.
FETCH_ROWS = 10_000

_HEX_KEY = re.compile(r"[0-9a-f]{64}")
_TAIL_COLUMNS = ("instance_id, seq, time_us, partner_id, purpose, host, claims, "
                 "policy_version, subscriber_key")
_ROW_COLUMNS = ("instance_id, seq, time_us, partner_id, purpose, host, claims, "
                "policy_version, subscriber_key, prev_hash, row_hash")


class ChainGap(Exception):
    """Journal rows that do not continue the store's chain (a journal from elsewhere)."""


def now_us() -> int:
    return int(time.time() * 1_000_000)


def to_us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def chain_fields(instance_id: str, seq: int, rec: DisclosureRecord) -> ChainFields:
    if not _HEX_KEY.fullmatch(rec.subscriber_key):
        # A raw number here would be a bug upstream; refuse it rather than store it.
        raise ValueError("subscriber_key must be 64 lower-case hex digits (an HMAC)")
    return ChainFields(instance_id, seq, to_us(rec.time), rec.partner_id, rec.purpose,
                       rec.host, ",".join(rec.claims), rec.policy_version,
                       bytes.fromhex(rec.subscriber_key))


@dataclass(frozen=True)
class Reference:
    """The fingerprint of a shared secret as the first instance registered it."""

    fingerprint: str
    instance_id: str
    registered_us: int


@dataclass(frozen=True)
class CheckpointPolicy:
    every_rows: int = CHECKPOINT_EVERY_ROWS
    every_seconds: float = CHECKPOINT_EVERY_SECONDS


DEFAULT_CHECKPOINTS = CheckpointPolicy()


@dataclass
class _HeadState:
    seq: int
    row_hash: bytes
    checkpoint_seq: int
    checkpoint_us: int


class Store(ABC):
    dialect: Dialect
    param: str  # DB-API placeholder: "?" or "%s"
    begin_write: str  # statement that starts a write transaction
    begin_snapshot = "BEGIN"  # a read transaction (SQLite WAL: the first read fixes it)

    def __init__(self) -> None:
        self._conn: Any = None
        self._in_snapshot = False
        # Run after every open that may create or migrate: the gateway's writer checks
        # here that its secrets still agree with the ledger's reference (secrets.py), at
        # start and at every reconnection. Raises SchemaError (a subclass) to refuse.
        self.after_open: Callable[[Store], None] | None = None
        # What reports read: the table, or the table plus the journal's unindexed tail.
        self.source = "disclosures"

    # ---------------------------------------------------------------- dialect hooks

    @abstractmethod
    def _connect(self) -> Any:
        """A DB-API connection in autocommit mode (we issue BEGIN/COMMIT ourselves)."""

    @abstractmethod
    def _lock_head(self, cur: Any, instance_id: str, now: int) -> _HeadState:
        """Inside a write transaction: the instance's head, locked until COMMIT."""

    @abstractmethod
    def _insert_rows(self, cur: Any, rows: Sequence[tuple[Any, ...]]) -> None: ...

    def _iter_cursor(self) -> Any:
        return self._conn.cursor()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: the head, checkpoints and rows read inside it are from one
        instant, so a verify running beside the writer sees no half-appended batch."""
        cur = self._conn.cursor()
        cur.execute(self.begin_snapshot)
        self._in_snapshot = True
        try:
            yield
        finally:
            self._in_snapshot = False
            self._rollback(cur)
            cur.close()

    # ---------------------------------------------------------------- lifecycle

    def open(self, *, create: bool = True,
             migrations: Sequence[Migration] = MIGRATIONS) -> Store:
        self._conn = self._connect()
        if create:
            migrate(self._conn, self.dialect, begin=self.begin_write, param=self.param,
                    migrations=migrations)
            if self.after_open is not None:
                try:
                    self.after_open(self)
                except BaseException:
                    self.close()
                    raise
        return self

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # a broken connection must close quietly
                conn.close()

    def ping(self) -> bool:
        try:
            self.query("SELECT 1")
        except Exception:
            return False
        return True

    def sql(self, text: str) -> str:
        return text if self.param == "?" else text.replace("?", self.param)

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.cursor()
        try:
            cur.execute(self.sql(text), tuple(params))
            return list(cur.fetchall()) if cur.description is not None else []
        finally:
            cur.close()

    # ---------------------------------------------------------------- writing

    def append(self, instance_id: str, records: Sequence[DisclosureRecord],
               signer: Signer | None = None,
               policy: CheckpointPolicy = DEFAULT_CHECKPOINTS) -> int:
        """Extend the instance's chain with `records` in one transaction; returns the last
        seq. Raises on any failure, and then nothing of the batch is committed."""
        now = now_us()
        with self._write() as cur:
            head = self._lock_head(cur, instance_id, now)
            seq, prev = head.seq, head.row_hash
            rows: list[tuple[Any, ...]] = []
            for rec in records:
                seq += 1
                fields = chain_fields(instance_id, seq, rec)
                digest = row_hash(prev, fields)
                rows.append((*fields, prev, digest))
                prev = digest
            if rows:
                self._insert_rows(cur, rows)
            head.seq, head.row_hash = seq, prev
            self._checkpoint_if_due(cur, instance_id, head, signer, policy, now)
            self._save_head(cur, instance_id, head)
        return seq

    def index(self, instance_id: str, rows: Sequence[tuple[ChainFields, bytes, bytes]],
              signer: Signer | None = None,
              policy: CheckpointPolicy = DEFAULT_CHECKPOINTS) -> int:
        """Load journal rows (fields, prev hash, row hash), already chained, in one
        transaction; returns the store's new head seq. Idempotent by (instance, seq): rows
        at or below the stored head are skipped, so a batch indexed twice (an indexer that
        crashed after COMMIT, the CLI beside the gateway) adds nothing. A row that does not
        continue the stored chain raises `ChainGap` and nothing is loaded."""
        now = now_us()
        with self._write() as cur:
            head = self._lock_head(cur, instance_id, now)
            batch: list[tuple[Any, ...]] = []
            seq, prev = head.seq, head.row_hash
            for fields, prev_hash, digest in rows:
                if fields.seq <= seq:
                    continue
                if fields.seq != seq + 1 or prev_hash != prev:
                    raise ChainGap(f"journal row {fields.seq} of '{instance_id}' does not "
                                   f"continue the store's chain at seq {seq}")
                batch.append((*fields, prev_hash, digest))
                seq, prev = fields.seq, digest
            if not batch:
                return head.seq
            self._insert_rows(cur, batch)
            head.seq, head.row_hash = seq, prev
            self._checkpoint_if_due(cur, instance_id, head, signer, policy, now)
            self._save_head(cur, instance_id, head)
        return seq

    def _checkpoint_if_due(self, cur: Any, instance_id: str, head: _HeadState,
                           signer: Signer | None, policy: CheckpointPolicy, now: int) -> None:
        """A periodic checkpoint of the new head, once enough rows or time have passed."""
        if signer is not None and head.seq > head.checkpoint_seq and (
                head.seq - head.checkpoint_seq >= policy.every_rows
                or now - head.checkpoint_us >= policy.every_seconds * 1_000_000):
            self._write_checkpoint(cur, signer.checkpoint(instance_id, "periodic", head.seq,
                                                          head.row_hash, now), head)

    def checkpoint(self, instance_id: str, signer: Signer,
                   kind: CheckpointKind = "close") -> Checkpoint | None:
        """Sign the instance's current head, unless it is already signed."""
        now = now_us()
        with self._write() as cur:
            head = self._lock_head(cur, instance_id, now)
            cp = None
            if head.seq > head.checkpoint_seq:
                cp = signer.checkpoint(instance_id, kind, head.seq, head.row_hash, now)
                self._write_checkpoint(cur, cp, head)
                self._save_head(cur, instance_id, head)
        return cp

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """One write transaction: committed if the block finishes, rolled back if it raises."""
        cur = self._conn.cursor()
        cur.execute(self.begin_write)
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            self._rollback(cur)
            raise
        finally:
            cur.close()

    def _rollback(self, cur: Any) -> None:
        with contextlib.suppress(Exception):  # the connection may be gone: rolled back anyway
            cur.execute("ROLLBACK")

    def _write_checkpoint(self, cur: Any, cp: Checkpoint, head: _HeadState) -> None:
        self._insert_checkpoint(cur, cp)
        head.checkpoint_seq, head.checkpoint_us = cp.seq, cp.time_us

    def _insert_checkpoint(self, cur: Any, cp: Checkpoint) -> None:
        cur.execute(self.sql("INSERT INTO checkpoints (instance_id, kind, seq, row_hash, "
                             "time_us, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?)"),
                    (cp.instance_id, cp.kind, cp.seq, cp.row_hash, cp.time_us, cp.key_id,
                     cp.signature))

    def _save_head(self, cur: Any, instance_id: str, head: _HeadState) -> None:
        cur.execute(self.sql(
            "INSERT INTO chain_heads (instance_id, seq, row_hash, checkpoint_seq, "
            "checkpoint_us) VALUES (?, ?, ?, ?, ?) ON CONFLICT (instance_id) DO UPDATE SET "
            "seq = excluded.seq, row_hash = excluded.row_hash, "
            "checkpoint_seq = excluded.checkpoint_seq, checkpoint_us = excluded.checkpoint_us"),
            (instance_id, head.seq, head.row_hash, head.checkpoint_seq, head.checkpoint_us))

    def attach_tail(self, rows: Sequence[tuple[ChainFields, bytes, bytes]]) -> None:
        """Make reports on this connection also see journal rows not yet indexed (a temp
        table, gone with the connection): "who received my number" is then complete even
        while the indexer lags or the store was down."""
        if not rows:
            return
        cur = self._conn.cursor()
        try:
            cur.execute(f"CREATE TEMP TABLE journal_tail AS SELECT {_TAIL_COLUMNS} "
                        "FROM disclosures WHERE 1 = 0")
            cur.executemany(self.sql(f"INSERT INTO journal_tail ({_TAIL_COLUMNS}) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                            [tuple(fields) for fields, _, _ in rows])
        finally:
            cur.close()
        self.source = (f"(SELECT {_TAIL_COLUMNS} FROM disclosures UNION ALL "
                       f"SELECT {_TAIL_COLUMNS} FROM journal_tail) AS tailed")

    # ---------------------------------------------------------------- retention

    def purge(self, cutoff_us: int, signer: Signer) -> dict[str, int]:
        """Delete rows older than `cutoff_us`, per instance, keeping the chain verifiable:
        first a signed "purge" checkpoint of the last row to go (the new chain start),
        then the deletes in short chunks. Returns rows deleted per instance.

        Boundary: per instance, every row up to the newest row older than the cutoff goes
        (seq order), so a row a few milliseconds newer committed just before it goes too."""
        deleted: dict[str, int] = {}
        for instance_id in self.instances():
            with self._write() as cur:
                self._lock_head(cur, instance_id, now_us())  # writers wait for the anchor
                cur.execute(self.sql("SELECT MAX(seq) FROM disclosures WHERE instance_id = ? "
                                     "AND time_us < ?"), (instance_id, cutoff_us))
                last = cur.fetchone()[0]
                if last is not None:
                    cur.execute(self.sql("SELECT row_hash FROM disclosures "
                                         "WHERE instance_id = ? AND seq = ?"),
                                (instance_id, last))
                    digest = bytes(cur.fetchone()[0])
                    self._insert_checkpoint(cur, signer.checkpoint(
                        instance_id, "purge", int(last), digest, now_us()))
                    cur.execute(self.sql("DELETE FROM checkpoints WHERE instance_id = ? "
                                         "AND seq < ?"), (instance_id, last))
            deleted[instance_id] = 0 if last is None else self._delete_upto(instance_id,
                                                                            int(last))
        return deleted

    def _delete_upto(self, instance_id: str, last_seq: int) -> int:
        total = 0
        while True:
            with self._write() as cur:
                cur.execute(self.sql(
                    "DELETE FROM disclosures WHERE id IN (SELECT id FROM disclosures "
                    "WHERE instance_id = ? AND seq <= ? ORDER BY seq LIMIT ?)"),
                    (instance_id, last_seq, PURGE_CHUNK_ROWS))
                count = int(cur.rowcount)
            total += count
            if count < PURGE_CHUNK_ROWS:
                return total

    # ---------------------------------------------------------------- shared secrets

    def register_fingerprint(self, name: str, fingerprint: str, instance_id: str, *,
                             replace: bool = False) -> Reference:
        """Insert `fingerprint` as the reference for `name` unless one is there (or
        overwrite it with `replace`), then read the reference back in the same
        transaction: of two instances starting at once, exactly one row wins."""
        conflict = ("DO UPDATE SET fingerprint = excluded.fingerprint, "
                    "instance_id = excluded.instance_id, registered_us = excluded.registered_us"
                    if replace else "DO NOTHING")
        with self._write() as cur:
            cur.execute(self.sql("INSERT INTO secret_fingerprints (name, fingerprint, "
                                 "instance_id, registered_us) VALUES (?, ?, ?, ?) "
                                 f"ON CONFLICT (name) {conflict}"),
                        (name, fingerprint, instance_id, now_us()))
            cur.execute(self.sql("SELECT fingerprint, instance_id, registered_us FROM "
                                 "secret_fingerprints WHERE name = ?"), (name,))
            row = cur.fetchone()
        return Reference(str(row[0]), str(row[1]), int(row[2]))

    def fingerprint_references(self) -> dict[str, Reference]:
        rows = self.query("SELECT name, fingerprint, instance_id, registered_us "
                          "FROM secret_fingerprints")
        return {str(r[0]): Reference(str(r[1]), str(r[2]), int(r[3])) for r in rows}

    # ---------------------------------------------------------------- reading the chain

    def instances(self) -> list[str]:
        rows = self.query("SELECT instance_id FROM chain_heads UNION "
                          "SELECT DISTINCT instance_id FROM disclosures UNION "
                          "SELECT DISTINCT instance_id FROM checkpoints")
        return sorted(str(r[0]) for r in rows)

    def head(self, instance_id: str) -> Head | None:
        rows = self.query("SELECT seq, row_hash FROM chain_heads WHERE instance_id = ?",
                          (instance_id,))
        return Head(int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def checkpoints(self, instance_id: str) -> list[Checkpoint]:
        rows = self.query("SELECT id, kind, seq, row_hash, time_us, key_id, signature "
                          "FROM checkpoints WHERE instance_id = ? ORDER BY seq, id",
                          (instance_id,))
        return [Checkpoint(instance_id, r[1], int(r[2]), bytes(r[3]), int(r[4]), str(r[5]),
                           bytes(r[6]), int(r[0])) for r in rows]

    def iter_rows(self, instance_id: str, *, newest_first: bool = False
                  ) -> Iterator[StoredRow]:
        """The instance's rows in seq order (or reversed: how verify walks), streamed."""
        order = "DESC" if newest_first else "ASC"
        cur = self._iter_cursor()
        try:
            cur.execute(self.sql(f"SELECT id, {_ROW_COLUMNS} FROM disclosures "
                                 f"WHERE instance_id = ? ORDER BY seq {order}"),
                        (instance_id,))
            while batch := cur.fetchmany(FETCH_ROWS):
                for r in batch:
                    fields = ChainFields(str(r[1]), int(r[2]), int(r[3]), str(r[4]),
                                         str(r[5]), str(r[6]), str(r[7]), str(r[8]),
                                         bytes(r[9]))
                    yield StoredRow(int(r[0]), fields, bytes(r[10]), bytes(r[11]))
        finally:
            cur.close()


def new_head(now: int) -> _HeadState:
    return _HeadState(0, ZERO_HASH, 0, now)


def head_from_row(row: Sequence[Any]) -> _HeadState:
    return _HeadState(int(row[0]), bytes(row[1]), int(row[2]), int(row[3]))
