"""Tamper evidence: a hash chain per gateway instance, and signed checkpoints.

Each row's hash covers the previous row's hash of the same instance, so editing, removing
or inserting a row breaks the chain at that row. A chain alone can be rewritten from the
edit onward by anyone who can write the database (the hash is public code), so every
`CHECKPOINT_EVERY_ROWS` rows or `CHECKPOINT_EVERY_SECONDS` the writer signs (instance, seq,
row hash) with Ed25519; a rewrite before a checkpoint then needs the signing key. Rows
after the newest checkpoint are protected by the chain only — that window is the bound.

`verify_instance` walks one instance's rows in seq order and returns the first problem.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
ProblemKind = Literal["altered", "deleted", "inserted", "checkpoint"]


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

@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    instance_id: str
    seq: int
    row_id: int | None
    detail: str

    def __str__(self) -> str:
        where = f"instance '{self.instance_id}', seq {self.seq}"
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
    problem: Problem | None = None


def trusted_checkpoints(checkpoints: Iterable[Checkpoint],
                        trusted: dict[str, Ed25519PublicKey]
                        ) -> tuple[list[Checkpoint], Problem | None]:
    """Checkpoints with a valid signature by a trusted key, or the first that has none."""
    good: list[Checkpoint] = []
    for cp in checkpoints:
        public = trusted.get(cp.key_id)
        if public is None:
            return good, Problem("checkpoint", cp.instance_id, cp.seq, None,
                                 f"checkpoint #{cp.id} is signed by key {cp.key_id}, which "
                                 "is not trusted (add its public key to [ledger] "
                                 "trusted_keys if it is another gateway's)")
        try:
            public.verify(cp.signature, cp.message())
        except InvalidSignature:
            return good, Problem("checkpoint", cp.instance_id, cp.seq, None,
                                 f"checkpoint #{cp.id} has an invalid signature "
                                 "(the checkpoint was altered)")
        good.append(cp)
    return good, None


def verify_instance(instance_id: str, rows: Iterable[StoredRow],
                    checkpoints: Sequence[Checkpoint], head: Head | None) -> InstanceSummary:
    """Walk one instance's rows in seq order; stop at the first problem.

    `checkpoints` must already be signature-checked. A chain may start after seq 1 only
    where a signed "purge" checkpoint says the rows before were removed on purpose."""
    out = InstanceSummary(instance_id)
    by_seq: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        by_seq.setdefault(cp.seq, []).append(cp)
    purged_to = max((cp.seq for cp in checkpoints if cp.kind == "purge"), default=0)

    def fail(kind: ProblemKind, seq: int, row_id: int | None, detail: str) -> InstanceSummary:
        out.problem = Problem(kind, instance_id, seq, row_id, detail)
        return out

    prev: StoredRow | None = None
    before_prev: StoredRow | None = None
    for row in rows:
        f = row.fields
        if prev is None:
            out.first_seq = f.seq
            expected_seq = f.seq
            if f.seq != 1 and f.seq - 1 > purged_to:
                missing = (f"{purged_to + 1}..{f.seq - 1}" if purged_to + 1 < f.seq - 1
                           else str(f.seq - 1))
                return fail("deleted", f.seq, row.id,
                            f"row(s) seq {missing} missing before the first row, and no "
                            "signed purge checkpoint covers them")
            expected_prev = ZERO_HASH if f.seq == 1 else row.prev_hash
            for cp in by_seq.get(f.seq - 1, ()):
                if cp.row_hash != row.prev_hash:
                    return fail("altered", f.seq, row.id,
                                f"the row does not follow the row that signed checkpoint "
                                f"#{cp.id} vouches for")
        else:
            expected_seq = prev.fields.seq + 1
            expected_prev = prev.row_hash
        if f.seq < expected_seq:
            return fail("inserted", f.seq, row.id, f"a second row with seq {f.seq}")
        if f.seq > expected_seq:
            missing = (f"{expected_seq}..{f.seq - 1}" if expected_seq < f.seq - 1
                       else str(expected_seq))
            return fail("deleted", expected_seq, None,
                        f"row(s) seq {missing} missing before row id {row.id}")
        if row_hash(row.prev_hash, f) != row.row_hash:
            # Renumbered to make room for an inserted row, or to close a deleted one's gap?
            if row_hash(row.prev_hash, f._replace(seq=f.seq - 1)) == row.row_hash and (
                    prev is not None and row.prev_hash != prev.row_hash):
                return fail("inserted", prev.fields.seq, prev.id,
                            f"row id {prev.id} was inserted; the rows after it were "
                            "renumbered")
            if row_hash(row.prev_hash, f._replace(seq=f.seq + 1)) == row.row_hash:
                return fail("deleted", f.seq, None,
                            f"the row seq {f.seq} was deleted; the rows after it were "
                            "renumbered")
            return fail("altered", f.seq, row.id,
                        "the row's content does not match its hash")
        if row.prev_hash != expected_prev:
            assert prev is not None
            if before_prev is not None and row.prev_hash == before_prev.row_hash:
                return fail("inserted", prev.fields.seq, prev.id,
                            f"row id {prev.id} was inserted: the next row follows the row "
                            "before it")
            if row.prev_hash == prev.prev_hash:
                return fail("inserted", prev.fields.seq, prev.id,
                            f"row id {prev.id} was inserted: it and the next row follow "
                            "the same row")
            return fail("altered", f.seq, row.id,
                        f"the row does not follow row id {prev.id} (a row was removed and "
                        "the rest renumbered, or the previous row was rewritten)")
        for cp in by_seq.get(f.seq, ()):
            if cp.row_hash != row.row_hash:
                return fail("altered", f.seq, row.id,
                            f"signed checkpoint #{cp.id} vouches for a different row here "
                            "(the chain was rewritten up to this point)")
            out.checkpoints_checked += 1
        out.rows += 1
        out.last_seq = f.seq
        before_prev, prev = prev, row

    if prev is None:  # no rows: everything was purged, or nothing was ever written
        out.last_seq = purged_to
    last_cp = max((cp.seq for cp in checkpoints), default=0)
    if head is not None:
        if head.seq > out.last_seq:
            return fail("deleted", out.last_seq + 1, None,
                        f"the recorded head is seq {head.seq} but the rows end at seq "
                        f"{out.last_seq}")
        if head.seq < out.last_seq:
            return fail("inserted", head.seq + 1, None,
                        f"rows beyond the recorded head seq {head.seq} (up to seq "
                        f"{out.last_seq})")
        if prev is not None and head.row_hash != prev.row_hash:
            return fail("altered", out.last_seq, prev.id,
                        "the last row does not match the recorded head")
    if last_cp > out.last_seq and last_cp > purged_to:
        return fail("deleted", out.last_seq + 1, None,
                    f"signed checkpoint covers seq {last_cp} but the rows end at seq "
                    f"{out.last_seq}")
    return out
