"""Only puts the sibling support directories on sys.path (gateway/wire.py), before the test
modules import from them."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
for _extra in (_TESTS, _TESTS / "gateway"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))
