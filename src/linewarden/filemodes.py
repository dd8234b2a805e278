"""Owner-only files: what the gateway creates is 0600 (directories 0700), whatever the umask.

The state directory holds the secrets that key every pseudonym and every ledger row, the
signing keys partners trust, and the ledger itself (which host received which subscriber's
claims, when). A umask of 022 — the usual default — would leave all of it readable by every
local user, so modes are given at creation (`os.open(..., 0o600)`, `mkdir(mode=0o700)`)
rather than left to the umask; a mode passed to `open`/`mkdir` is only ever narrowed by it.

Files that already exist belong to the operator: a looser mode is reported once at start-up
with the `chmod` that fixes it, never changed behind their back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("linewarden.files")

FILE_MODE = 0o600
DIR_MODE = 0o700
# Bits that give anyone but the owner access.
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def private_dir(path: Path) -> Path:
    """`path` and any missing parents created 0700 (`mkdir -p` would give missing parents
    the umask's mode). An existing directory is left as it is."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            continue
        os.chmod(directory, DIR_MODE)  # mkdir's mode is narrowed by the umask: never widened
    return path


def create_private(path: Path, data: bytes, *, exclusive: bool = True) -> None:
    """Write `data` to a new 0600 file (fsynced). With `exclusive`, an existing file raises
    FileExistsError (a concurrent first start: the caller reads the winner's file)."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def replace_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` with a 0600 file holding `data` (temp file + rename, so a
    reader sees the old content or the new, never half)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        create_private(tmp, data, exclusive=False)
        os.chmod(tmp, FILE_MODE)  # O_TRUNC of a leftover keeps its mode
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def touch_private(path: Path) -> None:
    """Create an empty 0600 file if none exists (so a library that creates it later with
    its own mode, such as SQLite's 0644, finds it already there)."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def loose(path: Path) -> int | None:
    """The mode of `path` if group or others can access it; None if private or absent."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return stat.S_IMODE(mode) if mode & _OTHERS else None


def warn_loose(paths: Iterable[Path]) -> list[str]:
    """Log one warning per path that is group/other accessible, with its fix; returns the
    warnings (for tests and the CLI)."""
    warnings = []
    seen: set[Path] = set()
    for path in paths:
        if path in seen:
            continue
        seen.add(path)
        mode = loose(path)
        if mode is None:
            continue
        want = DIR_MODE if path.is_dir() else FILE_MODE
        message = (f"{path} is mode {mode:04o}: readable by others than its owner; "
                   f"fix: chmod {want:o} {path}")
        log.warning("%s", message)
        warnings.append(message)
    return warnings
