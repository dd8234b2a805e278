"""Opt-outs written by the subscriber (from /me) into the profile store every gateway reads.

The profile store is the `[profiles]` file (CSV or SQLite, bindings/profiles.py). Each
instance re-reads it when its modification time changes, every `reload_interval` seconds
(default 5 s): that is the bound within which an opt-out holds on every instance. The
instance that took the opt-out reloads at once, so the subscriber's next request through
it already goes without the header.

Writes are read-modify-write of one row under an exclusive lock: `flock` on a sidecar
`.lock` file for CSV (then a temporary file renamed over the original, so a reader never
sees half a file), `BEGIN IMMEDIATE` for SQLite. The SQLite file is written in the default
rollback-journal mode on purpose: in WAL mode the main file's mtime would not change and
other instances would not notice.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..bindings import OPT_OUT_ALL
from ..bindings.profiles import SQLITE_SUFFIXES, ProfileBook, parse_profile

ALL = "all"  # how the file spells OPT_OUT_ALL: both read back as "every partner"
COLUMNS = ("msisdn", "age_verified", "opt_out")
# A busy SQLite file (another instance writing) is retried for this long.
SQLITE_TIMEOUT = 5.0


class OptOutError(RuntimeError):
    pass


class OptOuts:
    """Read and change one subscriber's opt-outs in the profile file `book` follows."""

    def __init__(self, book: ProfileBook) -> None:
        self.book = book

    def current(self, msisdn: str) -> frozenset[str]:
        """Partner ids opted out of, or {"*"} for all, as this instance last read them."""
        profile = self.book.get(msisdn)
        return frozenset(profile.opt_out.split()) if profile else frozenset()

    def opted_out(self, msisdn: str, partner_id: str) -> bool:
        ids = self.current(msisdn)
        return OPT_OUT_ALL in ids or partner_id in ids

    def change(self, msisdn: str, partner_id: str, stop: bool) -> frozenset[str]:
        """Stop (or allow again) disclosures to `partner_id`, or to everyone with "*".
        Blocking (file I/O): call from a worker thread. Returns the new opt-out set."""
        path = self.book.path
        if path.suffix.lower() in SQLITE_SUFFIXES:
            result = self._change_sqlite(path, msisdn, partner_id, stop)
        else:
            result = self._change_csv(path, msisdn, partner_id, stop)
        self.book.reload()  # this instance honours it from the next request on
        return result

    # ---- the two file kinds

    def _change_sqlite(self, path: Path, msisdn: str, partner_id: str,
                       stop: bool) -> frozenset[str]:
        table = self.book.table
        if not table.isidentifier():
            raise OptOutError(f"table name '{table}' is not an identifier")
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT,
                                                    isolation_level=None)) as db:
                db.execute("BEGIN IMMEDIATE")
                spellings = (msisdn, "+" + msisdn)
                row = db.execute(f"SELECT opt_out FROM {table} WHERE msisdn IN (?, ?)",
                                 spellings).fetchone()
                new = _apply(_parse(None if row is None else row[0]), partner_id, stop)
                text = _spell(new)
                if row is None:
                    db.execute(f"INSERT INTO {table} (msisdn, opt_out) VALUES (?, ?)",
                               (msisdn, text))
                else:
                    db.execute(f"UPDATE {table} SET opt_out = ? WHERE msisdn IN (?, ?)",
                               (text, *spellings))
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OptOutError(f"profile store {path}: {exc}") from None
        return new

    def _change_csv(self, path: Path, msisdn: str, partner_id: str,
                    stop: bool) -> frozenset[str]:
        with _locked(path):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise OptOutError(f"profile store {path}: {exc.strerror}") from None
            reader = csv.DictReader(io.StringIO(text))
            fields = list(reader.fieldnames or COLUMNS)
            for column in COLUMNS:
                if column not in fields:
                    fields.append(column)
            rows = list(reader)
            mine = [r for r in rows if (r.get("msisdn") or "").strip().lstrip("+") == msisdn]
            new = _apply(_parse(mine[0].get("opt_out") if mine else None), partner_id, stop)
            if mine:
                for row in mine:
                    row["opt_out"] = _spell(new)
            else:
                rows.append({"msisdn": msisdn, "age_verified": "", "opt_out": _spell(new)})
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            _replace(path, out.getvalue())
        return new


def _parse(text: str | None) -> frozenset[str]:
    return frozenset(parse_profile("opt-out", None, text).opt_out.split())


def _apply(ids: frozenset[str], partner_id: str, stop: bool) -> frozenset[str]:
    if partner_id == OPT_OUT_ALL:
        return frozenset({OPT_OUT_ALL}) if stop else frozenset()
    if stop:
        return ids if OPT_OUT_ALL in ids else ids | {partner_id}
    return ids - {partner_id}


def _spell(ids: frozenset[str]) -> str:
    return ALL if OPT_OUT_ALL in ids else " ".join(sorted(ids))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _replace(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
