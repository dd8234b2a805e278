"""The chain and checkpoints alone, on rows built in memory (no database)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from linewarden.ledger import chain as chain_module
from linewarden.ledger.chain import (
    ZERO_HASH,
    ChainFields,
    Head,
    Signer,
    StoredRow,
    parse_public_key,
    public_key_text,
    row_hash,
    trusted_checkpoints,
    verify_instance,
)

KEY = bytes(range(32))


def chain(n: int, instance: str = "gw1", start: int = 1,
          prev: bytes = ZERO_HASH) -> list[StoredRow]:
    rows = []
    for seq in range(start, start + n):
        f = ChainFields(instance, seq, 1_000_000 * seq, "p", "billing", f"h{seq}.test",
                        "msisdn", "v1", KEY)
        digest = row_hash(prev, f)
        rows.append(StoredRow(seq, f, prev, digest))
        prev = digest
    return rows


def rehash(rows: list[StoredRow], start: int) -> list[StoredRow]:
    """What a careful attacker does after an edit: recompute every later hash."""
    out = rows[:start]
    prev = out[-1].row_hash if out else ZERO_HASH
    for r in rows[start:]:
        digest = row_hash(prev, r.fields)
        out.append(StoredRow(r.id, r.fields, prev, digest))
        prev = digest
    return out


def head(rows: list[StoredRow]) -> Head:
    return Head(rows[-1].fields.seq, rows[-1].row_hash)


def test_intact_chain_verifies() -> None:
    rows = chain(50)
    s = verify_instance("gw1", rows, [], head(rows))
    assert s.problem is None and s.rows == 50 and (s.first_seq, s.last_seq) == (1, 50)


def test_every_field_is_covered_by_the_hash() -> None:
    base = chain(1)[0].fields
    for i, name in enumerate(ChainFields._fields):
        value = base[i]
        changed = (value + 1 if isinstance(value, int) else
                   value + b"x" if isinstance(value, bytes) else value + "x")
        assert row_hash(ZERO_HASH, base._replace(**{name: changed})) != row_hash(ZERO_HASH,
                                                                                  base)


def reference_row_hash(prev: bytes, f: ChainFields) -> bytes:
    """The row hash as docs/ledger.md defines it, written plainly: ledgers already on disk
    must keep verifying whatever the fast path (a memo of the shared fields) does."""
    def field(value: str | bytes) -> bytes:
        data = value.encode() if isinstance(value, str) else value
        return struct.pack(">I", len(data)) + data
    return hashlib.sha256(
        b"linewarden/ledger-row/v1" + prev + struct.pack(">qq", f.seq, f.time_us)
        + b"".join(field(v) for v in (f.instance_id, f.partner_id, f.purpose, f.host,
                                       f.claims, f.policy_version, f.subscriber_key))
    ).digest()


_text = st.text(max_size=12)


@given(prev=st.binary(min_size=32, max_size=32), seq=st.integers(0, 2**62),
       time_us=st.integers(0, 2**62), strings=st.lists(_text, min_size=6, max_size=6),
       key=st.binary(max_size=40))
def test_row_hash_is_the_documented_encoding(prev: bytes, seq: int, time_us: int,
                                             strings: list[str], key: bytes) -> None:
    instance, partner, purpose, host, claims, version = strings
    f = ChainFields(instance, seq, time_us, partner, purpose, host, claims, version, key)
    assert row_hash(prev, f) == reference_row_hash(prev, f)
    assert row_hash(prev, f) == reference_row_hash(prev, f)  # again, from the memo


def test_the_shared_field_memo_stays_bounded() -> None:
    for i in range(chain_module._PREFIXES_MAX + 10):
        f = ChainFields("gw1", i, i, "p", "billing", f"h{i}.test", "msisdn", "v1", KEY)
        assert row_hash(ZERO_HASH, f) == reference_row_hash(ZERO_HASH, f)
    assert len(chain_module._PREFIXES) <= chain_module._PREFIXES_MAX


def test_edited_row() -> None:
    rows = chain(10)
    rows[4] = rows[4]._replace(fields=rows[4].fields._replace(host="evil.test"))
    p = verify_instance("gw1", rows, [], head(rows)).problem
    assert p is not None and p.kind == "altered" and p.seq == 5 and p.row_id == 5


def test_deleted_row() -> None:
    rows = chain(10)
    del rows[3]
    p = verify_instance("gw1", rows, [], head(chain(10))).problem
    assert p is not None and p.kind == "deleted" and p.seq == 4


def test_deleted_first_rows() -> None:
    rows = chain(10)[3:]
    p = verify_instance("gw1", rows, [], Head(10, rows[-1].row_hash)).problem
    assert p is not None and p.kind == "deleted" and "1..3" in p.detail


def test_deleted_last_rows_caught_by_head() -> None:
    rows = chain(10)
    p = verify_instance("gw1", rows[:8], [], head(rows)).problem
    assert p is not None and p.kind == "deleted" and p.seq == 9


def test_inserted_row_renumbered_and_rehashed_tail() -> None:
    rows = chain(10)
    forged_fields = rows[4].fields._replace(seq=6, host="forged.test")
    forged = StoredRow(99, forged_fields, rows[4].row_hash, row_hash(rows[4].row_hash,
                                                                     forged_fields))
    # Renumber the rest but keep their old prev links (the attacker did not rehash).
    rest = [StoredRow(r.id, r.fields._replace(seq=r.fields.seq + 1), r.prev_hash, r.row_hash)
            for r in rows[5:]]
    tampered = [*rows[:5], forged, *rest]
    p = verify_instance("gw1", tampered, [], None).problem
    assert p is not None and p.kind in ("inserted", "altered")
    # The same, with the seq left alone on the old rows and the link checked first:
    tail = chain(5, start=7, prev=rows[5].prev_hash)  # follows row 5, as the old row 6 did
    p = verify_instance("gw1", [*rows[:5], forged, *tail], [], None).problem
    assert p is not None and p.kind == "inserted" and p.row_id == 99


def test_appended_row_caught_by_head() -> None:
    rows = chain(10)
    extra = chain(1, start=11, prev=rows[-1].row_hash)
    p = verify_instance("gw1", rows + extra, [], head(rows)).problem
    assert p is not None and p.kind == "inserted" and p.seq == 11


def test_rewritten_chain_caught_by_signed_checkpoint(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "k.pem")
    rows = chain(20)
    cp = signer.checkpoint("gw1", "periodic", 15, rows[14].row_hash, 0)
    edited = [*rows]
    edited[2] = edited[2]._replace(fields=edited[2].fields._replace(host="evil.test"))
    rewritten = rehash(edited, 2)
    good, bad = trusted_checkpoints([cp], {signer.key_id: signer.public})
    assert bad is None
    p = verify_instance("gw1", rewritten, good, head(rewritten)).problem
    assert p is not None and p.kind == "altered" and p.seq == 15


def test_checkpoint_signature_and_trust(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "k.pem")
    again = Signer.load_or_create(tmp_path / "k.pem")
    assert again.key_id == signer.key_id  # kept, not regenerated
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    cp = signer.checkpoint("gw1", "periodic", 3, b"\x01" * 32, 5)
    trusted = {signer.key_id: parse_public_key(public_key_text(signer.public))}
    assert trusted_checkpoints([cp], trusted) == ([cp], None)
    forged = type(cp)(cp.instance_id, cp.kind, 4, cp.row_hash, cp.time_us, cp.key_id,
                      cp.signature)
    _, bad = trusted_checkpoints([forged], trusted)
    assert bad is not None and "invalid signature" in bad.detail
    stranger = Signer(Ed25519PrivateKey.generate()).checkpoint("gw1", "periodic", 3,
                                                               b"\x01" * 32, 5)
    _, bad = trusted_checkpoints([stranger], trusted)
    assert bad is not None and "not trusted" in bad.detail


def test_purge_anchor_allows_a_later_start(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "k.pem")
    rows = chain(20)
    anchor = signer.checkpoint("gw1", "purge", 8, rows[7].row_hash, 0)
    s = verify_instance("gw1", rows[8:], [anchor], head(rows))
    assert s.problem is None and s.first_seq == 9
    # Rows beyond the anchor are not covered by it:
    p = verify_instance("gw1", rows[10:], [anchor], head(rows)).problem
    assert p is not None and p.kind == "deleted" and "9..10" in p.detail
    # A periodic checkpoint does not excuse missing old rows:
    periodic = signer.checkpoint("gw1", "periodic", 8, rows[7].row_hash, 0)
    assert verify_instance("gw1", rows[8:], [periodic], head(rows)).problem is not None
    # Everything purged:
    last = signer.checkpoint("gw1", "purge", 20, rows[-1].row_hash, 0)
    assert verify_instance("gw1", [], [last], head(rows)).problem is None
