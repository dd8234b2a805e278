"""Which build the suite runs on: `make test` runs it compiled (mypyc) and the core and
gateway tests again on the pure sources; this says which one this run really imported."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

# setup.py's HOT_MODULES, as import names.
HOT = ["linewarden.decide", "linewarden.http", "linewarden.names", "linewarden.claims",
       "linewarden.proxy.server", "linewarden.proxy.upstream", "linewarden.proxy.limits",
       "linewarden.proxy.intercept", "linewarden.proxy.proxied", "linewarden.proxy.proxyproto",
       "linewarden.metrics", "linewarden.bindings.memory"]


def test_the_hot_modules_are_the_build_this_run_expects() -> None:
    files = {name: Path(str(importlib.import_module(name).__file__)) for name in HOT}
    expect = os.environ.get("LINEWARDEN_EXPECT")
    if expect == "compiled":
        assert all(f.suffix == ".so" for f in files.values()), files
    elif expect == "pure":
        assert all(f.suffix == ".py" for f in files.values()), files
    else:  # a run by hand: all one way or the other, never a mix
        assert len({f.suffix for f in files.values()}) == 1, files


def test_setup_compiles_exactly_these_modules() -> None:
    setup = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    listed = [line.strip().strip('",') for line in setup.splitlines()
              if line.strip().startswith('"src/linewarden/')]
    assert [m.removeprefix("src/").removesuffix(".py").replace("/", ".")
            for m in listed] == HOT
