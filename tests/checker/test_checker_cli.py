"""`linewarden checker` option handling, and its start: a busy port is one line, exit 1."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner

from linewarden.checker_cli import checker, parse_listen
from lwtest import free_port


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("[::1]:9000", ("::1", 9000)),
    ("localhost:1", ("localhost", 1)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "127.0.0.1:", "127.0.0.1:99999", "[zz]:80"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_bad_region_is_a_usage_error() -> None:
    result = CliRunner().invoke(checker, ["--region", "UK"])
    assert result.exit_code == 2
    assert "unknown region UK" in result.output


def test_bad_listen_is_a_usage_error() -> None:
    result = CliRunner().invoke(checker, ["--listen", "nowhere"])
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(checker, ["--help"])
    assert result.exit_code == 0
    for option in ("--listen", "--region", "--identity-name", "--identity-suffix"):
        assert option in result.output


def _run_checker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "linewarden.checker_cli", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_busy_port_is_one_line_naming_the_address_and_the_fix(family: socket.AddressFamily) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family, socket.SOCK_STREAM) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        where = f"{host}:{port}" if family == socket.AF_INET else f"[{host}]:{port}"
        proc = _run_checker("--listen", where)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"cannot listen on {where}: the address is already in use" in lines[0]
    assert "fix:" in lines[0] and "--listen" in lines[0]
    assert "Traceback" not in proc.stderr and "linewarden checker on" not in proc.stderr


def test_checker_serves_on_the_socket_it_bound() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "linewarden.checker_cli", "--listen",
                             f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        # The banner comes after the bind, so the port already accepts connections.
        assert f"on http://127.0.0.1:{port}/" in proc.stderr.readline()
        answer = httpx.get(f"http://127.0.0.1:{port}/api/check",
                           headers={"X-MSISDN": "447400900123"}, timeout=10)
        assert answer.status_code == 200
        assert answer.json()["identity_revealed"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=10)
