"""Access records: every reveal of a subscriber's number outside the data plane.

A disclosure record answers "which partner received my number"; an access record answers
"who at the operator looked at it". The same rule holds: no record, no reveal. Whoever
shows a raw number (the admin API's `reveal`, `linewarden bindings show/list --reveal`,
any future support tool) first calls `AccessLog.record`, and shows nothing if it raises.

A record holds when, which operator principal (the admin token's name, or the Unix-socket
peer's user), what was done, why (a required reason) and the subscriber's keyed hash —
never the number (no raw number in logs, metrics or records): a reason that contains a
phone number is refused, since it would put one in the ledger.

Reveals are rare and interactive, so a record is written at once in its own transaction
on a short-lived connection, not through the disclosure writer's group commit.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..claims import subscriber_key
from .store import Store

if TYPE_CHECKING:
    from ..scan.detect import Detector

# Long enough for a ticket reference and a sentence; a reason is not a case file.
REASON_MAX = 500
# Principals are short names (a token's name, a Unix user); bounded like any input.
PRINCIPAL_MAX = 200
# What the record says was done; one word each, named for the tool that revealed.
ACTIONS = ("admin.bindings.show", "admin.bindings.list")


class AccessError(ValueError):
    """A reveal request that cannot be recorded as given (missing or bad reason)."""


class AccessNotRecorded(RuntimeError):
    """The ledger did not take the access record: the number must not be shown."""


@functools.cache
def _detector() -> Detector:
    from ..scan.detect import Detector  # compiled once, on the first reason checked

    # The log scanner's detector: numbers with + or 00 for every country, national and
    # country-code forms for GB (the scanner's default region).
    return Detector(("GB",))


def _contains_phone_number(text: str) -> bool:
    return any(f.kind == "msisdn" for f in _detector().scan(text.encode("utf-8", "replace")))


def check_reason(reason: str | None) -> str:
    """The reason, trimmed; AccessError if it is missing, too long, or holds a number."""
    text = " ".join((reason or "").split())
    if not text:
        raise AccessError("revealing a number needs a reason (e.g. --reason 'ticket 4711: "
                          "customer asked who saw their number'); it is kept in the ledger")
    if len(text) > REASON_MAX:
        raise AccessError(f"the reason is longer than {REASON_MAX} characters")
    if _contains_phone_number(text):
        raise AccessError("the reason must not contain a phone number (it is stored in the "
                          "ledger, which never holds one); refer to the case instead")
    return text


@dataclass(frozen=True)
class AccessRecord:
    time_us: int
    instance_id: str
    principal: str
    action: str
    reason: str
    subscriber_key: str  # 64 hex digits (HMAC), never the number

    def row(self) -> tuple[int, str, str, str, str, bytes]:
        key = bytes.fromhex(self.subscriber_key)
        if len(key) != 32:
            raise ValueError("subscriber_key must be an HMAC (32 bytes)")
        return (self.time_us, self.instance_id, self.principal[:PRINCIPAL_MAX], self.action,
                self.reason, key)


def write_access(store: Store, records: Sequence[AccessRecord]) -> None:
    """Commit `records` in one transaction (all or none); raises on any failure."""
    with store._write() as cur:
        cur.executemany(store.sql(
            "INSERT INTO access_records (time_us, instance_id, principal, action, reason, "
            "subscriber_key) VALUES (?, ?, ?, ?, ?, ?)"), [r.row() for r in records])


@dataclass
class AccessLog:
    """Writes access records for one gateway instance. Blocking: call from a thread."""

    new_store: Callable[[], Store]
    ledger_key: bytes
    instance_id: str
    clock: Callable[[], float] = field(default=time.time)

    def record(self, principal: str, action: str, reason: str,
               msisdns: Sequence[str]) -> int:
        """One record per distinct subscriber in `msisdns` (E.164 digits), committed
        together; returns how many. Raises AccessNotRecorded when the ledger does not take
        them (the caller then reveals nothing)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown access action {action!r}")
        when = round(self.clock() * 1_000_000)
        keys = dict.fromkeys(subscriber_key(self.ledger_key, m) for m in msisdns)
        records = [AccessRecord(when, self.instance_id, principal, action, reason, key)
                   for key in keys]
        if not records:
            return 0
        try:
            store = self.new_store().open()
        except Exception as exc:
            raise AccessNotRecorded(f"cannot open the ledger ({type(exc).__name__})") from exc
        try:
            write_access(store, records)
        except Exception as exc:
            raise AccessNotRecorded(f"the ledger refused the record ({type(exc).__name__})") \
                from exc
        finally:
            store.close()
        return len(records)


# ---------------------------------------------------------------- reading

@dataclass
class AccessEntry:
    time_us: int
    instance_id: str
    principal: str
    action: str
    reason: str
    subscriber_key: str


_COLUMNS = "time_us, instance_id, principal, action, reason, subscriber_key"


def _entries(rows: Sequence[tuple[Any, ...]]) -> list[AccessEntry]:
    return [AccessEntry(int(t), str(i), str(p), str(a), str(r), bytes(k).hex())
            for t, i, p, a, r, k in rows]


_TABLE_EXISTS = {
    "sqlite": "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
              "AND name = 'access_records'",
    "postgres": "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'access_records' "
                "AND schemaname = current_schema()",
}


def _has_table(store: Store) -> bool:
    """False on a ledger opened without migrating (schema before v4): no reveal was ever
    recorded there, so there is nothing to list."""
    return bool(store.query(_TABLE_EXISTS[store.dialect])[0][0])


def subscriber_accesses(store: Store, key: str, since_us: int,
                        until_us: int) -> list[AccessEntry]:
    """One subscriber's access records in [since, until), newest first."""
    if not _has_table(store):
        return []
    return _entries(store.query(
        f"SELECT {_COLUMNS} FROM access_records WHERE subscriber_key = ? AND time_us >= ? "
        "AND time_us < ? ORDER BY time_us DESC, id DESC",
        (bytes.fromhex(key), since_us, until_us)))


def window_accesses(store: Store, since_us: int, until_us: int) -> list[AccessEntry]:
    """Every access record in [since, until), oldest first (a compliance review)."""
    if not _has_table(store):
        return []
    return _entries(store.query(
        f"SELECT {_COLUMNS} FROM access_records WHERE time_us >= ? AND time_us < ? "
        "ORDER BY time_us, id", (since_us, until_us)))
