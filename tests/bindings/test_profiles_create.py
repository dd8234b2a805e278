"""`[profiles] create = true` (the demo's setting): an absent file starts empty and takes
opt-outs; without it an absent file still stops start-up (a typo must not mean "nobody
opted out")."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from linewarden.bindings.profiles import ProfiledStore, create_empty, load_profiles
from linewarden.bindings.wiring import open_store
from linewarden.config import load_config
from linewarden.sourcemap import ConfigError


def _config(tmp_path: Path, profiles: str) -> Path:
    path = tmp_path / "linewarden.toml"
    path.write_text(f'[store]\nurl = "memory://"\n\n[profiles]\n{profiles}\n')
    return path


def test_absent_file_without_create_refuses_to_start(tmp_path: Path) -> None:
    config = load_config(str(_config(tmp_path, 'file = "state/profiles.csv"')))
    with pytest.raises(ConfigError, match=r"\[profiles\].*profiles.csv"):
        open_store(config)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("name", ["state/profiles.csv", "state/profiles.sqlite"])
def test_create_makes_an_empty_private_file_once(tmp_path: Path, name: str) -> None:
    config = load_config(str(_config(tmp_path, f'file = "{name}"\ncreate = true')))
    store = open_store(config)
    assert isinstance(store, ProfiledStore)
    path = tmp_path / name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_profiles(path) == {}
    # An existing file (with someone's opt-out in it) is never replaced.
    if path.suffix == ".csv":
        path.write_text("msisdn,age_verified,opt_out\n447400900123,,all\n")
        assert create_empty(path) is False
        assert load_profiles(path)["447400900123"].opt_out == "*"
