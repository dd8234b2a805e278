"""`tasks.stop` ends a task even when the code inside swallows a cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from linewarden import tasks


def test_stop_ends_a_task_that_swallows_the_first_cancel() -> None:
    swallowed: list[bool] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # like a library converting it into a retry

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(tasks.stop([task, None]), timeout=5)
        return task

    task = asyncio.run(scenario())
    assert swallowed == [True] and task.cancelled()


def test_stop_gives_up_on_a_task_that_never_ends() -> None:
    async def immortal() -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    async def scenario() -> bool:
        task = asyncio.create_task(immortal())
        await asyncio.sleep(0)
        await tasks.stop([task], give_up_after=0.2)
        still_running = not task.done()
        task.get_coro().close()  # type: ignore[union-attr]
        return still_running

    assert asyncio.run(scenario()) is True


def test_stop_reports_a_task_that_had_failed(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise ValueError("lost connection")

    async def scenario() -> None:
        task = asyncio.create_task(broken(), name="broken-loop")
        await asyncio.sleep(0)
        await tasks.stop([task])

    with caplog.at_level("ERROR", logger="linewarden.tasks"):
        asyncio.run(scenario())
    assert "broken-loop had failed" in caplog.text and "lost connection" in caplog.text
