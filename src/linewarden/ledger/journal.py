"""The journal: the ledger's durability point, an append-only file log per instance.

Each gateway instance appends its disclosure rows, already hash-chained (chain.py), to
segment files in `<journal dir>/<instance>/`. A row is durable once the `fdatasync` of
its batch returned; the proxy sends identity only after that. The query store (SQLite,
PostgreSQL) is loaded from the journal afterwards by the indexer (indexer.py).

Layout of a segment `<first seq, 20 digits>.lwj`:

    header   b"LWJ1" | u16 length | instance id (UTF-8)
    frames   u32 payload length | u32 CRC-32 of the payload | payload
    payload  i64 seq | i64 time_us | u32 n | n bytes: 5 x (u32 length | UTF-8) partner,
             purpose, host, claims, policy version | subscriber key (32) | prev hash (32) |
             row hash (32)

The CRC finds a torn write; the chain finds everything else (chain.py's row hash covers
the same fields as a store row, so an indexed row verifies exactly like one written
directly). Segments are preallocated (`fallocate` with KEEP_SIZE, so `O_APPEND` still
appends at the written end) so a full disk shows when a segment is opened, not halfway
through a batch.

On open, the newest segment's torn tail (a frame cut short or failing its CRC, the last
thing a crash can leave) is truncated: no caller was told True for it, so no identity
left for it. A bad frame in an older segment is not a torn tail; it stays and
`verify_journal` reports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .chain import ChainFields, Head, Problem, row_hash

MAGIC = b"LWJ1"
SUFFIX = ".lwj"
# 64 MiB per segment: ~400,000 rows, a few seconds of the 200,000 rows/s target, so a
# segment is rolled (and preallocated) rarely, and an indexed one is freed in one unlink.
SEGMENT_BYTES = 64 * 1024 * 1024
# A segment older than this is rolled even if not full, so a quiet instance's indexed
# rows leave the journal (the indexer deletes fully indexed segments) within about an
# hour and retention (`audit purge`, which acts on the store) covers every copy.
SEGMENT_MAX_AGE_S = 3_600.0
# Bytes read per call when scanning a segment (reports, the indexer, recovery).
READ_CHUNK = 1024 * 1024
# A frame longer than this is not one the writer wrote (five short strings and three
# hashes): stop there instead of reading a garbage length as a 4 GB allocation.
FRAME_MAX = 64 * 1024

_FRAME = struct.Struct(">II")
_HEAD = struct.Struct(">qqI")  # seq, time_us, length of the five strings
_LEN = struct.Struct(">I")
_HEADER_LEN = struct.Struct(">H")
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_FALLOC_FL_KEEP_SIZE = 1


class JournalRow(NamedTuple):
    fields: ChainFields
    prev_hash: bytes
    row_hash: bytes


class JournalError(Exception):
    """The journal cannot be used (another process holds it, a foreign segment)."""


# ---------------------------------------------------------------- framing

def _text(value: str) -> bytes:
    data = value.encode()
    return _LEN.pack(len(data)) + data


# The encoded (partner, purpose, host, claims, policy version) of recent rows, both ways:
# a handful of combinations repeat on every row, and encoding or decoding them was half
# the cost of a frame.
_ENCODED: dict[tuple[str, str, str, str, str], bytes] = {}
_DECODED: dict[bytes, tuple[str, str, str, str, str]] = {}
_CACHE_MAX = 4_096


def _middle(texts: tuple[str, str, str, str, str]) -> bytes:
    data = _ENCODED.get(texts)
    if data is None:
        data = b"".join(map(_text, texts))
        if len(_ENCODED) >= _CACHE_MAX:
            _ENCODED.clear()
        _ENCODED[texts] = data
    return data


def frame(fields: ChainFields, prev: bytes) -> tuple[bytes, bytes]:
    """The frame for one row and its row hash (which the next row names as `prev`)."""
    digest = row_hash(prev, fields)
    middle = _middle((fields.partner_id, fields.purpose, fields.host, fields.claims,
                      fields.policy_version))
    payload = b"".join((_HEAD.pack(fields.seq, fields.time_us, len(middle)), middle,
                        fields.subscriber_key, prev, digest))
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload, digest


def _texts(middle: bytes) -> tuple[str, str, str, str, str]:
    texts = _DECODED.get(middle)
    if texts is None:
        found: list[str] = []
        at = 0
        for _ in range(5):
            (n,) = _LEN.unpack_from(middle, at)
            found.append(middle[at + 4:at + 4 + n].decode())
            at += 4 + n
        if at != len(middle):
            raise ValueError("frame strings have the wrong length")
        partner, purpose, host, claims, version = found
        texts = (partner, purpose, host, claims, version)
        if len(_DECODED) >= _CACHE_MAX:
            _DECODED.clear()
        _DECODED[middle] = texts
    return texts


def _decode(instance_id: str, payload: bytes) -> JournalRow:
    seq, time_us, n = _HEAD.unpack_from(payload, 0)
    at = _HEAD.size + n
    if at + 96 != len(payload):
        raise ValueError("frame payload has the wrong length")
    partner, purpose, host, claims, version = _texts(payload[_HEAD.size:at])
    return JournalRow(ChainFields(instance_id, seq, time_us, partner, purpose, host, claims,
                                  version, payload[at:at + 32]),
                      payload[at + 32:at + 64], payload[at + 64:at + 96])


def _header(instance_id: str) -> bytes:
    name = instance_id.encode()
    return MAGIC + _HEADER_LEN.pack(len(name)) + name


# ---------------------------------------------------------------- reading

@dataclass
class Segment:
    path: Path
    first_seq: int


def instance_dir(root: Path, instance_id: str) -> Path:
    """The instance's directory: its id if that is a safe file name, else its hex."""
    name = instance_id if _SAFE_NAME.fullmatch(instance_id) and instance_id[0] != "." \
        else "x-" + instance_id.encode().hex()
    return root / name


