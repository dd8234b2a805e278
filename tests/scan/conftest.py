from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .corpus import Label, build

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, stdin: bytes | None = None, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    """The scan command end to end, in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "linewarden.scan.cli", *args],
        input=stdin, capture_output=True, timeout=120, cwd=REPO, check=False,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def corpus() -> tuple[bytes, list[Label]]:
    """About 1.5 MB of labeled logs with well over 1,000 true phone numbers."""
    return build(6000, seed=11)
