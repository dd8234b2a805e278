"""`[proxy] mode` and `trusted_proxies` as config.py reads them: errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from linewarden.config import load_config
from linewarden.sourcemap import ConfigError, ConfigErrors

BASE = """state_dir = "{d}/state"
[proxy]
listen = "127.0.0.1:3999"
{extra}
"""


def load(tmp_path: Path, extra: str) -> list[ConfigError] | None:
    path = tmp_path / "linewarden.toml"
    path.write_text(BASE.format(d=tmp_path, extra=extra))
    try:
        load_config(str(path))
    except ConfigErrors as exc:
        return exc.errors
    except ConfigError as exc:
        return [exc]
    return None


@pytest.mark.parametrize("extra", ['mode = "intercept"', 'mode = "tproxy"',
                                   'trusted_proxies = ["10.0.0.0/8", "192.0.2.7", "fd00::/8"]'])
def test_accepted(tmp_path: Path, extra: str) -> None:
    assert load(tmp_path, extra) is None


@pytest.mark.parametrize(("extra", "words"), [
    ('mode = "redirect"', "mode"),
    ('trusted_proxies = ["10.0.0.1/8"]', "not a CIDR"),
    ('mode = "intercept"\ntrusted_proxies = ["10.0.0.0/8"]', "for mode = \"forward\""),
])
def test_refused_with_line_and_fix(tmp_path: Path, extra: str, words: str) -> None:
    problems = load(tmp_path, extra)
    assert problems, "accepted"
    text = str(problems[0])
    assert words in text
    assert "linewarden.toml:" in text
