from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from linewarden.ledger import open_store
from linewarden.ledger.store import Store

from .pg import PrivatePostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    """One private server for the session; each test gets its own database."""
    server = PrivatePostgres().start()
    try:
        yield server
    finally:
        server.cleanup()


@dataclass
class Backend:
    name: str
    url: str
    base: Path

    def store(self) -> Store:
        return open_store(self.url, base=self.base).open()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", "sqlite:///ledger.db", tmp_path)
    server: PrivatePostgres = request.getfixturevalue("postgres")
    return Backend("postgres", server.create_database(), tmp_path)
