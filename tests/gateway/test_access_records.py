"""Access records through a real `linewarden serve` (issue 21 item 1): every reveal of a
number by operator staff — the admin API's `reveal`, `bindings show/list --reveal` — leaves
exactly its access records in the ledger before the number is shown; a reveal whose record
cannot be written shows nothing; `audit subscriber --json` and /me (Chromium) show it."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pwd
import sqlite3
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import closing
from typing import TYPE_CHECKING, Any

import pytest

from lwtest import LINEWARDEN, MSISDN_1, MSISDN_2, Gateway, Origin, admin_http, start_gateway

if TYPE_CHECKING:
    from playwright.sync_api import Browser

LEDGER_KEY = b"test-ledger-key"  # lwtest.gateway_config's [ledger] key
ME = f"unix:{pwd.getpwuid(os.getuid()).pw_name}"  # the kernel's name for this test's user


def key_of(msisdn: str) -> bytes:
    """The subscriber key, computed here independently of linewarden.claims."""
    return hmac.new(LEDGER_KEY, b"+" + msisdn.encode(), hashlib.sha256).digest()


def access_rows(gw: Gateway) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(gw.directory / "state" / "ledger.db")) as db:
        return db.execute("SELECT principal, action, reason, subscriber_key FROM "
                          "access_records ORDER BY id").fetchall()


def reveal(gw: Gateway, ip: str, reason: str | None) -> tuple[int, bytes]:
    query = {"reveal": "1", **({"reason": reason} if reason is not None else {})}
    return admin_http(gw.admin_socket, "GET",
                      f"/admin/bindings/{ip}?{urllib.parse.urlencode(query)}")


def cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINEWARDEN), *args, "--config", str(gw.config_path)],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("access"), origin.port)
    try:
        yield gateway
    finally:
        gateway.stop()


def test_a_reveal_through_the_admin_api_leaves_exactly_one_access_record(gw: Gateway) -> None:
    before = access_rows(gw)
    status, body = reveal(gw, "127.0.0.1", "ticket 4711: subscriber asked")
    assert status == 200 and json.loads(body)["msisdn"] == MSISDN_1
    new = access_rows(gw)[len(before):]
    assert new == [(ME, "admin.bindings.show", "ticket 4711: subscriber asked",
                    key_of(MSISDN_1))]
    assert MSISDN_1 not in repr(new)
    # Masked views are not reveals: no record.
    status, body = admin_http(gw.admin_socket, "GET", "/admin/bindings/127.0.0.1")
    assert status == 200 and MSISDN_1 not in body.decode()
    assert len(access_rows(gw)) == len(before) + 1


def test_a_reveal_through_the_cli_leaves_exactly_one_access_record(gw: Gateway) -> None:
    before = access_rows(gw)
    done = cli(gw, "bindings", "show", "127.0.0.2", "--reveal", "--reason", "case 9")
    assert done.returncode == 0, done.stderr
    assert MSISDN_2 in done.stdout
    assert access_rows(gw)[len(before):] == [(ME, "admin.bindings.show", "case 9",
                                              key_of(MSISDN_2))]
    # A listing reveals every subscriber on it: one record each, one reason.
    listed = cli(gw, "bindings", "list", "--reveal", "--reason", "review", "--json")
    assert listed.returncode == 0, listed.stderr
    numbers = [b["msisdn"] for b in json.loads(listed.stdout)["bindings"]]
    assert sorted(numbers) == sorted({MSISDN_1, MSISDN_2})
    new = access_rows(gw)[len(before) + 1:]
    assert sorted(new) == sorted((ME, "admin.bindings.list", "review", key_of(n))
                                 for n in numbers)


def test_no_reason_no_reveal(gw: Gateway) -> None:
    before = access_rows(gw)
    for reason in (None, "", "   ", "caller gave +44 7400 900456"):
        status, body = reveal(gw, "127.0.0.2", reason)
        assert status == 400, (reason, body)
        assert MSISDN_2 not in body.decode() and "reason" in body.decode()
    done = cli(gw, "bindings", "show", "127.0.0.2", "--reveal")
    assert done.returncode == 2 and "--reason" in done.stderr
    assert MSISDN_2 not in done.stdout + done.stderr
    assert access_rows(gw) == before


def test_a_reveal_whose_record_cannot_be_written_shows_nothing(gw: Gateway) -> None:
    before = access_rows(gw)
    ledger = gw.directory / "state" / "ledger.db"
    # The ledger refuses the row (as a full disk or a broken server would): a real SQLite
    # ABORT inside the gateway's own INSERT, not a mock.
    with closing(sqlite3.connect(ledger)) as db:
        db.execute("CREATE TRIGGER refuse_access BEFORE INSERT ON access_records "
                   "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        db.commit()
    try:
        status, body = reveal(gw, "127.0.0.1", "ticket 4712")
        assert status == 503
        assert MSISDN_1 not in body.decode()
        assert "could not be recorded" in json.loads(body)["error"]
        done = cli(gw, "bindings", "show", "127.0.0.1", "--reveal", "--reason", "ticket 4712")
        assert done.returncode == 1 and "could not be recorded" in done.stderr
        assert MSISDN_1 not in done.stdout + done.stderr
        listed = cli(gw, "bindings", "list", "--reveal", "--reason", "ticket 4712")
        assert listed.returncode == 1
        assert MSISDN_1 not in listed.stdout and MSISDN_2 not in listed.stdout
        assert access_rows(gw) == before
        # The masked view does not need the ledger.
        status, body = admin_http(gw.admin_socket, "GET", "/admin/bindings/127.0.0.1")
        assert status == 200 and MSISDN_1 not in body.decode()
    finally:
        with closing(sqlite3.connect(ledger)) as db:
            db.execute("DROP TRIGGER refuse_access")
            db.commit()
    status, _ = reveal(gw, "127.0.0.1", "ticket 4712")
    assert status == 200 and len(access_rows(gw)) == len(before) + 1



def test_audit_subscriber_and_me_show_the_access(gw: Gateway, chromium: Browser) -> None:
    assert reveal(gw, "127.0.0.1", "INC0099: who saw my number")[0] == 200
    assert reveal(gw, "127.0.0.2", "the other subscriber's case")[0] == 200

    done = cli(gw, "audit", "subscriber", "+" + MSISDN_1, "--json")
    assert done.returncode == 0, done.stderr
    accesses = json.loads(done.stdout)["accesses"]
    assert {"principal": ME, "action": "admin.bindings.show",
            "reason": "INC0099: who saw my number"}.items() <= accesses[0].items()
    assert accesses[0]["time"].endswith("Z")
    assert all(a["reason"] != "the other subscriber's case" for a in accesses)
    text = cli(gw, "audit", "subscriber", "+" + MSISDN_1)
    assert "Viewed by operator staff" in text.stdout and "INC0099" in text.stdout

    # Chromium connects from 127.0.0.1: subscriber 1 reads their own page.
    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        response = page.goto(gw.web + "/me")
        assert response is not None and response.status == 200
        viewed = page.inner_text("#accesses")
    finally:
        context.close()
    assert "Your number was viewed by operator staff on" in viewed
    assert "reason: INC0099: who saw my number" in viewed
    assert "the other subscriber's case" not in viewed
    assert ME not in viewed  # the staff member is not named to the subscriber


@pytest.mark.parametrize(("client", "expected"), [
    ((f"uid:{os.getuid()}", 4242), ME),         # the admin socket (PeerCredProtocol)
    (("uid:999999999", 1), "unix:uid999999999"),  # a uid with no passwd entry
    (("127.0.0.1", 50000), "token:admin_token"),  # TCP: AdminGuard required the token
    (None, None),                                 # a socket without peer credentials
    (("uid:x", 1), None),
])
def test_the_principal_is_the_kernels_word_or_the_token(client: tuple[str, int] | None,
                                                        expected: str | None) -> None:
    from starlette.requests import Request

    from linewarden.web.principal import principal

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": client}
    assert principal(Request(scope)) == expected
