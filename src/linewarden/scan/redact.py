"""Redacted copies that never cost the original.

Every output is written to a temporary file in the target's own directory, flushed and
fsynced, then renamed over the target (rename is atomic within a filesystem, POSIX
rename(2)), and the directory is fsynced so the rename survives a power cut. A run killed
at any moment (SIGINT, SIGKILL, disk full) therefore leaves each target either as it was or
fully written, plus at worst a stray `*.linewarden-tmp-*` file, which later scans skip.

In place, the backup is a hard link to the original made *before* the rename, so at every
instant the original bytes are reachable under the original name or the backup name.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import hmac
import os
import shutil
import tempfile
from collections.abc import Sequence
from types import TracebackType
from typing import BinaryIO

from linewarden.scan.detect import Finding

TEMP_MARK = ".linewarden-tmp-"
DEFAULT_TOKEN = "[{KIND}]"
# 16 hex digits (64 bits) of HMAC-SHA256: collisions are negligible for any log's worth of
# subscribers, and the token stays short enough for analytics to join on.
HASH_HEX_DIGITS = 16
# Fast gzip: redaction is I/O bound and level 6 doubles the time for a few percent of size.
GZIP_LEVEL = 6


class RedactError(Exception):
    """The redacted copy could not be written; one sentence for the user."""


class Tokenizer:
    """What replaces a finding: a template with `{KIND}`, `{kind}` and `{hash}`."""

    def __init__(self, template: str = DEFAULT_TOKEN, key: bytes | None = None) -> None:
        if "{hash}" in template and not key:
            raise ValueError("a token with {hash} needs a key (--hash-key-file)")
        try:
            template.format(KIND="X", kind="x", hash="0")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"bad token template {template!r}: use {{KIND}}, {{kind}} or {{hash}}"
            ) from exc
        self.template = template
        self.key = key
        self._cache: dict[tuple[str, str], bytes] = {}

    def __call__(self, finding: Finding) -> bytes:
        cache_key = (finding.kind, finding.value)
        token = self._cache.get(cache_key)
        if token is None:
            digest = ""
            if self.key:
                mac = hmac.new(self.key, finding.value.encode(), hashlib.sha256)
                digest = mac.hexdigest()[:HASH_HEX_DIGITS]
            token = self.template.format(
                KIND=finding.kind.upper(), kind=finding.kind, hash=digest
            ).encode()
            if len(self._cache) < 1 << 16:
                self._cache[cache_key] = token
        return token


def apply(chunk: bytes, findings: Sequence[Finding], tokenizer: Tokenizer) -> bytes:
    """`chunk` with every finding's span replaced by its token; everything else unchanged."""
    if not findings:
        return chunk
    parts: list[bytes] = []
    pos = 0
    for f in findings:
        parts.append(chunk[pos:f.start])
        parts.append(tokenizer(f))
        pos = f.end
    parts.append(chunk[pos:])
    return b"".join(parts)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied or read-only filesystem"
    return exc.strerror or str(exc)


class AtomicOutput:
    """A file written beside `target` and renamed over it on `commit()`; removed otherwise."""

    def __init__(self, target: str, gzipped: bool, mode_from: str | None = None) -> None:
        self.target = target
        self.gzipped = gzipped
        self.mode_from = mode_from
        self._raw: BinaryIO | None = None
        self._gz: gzip.GzipFile | None = None
        self._temp: str | None = None

    def __enter__(self) -> AtomicOutput:
        directory = os.path.dirname(os.path.abspath(self.target))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, self._temp = tempfile.mkstemp(
                prefix="." + os.path.basename(self.target) + TEMP_MARK, dir=directory
            )
        except OSError as exc:
            raise RedactError(f"cannot write in {directory}: {_describe(exc)}.") from exc
        self._raw = os.fdopen(fd, "wb")
        if self.gzipped:
            self._gz = gzip.GzipFile(
                filename=os.path.basename(self.target).removesuffix(".gz"),
                mode="wb", fileobj=self._raw, compresslevel=GZIP_LEVEL, mtime=0,
            )
        return self

    def write(self, data: bytes) -> None:
        try:
            (self._gz or self._raw).write(data)  # type: ignore[union-attr]
        except OSError as exc:
            raise RedactError(f"cannot write {self.target}: {_describe(exc)}.") from exc

    def commit(self, backup: str | None = None) -> None:
        """Make the output durable, keep `backup` (a hard link to the old target), rename."""
        assert self._raw is not None and self._temp is not None
        try:
            if self._gz is not None:
                self._gz.close()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            if self.mode_from is not None:
                shutil.copymode(self.mode_from, self._temp)
            if backup is not None:
                _keep_backup(self.target, backup)
            os.replace(self._temp, self.target)
            self._temp = None
            _fsync_dir(os.path.dirname(os.path.abspath(self.target)))
        except OSError as exc:
            raise RedactError(f"cannot write {self.target}: {_describe(exc)}.") from exc

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            if self._gz is not None:
                self._gz.close()
        with contextlib.suppress(OSError):
            if self._raw is not None:
                self._raw.close()
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)
            self._temp = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Without a commit (an error, SIGINT, or nothing to redact) the temp file goes.
        self.abort()


def _keep_backup(original: str, backup: str) -> None:
    """A hard link to the original (no copy, no window); a durable copy if links fail."""
    try:
        os.link(original, backup)
        return
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise
    directory = os.path.dirname(os.path.abspath(backup))
    fd, temp = tempfile.mkstemp(prefix="." + os.path.basename(backup) + TEMP_MARK, dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, open(original, "rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(original, temp)
        os.link(temp, backup)  # fails if a backup appeared meanwhile: never overwrite one
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
