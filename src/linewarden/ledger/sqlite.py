"""SQLite backend: one file, WAL mode, the default for a single gateway.

WAL lets the admin API and the CLI read while the gateway writes. `synchronous=FULL`
fsyncs the WAL at every commit, so a committed row survives power loss, not just a
process crash; group commit pays that fsync once per batch, not per row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .store import Store, _HeadState, head_from_row, new_head

# How long a connection waits for another's write lock (a CLI purge chunk, a second
# process) before failing. A request never waits this long: the writer's callers give up
# at the commit bound (writer.py) and new records are refused while a commit is stuck.
BUSY_TIMEOUT_S = 5.0
SYNCHRONOUS = "FULL"  # see the module docstring; NORMAL would lose commits on power loss


def sqlite_path(url: str, base: Path) -> Path:
    """`sqlite:///rel/path` (relative to `base`) or `sqlite:////abs/path`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"'{url}' is not a sqlite:///path URL")
    path = Path(url[len(prefix):])
    return path if path.is_absolute() else base / path


class SQLiteStore(Store):
    dialect = "sqlite"
    param = "?"
    begin_write = "BEGIN IMMEDIATE"  # take the write lock now, not at the first write

    def __init__(self, path: Path, *, must_exist: bool = False) -> None:
        super().__init__()
        self.path = path
        self.must_exist = must_exist

    def _connect(self) -> Any:
        if self.must_exist and not self.path.exists():
            raise FileNotFoundError(f"no ledger at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        return conn

    def _lock_head(self, cur: Any, instance_id: str, now: int) -> _HeadState:
        # BEGIN IMMEDIATE already holds the database's single write lock.
        cur.execute("SELECT seq, row_hash, checkpoint_seq, checkpoint_us FROM chain_heads "
                    "WHERE instance_id = ?", (instance_id,))
        row = cur.fetchone()
        return head_from_row(row) if row else new_head(now)

    def _insert_rows(self, cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        cur.executemany("INSERT INTO disclosures (instance_id, seq, time_us, partner_id, "
                        "purpose, host, claims, policy_version, subscriber_key, prev_hash, "
                        "row_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def files(self) -> list[Path]:
        """The database and its WAL companions, for the no-raw-number check."""
        return [p for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
                if p.exists()]
