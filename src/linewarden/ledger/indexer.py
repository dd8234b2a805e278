"""The indexer: loads synced journal rows into the query store, in large batches.

One daemon thread per journaled writer. It wakes every `INDEX_INTERVAL_S`, reads the
journal past the store's head (the indexed position lives in the store's `chain_heads`,
so it survives restarts and is shared with anyone else indexing), up to the last seq the
flusher reported durable, and loads it with `Store.index` — idempotent by (instance,
seq). Fully indexed segments other than the newest are then deleted: the store holds
them, committed durably.

A store that is down (PostgreSQL outage) costs nothing but lag: identity keeps flowing on
the journal's durability, reports add the unindexed tail (`tail.py`), and the thread
retries every `RETRY_INTERVAL_S`. `linewarden_ledger_index_lag_records` shows the lag.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..logs import RepeatLimiter
from .chain import Signer
from .journal import JournalRow, Segment, instance_dir, scan_segment, segments
from .migrations import SchemaError
from .store import DEFAULT_CHECKPOINTS, CheckpointPolicy, Store

log = logging.getLogger("linewarden.ledger")

# Linger between index runs: long enough that a run loads thousands of rows in one
# transaction (per-row B-tree inserts are what made the per-row writer cost 20-28 µs),
# short enough that the unindexed tail reports must read stays small.
INDEX_INTERVAL_S = 0.2
# Rows per transaction: one SQLite commit of this many rows takes ~0.1 s, so a purge or
# a report waiting for the write lock never waits long.
INDEX_BATCH_ROWS = 20_000
# While the store is down, retry this often.
RETRY_INTERVAL_S = 1.0


class Indexer:
    def __init__(self, store_factory: Callable[[], Store], root: Path, instance_id: str, *,
                 signer: Signer | None = None,
                 checkpoints: CheckpointPolicy = DEFAULT_CHECKPOINTS,
                 interval: float = INDEX_INTERVAL_S, batch_rows: int = INDEX_BATCH_ROWS,
                 delete_indexed: bool = True) -> None:
        self._store_factory = store_factory
        self.directory = instance_dir(root, instance_id)
        self.instance_id = instance_id
        self._signer = signer
        self._checkpoints = checkpoints
        self._interval = interval
        self._batch_rows = batch_rows
        self._delete_indexed = delete_indexed
        self.synced_seq = 0  # set by the writer after each sync (an int: atomic)
        self.indexed_seq = 0
        self.healthy = False
        self.refused: SchemaError | None = None  # the store refused us (schema, secrets)
        self.rows = 0  # indexed by this thread, and the CPU it spent (bench/journal.py)
        self.cpu_s = 0.0
        self._stopping = threading.Event()
        self._cursor: tuple[Path, int, int] | None = None  # segment, offset, next seq
        self._log = RepeatLimiter(log)  # a refused instance is refused at every retry
        self._thread = threading.Thread(target=self._run, name="linewarden-indexer",
                                        daemon=True)

    @property
    def lag(self) -> int:
        return max(0, self.synced_seq - self.indexed_seq)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Index what is synced (within `timeout`), sign the head, end the thread."""
        self._stopping.set()
        self._thread.join(timeout)

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        store: Store | None = None
        failing = False
        while True:
            stopping = self._stopping.wait(self._interval)
            try:
                if store is None:
                    store = self._store_factory().open()
                    head = store.head(self.instance_id)
                    self.indexed_seq = head.seq if head else 0
                    self.healthy = True
                self.refused = None
                self.catch_up(store)
                if failing:
                    failing = False
                    log.warning("ledger: indexing '%s' resumed at seq %d", self.instance_id,
                                self.indexed_seq)
                if stopping:
                    if self._signer is not None:
                        store.checkpoint(self.instance_id, self._signer)
                    break
            except Exception as exc:
                # A refusal (schema, secrets) and an outage end the same way: the store is
                # reopened after RETRY_INTERVAL_S; only a refusal withholds identity.
                if isinstance(exc, SchemaError):
                    self.refused = exc
                    self._log.error("ledger: indexing '%s' refused: %s", self.instance_id, exc)
                elif not failing:  # once per outage, not once per retry
                    log.warning("ledger: indexing '%s' failed (%s); the journal keeps every "
                                "row, retrying every %.0f s", self.instance_id,
                                type(exc).__name__, RETRY_INTERVAL_S)
                failing = True
                self.healthy = False
                self._cursor = None
                if store is not None:
                    store.close()
                    store = None
                if stopping:
                    break
                self._stopping.wait(RETRY_INTERVAL_S)
        if store is not None:
            store.close()
        self._log.settle()

    def catch_up(self, store: Store) -> None:
        """Load every synced row past the store's head, batch by batch."""
        while self.indexed_seq < self.synced_seq:
            start = time.thread_time()
            upto = min(self.synced_seq, self.indexed_seq + self._batch_rows)
            rows = self._read(upto)
            if not rows:
                return  # synced_seq ahead of the files (should not happen): try later
            self.indexed_seq = store.index(self.instance_id, rows, self._signer,
                                           self._checkpoints)
            self.rows += len(rows)
            self.cpu_s += time.thread_time() - start
            if self._delete_indexed:
                self._delete_indexed_segments()

    def _read(self, upto: int) -> list[JournalRow]:
        """Rows indexed_seq+1 .. upto from the files, resuming where the last read ended."""
        want = self.indexed_seq + 1
        segs = segments(self.directory)
        paths = [seg.path for seg in segs]
        cursor = self._cursor
        if cursor is not None and cursor[2] == want and cursor[0] in paths:
            i, offset = paths.index(cursor[0]), cursor[1]
        else:
            i, offset = _containing(segs, want), 0
        rows: list[JournalRow] = []
        while i < len(segs):
            after = rows[-1].fields.seq if rows else want - 1
            scan = scan_segment(segs[i].path, after_seq=after, upto_seq=upto, start=offset)
            rows += scan.rows
            last = rows[-1].fields.seq if rows else want - 1
            if last >= upto or i + 1 == len(segs):
                self._cursor = (segs[i].path, scan.end, last + 1)
                break
            i, offset = i + 1, 0
        return rows

    def _delete_indexed_segments(self) -> None:
        segs = segments(self.directory)
        for seg, after in itertools.pairwise(segs):
            if after.first_seq <= self.indexed_seq + 1:
                with contextlib.suppress(FileNotFoundError):
                    seg.path.unlink()


def _containing(segs: list[Segment], seq: int) -> int:
    """Index of the segment that holds `seq` (the last one starting at or before it)."""
    found = 0
    for i, seg in enumerate(segs):
        if seg.first_seq <= seq:
            found = i
    return found
