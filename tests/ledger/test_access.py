"""Access records (issue 21 item 1): each reveal leaves its records before the number is
shown, holds no number, and the reports list them (both backends)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from linewarden.claims import subscriber_key
from linewarden.cli import main
from linewarden.ledger.access import (
    AccessError,
    AccessLog,
    AccessNotRecorded,
    check_reason,
)
from linewarden.ledger.reports import access_report, subscriber_report, to_json, to_text
from linewarden.ledger.store import Store

from .conftest import Backend

KEY = b"k" * 32
A, B = "447400900123", "447400900456"
T0 = 1_764_950_400.0  # 2025-12-05T16:00:00Z


def log_for(backend: Backend, clock: list[float]) -> AccessLog:
    return AccessLog(backend.store, KEY, "gw1", clock=lambda: clock[0])


def test_one_record_per_subscriber_revealed_and_none_holds_a_number(backend: Backend) -> None:
    clock = [T0]
    log = log_for(backend, clock)
    assert log.record("unix:alice", "admin.bindings.show", "ticket 4711", [A]) == 1
    clock[0] += 60
    # A listing reveals two subscribers, one of them twice: one record each.
    assert log.record("token:admin_token", "admin.bindings.list", "audit", [A, B, A]) == 2
    store = backend.store()
    rows = store.query("SELECT * FROM access_records")
    assert len(rows) == 3
    flat = repr(rows).encode() + b"".join(bytes(c) for r in rows for c in r
                                          if isinstance(c, (bytes, memoryview)))
    assert A.encode() not in flat and B.encode() not in flat
    mine = subscriber_report(store, subscriber_key(KEY, A))
    assert [(a.principal, a.action, a.reason) for a in mine.accesses] == [
        ("token:admin_token", "admin.bindings.list", "audit"),
        ("unix:alice", "admin.bindings.show", "ticket 4711")]
    theirs = subscriber_report(store, subscriber_key(KEY, B))
    assert [a.reason for a in theirs.accesses] == ["audit"]
    # The window bounds apply to access records as to disclosures.
    assert subscriber_report(store, subscriber_key(KEY, A), since=T0 + 30).accesses[0].reason \
        == "audit"
    window = access_report(store, T0, T0 + 30)
    assert [a.principal for a in window.accesses] == ["unix:alice"]
    doc = to_json(mine)
    assert doc["accesses"][0]["time"] == "2025-12-05T16:01:00Z"
    assert "Viewed by operator staff" in to_text(mine)
    store.close()


def test_a_ledger_that_cannot_take_the_record_raises(tmp_path: Path) -> None:
    def broken() -> Store:
        raise OSError("disk gone")

    with pytest.raises(AccessNotRecorded):
        AccessLog(broken, KEY, "gw1").record("unix:alice", "admin.bindings.show", "x", [A])


@pytest.mark.parametrize("reason", ["", "   ", None, "x" * 501, "caller said +44 7400 900123",
                                    "rang from 07400 900123"])
def test_a_reveal_needs_a_reason_without_a_number(reason: str | None) -> None:
    with pytest.raises(AccessError):
        check_reason(reason)


def test_reasons_keep_ticket_ids() -> None:
    assert check_reason("  INC0012345:  customer  asked ") == "INC0012345: customer asked"


def test_audit_access_lists_a_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "linewarden.toml"
    config.write_text('[ledger]\nurl = "sqlite:///ledger.db"\n')
    from linewarden.config import load_config
    from linewarden.ledger import open_store
    from linewarden.wiring import generate_secrets

    loaded = load_config(str(config))
    generate_secrets(loaded)
    store_url, base = loaded.ledger.url, loaded.base
    log = AccessLog(lambda: open_store(store_url, base=base), loaded.ledger_key(), "gw1",
                    clock=lambda: T0)
    log.record("unix:alice", "admin.bindings.show", "ticket 4711", [A])
    runner = CliRunner()
    out = runner.invoke(main, ["audit", "access", "--since", "2025-12-05T00:00Z",
                               "--config", str(config), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert [(a["principal"], a["reason"], a["time"]) for a in doc["accesses"]] == [
        ("unix:alice", "ticket 4711", "2025-12-05T16:00:00Z")]
    assert doc["accesses"][0]["subscriber_key"] == subscriber_key(loaded.ledger_key(), A)
    empty = runner.invoke(main, ["audit", "access", "--until", "2025-12-05T00:00Z",
                                 "--config", str(config)])
    assert "No number was revealed" in empty.output
    text = runner.invoke(main, ["audit", "subscriber", "+" + A, "--config", str(config)])
    assert "ticket 4711" in text.output and "unix:alice" in text.output
