"""The writer: a bounded queue in the event loop, group commit in one worker thread.

`record()` queues the disclosure and waits for its batch's COMMIT. Whatever is queued
while a commit runs becomes the next batch, so under load one fsync carries hundreds of
rows, and when idle a row commits alone at once (no linger timer). The caller gets True
only after COMMIT returned; False — at once, or at the latest after `COMMIT_BOUND_S` —
when the queue is full, the backend has failed, or a commit is stuck. The proxy forwards
identity only on True: no ledger, no disclosure.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import tasks
from .migrations import SchemaError
from .store import DEFAULT_CHECKPOINTS, CheckpointPolicy, Store

if TYPE_CHECKING:
    from ..decide import DisclosureRecord
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
        yield GaugeMetricFamily("linewarden_ledger_healthy",
                                "1 while the ledger backend accepts commits",
                                value=1 if self.writer.healthy else 0)


@dataclass(slots=True)
class _Pending:
    record: DisclosureRecord
    future: asyncio.Future[bool]


_STOP = object()


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
        self._healthy = False
        self._closing = False
        self._inflight_since: float | None = None
        self._overdue = False
        self._task: asyncio.Task[None] | None = None
        self._reopen_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Pending | object] | None = None
        self._generation = 0

    # ---------------------------------------------------------------- the interface

    async def start(self) -> None:
        """Open the backend (create or migrate the schema) and start the writer task.

        A backend that cannot be reached is not fatal: the gateway runs and withholds
        identity while the writer keeps retrying. A schema newer than this code is."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self._queue_max)
        if not await self._open():
            self._reopen_later()
        self._task = self._loop.create_task(self._run(), name="linewarden-ledger-writer")

    async def record(self, rec: DisclosureRecord) -> bool:
        """True once `rec` is committed; False (never an exception) if it cannot be."""
        if not self.accepting:
            self.counters.refused_unavailable += 1
            return False
        if not _HEX_KEY.fullmatch(rec.subscriber_key):
            self.counters.invalid += 1
            log.error("ledger: refused a record whose subscriber_key is not an HMAC")
            return False
        assert self._loop is not None and self._queue is not None
        future: asyncio.Future[bool] = self._loop.create_future()
        try:
            self._queue.put_nowait(_Pending(rec, future))
        except asyncio.QueueFull:
            self.counters.refused_full += 1
            return False
        timer = self._loop.call_later(self._commit_bound, self._expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def close(self) -> None:
        """Commit what is queued, sign the head, stop."""
        if self._closing or self._queue is None:
            return
        self._closing = True
        await tasks.stop([self._reopen_task])
        await self._queue.put(_STOP)
        if self._task is not None:
            await self._task
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

    # ---------------------------------------------------------------- state

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def accepting(self) -> bool:
        return self._healthy and not self._closing and not self._stalled()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def _stalled(self) -> bool:
        """A record has missed the bound during the commit in flight, or that commit has
        run past the bound: a new record could not make it either, so it is refused now
        rather than after a wait. Cleared when the commit returns."""
        since = self._inflight_since
        return since is not None and self._loop is not None and (
            self._overdue or self._loop.time() - since > self._commit_bound)

    def _expire(self, future: asyncio.Future[bool]) -> None:
        if not future.done():
            self.counters.timed_out += 1
            self._overdue = True
            future.set_result(False)

    # ---------------------------------------------------------------- the writer task

    async def _run(self) -> None:
        assert self._queue is not None
        stopping = False
        while not stopping:
            item = await self._queue.get()
            batch: list[_Pending] = []
            while True:
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Pending)
                if not item.future.done():  # done: expired or its caller was cancelled
                    batch.append(item)
                if len(batch) >= self._batch_max:
                    break
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if batch:
                if self._healthy:
                    ok = await self._commit(batch)
                else:  # queued just before the backend failed
                    ok = False
                    self.counters.refused_unavailable += len(batch)
                for p in batch:
                    if not p.future.done():
                        p.future.set_result(ok)

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
            log.error("ledger: a commit took over %.1f s; abandoning the connection and "
                      "withholding identity until the backend answers", self._abandon_after)
            self._fail()
            return False
        except Exception as exc:
            self.counters.failed += len(batch)
            log.error("ledger: commit of %d rows failed: %s", len(batch), _describe(exc))
            if not await self._ping(worker):
                self._fail()
            return False
        finally:
            self._inflight_since = None
            self._overdue = False
        self.counters.committed += len(batch)
        self.counters.batches += 1
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
            log.warning("ledger: backend unavailable (%s); withholding identity, retrying "
                        "every %.0f s", _describe(exc), self._retry_interval)
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
                log.error("ledger: %s", exc)


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned job's error as seen (no "exception was never retrieved")."""
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException) -> str:
    """One line for the log: the error class and its first line (psycopg and sqlite3
    messages carry no parameters, so no subscriber data reaches the log)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
