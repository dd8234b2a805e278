"""Tamper evidence: a hash chain per gateway instance, and signed checkpoints.

Each row's hash covers the previous row's hash of the same instance, so editing, removing
or inserting a row breaks the chain at that row. A chain alone can be rewritten from the
edit onward by anyone who can write the database (the hash is public code), so every
`CHECKPOINT_EVERY_ROWS` rows or `CHECKPOINT_EVERY_SECONDS` the writer signs (instance, seq,
row hash) with Ed25519; a rewrite before a checkpoint then needs the signing key. Rows
after the newest checkpoint are protected by the chain only — that window is the bound.

`verify_instance` walks one instance's chain from its head and reports every break
(altered, deleted, inserted or reordered rows), resynchronising after each.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

ZERO_HASH = bytes(32)  # the "previous hash" of an instance's first row
_ROW_LABEL = b"linewarden/ledger-row/v1"
_CHECKPOINT_LABEL = b"linewarden/ledger-checkpoint/v1"

# A checkpoint at most this many rows apart: a rewrite of the chain must then forge a
# signature unless it stays within the last 10,000 rows (half a second at the 20k rows/s
# target, or a few minutes of a quiet instance — which is why there is also a time bound).
CHECKPOINT_EVERY_ROWS = 10_000
# ...and at most this long apart while rows arrive, so a quiet instance's tail is still
# signed within a minute (comparable to Certificate Transparency's signed tree heads,
# which logs publish at least every 24 h; ours is cheap, so much more often).
CHECKPOINT_EVERY_SECONDS = 60.0

CheckpointKind = Literal["periodic", "close", "purge"]
ProblemKind = Literal["altered", "deleted", "inserted", "reordered", "checkpoint"]


class ChainFields(NamedTuple):
    """The hashed content of a row, in the order it is hashed and stored."""

    instance_id: str
    seq: int
    time_us: int
    partner_id: str
    purpose: str
    host: str
    claims: str  # claim names joined with ","
    policy_version: str
    subscriber_key: bytes  # 32 bytes: HMAC-SHA256(ledger key, "+" E.164)


class StoredRow(NamedTuple):
    id: int
    fields: ChainFields
    prev_hash: bytes
    row_hash: bytes


_LENGTH = struct.Struct(">I")
_SEQ_TIME = struct.Struct(">qq")
# The encoded (instance, partner, purpose, host, claims, policy version) of recent rows:
# a handful of combinations repeat on every row, and encoding them was half a row's hash.
_PREFIXES: dict[tuple[str, ...], bytes] = {}
_PREFIXES_MAX = 4_096


def _field(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _LENGTH.pack(len(data)) + data  # length-prefixed: no two rows hash alike


def row_hash(prev_hash: bytes, f: ChainFields) -> bytes:
    shared = (f.instance_id, f.partner_id, f.purpose, f.host, f.claims, f.policy_version)
    prefix = _PREFIXES.get(shared)
    if prefix is None:
        prefix = b"".join(map(_field, shared))
        if len(_PREFIXES) >= _PREFIXES_MAX:
            _PREFIXES.clear()
        _PREFIXES[shared] = prefix
    key = f.subscriber_key
    return hashlib.sha256(b"".join((_ROW_LABEL, prev_hash, _SEQ_TIME.pack(f.seq, f.time_us),
                                    prefix, _LENGTH.pack(len(key)), key))).digest()


# ---------------------------------------------------------------- checkpoints

@dataclass(frozen=True, slots=True)
class Checkpoint:
    instance_id: str
    kind: CheckpointKind
    seq: int
    row_hash: bytes
    time_us: int
    key_id: str
    signature: bytes
    id: int = 0

    def message(self) -> bytes:
        return checkpoint_message(self.instance_id, self.kind, self.seq, self.row_hash,
                                  self.time_us)


def checkpoint_message(instance_id: str, kind: str, seq: int, head: bytes,
                       time_us: int) -> bytes:
    return b"".join([_CHECKPOINT_LABEL, _field(instance_id), _field(kind),
                     _SEQ_TIME.pack(seq, time_us), _field(head)])


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A trusted key as printed by `public_key_text` (base64 of the 32 raw bytes)."""
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))