def segments(directory: Path) -> list[Segment]:
    found: list[Segment] = []
    for path in directory.glob("*" + SUFFIX):
        stem = path.name[:-len(SUFFIX)]
        if stem.isdigit():
            found.append(Segment(path, int(stem)))
    return sorted(found, key=lambda s: s.first_seq)


def instances(root: Path) -> dict[str, Path]:
    """Instance id -> directory, read from each directory's segment headers."""
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        for seg in segments(directory)[:1]:
            with seg.path.open("rb") as f:
                instance_id = _read_header(f.read(4 + 2 + 65_535), seg.path)[0]
            found[instance_id] = directory
    return found


def _read_header(data: bytes, path: Path) -> tuple[str, int]:
    if data[:4] != MAGIC or len(data) < 6:
        raise JournalError(f"{path}: not a linewarden journal segment")
    (n,) = _HEADER_LEN.unpack_from(data, 4)
    if len(data) < 6 + n:
        raise JournalError(f"{path}: truncated segment header")
    return data[6:6 + n].decode(), 6 + n


@dataclass
class SegmentScan:
    rows: list[JournalRow]
    end: int  # offset just past the last good frame
    size: int  # the file's size: end < size means a bad or torn frame at `end`


def scan_segment(path: Path, *, after_seq: int = 0, upto_seq: int | None = None,
                 start: int = 0) -> SegmentScan:
    """Frames of one segment from byte `start` (0: the header) with seq in (after_seq,
    upto_seq]; stops at the first frame cut short or failing its CRC."""
    rows: list[JournalRow] = []
    with path.open("rb") as f:
        instance_id, header_end = _read_header(f.read(6 + 65_535), path)
        base = max(start, header_end)
        f.seek(base)
        data = f.read()
    # Offsets below are into `data`; `base` turns them back into file offsets.
    at, size = 0, len(data)
    while at + 8 <= size:
        n, crc = _FRAME.unpack_from(data, at)
        if n > FRAME_MAX or at + 8 + n > size:
            break
        payload = data[at + 8:at + 8 + n]
        if zlib.crc32(payload) != crc:
            break
        try:
            row = _decode(instance_id, payload)
        except (ValueError, UnicodeDecodeError, struct.error):
            break
        if upto_seq is not None and row.fields.seq > upto_seq:
            break
        at += 8 + n
        if row.fields.seq > after_seq:
            rows.append(row)
    return SegmentScan(rows, base + at, base + size)


