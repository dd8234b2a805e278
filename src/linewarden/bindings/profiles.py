"""Subscriber profiles: MSISDN -> age verified, opt-outs. From a CSV or SQLite file.

The profile travels to the decision core inside the binding's attributes (`age_over_18`,
`opt_out`), joined at lookup by `ProfiledStore`, so the core stays a pure function of the
binding and a profile change takes effect on the next request without touching the
bindings. A file that fails to load never replaces the one in use.

CSV: a header row `msisdn,age_verified,opt_out`; `age_verified` true/false (empty:
unknown, no `age_over_18` claim); `opt_out` "all" or partner ids separated by spaces or
';'. SQLite: the same three columns in a table (default `profiles`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from .. import tasks
from ..identifiers import is_possible_msisdn
from . import AGE_OVER_18, OPT_OUT, OPT_OUT_ALL, Binding, BindingStore

log = logging.getLogger("linewarden.profiles")

# How often the file's modification time is checked for a reload. Profiles change by
# batch exports; a few seconds' delay is fine and the check is one stat().
DEFAULT_RELOAD_INTERVAL = 5.0
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_TRUE = frozenset({"true", "yes", "1", "y"})
_FALSE = frozenset({"false", "no", "0", "n"})
_ALL = frozenset({"all", "*"})


class ProfileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Profile:
    age_verified: bool | None  # None: not known
    opt_out: str  # partner ids separated by spaces, "*" for all, "" for none

    def attributes(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.age_verified is not None:
            out[AGE_OVER_18] = "true" if self.age_verified else "false"
        if self.opt_out:
            out[OPT_OUT] = self.opt_out
        return out


def parse_profile(where: str, age: str | None, opt_out: str | None) -> Profile:
    age_text = (age or "").strip().lower()
    if age_text in _TRUE:
        verified: bool | None = True
    elif age_text in _FALSE:
        verified = False
    elif not age_text:
        verified = None
    else:
        raise ProfileError(f"{where}: age_verified must be true or false, not '{age}'")
    ids = (opt_out or "").replace(";", " ").replace(",", " ").split()
    if any(i.lower() in _ALL for i in ids):
        ids = [OPT_OUT_ALL]
    return Profile(verified, " ".join(ids))


def _read_csv(path: Path) -> Iterator[tuple[str, str | None, str | None]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "msisdn" not in reader.fieldnames:
            raise ProfileError(f"{path}: the first row must name the columns "
                               "msisdn,age_verified,opt_out")
        for row in reader:
            yield row.get("msisdn") or "", row.get("age_verified"), row.get("opt_out")


def _read_sqlite(path: Path, table: str) -> Iterator[tuple[str, str | None, str | None]]:
    if not table.isidentifier():
        raise ProfileError(f"table name '{table}' is not an identifier")
    uri = f"file:{path}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            rows = db.execute(f"SELECT msisdn, age_verified, opt_out FROM {table}").fetchall()
    except sqlite3.Error as exc:
        raise ProfileError(f"{path}: {exc}") from None
    for msisdn, age, opt_out in rows:
        yield (str(msisdn), None if age is None else str(age),
               None if opt_out is None else str(opt_out))


def load_profiles(path: Path, table: str = "profiles") -> dict[str, Profile]:
    sqlite = path.suffix.lower() in SQLITE_SUFFIXES
    rows: Iterable[tuple[str, str | None, str | None]] = (
        _read_sqlite(path, table) if sqlite else _read_csv(path))
    profiles: dict[str, Profile] = {}
    try:
        for n, (msisdn, age, opt_out) in enumerate(rows, start=1):
            where = f"{path} row {n}"
            if not is_possible_msisdn(msisdn.strip()):
                raise ProfileError(f"{where}: the msisdn is not a possible E.164 number")
            profiles[msisdn.strip().removeprefix("+")] = parse_profile(where, age, opt_out)
    except (OSError, UnicodeError, csv.Error) as exc:
        raise ProfileError(f"{path}: {exc}") from None
    return profiles


# Profiles say who opted out of what: readable by the gateway's user only.
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
COLUMNS = ("msisdn", "age_verified", "opt_out")


def create_empty(path: Path, table: str = "profiles") -> bool:
    """Create a profiles file with no subscribers if `path` does not exist (CSV: the header
    row; SQLite: the table). Returns whether it created one."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
    if path.suffix.lower() in SQLITE_SUFFIXES:
        if not table.isidentifier():
            raise ProfileError(f"table name '{table}' is not an identifier")
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                       "(msisdn TEXT PRIMARY KEY, age_verified TEXT, opt_out TEXT)")
            db.commit()
        os.chmod(path, FILE_MODE)
    else:
        # O_EXCL: two instances starting at once do not clobber each other's first opt-out.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(",".join(COLUMNS) + "\n")
    log.info("profiles: created %s with no subscribers ([profiles] create)", path)
    return True