class Signer:
    """The instance's Ed25519 key; the private half never leaves this object."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """PEM (PKCS#8) at `path`, generated once with mode 0600 if missing."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process won the race: use its key
                return cls.load_or_create(path)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            return cls(private)
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        private_key = load_pem_private_key(data, password=None)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(private_key)

    def checkpoint(self, instance_id: str, kind: CheckpointKind, seq: int, head: bytes,
                   time_us: int) -> Checkpoint:
        signature = self._private.sign(checkpoint_message(instance_id, kind, seq, head,
                                                          time_us))
        return Checkpoint(instance_id, kind, seq, head, time_us, self.key_id, signature)


# ---------------------------------------------------------------- verification
#
# The walk goes newest first, from the recorded head, and follows the chain by hash: each
# row names its predecessor's hash (`prev_hash`), so the row the chain continues with is
# the one whose `row_hash` is that value, wherever it is stored. Every break is then a
# local mismatch, and the walk resynchronises after it instead of stopping:
#
#   altered    the row the chain leads to does not hash to its row_hash at its place
#              (content edited), or no row has the hash the next row names but one sits
#              where it belongs and hashes right (rewritten with its hash recomputed);
#   deleted    no row has the hash the next row names, and the nearest older row belongs
#              further down (a gap: its own hash says which seq it was written as);
#   inserted   a row the chain never leads to (nothing newer names its hash);
#   reordered  the chain leads to a row stored *above* one it already passed.
#
# A row's place is its seq as the writer hashed it, so renumbering rows to hide a gap or
# make room changes nothing the walk relies on; positions in reports are those seqs,
# except for inserted rows, which have none (they carry the seq they are stored at).

# How far apart, in stored order, a row and its chain successor may be for the walk to
# still find it: a row moved by up to this many places reads as "reordered", and a row
# nothing follows is judged "inserted" once the walk is this far past it. A farther move
# reads as a deletion plus an insertion. The walk holds at most twice this many rows
# (about 1 MB), whatever the ledger's size.
WALK_WINDOW_ROWS = 2_048


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    instance_id: str
    seq: int  # the first affected place in the chain (inserted: the stored seq)
    row_id: int | None
    detail: str
    count: int = 1  # rows affected: seq .. seq + count - 1

    def __str__(self) -> str:
        where = f"instance '{self.instance_id}', seq {self.seq}"
        if self.count > 1:
            where += f"..{self.seq + self.count - 1} ({self.count} rows)"
        if self.row_id is not None:
            where += f" (row id {self.row_id})"
        return f"{self.kind}: {where}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    row_hash: bytes


@dataclass
class InstanceSummary:
    instance_id: str
    rows: int = 0
    first_seq: int = 0
    last_seq: int = 0
    checkpoints_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def problem(self) -> Problem | None:
        """The first break in chain order, if any."""
        return self.problems[0] if self.problems else None


def trusted_checkpoints(checkpoints: Iterable[Checkpoint],
                        trusted: dict[str, Ed25519PublicKey]
                        ) -> tuple[list[Checkpoint], list[Problem]]:
    """Checkpoints with a valid signature by a trusted key, and a problem for each other."""
    good: list[Checkpoint] = []
    bad: list[Problem] = []
    for cp in checkpoints:
        public = trusted.get(cp.key_id)
        if public is None:
            bad.append(Problem("checkpoint", cp.instance_id, cp.seq, None,
                               f"checkpoint #{cp.id} is signed by key {cp.key_id}, which "
                               "is not trusted (add its public key to [ledger] "
                               "trusted_keys if it is another gateway's)"))
            continue
        try:
            public.verify(cp.signature, cp.message())
        except InvalidSignature:
            bad.append(Problem("checkpoint", cp.instance_id, cp.seq, None,
                               f"checkpoint #{cp.id} has an invalid signature "
                               "(the checkpoint was altered)"))
            continue
        good.append(cp)
    return good, bad


def _seqs(first: int, last: int) -> str:
    return f"{first}..{last}" if first < last else str(first)


_EDITED = "the row's content does not match its hash"
_REHASHED = ("no row has the hash the next row names, and this one, in its place, hashes "
             "right: rewritten with its hash recomputed, or replaced")
_GARBLED = "neither its content nor its hash is the one the next row names"
_NOT_IN_CHAIN = "no row names it as its predecessor: it is not part of the chain"
_MOVED = "stored out of place: the chain passes rows stored after it first"


# How far from where it is stored (or from where the chain expects it) a row's own seq is
# looked for after a break: renumberings that moved it by more read as "altered".
_PLACE_SEARCH = 32


@dataclass(slots=True)
class _Node:
    index: int  # position in the newest-first stream
    row: StoredRow
    done: bool = False  # placed in the chain, or judged not in it
    held: bool = False  # read past while looking ahead: in _by_hash / _copies


class _Walk:
    """One instance's chain, newest first, holding at most ~2 windows of rows."""

    def __init__(self, instance_id: str, rows: Iterable[StoredRow],
                 checkpoints: Sequence[Checkpoint], head: Head | None, window: int) -> None:
        self.window = window
        self.out = InstanceSummary(instance_id)
        self.problems: list[Problem] = []
        self.head = head
        self._rows = iter(rows)
        self._read = 0  # index of the next row from the stream
        self._by_hash: dict[bytes, _Node] = {}  # rows not yet placed in the chain
        self._copies: dict[bytes, list[_Node]] = {}  # more unplaced rows with one hash
        self._queue: deque[_Node] = deque()  # the same, in stream order (placed ones lazily)
        # Rows are read only as far as the walk needs: on an intact chain the row it wants
        # is the next one in store order, and nothing is held.
        self._high = -1  # highest stream index placed so far
        self._last: _Node | None = None  # the row placed last (the chain's current row)
        self._shift = 0  # stored seq - chain seq of the last row placed (renumbering)
        self._cp_run: int | None = None  # problems[i]: the checkpoints just met contradict
        self.by_seq: dict[int, list[Checkpoint]] = {}
        for cp in checkpoints:
            self.by_seq.setdefault(cp.seq, []).append(cp)
        self.purged_to = max((cp.seq for cp in checkpoints if cp.kind == "purge"), default=0)
        self.last_cp = max((cp.seq for cp in checkpoints), default=0)

    # ------------------------------------------------------------ reporting

    def _add(self, kind: ProblemKind, seq: int, row_id: int | None, detail: str,
             count: int = 1) -> None:
        """Record a break; one next to the previous one of the same kind extends it (the
        walk descends, so a neighbour is just below)."""
        last = self.problems[-1] if self.problems else None
        if (last is not None and last.kind == kind and last.detail == detail
                and last.seq == seq + count):
            self.problems[-1] = Problem(kind, last.instance_id, seq, row_id, detail,
                                        last.count + count)
        else:
            self.problems.append(Problem(kind, self.out.instance_id, seq, row_id, detail,
                                         count))

    def _not_in_chain(self, node: _Node) -> None:
        node.done = True
        self._add("inserted", node.row.fields.seq, node.row.id, _NOT_IN_CHAIN)

    # ------------------------------------------------------------ the window

    def _read_one(self) -> _Node | None:
        row = next(self._rows, None)
        if row is None:
            return None
        self._read += 1
        return _Node(self._read - 1, row)

    def _hold(self, node: _Node) -> None:
        """Keep a row read past while looking ahead, until the chain reaches it."""
        node.held = True
        digest = node.row.row_hash
        if digest in self._by_hash:  # a copy of another row: rare, kept aside
            self._copies.setdefault(digest, []).append(node)
        else:
            self._by_hash[digest] = node
        self._queue.append(node)

    def _evict(self) -> None:
        """Rows a window behind the walk that nothing has led to are not in the chain."""
        queue = self._queue
        while queue and (queue[0].done or queue[0].index < self._high - self.window):
            node = queue.popleft()
            if not node.done:
                self._forget(node)
                self._not_in_chain(node)

    def _forget(self, node: _Node) -> None:
        if not node.held:
            return
        node.held = False
        digest = node.row.row_hash
        copies = self._copies.get(digest)
        if copies is not None and node in copies:
            copies.remove(node)
        elif copies:  # the first of several is placed: the next copy takes its slot
            self._by_hash[digest] = copies.pop(0)
        else:
            del self._by_hash[digest]
        if copies is not None and not copies:
            del self._copies[digest]

    def _find(self, digest: bytes) -> _Node | None:
        """The unplaced row with this hash: the nearest one below the current row (reading
        on, at most a window past the furthest row placed), else the nearest above it. A
        copy elsewhere stays unplaced, and reads as inserted. Rows read past are held."""
        at = self._last.index if self._last is not None else -1
        held = self._by_hash.get(digest)
        if held is not None and digest in self._copies:
            nodes = [held, *self._copies[digest]]
            below = [n for n in nodes if n.index > at]
            held = min(below, key=lambda n: n.index) if below else max(nodes,
                                                                       key=lambda n: n.index)
        if held is not None and held.index > at:
            return held
        while self._read <= self._high + self.window:
            node = self._read_one()
            if node is None:
                break
            if node.row.row_hash == digest:  # the usual case: the next row in store order
                return node
            self._hold(node)
        return held

    def _next_below(self) -> _Node | None:
        """The nearest row below the current one not yet placed (held, or the next read)."""
        at = self._last.index if self._last is not None else -1
        held = next((n for n in self._queue if not n.done and n.index > at), None)
        return held if held is not None else self._read_one()

    # ------------------------------------------------------------ placing rows

    def _hashes_as(self, row: StoredRow, seq: int) -> bool:
        f = row.fields
        return row_hash(row.prev_hash, f if f.seq == seq else f._replace(seq=seq)) \
            == row.row_hash

    def _own_seq(self, row: StoredRow) -> int:
        """The seq a row hashes as, near its stored one (renumbered by a few), or that."""
        stored = row.fields.seq
        near = (stored + d * sign for d in range(_PLACE_SEARCH + 1) for sign in (1, -1))
        return next((seq for seq in near if seq > 0 and self._hashes_as(row, seq)), stored)

    def _place(self, node: _Node, seq: int, *, checked: bool = False) -> None:
        """`node` is the chain's row `seq`: check it, then look for its predecessor."""
        node.done = True
        self._forget(node)
        row = node.row
        if node.index < self._high:
            self._add("reordered", seq, row.id, _MOVED)
        else:
            self._high = node.index
        self._last = node
        if not checked and not self._hashes_as(row, seq):
            self._add("altered", seq, row.id, _EDITED)
        for cp in self.by_seq.get(seq, ()) if self.by_seq else ():
            if cp.row_hash == row.row_hash:
                self.out.checkpoints_checked += 1
                self._cp_run = None
                continue
            # One report per stretch of contradicted checkpoints, at its oldest: a rewrite
            # with recomputed hashes contradicts every checkpoint from the edit on.
            problem = Problem("altered", self.out.instance_id, seq, row.id,
                              f"signed checkpoint #{cp.id} vouches for a different row "
                              "here (the chain was rewritten up to this point)")
            if self._cp_run is None:
                self._cp_run = len(self.problems)
                self.problems.append(problem)
            else:
                self.problems[self._cp_run] = problem
        out = self.out
        out.rows += 1
        out.first_seq = seq
        if seq > out.last_seq:
            out.last_seq = seq
        self._shift = row.fields.seq - seq

    def _places(self, row: StoredRow, highest: int) -> Iterator[int]:
        """Where a row may belong, at most `highest`, likeliest first: right there, at its
        stored seq (as renumbered above it, or not at all), then near those. Tried only at
        a break, so a few dozen hashes there cost nothing; a row further off is "altered"."""
        stored = row.fields.seq
        likely = (highest, stored - self._shift, stored,
                  *(stored + d * sign for d in range(1, _PLACE_SEARCH + 1) for sign in (-1, 1)),
                  *(highest - d for d in range(1, _PLACE_SEARCH + 1)))
        return (s for s in dict.fromkeys(likely) if 0 < s <= highest)

    def _follow(self, node: _Node, want_seq: int) -> None:
        """`node` has the hash the chain asks for: normally it is row `want_seq`. If it
        hashes as an older seq instead, the seqs between were skipped: rows deleted and
        the row after them rewritten to follow on (only a checkpoint can say more)."""
        row = node.row
        f = row.fields
        if row_hash(row.prev_hash, f if f.seq == want_seq else f._replace(seq=want_seq)) \
                == row.row_hash:  # the usual case, inline: this runs for every row
            self._place(node, want_seq, checked=True)
            return
        seq = next((s for s in self._places(row, want_seq - 1) if self._hashes_as(row, s)),
                   None)
        if seq is None:
            self._place(node, want_seq)  # reported as altered there
            return
        first = max(seq, self.purged_to) + 1
        if first <= want_seq:
            self._add("deleted", first, None,
                      f"row(s) seq {_seqs(first, want_seq)} missing: row id {row.id} (seq "
                      f"{seq}) is followed directly by the next row, rewritten to follow it",
                      want_seq - first + 1)
        self._place(node, seq, checked=True)

    def _resync(self, node: _Node, want_seq: int) -> None:
        """No row has the hash the chain asks for; `node` is the nearest older one. Its own
        hash says which place it was written for."""
        row = node.row
        successor = self._last.row.id if self._last is not None else None
        seq = next((s for s in self._places(row, want_seq) if self._hashes_as(row, s)), None)
        if seq is None:  # matches nothing: take it as the row that belongs here, garbled
            self._add("altered", want_seq, row.id, _GARBLED)
            self._place(node, want_seq, checked=True)
        elif seq == want_seq:
            self._add("altered", seq, row.id, _REHASHED)
            self._place(node, seq)
        else:
            first = max(seq, self.purged_to) + 1
            where = f"before row id {successor}" if successor is not None else \
                "at the end of the chain (the recorded head is seq " \
                f"{self.head.seq if self.head else want_seq})"
            if first <= want_seq:
                self._add("deleted", first, None,
                          f"row(s) seq {_seqs(first, want_seq)} missing {where}",
                          want_seq - first + 1)
            self._place(node, seq)

    # ------------------------------------------------------------ the walk

    def run(self) -> InstanceSummary:
        want: bytes | None = self.head.row_hash if self.head else None
        want_seq = self.head.seq if self.head else 0
        queue = self._queue
        while True:
            if queue and (queue[0].done or queue[0].index < self._high - self.window):
                self._evict()
            if self.head is not None and want_seq <= 0:
                if want != ZERO_HASH and not (self.problems and self.problems[-1].seq == 1):
                    self._add("altered", 1, self._last.row.id if self._last else None,
                              "the first row does not start from the zero hash")
                break
            node = self._find(want) if want is not None else None
            if node is not None:
                self._follow(node, want_seq)
            elif self.head is not None and want_seq <= self.purged_to:
                if want_seq == self.purged_to:
                    self._check_anchor(want)
                break
            else:
                below = self._next_below()
                if below is None:
                    if self.head is not None:
                        first = self.purged_to + 1
                        self._add("deleted", first, None,
                                  f"row(s) seq {_seqs(first, want_seq)} missing before the "
                                  "first row, and no signed purge checkpoint covers them",
                                  want_seq - first + 1)
                    break
                if self.head is None and self._last is None:  # no head: start at the top
                    self._place(below, self._own_seq(below.row))
                else:
                    self._resync(below, want_seq)
            assert self._last is not None
            want, want_seq = self._last.row.prev_hash, self.out.first_seq - 1
            self.head = self.head or Head(self.out.last_seq, self._last.row.row_hash)
        self._finish()
        return self.out

    def _check_anchor(self, want: bytes | None) -> None:
        """The walk reached the purged part: the signed purge checkpoint must vouch for the
        row the oldest kept row follows."""
        for cp in self.by_seq.get(self.purged_to, ()):
            if cp.row_hash != want:
                self._add("altered", self.purged_to + 1,
                          self._last.row.id if self._last else None,
                          f"the row does not follow the row that signed checkpoint #{cp.id} "
                          "vouches for")

    def _finish(self) -> None:
        for node in self._queue:
            if not node.done:
                self._not_in_chain(node)
        for row in self._rows:  # below the chain's start: nothing leads there
            self._add("inserted", row.fields.seq, row.id, _NOT_IN_CHAIN)
        if self.out.rows == 0:
            self.out.last_seq = self.purged_to
        top = max(self.head.seq if self.head else 0, self.out.last_seq)
        if self.last_cp > top and self.last_cp > self.purged_to:
            self._add("deleted", top + 1, None,
                      f"signed checkpoint covers seq {self.last_cp} but the rows end at seq "
                      f"{top}", self.last_cp - top)
        self.out.problems = sorted(self.problems, key=lambda p: (p.seq, p.kind))


def verify_instance(instance_id: str, rows_newest_first: Iterable[StoredRow],
                    checkpoints: Sequence[Checkpoint], head: Head | None, *,
                    window: int = WALK_WINDOW_ROWS) -> InstanceSummary:
    """Walk one instance's chain from its head, newest row first, and report every break.

    `rows_newest_first`: the instance's rows by descending stored seq (streamed; the walk
    keeps at most 2 x WALK_WINDOW_ROWS of them). `checkpoints` must already be
    signature-checked. A chain may start after seq 1 only where a signed "purge"
    checkpoint says the rows before were removed on purpose."""
    return _Walk(instance_id, rows_newest_first, checkpoints, head, window).run()
