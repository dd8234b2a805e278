"""Redaction: nothing left behind, nothing else changed, originals never lost."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from linewarden.scan.cli import scan
from linewarden.scan.detect import Detector, Finding
from linewarden.scan.redact import Tokenizer, apply
from linewarden.scan.scanner import ScanOptions, scan_paths

from .corpus import Label


def _expected_redaction(text: bytes, labels: list[Label]) -> bytes:
    """The corpus with each *label* replaced by its token: what a perfect redactor writes."""
    out, pos = [], 0
    for lb in sorted(labels, key=lambda lb: lb.start):
        out += [text[pos:lb.start], f"[{lb.kind.upper()}]".encode()]
        pos = lb.end
    out.append(text[pos:])
    return b"".join(out)


def test_redacted_copy_leaves_nothing_and_changes_nothing_else(
    tmp_path: Path, corpus: tuple[bytes, list[Label]]
) -> None:
    text, labels = corpus
    src = tmp_path / "logs"
    src.mkdir()
    (src / "access.log").write_bytes(text)
    (src / "old.log.gz").write_bytes(gzip.compress(text))
    out = tmp_path / "clean"
    reports = list(scan_paths([str(src)], ScanOptions(redact_to=str(out), workers=2)))
    assert all(r.error is None for r in reports)
    expected = _expected_redaction(text, labels)
    assert (out / "access.log").read_bytes() == expected  # diff outside findings is empty
    assert gzip.decompress((out / "old.log.gz").read_bytes()) == expected  # gzip kept
    assert (src / "access.log").read_bytes() == text  # original untouched
    rescan = list(scan_paths([str(out)], ScanOptions(workers=2)))
    assert [r.findings for r in rescan] == [0, 0]  # rescan finds nothing


def test_keyed_hash_tokens_join_and_depend_on_the_key() -> None:
    f = Finding("msisdn", 0, 13, 0, "+447400900123")
    a = Tokenizer("[{KIND}:{hash}]", b"k1")(f)
    expected = hmac.new(b"k1", b"+447400900123", hashlib.sha256).hexdigest()[:16]
    assert a == f"[MSISDN:{expected}]".encode()
    assert Tokenizer("[{KIND}:{hash}]", b"k2")(f) != a
    with pytest.raises(ValueError, match="needs a key"):
        Tokenizer("{hash}")
    text = b"a +447400900123 b 07400 900123 c\n"
    det = Detector()
    red = apply(text, det.scan(text), Tokenizer("[{KIND}:{hash}]", b"k1"))
    tokens = red.split()[1::2]
    assert tokens[0] == tokens[1]  # the same subscriber, however written, joins
    assert det.scan(red) == []


def test_in_place_keeps_a_backup_and_skips_clean_files(tmp_path: Path) -> None:
    dirty = tmp_path / "a.log"
    clean = tmp_path / "b.log"
    dirty.write_bytes(b"x-msisdn: 447400900123\n")
    clean.write_bytes(b"nothing here 10.0.0.1\n")
    os.chmod(dirty, 0o640)
    result = CliRunner().invoke(scan, [str(tmp_path), "--in-place", "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert dirty.read_bytes() == b"x-msisdn: [MSISDN]\n"
    assert (tmp_path / "a.log.orig").read_bytes() == b"x-msisdn: 447400900123\n"
    assert (dirty.stat().st_mode & 0o777) == 0o640
    assert not (tmp_path / "b.log.orig").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log", "a.log.orig", "b.log"]
    # A second run refuses to overwrite the backup, and leaves the file alone.
    dirty.write_bytes(b"x-msisdn: 447400900124\n")
    again = CliRunner().invoke(scan, [str(dirty), "--in-place"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert dirty.read_bytes() == b"x-msisdn: 447400900124\n"


def test_in_place_without_backup(tmp_path: Path) -> None:
    log = tmp_path / "a.log.gz"
    log.write_bytes(gzip.compress(b"call 07400 900123\n"))
    result = CliRunner().invoke(scan, [str(log), "--in-place", "--no-backup", "--json"])
    assert result.exit_code == 1
    assert gzip.decompress(log.read_bytes()) == b"call [MSISDN]\n"
    assert json.loads(result.output)["files"][0]["backup"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log.gz"]


def test_redact_to_the_source_directory_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"call 07400 900123\n")
    result = CliRunner().invoke(scan, [str(tmp_path), "--redact-to", str(tmp_path)])
    assert result.exit_code == 2
    assert "is the --redact-to directory" in result.output
    assert log.read_bytes() == b"call 07400 900123\n"
