"""The command as users run it: exit codes, masking, JSON, stdin, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from click.testing import CliRunner

from linewarden.scan.cli import scan

from .conftest import run_cli

LEAK = b'1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /?msisdn=447400900123 HTTP/1.1" 200 512\n'


def test_exit_codes_and_masked_text_report(tmp_path: Path) -> None:
    clean = tmp_path / "clean.log"
    clean.write_bytes(b'1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 512\n')
    assert run_cli(str(clean)).returncode == 0
    leak = tmp_path / "leak.log"
    leak.write_bytes(LEAK * 3)
    proc = run_cli(str(leak))
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert "+44 74** ***123" in out and "447400900123" not in out
    assert "lines 1-3" in out and "msisdn 3" in out and "by header: msisdn 3" in out
    revealed = run_cli(str(leak), "--reveal").stdout.decode()
    assert "+447400900123" in revealed


def test_json_report(tmp_path: Path) -> None:
    log = tmp_path / "a.log.gz"
    log.write_bytes(gzip.compress(b"ok\n" + LEAK + b"X-IMEI: 352099001761481\n"))
    result = CliRunner().invoke(scan, [str(log), "--json", "--workers", "1"])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    (f,) = doc["files"]
    assert f["by_kind"] == {"msisdn": 1, "imei": 1}
    assert f["by_header"] == {"msisdn": 1, "x-imei": 1}
    assert (f["first_line"], f["last_line"], f["lines"]) == (2, 3, 3)
    assert f["values"] == ["+44 74** ***123", "35**********481"]
    assert doc["summary"]["masked"] is True


def test_stdin_and_redact_to(tmp_path: Path) -> None:
    proc = run_cli("-", "--redact-to", str(tmp_path / "out"), stdin=LEAK)
    assert proc.returncode == 1, proc.stderr
    assert (tmp_path / "out" / "stdin").read_bytes() == LEAK.replace(b"447400900123", b"[MSISDN]")


def test_errors_are_one_sentence_without_traceback(tmp_path: Path) -> None:
    cases = [
        [str(tmp_path / "missing.log")],
        [str(tmp_path), "--in-place", "--redact-to", str(tmp_path / "x")],
        ["-", "--in-place"],
        [str(tmp_path), "--region", "XX"],
        [str(tmp_path), "--token", "{nope}", "--redact-to", str(tmp_path / "x")],
        [str(tmp_path), "--token", "{hash}", "--redact-to", str(tmp_path / "x")],
    ]
    for args in cases:
        proc = run_cli(*args, stdin=b"")
        err = proc.stderr.decode()
        assert proc.returncode == 2, (args, err)
        assert "Traceback" not in err and err.strip().count("\n") <= 2, (args, err)


def test_truncated_gzip_is_an_error_but_other_files_are_still_scanned(tmp_path: Path) -> None:
    (tmp_path / "a.log.gz").write_bytes(gzip.compress(LEAK * 100)[:50])
    (tmp_path / "b.log").write_bytes(LEAK)
    proc = run_cli(str(tmp_path))
    assert proc.returncode == 2
    assert "not a complete gzip file" in proc.stderr.decode()
    assert "b.log: 1 findings" in proc.stdout.decode()


def test_help_describes_every_option() -> None:
    out = CliRunner().invoke(scan, ["--help"]).output
    for opt in ("--region", "--json", "--redact-to", "--in-place", "--backup-suffix",
                "--no-backup", "--workers", "--reveal", "--token", "Exit status"):
        assert opt in out


def test_big_file_split_across_workers_matches_one_worker(tmp_path: Path) -> None:
    from linewarden.scan import files
    from linewarden.scan.scanner import ScanOptions, scan_paths

    from .corpus import build_bytes

    # Repeating a 2 MB sample is enough to cross the split threshold, and quick to make.
    data = build_bytes(2 << 20, seed=5) * (files.SPLIT_MIN // (2 << 20) + 2)
    p = tmp_path / "big.log"
    p.write_bytes(data)
    one = next(scan_paths([str(p)], ScanOptions(workers=1)))
    two = next(scan_paths([str(p)], ScanOptions(workers=2)))
    assert one.findings > 0
    assert (one.by_kind, one.by_header, one.values, one.first_line, one.last_line, one.lines) == (
        two.by_kind, two.by_header, two.values, two.first_line, two.last_line, two.lines
    )
