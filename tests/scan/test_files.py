"""Streaming inputs: chunks of whole lines, byte ranges, directories, gzip."""

from __future__ import annotations

import gzip
import io
import itertools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from linewarden.scan import files
from linewarden.scan.files import iter_chunks, iter_sources, split_ranges


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       st.integers(1, 64), st.booleans())
def test_chunks_are_whole_lines_and_concatenate_back(
    lines: list[bytes], size: int, final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    chunks = list(iter_chunks(io.BytesIO(data), size=size))
    assert b"".join(chunks) == data
    for chunk in chunks[:-1]:
        assert chunk.endswith(b"\n")


def test_a_giant_line_is_cut_at_a_separator(monkeypatch: object) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    mp.setattr(files, "MAX_CARRY", 100)
    try:
        data = b"word " * 100  # 500 bytes, no newline
        chunks = list(iter_chunks(io.BytesIO(data), size=32))
        assert b"".join(chunks) == data
        assert all(c.endswith(b" ") for c in chunks)
        assert max(len(c) for c in chunks) <= 100 + 32
    finally:
        mp.undo()


def test_split_ranges_are_newline_aligned_and_cover_the_file(tmp_path: Path) -> None:
    p = tmp_path / "big.log"
    line = b"x" * 99 + b"\n"
    p.write_bytes(line * (files.SPLIT_MIN // 100 + 5000))
    ranges = split_ranges(str(p), 4)
    assert len(ranges) > 1
    assert ranges[0][0] == 0 and ranges[-1][1] == p.stat().st_size
    data = p.read_bytes()
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end == start and data[end - 1:end] == b"\n"


def test_sources_walk_directories_and_detect_gzip(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a.log").write_bytes(b"a\n")
    (tmp_path / "d" / "e" / "b.log.gz").write_bytes(gzip.compress(b"b\n"))
    (tmp_path / "d" / "e" / "rotated.1").write_bytes(gzip.compress(b"c\n"))
    found = [(s.relative, s.gzipped) for s in iter_sources([str(tmp_path / "d")])]
    assert found == [("a.log", False), ("e/b.log.gz", True), ("e/rotated.1", True)]
