"""The chain and checkpoints alone, on rows built in memory (no database)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from linewarden.ledger import chain as chain_module
from linewarden.ledger.chain import (
    ZERO_HASH,
    ChainFields,
    Checkpoint,
    Head,
    InstanceSummary,
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


def verify(instance: str, rows: list[StoredRow], checkpoints: list[Checkpoint],
           head: Head | None) -> InstanceSummary:
    """The walk takes rows newest first, as `Store.iter_rows(..., newest_first=True)`."""
    return verify_instance(instance, reversed(rows), checkpoints, head)


def test_intact_chain_verifies() -> None:
    rows = chain(50)
    s = verify("gw1", rows, [], head(rows))
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
    p = verify("gw1", rows, [], head(rows)).problem
    assert p is not None and p.kind == "altered" and p.seq == 5 and p.row_id == 5


def test_deleted_row() -> None:
    rows = chain(10)
    del rows[3]
    p = verify("gw1", rows, [], head(chain(10))).problem
    assert p is not None and p.kind == "deleted" and p.seq == 4


def test_deleted_first_rows() -> None:
    rows = chain(10)[3:]
    p = verify("gw1", rows, [], Head(10, rows[-1].row_hash)).problem
    assert p is not None and p.kind == "deleted" and "1..3" in p.detail


def test_deleted_last_rows_caught_by_head() -> None:
    rows = chain(10)
    p = verify("gw1", rows[:8], [], head(rows)).problem
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
    p = verify("gw1", tampered, [], None).problem
    assert p is not None and p.kind in ("inserted", "altered")
    # The same, with the seq left alone on the old rows and the link checked first:
    tail = chain(5, start=7, prev=rows[5].prev_hash)  # follows row 5, as the old row 6 did
    problems = verify("gw1", [*rows[:5], forged, *tail], [], None).problems
    assert [(p.kind, p.seq, p.row_id) for p in problems] == [
        ("deleted", 6, None),  # the old row 6: row 7 now follows row 5 directly
        ("inserted", 6, 99)]


def test_appended_row_caught_by_head() -> None:
    rows = chain(10)
    extra = chain(1, start=11, prev=rows[-1].row_hash)
    p = verify("gw1", rows + extra, [], head(rows)).problem
    assert p is not None and p.kind == "inserted" and p.seq == 11


def test_rewritten_chain_caught_by_signed_checkpoint(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "k.pem")
    rows = chain(20)
    cp = signer.checkpoint("gw1", "periodic", 15, rows[14].row_hash, 0)
    edited = [*rows]
    edited[2] = edited[2]._replace(fields=edited[2].fields._replace(host="evil.test"))
    rewritten = rehash(edited, 2)
    good, bad = trusted_checkpoints([cp], {signer.key_id: signer.public})
    assert bad == []
    p = verify("gw1", rewritten, good, head(rewritten)).problem
    assert p is not None and p.kind == "altered" and p.seq == 15


def test_checkpoint_signature_and_trust(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "k.pem")
    again = Signer.load_or_create(tmp_path / "k.pem")
    assert again.key_id == signer.key_id  # kept, not regenerated
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    cp = signer.checkpoint("gw1", "periodic", 3, b"\x01" * 32, 5)
    trusted = {signer.key_id: parse_public_key(public_key_text(signer.public))}
    assert trusted_checkpoints([cp], trusted) == ([cp], [])
    forged = type(cp)(cp.instance_id, cp.kind, 4, cp.row_hash, cp.time_us, cp.key_id,
                      cp.signature)
    _, [bad] = trusted_checkpoints([forged], trusted)
    assert "invalid signature" in bad.detail
    stranger = Signer(Ed25519PrivateKey.generate()).checkpoint("gw1", "periodic", 3,
                                                               b"\x01" * 32, 5)
    _, [bad] = trusted_checkpoints([stranger], trusted)
    assert "not trusted" in bad.detail


def test_purge_anchor_allows_a_later_start(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "k.pem")
    rows = chain(20)
    anchor = signer.checkpoint("gw1", "purge", 8, rows[7].row_hash, 0)
    s = verify("gw1", rows[8:], [anchor], head(rows))
    assert s.problem is None and s.first_seq == 9
    # Rows beyond the anchor are not covered by it:
    p = verify("gw1", rows[10:], [anchor], head(rows)).problem
    assert p is not None and p.kind == "deleted" and "9..10" in p.detail
    # A periodic checkpoint does not excuse missing old rows:
    periodic = signer.checkpoint("gw1", "periodic", 8, rows[7].row_hash, 0)
    assert verify("gw1", rows[8:], [periodic], head(rows)).problem is not None
    # Everything purged:
    last = signer.checkpoint("gw1", "purge", 20, rows[-1].row_hash, 0)
    assert verify("gw1", [], [last], head(rows)).problem is None


# ---------------------------------------------------------------- every break, bounded walk

def moved(rows: list[StoredRow], index: int, to: int) -> list[StoredRow]:
    """Row `index` taken out and put back at `to`, the rows renumbered in their new order
    (stored seq only: the hashed fields say where each row was written)."""
    order = [*rows]
    row = order.pop(index)
    order.insert(to, row)
    return [r._replace(fields=r.fields._replace(seq=i)) if r.fields.seq != i else r
            for i, r in enumerate(order, 1)]


def kinds(s: InstanceSummary) -> list[tuple[str, int, int | None, int]]:
    return [(p.kind, p.seq, p.row_id, p.count) for p in s.problems]


def test_a_row_moved_within_the_window_is_reordered_farther_it_is_deleted_and_inserted(
        ) -> None:
    rows = chain(200)
    near = moved(rows, 49, 55)  # row 50 stored six places later
    s = verify_instance("gw1", reversed(near), [], head(rows), window=16)
    assert kinds(s) == [("reordered", 50, 50, 1)]
    far = moved(rows, 49, 90)  # forty places: beyond a 16-row window
    s = verify_instance("gw1", reversed(far), [], head(rows), window=16)
    assert kinds(s) == [("deleted", 50, None, 1), ("inserted", 91, 50, 1)]
    assert verify_instance("gw1", reversed(far), [], head(rows), window=64).problems[0].kind \
        == "reordered"


def test_adjacent_breaks_of_a_kind_read_as_one_longer_break() -> None:
    rows = chain(60)
    for i in (20, 21, 22):  # seq 21..23 edited
        rows[i] = rows[i]._replace(fields=rows[i].fields._replace(host="evil.test"))
    del rows[40:45]  # seq 41..45 deleted
    s = verify("gw1", rows, [], head(chain(60)))
    assert kinds(s) == [("altered", 21, 21, 3), ("deleted", 41, None, 5)]
    assert "seq 21..23 (3 rows) (row id 21)" in str(s.problems[0])


def test_rows_forged_below_the_start_and_beyond_the_head_are_inserted() -> None:
    rows = chain(30)
    stray = StoredRow(900, rows[0].fields._replace(seq=0, host="stray.test"), ZERO_HASH,
                      bytes(32))
    extra = chain(3, start=31, prev=rows[-1].row_hash)
    s = verify("gw1", [stray, *rows, *extra], [], head(rows))
    assert kinds(s) == [("inserted", 0, 900, 1), ("inserted", 31, 31, 3)]


def test_the_walk_holds_a_bounded_number_of_rows() -> None:
    """30,000 rows streamed through a 64-row window: the walk's own memory stays near
    2 windows of rows, not the ledger's size."""
    import tracemalloc

    n, prev, hashes = 30_000, ZERO_HASH, []
    base = ChainFields("gw1", 0, 0, "p", "billing", "h.test", "msisdn", "v1", KEY)
    for seq in range(1, n + 1):
        prev = row_hash(prev, base._replace(seq=seq))
        hashes.append(prev)

    def newest_first() -> Iterator[StoredRow]:
        for seq in range(n, 0, -1):
            yield StoredRow(seq, base._replace(seq=seq),
                            hashes[seq - 2] if seq > 1 else ZERO_HASH, hashes[seq - 1])

    tracemalloc.start()
    s = verify_instance("gw1", newest_first(), [], Head(n, hashes[-1]), window=64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert s.problems == [] and s.rows == n
    assert peak < 500_000, peak  # measured ~33 kB; holding every row takes ~7 MB
