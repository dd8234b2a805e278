"""The writer: a bounded queue in the event loop, group commit in one worker thread.

`submit(rec, done)` queues the disclosure; `done(True)` runs once its batch's COMMIT
returned. Whatever is queued while a commit runs becomes the next batch, so under load one
fsync carries hundreds of rows, and when idle a row commits alone at once (no linger
timer). `done(False)` runs instead — at once, or at the latest after `COMMIT_BOUND_S` —
when the queue is full, the backend has failed, or a commit is stuck. The proxy forwards
identity only on True: no ledger, no disclosure. `await record(rec)` is the same for
callers that prefer a coroutine; the proxy uses the callback, which costs no task, future
or timer per disclosure (one timer serves every waiting record).

The database work runs in a daemon thread that owns its connection. A commit stuck past
`ABANDON_AFTER_S` (a server that is alive but not answering: SIGSTOP, a lock, a dying
disk) makes the writer abandon that thread and its connection and reconnect with a new
one; the old thread's late result, if any, is ignored. A row committed after its caller
gave up is harmless: the ledger then lists a disclosure that was withheld (a superset),
never the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import tasks
from ..logs import RepeatLimiter
from .migrations import SchemaError
from .store import DEFAULT_CHECKPOINTS, CheckpointPolicy, Store

if TYPE_CHECKING:
    from ..decide import DisclosureRecord
    from . import Recorder
    from .chain import Signer

log = logging.getLogger("linewarden.ledger")
T = TypeVar("T")

# The longest a request waits for its ledger row before it is forwarded without identity.
# A healthy commit takes a few milliseconds (one fsync per batch); 250 ms leaves room for
# a loaded disk while staying near Envoy ext_authz's default 200 ms budget for a
# request-path side call. Past it, withholding identity is better than stalling the user.
COMMIT_BOUND_S = 0.25
# Records waiting for a commit. 8,192 is ~0.4 s of the 20,000 rows/s target: a record
# queued behind more would miss COMMIT_BOUND_S anyway, so refusing at once is kinder.
QUEUE_MAX = 8_192
# Rows per transaction: bounds one commit's duration (~20-50 ms on SQLite) so a batch
# never eats the whole commit bound of the records queued behind it.
BATCH_MAX = 1_000
# A commit running this long is stuck, not slow: abandon its thread and connection.
# Meanwhile every new record is refused at once (see `_stalled`).
ABANDON_AFTER_S = 2.0
# Opening the backend (connect, migrate) may take this long before it counts as failed.
OPEN_TIMEOUT_S = 10.0
# While the backend is down, try to reopen it this often. Records are refused meanwhile.
RETRY_INTERVAL_S = 1.0

_HEX_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass
class LedgerCounters:
    """For /metrics: what was committed and why records were refused."""

    committed: int = 0
    batches: int = 0
    refused_full: int = 0  # queue at QUEUE_MAX
    refused_unavailable: int = 0  # backend down, stuck, or the writer closed
    timed_out: int = 0  # no COMMIT within COMMIT_BOUND_S
    failed: int = 0  # rows in batches whose transaction failed
    invalid: int = 0  # records refused before queueing (malformed subscriber key)

    @property
    def withheld(self) -> int:
        return (self.refused_full + self.refused_unavailable + self.timed_out + self.failed
                + self.invalid)


class LedgerCollector(Collector):
    """The writer's counters on /metrics, read at scrape time (nothing on the hot path)."""

    def __init__(self, writer: LedgerWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        c = self.writer.counters
        yield CounterMetricFamily("linewarden_ledger_rows_committed",
                                  "Disclosure rows committed to the ledger", value=c.committed)
        yield CounterMetricFamily("linewarden_ledger_commits",
                                  "Ledger transactions committed (rows per commit = rows / "
                                  "commits)", value=c.batches)
        refused = CounterMetricFamily("linewarden_ledger_records_refused",
                                      "Records not committed (identity withheld), by reason",
                                      labels=["reason"])
        for reason, value in (("queue_full", c.refused_full),
                              ("unavailable", c.refused_unavailable),
                              ("timed_out", c.timed_out), ("failed", c.failed),
                              ("invalid", c.invalid)):
            refused.add_metric([reason], value)
        yield refused
        yield GaugeMetricFamily("linewarden_ledger_queue_depth",
                                "Records waiting for a commit", value=self.writer.queue_depth)
        yield GaugeMetricFamily("linewarden_ledger_index_lag_records",
                                "Durable records not yet in the query store (journal-first "
                                "ledger; 0 when rows are committed to the store directly)",
                                value=self.writer.index_lag)
        yield GaugeMetricFamily("linewarden_ledger_healthy",
                                "1 while the ledger backend accepts commits (0 from a "
                                "failed commit until the next one succeeds)",
                                value=1 if self.writer.healthy else 0)


Done = Callable[[bool], None]


@runtime_checkable
class CallbackRecorder(Protocol):
    def submit(self, rec: DisclosureRecord, done: Done) -> None: ...


@dataclass(slots=True)
class _Pending:
    record: DisclosureRecord
    done: Done | None  # None once settled: committed, refused or expired
    deadline: float  # loop time after which the caller gets False


class _Worker:
    """One daemon thread owning one `Store`; jobs run in order, results go to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: Store, name: str) -> None:
        self.loop = loop
        self.store = store
        self._jobs: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None]
        self._jobs = queue.SimpleQueue()
        # Daemon: an abandoned thread stuck in a socket read must not block process exit.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self.loop.create_future()
        future.add_done_callback(_consume)
        self._jobs.put((future, fn))
        return future

    def retire(self) -> None:
        """Close the store and end the thread once the current job (if stuck) returns."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            try:
                result, error = fn(), None
            except BaseException as exc:
                result, error = None, exc
            self._deliver(future, result, error)
        self.store.close()

    def _deliver(self, future: asyncio.Future[Any], result: Any,
                 error: BaseException | None) -> None:
        def settle() -> None:
            if future.done():  # the loop gave up on this job
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self.loop.call_soon_threadsafe(settle)


class LedgerWriter:
    """The `Ledger` the proxy holds: one per gateway instance."""

    def __init__(self, store_factory: Callable[[], Store], instance_id: str, *,
                 signer: Signer | None = None,
                 checkpoints: CheckpointPolicy = DEFAULT_CHECKPOINTS,
                 queue_max: int = QUEUE_MAX, batch_max: int = BATCH_MAX,
                 commit_bound: float = COMMIT_BOUND_S,
                 abandon_after: float = ABANDON_AFTER_S,
                 retry_interval: float = RETRY_INTERVAL_S) -> None:
        self._store_factory = store_factory
        self.instance_id = instance_id
        self._signer = signer
        self._checkpoints = checkpoints
        self._queue_max = queue_max
        self._batch_max = batch_max
        self._commit_bound = commit_bound
        self._abandon_after = abandon_after
        self._retry_interval = retry_interval
        self.counters = LedgerCounters()
        self._worker: _Worker | None = None
        self._healthy = False  # the backend is open (not abandoned, not being reopened)
        self._failing = False  # the last commit failed (disk full, read-only, locked...)
        self._log = RepeatLimiter(log)  # a failing backend fails every batch: no storm
        self._closing = False
        self._inflight_since: float | None = None
        self._overdue = False
        self._task: asyncio.Task[None] | None = None
        self._reopen_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._queued: deque[_Pending] = deque()  # waiting for a batch
        # Queued or in a commit, oldest first: what the one expiry timer walks.
        self._waiting: deque[_Pending] = deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._wakeup: asyncio.Future[None] | None = None  # the writer task, idle
        self._generation = 0

    # ---------------------------------------------------------------- the interface

    async def start(self) -> None:
        """Open the backend (create or migrate the schema) and start the writer task.

        A backend that cannot be reached is not fatal: the gateway runs and withholds
        identity while the writer keeps retrying. A schema newer than this code is."""
        self._loop = asyncio.get_running_loop()
        self._started = True
        if not await self._open():
            self._reopen_later()
        self._task = self._loop.create_task(self._run(), name="linewarden-ledger-writer")

    def submit(self, rec: DisclosureRecord, done: Done) -> None:
        """Queue `rec`; `done(True)` once it is committed, `done(False)` if it cannot be —
        called exactly once, possibly before `submit` returns, never with an exception."""
        if not self.accepting:
            self.counters.refused_unavailable += 1
            done(False)
            return
        if not _HEX_KEY.fullmatch(rec.subscriber_key):
            self.counters.invalid += 1
            self._log.error("ledger: refused a record whose subscriber_key is not an HMAC")
            done(False)
            return
        if len(self._queued) >= self._queue_max:
            self.counters.refused_full += 1
            done(False)
            return
        loop = self._loop
        assert loop is not None
        pending = _Pending(rec, done, loop.time() + self._commit_bound)
        self._queued.append(pending)
        self._waiting.append(pending)
        if self._expiry is None:
            self._expiry = loop.call_at(pending.deadline, self._expire_due)
        self._wake()

    async def record(self, rec: DisclosureRecord) -> bool:
        """True once `rec` is committed; False (never an exception) if it cannot be."""
        if self._loop is None:
            self.counters.refused_unavailable += 1
            return False
        future: asyncio.Future[bool] = self._loop.create_future()

        def done(ok: bool) -> None:
            if not future.done():  # done: the caller was cancelled
                future.set_result(ok)
        self.submit(rec, done)
        return await future

    async def close(self) -> None:
        """Commit what is queued, sign the head, stop."""
        if self._closing or not self._started:
            return
        self._closing = True
        await tasks.stop([self._reopen_task])
        self._wake()
        if self._task is not None:
            await self._task
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        worker = self._worker
        if worker is not None and self._healthy and self._signer is not None:
            signer, instance_id = self._signer, self.instance_id
            try:
                await asyncio.wait_for(
                    worker.submit(lambda: worker.store.checkpoint(instance_id, signer)),
                    self._abandon_after)
            except Exception as exc:
                log.warning("ledger: closing checkpoint failed: %s", _describe(exc))
        self._drop_worker()
        self._log.settle()

    # ---------------------------------------------------------------- state

    @property
    def healthy(self) -> bool:
        """The backend is open and its last commit, if any, succeeded."""
        return self._healthy and not self._failing

    @property
    def accepting(self) -> bool:
        return self._healthy and not self._closing and not self._stalled()

    @property
    def queue_depth(self) -> int:
        return len(self._queued)

    @property
    def index_lag(self) -> int:
        """Committed rows not yet queryable: none, the store is the durability point."""
        return 0

    def _stalled(self) -> bool:
        """A record has missed the bound during the commit in flight, or that commit has
        run past the bound: a new record could not make it either, so it is refused now
        rather than after a wait. Cleared when the commit returns."""
        since = self._inflight_since
        return since is not None and self._loop is not None and (
            self._overdue or self._loop.time() - since > self._commit_bound)

    def _settle(self, pending: _Pending, ok: bool) -> None:
        done = pending.done
        if done is None:
            return
        pending.done = None
        try:
            done(ok)
        except Exception:  # one caller's bug must not stop the writer
            log.exception("ledger: a disclosure's completion callback failed")

    def _expire_due(self) -> None:
        """The one expiry timer: give False to every record past its deadline, then wait
        for the oldest that is still waiting (deadlines rise in arrival order)."""
        assert self._loop is not None
        self._expiry = None
        now, waiting = self._loop.time(), self._waiting
        while waiting:
            pending = waiting[0]
            if pending.done is not None:
                if pending.deadline > now:
                    self._expiry = self._loop.call_at(pending.deadline, self._expire_due)
                    return
                self.counters.timed_out += 1
                self._overdue = True
                self._settle(pending, False)
            waiting.popleft()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    # ---------------------------------------------------------------- the writer task

    async def _run(self) -> None:
        assert self._loop is not None
        queued, waiting = self._queued, self._waiting
        while True:
            if not queued:
                if self._closing:
                    return
                self._wakeup = self._loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            batch: list[_Pending] = []
            while queued and len(batch) < self._batch_max:
                pending = queued.popleft()
                if pending.done is not None:  # None: it expired while queued
                    batch.append(pending)
            if not batch:
                continue
            if self._healthy:
                ok = await self._commit(batch)
            else:  # queued just before the backend failed
                ok = False
                self.counters.refused_unavailable += len(batch)
            for pending in batch:
                self._settle(pending, ok)
            while waiting and waiting[0].done is None:  # settled: the timer needn't see them
                waiting.popleft()

    async def _commit(self, batch: list[_Pending]) -> bool:
        worker = self._worker
        assert worker is not None and self._loop is not None
        records = [p.record for p in batch]
        signer, policy, instance_id = self._signer, self._checkpoints, self.instance_id
        self._inflight_since, self._overdue = self._loop.time(), False
        future = worker.submit(lambda: worker.store.append(instance_id, records, signer,
                                                           policy))
        try:
            await asyncio.wait_for(asyncio.shield(future), self._abandon_after)
        except TimeoutError:
            self.counters.failed += len(batch)
            self._failing = True
            self._log.error("ledger: a commit took over %.1f s; abandoning the connection and "
                            "withholding identity until the backend answers",
                            self._abandon_after)
            self._fail()
            return False
        except Exception as exc:
            self.counters.failed += len(batch)
            self._failing = True
            # No row count in the text: identical failures must read identically to be
            # rate-limited (the counts are in linewarden_ledger_records_refused).
            self._log.error("ledger: a commit failed, identity withheld for its rows: %s",
                            _describe(exc))
            if not await self._ping(worker):
                self._fail()
            return False
        finally:
            self._inflight_since = None
            self._overdue = False
        self.counters.committed += len(batch)
        self.counters.batches += 1
        if self._failing:
            self._failing = False
            self._log.warning("ledger: commits succeed again")
        return True

    async def _ping(self, worker: _Worker) -> bool:
        """After a failed batch: is the backend still there (a lock timeout), or gone?"""
        try:
            return await asyncio.wait_for(asyncio.shield(worker.submit(worker.store.ping)),
                                          self._commit_bound)
        except Exception:
            return False

    # ---------------------------------------------------------------- (re)opening

    async def _open(self) -> bool:
        assert self._loop is not None
        self._generation += 1
        store = self._store_factory()
        worker = _Worker(self._loop, store, f"linewarden-ledger-{self._generation}")
        try:
            await asyncio.wait_for(asyncio.shield(worker.submit(store.open)), OPEN_TIMEOUT_S)
        except SchemaError:
            worker.retire()
            raise
        except Exception as exc:
            worker.retire()
            self._log.warning("ledger: backend unavailable (%s); withholding identity, "
                              "retrying every %.0f s", _describe(exc), self._retry_interval)
            return False
        self._worker = worker
        self._healthy = True
        log.info("ledger: backend open (%s)", type(store).__name__)
        return True

    def _fail(self) -> None:
        self._healthy = False
        self._drop_worker()
        if not self._closing:
            self._reopen_later()

    def _drop_worker(self) -> None:
        if self._worker is not None:
            self._worker.retire()
            self._worker = None

    def _reopen_later(self) -> None:
        if self._reopen_task is None or self._reopen_task.done():
            assert self._loop is not None
            self._reopen_task = self._loop.create_task(self._reopen())

    async def _reopen(self) -> None:
        while not self._healthy and not self._closing:
            await asyncio.sleep(self._retry_interval)
            try:
                await self._open()
            except SchemaError as exc:
                self._log.error("ledger: %s", exc)


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned job's error as seen (no "exception was never retrieved")."""
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException) -> str:
    """One line for the log: the error class and its first line (psycopg and sqlite3
    messages carry no parameters, so no subscriber data reaches the log)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def submitter(recorder: Recorder) -> Callable[[DisclosureRecord, Done], None]:
    """`recorder.record` in the callback form the proxy uses: the recorder's own `submit`
    if it has one (the writer does), else a task per record that fails closed on an
    exception (test doubles, the Number Verification API's recorder)."""
    if isinstance(recorder, CallbackRecorder):
        return recorder.submit
    running: set[asyncio.Task[None]] = set()  # a task nobody references may be collected

    async def record(rec: DisclosureRecord, done: Done) -> None:
        try:
            ok = await recorder.record(rec)
        except Exception:  # a broken ledger must fail closed, never open
            log.exception("ledger refused a disclosure record")
            ok = False
        done(ok)

    def submit(rec: DisclosureRecord, done: Done) -> None:
        task = asyncio.get_running_loop().create_task(record(rec, done))
        running.add(task)
        task.add_done_callback(running.discard)
    return submit
