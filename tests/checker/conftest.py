"""Fixtures for the checker's browser tests: a real `linewarden checker` process and a real
headless Chromium (Debian's `chromium` package, driven by Playwright)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from lwtest import free_port

if TYPE_CHECKING:
    pass

# Debian's package; Playwright's own browser downloads are never used (no `playwright install`).
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

# A cold Python start plus phonenumbers' metadata import takes ~1 s on a CI runner; 20 s is
# generous without letting a hung server stall the suite.
SERVER_START_TIMEOUT = 20.0
SERVER_STOP_TIMEOUT = 10.0


def _wait_until_serving(proc: subprocess.Popen[bytes], url: str) -> bool:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False  # exited: most likely lost the race for the port
        try:
            if httpx.get(url + "api/check", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: uvicorn shuts down gracefully
        try:
            proc.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def checker_url() -> Iterator[str]:
    """Base URL of a `linewarden checker` subprocess on a free loopback port."""
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        proc = subprocess.Popen(
            [sys.executable, "-m", "linewarden.checker_cli", "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        if _wait_until_serving(proc, url):
            try:
                yield url
            finally:
                _stop(proc)
            return
        _stop(proc)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    pytest.fail(f"linewarden checker did not start:\n{stderr}")



@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
