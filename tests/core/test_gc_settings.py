"""`serve` settles CPython's cyclic GC once start-up is done (the partner path's p99 was a
full collection): thresholds raised, start-up objects frozen out of every later pass."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from linewarden.serve import GC_THRESHOLDS, settle_garbage_collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_settling_raises_thresholds_and_freezes_what_start_up_left(restored_gc: None) -> None:
    held = [[n] for n in range(1000)]  # tracked objects: the policy, caches, the web app
    settle_garbage_collector()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] >= 10 * 700  # far fewer collections than CPython's default
    assert gc.get_freeze_count() >= len(held)