def read_rows(directory: Path, after_seq: int = 0,
              upto_seq: int | None = None) -> Iterator[JournalRow]:
    """The instance's journal rows with seq > after_seq (and <= upto_seq), in order."""
    segs = segments(directory)
    for i, seg in enumerate(segs):
        if i + 1 < len(segs) and segs[i + 1].first_seq <= after_seq + 1:
            continue  # wholly at or below after_seq
        if upto_seq is not None and seg.first_seq > upto_seq:
            return
        yield from scan_segment(seg.path, after_seq=after_seq, upto_seq=upto_seq).rows


def unindexed(root: Path, heads: Callable[[str], Head | None]) -> list[JournalRow]:
    """Every instance's journal rows past its indexed head (`heads(instance)`, the store's
    `head`): what reports add to the store so they are never incomplete."""
    rows: list[JournalRow] = []
    for instance_id, directory in instances(root).items():
        head = heads(instance_id)
        rows += read_rows(directory, after_seq=head.seq if head else 0)
    return rows


def journal_head(directory: Path) -> Head | None:
    """The newest row's seq and hash (None: no rows yet)."""
    for seg in reversed(segments(directory)):
        rows = scan_segment(seg.path).rows
        if rows:
            last = rows[-1]
            return Head(last.fields.seq, last.row_hash)
    return None


def verify_journal(instance_id: str, directory: Path, store_head: Head | None
                   ) -> list[Problem]:
    """The journal's own chain (CRC, each row's hash, each link), and that it continues
    the store's indexed chain: at the store's head both hold the same row."""
    problems: list[Problem] = []
    prev: JournalRow | None = None
    segs = segments(directory)
    for i, seg in enumerate(segs):
        scan = scan_segment(seg.path)
        if scan.end < scan.size and i + 1 < len(segs):
            problems.append(Problem("altered", instance_id, seg.first_seq, None,
                                    f"journal segment {seg.path.name} has an unreadable "
                                    f"frame at byte {scan.end}"))
        for row in scan.rows:
            if row_hash(row.prev_hash, row.fields) != row.row_hash:
                problems.append(Problem("altered", instance_id, row.fields.seq, None,
                                        "journal row does not match its hash"))
            if prev is not None and (row.fields.seq != prev.fields.seq + 1
                                     or row.prev_hash != prev.row_hash):
                problems.append(Problem("deleted", instance_id, prev.fields.seq + 1, None,
                                        "the journal's chain breaks here"))
            if store_head is not None and row.fields.seq == store_head.seq \
                    and row.row_hash != store_head.row_hash:
                problems.append(Problem("altered", instance_id, row.fields.seq, None,
                                        "the journal and the indexed store disagree at the "
                                        "store's head"))
            prev = row
    return problems


# ---------------------------------------------------------------- writing

def _preallocate(fd: int, size: int) -> None:
    """Reserve `size` bytes without changing the file size (O_APPEND appends at the
    written end). ENOSPC here is the disk-full signal; a filesystem without fallocate
    simply goes without."""
    libc = _libc()
    if libc is None:
        return
    if libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, ctypes.c_int64(0),
                      ctypes.c_int64(size)) != 0:
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS):
            return
        raise OSError(err, os.strerror(err))


_LIBC: list[ctypes.CDLL | None] = []


def _libc() -> ctypes.CDLL | None:
    if not _LIBC:
        try:
            lib: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
            assert lib is not None
            lib.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                                      ctypes.c_int64]
        except (OSError, AttributeError):
            lib = None
        _LIBC.append(lib)
    return _LIBC[0]


