"""Puts the sibling support directories on sys.path (ledger/pg.py for a private
PostgreSQL, bindings/redis_server.py for a private redis-server) and provides them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent.parent
for _extra in (_TESTS, _TESTS / "bindings"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from redis_server import RedisServer  # noqa: E402

from ledger.pg import PrivatePostgres  # noqa: E402


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    for _attempt in range(3):  # a free port can be taken between probe and bind: retry
        server = PrivatePostgres(fsync=False)
        try:
            server.start()
            break
        except RuntimeError:
            server.cleanup()
    else:
        raise RuntimeError("postgres did not start on three ports")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
