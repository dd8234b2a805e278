"""Crash safety: SIGKILL mid-rewrite, a full disk, a read-only target. Originals survive."""

from __future__ import annotations

import ctypes
import gzip
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from linewarden.scan.detect import Detector
from linewarden.scan.redact import TEMP_MARK, Tokenizer, apply

from .conftest import REPO, run_cli
from .corpus import build_bytes


@pytest.fixture(scope="module")
def sample() -> bytes:
    # ~16 MB: long enough that a kill lands mid-write at every tested moment.
    return build_bytes(2 << 20, seed=9) * 8


def _redacted(data: bytes) -> bytes:
    det, tok = Detector(), Tokenizer()
    return apply(data, det.scan(data), tok)


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if TEMP_MARK in p.name]


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_sigkill_during_in_place_leaves_each_file_old_or_new(
    tmp_path: Path, sample: bytes, delay: float
) -> None:
    plain, packed = tmp_path / "a.log", tmp_path / "b.log.gz"
    plain.write_bytes(sample)
    packed.write_bytes(gzip.compress(sample, compresslevel=1))
    packed_before = packed.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "linewarden.scan.cli", str(tmp_path), "--in-place",
         "--workers", "2"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, no cleanup at all
    proc.wait()
    redacted = _redacted(sample)
    now = plain.read_bytes()
    assert now in (sample, redacted)
    if now == redacted:
        assert (tmp_path / "a.log.orig").read_bytes() == sample
    now_packed = packed.read_bytes()
    if now_packed != packed_before:
        assert gzip.decompress(now_packed) == redacted
        assert (tmp_path / "b.log.gz.orig").read_bytes() == packed_before
    # A later run ignores the stray temporary files and finishes the job.
    for name in ("a.log.orig", "b.log.gz.orig"):
        if (tmp_path / name).exists():
            (tmp_path / name).rename(tmp_path.parent / f"{tmp_path.name}-{name}")
    rerun = run_cli(str(tmp_path / "a.log"), str(tmp_path / "b.log.gz"), "--in-place",
                    "--no-backup")
    assert rerun.returncode in (0, 1), rerun.stderr
    assert plain.read_bytes() == redacted
    assert gzip.decompress(packed.read_bytes()) == redacted


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply_limit() -> None:
        # A file-size limit makes write(2) fail with EFBIG exactly like a full disk
        # fails with ENOSPC, without needing a real small filesystem (or root to mount one).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply_limit


@pytest.mark.parametrize("mode", ["in-place", "redact-to"])
def test_full_disk_keeps_originals_and_says_so(tmp_path: Path, mode: str) -> None:
    log = tmp_path / "src" / "a.log"
    log.parent.mkdir()
    data = build_bytes(600_000, seed=2)
    log.write_bytes(data)
    args = ["--in-place"] if mode == "in-place" else ["--redact-to", str(tmp_path / "out")]
    proc = run_cli(str(log), *args, "--workers", "1", preexec_fn=_limit_file_size(200_000))
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "no space left" in err and "Traceback" not in err
    assert log.read_bytes() == data
    assert _leftovers(log.parent) == []
    assert not (tmp_path / "src" / "a.log.orig").exists()
    if mode == "redact-to":
        assert list((tmp_path / "out").iterdir()) == []


def _without_root_override() -> None:
    """Root ignores permission bits; drop the two capabilities that let it (from the
    bounding set, so the exec'd interpreter never regains them)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


@pytest.mark.parametrize("mode", ["in-place", "redact-to"])
def test_read_only_target_directory(tmp_path: Path, mode: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    log = src / "a.log"
    log.write_bytes(b"call 07400 900123\n")
    log.chmod(0o644)
    if mode == "in-place":
        src.chmod(0o555)
        args = ["--in-place"]
    else:
        out = tmp_path / "out"
        out.mkdir()
        out.chmod(0o555)
        args = ["--redact-to", str(out)]
    try:
        proc = run_cli(str(log), *args, "--workers", "1", preexec_fn=_without_root_override)
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop root's permission override here: {exc}")
    finally:
        src.chmod(0o755)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "permission denied or read-only" in err and "Traceback" not in err
    assert log.read_bytes() == b"call 07400 900123\n"
    assert sorted(p.name for p in src.iterdir()) == ["a.log"]
