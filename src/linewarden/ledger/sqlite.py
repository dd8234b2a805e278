"""SQLite backend: one file, WAL mode, the default for a single gateway.

WAL lets the admin API and the CLI read while the gateway writes. `synchronous=FULL`
fsyncs the WAL at every commit, so a committed row survives power loss, not just a
process crash; group commit pays that fsync once per batch, not per row.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from ..filemodes import touch_private
from .store import Store, _HeadState, head_from_row, new_head

# How long a connection waits for another's write lock (a CLI purge chunk, a second
# process) before failing. A request never waits this long: the writer's callers give up
# at the commit bound (writer.py) and new records are refused while a commit is stuck.
BUSY_TIMEOUT_S = 5.0
# FULL: a commit is on disk before record() returns True, even across power loss. NORMAL
# (`sqlite:///path?synchronous=normal`) is still safe against a process crash — WAL
# frames are in the OS before COMMIT returns — and skips most fsyncs; the last
# commits can roll back only if the machine itself goes down.
SYNCHRONOUS = "FULL"
_SYNCHRONOUS_CHOICES = ("FULL", "NORMAL")
# Page cache per connection: 64 MiB keeps the hot pages of the subscriber index (random
# 32-byte keys) in memory; SQLite's default of 2 MiB makes every insert read pages back.
CACHE_KIB = 65_536


def sqlite_path(url: str, base: Path) -> Path:
    """`sqlite:///rel/path` (relative to `base`) or `sqlite:////abs/path`."""
    prefix = "sqlite:///"
    url = url.split("?", 1)[0]
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"'{url}' is not a sqlite:///path URL")
    path = Path(url[len(prefix):])
    return path if path.is_absolute() else base / path


def sqlite_options(url: str) -> dict[str, Any]:
    """Query options: `synchronous=full|normal`, `cache_kib=N` (the page cache, which is
    most of the gateway's memory growth until it is full)."""
    options = dict(parse_qsl(url.partition("?")[2]))
    unknown = set(options) - {"synchronous", "cache_kib"}
    if unknown:
        raise ValueError(f"unknown sqlite ledger option(s): {', '.join(sorted(unknown))}")
    sync = options.get("synchronous", SYNCHRONOUS).upper()
    if sync not in _SYNCHRONOUS_CHOICES:
        raise ValueError("synchronous must be full or normal")
    cache = options.get("cache_kib", str(CACHE_KIB))
    if not cache.isdigit() or not 512 <= int(cache) <= 4_194_304:
        raise ValueError("cache_kib must be a number of KiB from 512 to 4194304")
    return {"synchronous": sync, "cache_kib": int(cache)}


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Two connections opening a new ledger at once (two workers, two writer
    threads) race for the switch, and SQLite answers the loser "database is locked" at once,
    without its busy handler: retry within the same bound as every other lock wait."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SQLiteStore(Store):
    dialect = "sqlite"
    param = "?"
    begin_write = "BEGIN IMMEDIATE"  # take the write lock now, not at the first write

    def __init__(self, path: Path, *, must_exist: bool = False,
                 synchronous: str = SYNCHRONOUS, cache_kib: int = CACHE_KIB) -> None:
        super().__init__()
        self.path = path
        self.must_exist = must_exist
        self.synchronous = synchronous
        self.cache_kib = cache_kib

    def _connect(self) -> Any:
        if self.must_exist and not self.path.exists():
            raise FileNotFoundError(f"no ledger at {self.path}")
        # SQLite creates the database 0644 and gives its -wal and -shm the database's
        # mode: made 0600 first (in a 0700 directory if new), all three stay private.
        touch_private(self.path)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        _enter_wal(conn)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA cache_size=-{self.cache_kib}")
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
