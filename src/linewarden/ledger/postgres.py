"""PostgreSQL backend (psycopg 3): one ledger for many gateway instances.

Each instance extends its own chain; the row lock on its `chain_heads` row serialises
batches of the same instance (even from two processes that share an instance id) while
different instances commit in parallel. Batches go in with COPY, the fastest path in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from .chain import ZERO_HASH
from .store import Store, _HeadState, head_from_row

# A gateway must notice a dead server quickly: connecting gives up after this many seconds
# (libpq's connect_timeout; its minimum useful value is 2).
CONNECT_TIMEOUT_S = 2
# Kernel-level detection of a vanished peer: unacknowledged data for this long fails the
# socket (Linux TCP_USER_TIMEOUT), and idle keepalives probe after 5 s. A server that is
# alive but stuck is handled above this layer: the writer abandons the connection.
TCP_USER_TIMEOUT_MS = 5_000
KEEPALIVES_IDLE_S = 5
# A statement that runs longer than this is cancelled by the server, so a lock wait or a
# runaway query cannot hold a batch for ever (the callers gave up long before).
STATEMENT_TIMEOUT_MS = 10_000

_COPY = ("COPY disclosures (instance_id, seq, time_us, partner_id, purpose, host, claims, "
         "policy_version, subscriber_key, prev_hash, row_hash) FROM STDIN")


class PostgresStore(Store):
    dialect = "postgres"
    param = "%s"
    begin_write = "BEGIN"
    begin_snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, url: str, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        super().__init__()
        self.url = url
        self.statement_timeout_ms = statement_timeout_ms

    def _connect(self) -> Any:
        return psycopg.connect(
            self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
            keepalives=1, keepalives_idle=KEEPALIVES_IDLE_S, keepalives_interval=1,
            keepalives_count=3, tcp_user_timeout=TCP_USER_TIMEOUT_MS,
            options=f"-c statement_timeout={self.statement_timeout_ms}",
            application_name="linewarden-ledger")

    def _lock_head(self, cur: Any, instance_id: str, now: int) -> _HeadState:
        cur.execute("INSERT INTO chain_heads (instance_id, seq, row_hash, checkpoint_seq, "
                    "checkpoint_us) VALUES (%s, 0, %s, 0, %s) "
                    "ON CONFLICT (instance_id) DO NOTHING", (instance_id, ZERO_HASH, now))
        cur.execute("SELECT seq, row_hash, checkpoint_seq, checkpoint_us FROM chain_heads "
                    "WHERE instance_id = %s FOR UPDATE", (instance_id,))
        return head_from_row(cur.fetchone())

    def _insert_rows(self, cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        with cur.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)

    def _iter_cursor(self) -> Any:
        # Server-side (inside a snapshot transaction): rows stream in FETCH_ROWS pages
        # instead of arriving all at once.
        if self._in_snapshot:
            return self._conn.cursor(name="linewarden_ledger_walk")
        return self._conn.cursor()
