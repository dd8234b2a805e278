"""Stopping background tasks for certain.

One `Task.cancel()` is not always enough: redis-py's asyncio client can swallow a
cancellation that lands while it is connecting (seen with redis 8.1 on Python 3.11: a
pub/sub loop cancelled right after it started kept polling forever, and shutdown hung).
`stop()` cancels again until every task has ended, within a bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger("linewarden.tasks")

RECANCEL_EVERY = 0.05  # seconds between repeated cancels of a task that is still running
GIVE_UP_AFTER = 5.0  # a task still running then is left behind, with an error logged


async def stop(tasks: Iterable[asyncio.Task[None] | None],
               give_up_after: float = GIVE_UP_AFTER) -> None:
    """Cancel every task and wait until each has ended (or `give_up_after` has passed)."""
    tasks_ = [task for task in tasks if task is not None]
    pending = {task for task in tasks_ if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
        if pending and loop.time() >= deadline:
            log.error("background tasks still running after %.1f s of cancelling: %s",
                      give_up_after, ", ".join(sorted(t.get_name() for t in pending)))
            break
    for task in tasks_:
        if task.done() and not task.cancelled() and task.exception() is not None:
            # Retrieved here, said once: not a "never retrieved" warning at exit.
            log.error("background task %s had failed: %r", task.get_name(), task.exception())
