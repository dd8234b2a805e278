"""The published CAMARA definitions the conformance tests are checked against.

They are not copied into this repository (they are CAMARA's to publish). A test reads each
file, pinned by SHA-256 to release r3.2 of camaraproject/NumberVerification, from the first
of:

1. `$CAMARA_DIR/<repo>/<path>` if `CAMARA_DIR` is set (a directory of checkouts at r3.2);
2. a git mirror of the repository: `$CAMARA_MIRROR/camaraproject+<repo>/repo`
   (default `/work/.mirror`), read with `git show r3.2:<path>`;
3. a cached download under `~/.cache/linewarden/camara/`, else a download from
   raw.githubusercontent.com at the tag (then cached).

A file with another hash fails the test that needs it. A file found nowhere skips the tests
that need it, with the reason in the summary (`-ra`): the files are CAMARA's, the project may
not ship them, and a machine with no mirror and no route to GitHub cannot fetch them. The
scenarios themselves run from `test_nv_conformance.py`'s own map wherever it does not need
the published text.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = "NumberVerification"
TAG = "r3.2"
OPENAPI = "code/API_definitions/number-verification.yaml"
VERIFY_FEATURE = "code/Test_definitions/number-verification-phoneNumberVerify.feature"
SHARE_FEATURE = "code/Test_definitions/number-verification-phoneNumberShare.feature"
PINNED = {
    OPENAPI: "45a2d3344275e4682d291ad010a9aad3250f590194a4ca60b22a56ba5afafd40",
    VERIFY_FEATURE: "db2ef10da79d58da78017f41e062f8d5b2e979b5c23c2ca04abb0ec84701e27b",
    SHARE_FEATURE: "96c7a454a08c9d9759a338bee60269e8d589e04dd32bc4397b81b63675c23f17",
}
# One short try: a machine without a route to GitHub should not spend minutes finding out.
DOWNLOAD_TIMEOUT = 5.0
CACHE = Path.home() / ".cache" / "linewarden" / "camara" / REPO / TAG


def _from_dir(path: str) -> bytes | None:
    root = os.environ.get("CAMARA_DIR")
    if not root:
        return None
    file = Path(root) / REPO / path
    return file.read_bytes() if file.is_file() else None


def _from_mirror(path: str) -> bytes | None:
    mirror = Path(os.environ.get("CAMARA_MIRROR", "/work/.mirror"))
    git_dir = mirror / f"camaraproject+{REPO}" / "repo"
    if not git_dir.is_dir():
        return None
    done = subprocess.run(["git", "-C", str(git_dir), "show", f"{TAG}:{path}"],
                          capture_output=True, check=False, timeout=30)
    return done.stdout if done.returncode == 0 else None


def _from_cache_or_github(path: str) -> bytes | None:
    cached = CACHE / path
    if cached.is_file():
        return cached.read_bytes()
    url = f"https://raw.githubusercontent.com/camaraproject/{REPO}/{TAG}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            data: bytes = response.read()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() == PINNED[path]:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(data)
    return data


@cache
def _find(path: str) -> bytes | None:
    found = None
    for source in (_from_dir, _from_mirror, _from_cache_or_github):
        data = source(path)
        if data is not None and hashlib.sha256(data).hexdigest() == PINNED[path]:
            return data
        found = found or data
    if found is not None:
        pytest.fail(f"the published CAMARA file {REPO}@{TAG}:{path} was found with another "
                    f"hash than the pinned {PINNED[path]}")
    return None


def available(path: str) -> bool:
    return _find(path) is not None


def unavailable_reason(path: str) -> str:
    return (f"the published CAMARA file {REPO}@{TAG}:{path} (sha256 {PINNED[path]}) "
            "is not available: set CAMARA_DIR to a directory holding a checkout of "
            f"camaraproject/{REPO} at {TAG} (as {REPO}/), or allow the download from "
            "raw.githubusercontent.com")


def published(path: str) -> bytes:
    data = _find(path)
    if data is not None:
        return data
    pytest.skip(unavailable_reason(path))


def published_openapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(published(OPENAPI))
    return document


@dataclass(frozen=True)
class Scenario:
    feature: str  # "phoneNumberVerify" or "phoneNumberShare"
    tag: str
    title: str
    steps: tuple[str, ...]


def scenarios(path: str) -> list[Scenario]:
    """Every scenario of a published feature file: its tag, title and steps."""
    text = published(path).decode()
    feature = re.search(r"Operation (\w+)", text)
    assert feature is not None
    found: list[Scenario] = []
    tag, title, steps = "", "", []  # type: ignore[var-annotated]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("@"):
            if title:
                found.append(Scenario(feature.group(1), tag, title, tuple(steps)))
                title, steps = "", []
            tag = stripped[1:]
        elif stripped.startswith("Scenario:"):
            title = stripped.removeprefix("Scenario:").strip()
        elif title and stripped.split(" ", 1)[0] in ("Given", "When", "Then", "And"):
            steps.append(stripped)
    if title:
        found.append(Scenario(feature.group(1), tag, title, tuple(steps)))
    return found
