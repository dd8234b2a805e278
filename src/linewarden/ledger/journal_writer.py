"""The journal-first writer: durable in the journal before identity leaves, indexed later.

Same contract as `LedgerWriter` (`submit(rec, done)`: `done(True)` exactly once when the
record is durable, `done(False)` at once or within `COMMIT_BOUND_S` when it cannot be);
what differs is the durability point. On the loop thread, `submit` chains the record
(seq, hash of the previous row) and frames it into the flusher's buffer — no future, no
queue hand-off, no thread switch per record. The flusher thread writes and `fdatasync`s
the whole buffer and wakes the loop once per batch; the loop then answers True for every
record up to the synced seq. The indexer thread loads synced rows into the store later.

Failure: a write or sync that fails (ENOSPC, EIO) answers False for every record not yet
synced, truncates the failed batch back out of the segment, and the writer withholds
identity until a reopen (every `RETRY_INTERVAL_S`) succeeds. The store being down does
not withhold identity: only the journal is on the request path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import tasks
from .chain import ZERO_HASH, ChainFields, Head, Signer
from .indexer import INDEX_BATCH_ROWS, INDEX_INTERVAL_S, Indexer
from .journal import SEGMENT_BYTES, Flusher, JournalError, JournalFiles, frame
from .migrations import SchemaError
from .store import DEFAULT_CHECKPOINTS, CheckpointPolicy, Store, to_us
from .writer import (
    _HEX_KEY,
    COMMIT_BOUND_S,
    OPEN_TIMEOUT_S,
    QUEUE_MAX,
    RETRY_INTERVAL_S,
    Done,
    LedgerWriter,
    _describe,
)

if TYPE_CHECKING:
    from ..decide import DisclosureRecord

log = logging.getLogger("linewarden.ledger")

# At close, how long the indexer may take to load what is left before the process goes
# on (the rows stay in the journal; the next start indexes them).
CLOSE_INDEX_S = 10.0


@dataclass(slots=True)
class _Waiting:
    seq: int
    done: Done | None  # None once answered
    deadline: float


class JournalWriter(LedgerWriter):
    def __init__(self, store_factory: Callable[[], Store], instance_id: str, root: Path, *,
                 signer: Signer | None = None,
                 checkpoints: CheckpointPolicy = DEFAULT_CHECKPOINTS,
                 queue_max: int = QUEUE_MAX, commit_bound: float = COMMIT_BOUND_S,
                 retry_interval: float = RETRY_INTERVAL_S,
                 segment_bytes: int = SEGMENT_BYTES,
                 index_interval: float = INDEX_INTERVAL_S,
                 index_batch: int = INDEX_BATCH_ROWS, files: JournalFiles | None = None,
                 **_: object) -> None:
        super().__init__(store_factory, instance_id, signer=signer, checkpoints=checkpoints,
                         queue_max=queue_max, commit_bound=commit_bound,
                         retry_interval=retry_interval)
        self.root = root
        # `files`: a seam for tests (a disk that is slow, or fails); else the real files.
        self._files = files or JournalFiles(root, instance_id, segment_bytes=segment_bytes)
        self._flusher: Flusher | None = None
        self.indexer = Indexer(store_factory, root, instance_id, signer=signer,
                               checkpoints=checkpoints, interval=index_interval,
                               batch_rows=index_batch)
        self._pending: deque[_Waiting] = deque()
        self._seq = 0
        self._prev = ZERO_HASH
        self._store_head: Head | None = None  # the store's head at start (old rows)
        self._epoch = 0  # bumped on failure: a dead flusher's late callbacks are ignored
        self._failing = False  # a write failed and none has succeeded since

    # ---------------------------------------------------------------- the interface

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = True
        if not await self._open_journal():
            self._reopen_later()
        self.indexer.start()

    def submit(self, rec: DisclosureRecord, done: Done) -> None:
        flusher = self._flusher
        if flusher is None or not self.accepting:
            self.counters.refused_unavailable += 1
            done(False)
            return
        if not _HEX_KEY.fullmatch(rec.subscriber_key):
            self.counters.invalid += 1
            log.error("ledger: refused a record whose subscriber_key is not an HMAC")
            done(False)
            return
        if len(self._pending) >= self._queue_max:
            self.counters.refused_full += 1
            done(False)
            return
        loop = self._loop
        assert loop is not None
        seq = self._seq + 1
        data, self._prev = frame(ChainFields(
            self.instance_id, seq, to_us(rec.time), rec.partner_id, rec.purpose, rec.host,
            ",".join(rec.claims), rec.policy_version, bytes.fromhex(rec.subscriber_key)),
            self._prev)
        self._seq = seq
        waiting = _Waiting(seq, done, loop.time() + self._commit_bound)
        self._pending.append(waiting)
        if self._expiry is None:
            self._expiry = loop.call_at(waiting.deadline, self._expire_due)
        flusher.append(data, seq)

    async def close(self) -> None:
        if self._closing or not self._started:
            return
        self._closing = True
        await tasks.stop([self._reopen_task])
        flusher = self._flusher
        if flusher is not None:
            flusher.stop()
            await asyncio.to_thread(flusher.join)
            await asyncio.sleep(0)  # run the flusher's last posted callback
        self._fail_pending()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        await asyncio.to_thread(self.indexer.stop, CLOSE_INDEX_S)
        self._files.close()

    # ---------------------------------------------------------------- state

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def index_lag(self) -> int:
        return self.indexer.lag

    def _stalled(self) -> bool:
        """A record missed its bound waiting for a sync that has not returned since; or
        the store refused this instance (a schema or secrets check failed when the indexer
        reconnected): identity waits, as with the per-row writer (invariant 7)."""
        return self._overdue or self.indexer.refused is not None

    # ---------------------------------------------------------------- flusher callbacks

    def _synced(self, epoch: int, last_seq: int) -> None:
        """On the loop: every record up to `last_seq` is durable."""
        if epoch != self._epoch:
            return
        self._overdue = False
        if self._failing:
            self._failing = False
            log.warning("ledger: journal writes succeed again; identity flows")
        self.counters.batches += 1
        pending = self._pending
        while pending and pending[0].seq <= last_seq:
            waiting = pending.popleft()
            if waiting.done is not None:
                self.counters.committed += 1
                self._answer(waiting, True)
        self.indexer.synced_seq = last_seq

    def _failed(self, epoch: int, last_seq: int, exc: OSError) -> None:
        if epoch != self._epoch:
            return
        # Once per outage, not once per retry (a full disk fails every reopen's write).
        if not self._failing:
            self._failing = True
            log.error("ledger: journal write failed (%s); withholding identity until it "
                      "succeeds again", _describe(exc))
        self.counters.failed += sum(w.done is not None for w in self._pending)
        self._fail_pending(count=False)
        self._healthy = False
        self._flusher = None
        self._epoch += 1
        if not self._closing:
            self._reopen_later()

    def _fail_pending(self, *, count: bool = True) -> None:
        while self._pending:
            waiting = self._pending.popleft()
            if waiting.done is not None:
                if count:
                    self.counters.refused_unavailable += 1
                self._answer(waiting, False)

    def _answer(self, waiting: _Waiting, ok: bool) -> None:
        done, waiting.done = waiting.done, None
        if done is None:
            return
        try:
            done(ok)
        except Exception:  # one caller's bug must not stop the writer
            log.exception("ledger: a disclosure's completion callback failed")

    def _expire_due(self) -> None:
        """The one expiry timer: False to every record past its deadline (in seq order,
        so deadlines rise), then wait for the oldest still waiting."""
        assert self._loop is not None
        self._expiry = None
        now, pending = self._loop.time(), self._pending
        for waiting in pending:
            if waiting.done is None:
                continue
            if waiting.deadline > now:
                self._expiry = self._loop.call_at(waiting.deadline, self._expire_due)
                return
            self.counters.timed_out += 1
            self._overdue = True
            self._answer(waiting, False)

    # ---------------------------------------------------------------- (re)opening

    async def _open_journal(self) -> bool:
        """Open the files (truncating a torn tail) and continue the chain from the newest
        of the journal's head and the store's (rows the per-row writer committed)."""
        try:
            head = await asyncio.to_thread(self._files.open)
        except JournalError:
            raise
        except OSError as exc:
            log.warning("ledger: journal unavailable (%s); withholding identity, retrying "
                        "every %.0f s", _describe(exc), self._retry_interval)
            return False
        if self._files.truncated:
            log.warning("ledger: truncated a torn journal tail of %d bytes (records whose "
                        "identity was never sent)", self._files.truncated)
            self._files.truncated = 0
        if self._store_head is None and not await self._read_store_head(head is None):
            return False
        # Not the in-memory head: after a failure that may name records never written.
        base = max((h for h in (head, self._store_head) if h is not None),
                   key=lambda h: h.seq, default=Head(0, ZERO_HASH))
        self._seq, self._prev = base.seq, base.row_hash
        if head is not None and base.seq != head.seq:
            log.warning("ledger: the store's chain is ahead of the journal; continuing "
                        "from the store's head at seq %d", self._seq)
        epoch = self._epoch
        loop = self._loop
        assert loop is not None

        def synced(last: int) -> None:
            loop.call_soon_threadsafe(self._synced, epoch, last)

        def failed(last: int, exc: OSError) -> None:
            loop.call_soon_threadsafe(self._failed, epoch, last, exc)

        self._flusher = Flusher(self._files, synced, failed)
        self.indexer.synced_seq = max(self.indexer.synced_seq, head.seq if head else 0)
        self._healthy = True
        if not self._failing:
            log.info("ledger: journal open at seq %d (%s)", self._seq,
                     self._files.directory)
        return True

    async def _read_store_head(self, required: bool) -> bool:
        """The store's head for this instance, once. Needed only while the journal is
        empty (a new instance, or one moving from the per-row writer): without it the
        chain could not continue the store's, so identity waits for the store."""
        def read() -> Head | None:
            store = self._store_factory().open()
            try:
                return store.head(self.instance_id)
            finally:
                store.close()
        try:
            head = await asyncio.wait_for(asyncio.to_thread(read), OPEN_TIMEOUT_S)
        except SchemaError:
            raise  # a newer schema, or secrets that disagree with the ledger's: fatal
        except Exception as exc:
            if required:
                log.warning("ledger: the journal is empty and the store is unavailable "
                            "(%s): withholding identity until the chain's start is known",
                            _describe(exc))
                return False
            return True
        self._store_head = head if head is not None else Head(0, ZERO_HASH)
        return True

    async def _reopen(self) -> None:
        while not self._healthy and not self._closing:
            await asyncio.sleep(self._retry_interval)
            try:
                await self._open_journal()
            except (JournalError, SchemaError) as exc:
                log.error("ledger: %s", exc)
