"""`audit verify` reports every break (issue 15 item 7), on SQLite and a real PostgreSQL.

Tampering is done the way someone with write access to the database would do it, in SQL:
edit a row, delete one (and maybe renumber the rows after it to hide the gap), insert a
forged row (renumbering the rows after it to make room: seq is UNIQUE), swap two rows. The
property: for random plans of such edits, the breaks reported are exactly the planted ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from linewarden.decide import DisclosureRecord
from linewarden.ledger.chain import ChainFields, Signer, row_hash
from linewarden.ledger.reports import to_text, verify_chain, verify_ledger
from linewarden.ledger.store import CheckpointPolicy, Store
from lwtest import LINEWARDEN

from .conftest import Backend

T0 = 1_700_000_000.0
_instances = itertools.count()


def rec(i: int) -> DisclosureRecord:
    key = hashlib.sha256(f"sub{i % 7}".encode()).hexdigest()
    return DisclosureRecord(T0 + i, "billing-co", "billing", f"h{i}.billing.test",
                            ("msisdn",), "v1", key)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "signing.pem")


def fill(store: Store, instance: str, n: int, signer: Signer) -> None:
    """n rows in batches of 25, each batch signed (a checkpoint is due every 10 rows)."""
    for start in range(0, n, 25):
        store.append(instance, [rec(i) for i in range(start, min(n, start + 25))], signer,
                     CheckpointPolicy(every_rows=10, every_seconds=3600))


# ---------------------------------------------------------------- tampering, in SQL

def _renumber(store: Store, instance: str, above: int, by: int) -> None:
    """seq += by for every row above `above`, in two steps so UNIQUE (instance_id, seq)
    holds after each statement (PostgreSQL checks it row by row)."""
    store.query("UPDATE disclosures SET seq = -(seq + ?) WHERE instance_id = ? AND seq > ?",
                (by, instance, above))
    store.query("UPDATE disclosures SET seq = -seq WHERE instance_id = ? AND seq < 0",
                (instance,))


def alter(store: Store, instance: str, seq: int) -> None:
    store.query("UPDATE disclosures SET host = 'elsewhere.test' WHERE instance_id = ? "
                "AND seq = ?", (instance, seq))


def delete(store: Store, instance: str, seq: int, renumber: bool) -> None:
    store.query("DELETE FROM disclosures WHERE instance_id = ? AND seq = ?", (instance, seq))
    if renumber:  # close the gap, as someone hiding the deletion would
        _renumber(store, instance, seq, -1)


def insert_after(store: Store, instance: str, seq: int, careful: bool) -> int:
    """A forged row after row `seq`, the rows after it renumbered to make room. `careful`:
    it follows row `seq` and hashes right; otherwise its hashes are made up. Its row id."""
    _renumber(store, instance, seq, 1)
    (prev,), = store.query("SELECT row_hash FROM disclosures WHERE instance_id = ? AND "
                           "seq = ?", (instance, seq)) or [(os.urandom(32),)]
    host = f"forged-{seq}.test"
    f = ChainFields(instance, seq + 1, int(T0 * 1e6), "billing-co", "billing", host,
                    "msisdn", "v1", bytes(32))
    prev = bytes(prev) if careful else os.urandom(32)
    digest = row_hash(prev, f) if careful else os.urandom(32)
    store.query("INSERT INTO disclosures (instance_id, seq, time_us, partner_id, purpose, "
                "host, claims, policy_version, subscriber_key, prev_hash, row_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*f, prev, digest))
    (row_id,), = store.query("SELECT id FROM disclosures WHERE instance_id = ? AND host = ?",
                             (instance, host))
    return int(row_id)


def swap(store: Store, instance: str, seq: int) -> None:
    """Rows seq and seq + 1 change places."""
    store.query("UPDATE disclosures SET seq = -1 WHERE instance_id = ? AND seq = ?",
                (instance, seq))
    store.query("UPDATE disclosures SET seq = ? WHERE instance_id = ? AND seq = ?",
                (seq, instance, seq + 1))
    store.query("UPDATE disclosures SET seq = ? WHERE instance_id = ? AND seq = -1",
                (seq + 1, instance))


def reported(store: Store, instance: str, signer: Signer) -> set[tuple[str, int]]:
    """(kind, seq) per break; an inserted row has no place in the chain: (kind, row id)."""
    summary, _ = verify_chain(store, instance, {signer.key_id: signer.public})
    assert all(p.count == 1 for p in summary.problems), summary.problems
    return {(p.kind, p.row_id if p.kind == "inserted" and p.row_id is not None else p.seq)
            for p in summary.problems}


# ---------------------------------------------------------------- examples

def test_a_clean_chain_verifies(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, "gw1", 120, signer)
    fill(store, "gw2", 7, signer)
    report = verify_ledger(store, {signer.key_id: signer.public})
    assert report.ok and report.problems == []
    assert [(s.rows, s.first_seq, s.last_seq, s.checkpoints_checked)
            for s in report.instances] == [(120, 1, 120, 5), (7, 1, 7, 0)]


def test_four_breaks_far_apart_are_all_reported(backend: Backend, signer: Signer) -> None:
    store = backend.store()
    fill(store, "gw1", 400, signer)
    fill(store, "gw2", 30, signer)  # another instance, untouched, in the same ledger
    # Highest first, so each edit's seq is still the row's original one.
    alter(store, "gw1", 350)
    forged = insert_after(store, "gw1", 240, careful=True)
    delete(store, "gw1", 150, renumber=True)
    alter(store, "gw1", 40)
    report = verify_ledger(store, {signer.key_id: signer.public})
    assert [(p.instance_id, p.kind, p.seq, p.row_id) for p in report.problems] == [
        ("gw1", "altered", 40, 40),
        ("gw1", "deleted", 150, None),
        # Inserted as seq 241; the later renumbering that hid the deletion moved it to 240:
        # an inserted row has no place in the chain, so it is named where it is stored.
        ("gw1", "inserted", 240, forged),
        ("gw1", "altered", 350, 350),
    ]
    [gw1, gw2] = report.instances
    assert (gw1.rows, gw1.first_seq, gw1.last_seq) == (399, 1, 400)
    assert gw2.problems == [] and gw2.rows == 30
    text = to_text(report)
    # 16 checkpoints (one per batch of 25); the one at seq 150 vouched for the deleted row.
    assert "gw1: 399 rows (seq 1..400), 15 signed checkpoints matched, 4 breaks" in text
    assert "  deleted: instance 'gw1', seq 150: row(s) seq 150 missing before row id 151" in text
    assert "FAILED: 4 breaks found." in text


# ---------------------------------------------------------------- the property

@dataclass(frozen=True)
class Edit:
    kind: str  # altered | deleted | inserted | reordered
    seq: int  # the row edited; inserted: the row the forged one follows; reordered: the
    # first of the two swapped
    variant: bool  # deleted: renumber the rows after; inserted: a well-formed forged row

    @property
    def rows(self) -> range:
        return range(self.seq, self.seq + (2 if self.kind == "reordered" else 1))


@st.composite
def plans(draw: st.DrawFn) -> tuple[int, list[Edit]]:
    n = draw(st.integers(12, 70))
    edits: list[Edit] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["altered", "deleted", "inserted", "reordered"]))
        edit = Edit(kind, draw(st.integers(1, n - (kind == "reordered"))), draw(st.booleans()))
        # Breaks at least two intact rows apart are each reported on their own (closer ones
        # may read as one longer break, which is also true but not what this checks).
        if all(abs(a - b) >= 3 for e in edits for a in e.rows for b in edit.rows):
            edits.append(edit)
    return n, edits


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans())
def test_reported_breaks_are_exactly_the_planted_ones(backend: Backend, signer: Signer,
                                                       plan: tuple[int, list[Edit]]) -> None:
    n, edits = plan
    key = (backend.url, str(backend.base))
    store = _stores.get(key) or _stores.setdefault(key, backend.store())
    instance = f"gw{next(_instances)}"
    note(f"{n} rows, {edits}")
    fill(store, instance, n, signer)
    planted: set[tuple[str, int]] = set()
    for edit in sorted(edits, key=lambda e: -e.seq):  # highest first: seqs stay original
        if edit.kind == "altered":
            alter(store, instance, edit.seq)
        elif edit.kind == "deleted":
            delete(store, instance, edit.seq, renumber=edit.variant)
        elif edit.kind == "inserted":
            planted.add(("inserted", insert_after(store, instance, edit.seq, edit.variant)))
            continue
        else:
            swap(store, instance, edit.seq)
        planted.add((edit.kind, edit.seq))
    assert reported(store, instance, signer) == planted


_stores: dict[tuple[str, str], Store] = {}  # one connection per database across the examples


# ---------------------------------------------------------------- the command

def test_audit_verify_lists_the_first_breaks_and_counts_the_rest(tmp_path: Path) -> None:
    """As an operator runs it: exit 1, a count, 20 breaks in full then "... and K more";
    --json lists every one."""
    from linewarden.config import load_config
    from linewarden.ledger import open_store, signer_from_config

    config_path = tmp_path / "linewarden.toml"
    config_path.write_text('state_dir = "state"\n[proxy]\ninstance_id = "gw1"\n'
                           '[ledger]\nurl = "sqlite:///state/ledger.db"\nkey = "k"\n')
    config = load_config(str(config_path))
    signer = signer_from_config(config)
    store = open_store(config.ledger.url, base=config.base).open()
    fill(store, "gw1", 100, signer)

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(LINEWARDEN), "audit", "verify",
                               "--config", str(config_path), *args],
                              capture_output=True, text=True, timeout=60, check=False)

    clean = verify()
    assert clean.returncode == 0 and "OK: the chain is intact." in clean.stdout
    edited = list(range(3, 100, 4))  # 25 rows, three intact rows between each
    for seq in edited:
        alter(store, "gw1", seq)
    store.close()
    result = verify()
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    listed = [line for line in lines if line.startswith("  altered: instance 'gw1', seq ")]
    assert [int(line.split("seq ")[1].split(" ")[0]) for line in listed] == edited[:20]
    assert "  ... and 5 more (--json or --csv lists them all)" in lines
    assert lines[-1] == "FAILED: 25 breaks found."
    data = json.loads(verify("--json").stdout)
    assert data["ok"] is False and data["instances"][0]["problems"] == 25
    assert [p["seq"] for p in data["problems"]] == edited
    assert all(p["kind"] == "altered" and p["count"] == 1 for p in data["problems"])
    rows = list(csv.DictReader(io.StringIO(verify("--csv").stdout)))
    assert [int(r["seq"]) for r in rows] == edited