class ProfileBook:
    """The profiles in use, and the file they came from (reloaded when it changes)."""

    def __init__(self, path: Path, table: str = "profiles") -> None:
        self.path, self.table = path, table
        self._profiles: dict[str, Profile] = {}
        self._attributes: dict[str, MappingProxyType[str, str]] = {}
        self._stamp: tuple[int, int] | None = None
        self.reload()

    def __len__(self) -> int:
        return len(self._profiles)

    def get(self, msisdn: str) -> Profile | None:
        return self._profiles.get(msisdn)

    def attributes(self, msisdn: str) -> MappingProxyType[str, str] | None:
        return self._attributes.get(msisdn)

    def reload(self) -> bool:
        """Load the file if it changed. Raises ProfileError on the first load; later a
        bad file is logged and the profiles in use stay."""
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return False
            profiles = load_profiles(self.path, self.table)
        except (OSError, ProfileError) as exc:
            if self._stamp is None:
                raise ProfileError(str(exc)) from None
            log.error("profiles reload refused, keeping %d profiles: %s",
                      len(self._profiles), exc)
            return False
        self._profiles, self._stamp = profiles, stamp
        self._attributes = {m: MappingProxyType(p.attributes()) for m, p in profiles.items()}
        log.info("profiles loaded: %d subscribers from %s", len(profiles), self.path)
        return True

    async def follow(self, interval: float = DEFAULT_RELOAD_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload()


def with_profile(binding: Binding, profile: MappingProxyType[str, str] | None) -> Binding:
    if not profile:
        return binding
    merged = {**binding.attributes, **profile}
    return replace(binding, attributes=MappingProxyType(merged))


class ProfiledStore:
    """A binding store whose reads carry the subscriber's profile; writes pass through."""

    def __init__(self, inner: BindingStore, book: ProfileBook,
                 reload_interval: float = DEFAULT_RELOAD_INTERVAL) -> None:
        self.inner, self.book, self.reload_interval = inner, book, reload_interval
        self.local = inner.local
        self._task: asyncio.Task[None] | None = None

    def get(self, ip: str) -> Binding | None:
        b = self.inner.get(ip)
        return None if b is None else with_profile(b, self.book.attributes(b.msisdn))

    async def lookup(self, ip: str) -> Binding | None:
        b = await self.inner.lookup(ip)
        return None if b is None else with_profile(b, self.book.attributes(b.msisdn))

    async def write(self, binding: Binding) -> None:
        await self.inner.write(binding)

    async def refresh(self, binding: Binding) -> bool:
        return await self.inner.refresh(binding)

    async def remove(self, ip: str, session_id: str | None = None) -> bool:
        return await self.inner.remove(ip, session_id)

    async def stop(self, ip: str, session_id: str, source: str, until: float) -> bool:
        return await self.inner.stop(ip, session_id, source, until)

    async def drop_source(self, source: str) -> int:
        return await self.inner.drop_source(source)

    async def listing(self, limit: int) -> list[Binding]:
        return await self.inner.listing(limit)

    def count(self) -> int:
        return self.inner.count()

    async def start(self) -> None:
        await self.inner.start()
        self._task = asyncio.get_running_loop().create_task(
            self.book.follow(self.reload_interval))

    async def close(self) -> None:
        await tasks.stop([self._task])
        await self.inner.close()