class JournalFiles:
    """One instance's segment files, used by one thread at a time (the flusher)."""

    def __init__(self, root: Path, instance_id: str, *,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.instance_id = instance_id
        self.directory = instance_dir(root, instance_id)
        self.segment_bytes = segment_bytes
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._size = 0
        self._opened = 0.0
        self.truncated = 0  # bytes of torn tail removed at open

    def open(self) -> Head | None:
        """Lock the directory, truncate a torn tail, open the newest segment; return the
        head (None when the journal is empty)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._lock_fd is None:
            fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise JournalError(f"{self.directory}: another process is writing this "
                                   "instance's journal (two gateways with one instance "
                                   "id?)") from None
            self._lock_fd = fd
        segs = segments(self.directory)
        head: Head | None = None
        if segs:
            newest = segs[-1]
            scan = scan_segment(newest.path)
            if scan.end < scan.size:
                self.truncated = scan.size - scan.end
                with newest.path.open("r+b") as f:
                    f.truncate(scan.end)
                    os.fsync(f.fileno())
            if scan.rows:
                head = Head(scan.rows[-1].fields.seq, scan.rows[-1].row_hash)
            else:
                head = journal_head(self.directory)
            self._open_segment(newest.path, new=False)
        return head

    def _open_segment(self, path: Path, *, new: bool) -> None:
        self.close_segment()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o600)
        try:
            if new:
                _preallocate(fd, self.segment_bytes)
                os.write(fd, _header(self.instance_id))
                os.fsync(fd)  # the new file's size and its directory entry
                dir_fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._opened = time.monotonic()

    def write(self, data: bytes, first_seq: int) -> None:
        """Append a batch of frames (rolling to a new segment first if it would not fit)
        and make it durable. Raises OSError (ENOSPC, EIO) and then nothing is promised."""
        if (self._fd is None or self._size + len(data) > self.segment_bytes
                or time.monotonic() - self._opened > SEGMENT_MAX_AGE_S):
            self._open_segment(self.directory / f"{first_seq:020d}{SUFFIX}", new=True)
        fd, start = self._fd, self._size
        assert fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
                self._size += written
            os.fdatasync(fd)
        except OSError:
            # Take the failed batch back out: none of it was promised, and after a failed
            # sync the page cache may hold frames the disk does not (so they must not
            # become the chain's head). If this fails too, the next open's scan decides.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
                os.fsync(fd)
                self._size = start
            raise

    def close_segment(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self.close_segment()
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # releases the flock


class Flusher:
    """The one thread that writes and syncs: the loop appends frames to a buffer under a
    lock (no hand-off per record); the thread takes the whole buffer, writes it, syncs
    it, and wakes the loop once per batch with the last seq that is now durable."""

    def __init__(self, files: JournalFiles, synced: Callable[[int], None],
                 failed: Callable[[int, OSError], None]) -> None:
        self._files = files
        self._synced = synced  # called in the flusher thread: post to the loop yourself
        self._failed = failed
        self._cond = threading.Condition(threading.Lock())
        self._buf = bytearray()
        self._first = 0
        self._last = 0
        self._idle = True
        self._stop = False
        self.dead = False
        self._thread = threading.Thread(target=self._run, name="linewarden-journal",
                                        daemon=True)
        self._thread.start()

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def append(self, data: bytes, seq: int) -> None:
        with self._cond:
            if not self._buf:
                self._first = seq
            self._buf += data
            self._last = seq
            if self._idle:
                self._idle = False
                self._cond.notify()

    def stop(self) -> None:
        """Write what is buffered, then end the thread (join it with `join`)."""
        with self._cond:
            self._stop = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._buf and not self._stop:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                if not self._buf:
                    return
                data, first, last = bytes(self._buf), self._first, self._last
                self._buf.clear()
            try:
                self._files.write(data, first)
            except OSError as exc:
                self.dead = True
                self._files.close_segment()
                self._failed(last, exc)
                return
            self._synced(last)
