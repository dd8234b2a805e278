"""What may import what (docs/architecture.md, "Imports"), checked on the installed package.

1. Every module imports alone in a fresh interpreter: an import cycle that only works in
   one order fails here (as aiohttp's test_circular_imports.py does it).
2. The decision core loads no I/O: importing it pulls in no linewarden adapter (proxy, web,
   ledger, stores, serve, config) and none of the libraries they wrap.
3. Only `serve` and the CLI import `wiring` (the builders); `config` builds nothing.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import linewarden

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(linewarden.__path__, "linewarden.")
)

# The sans-IO core: plain data in, plain data out.
CORE = ("linewarden.decide", "linewarden.policy", "linewarden.policy.model",
        "linewarden.claims", "linewarden.names", "linewarden.identifiers", "linewarden.http",
        "linewarden.destinations", "linewarden.review", "linewarden.checker",
        "linewarden.assertion", "linewarden.bindings", "linewarden.hostport")
# Modules (ours and third-party) that do I/O or load files: none may be loaded by the core.
# (httptools is only a parser: decide reads URLs with it.)
IO_MODULES = ("linewarden.proxy", "linewarden.web", "linewarden.ledger",
              "linewarden.bindings.redis", "linewarden.bindings.radius",
              "linewarden.bindings.wiring", "linewarden.serve", "linewarden.config",
              "linewarden.policy.load", "linewarden.sourcemap", "linewarden.wiring",
              "linewarden.numberverify", "linewarden.canary", "linewarden.killswitch",
              "asyncio", "sqlite3", "redis", "psycopg", "uvloop", "starlette",
              "uvicorn", "pydantic", "tomllib", "publicsuffixlist", "httpx")


def _fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_the_package_has_the_modules_this_test_expects() -> None:
    assert len(MODULES) > 60
    for name in (*CORE, "linewarden.policy.load", "linewarden.serve", "linewarden.cli"):
        assert name in MODULES, name


@pytest.mark.parametrize("chunk", range(4))
def test_every_module_imports_alone_in_a_fresh_interpreter(chunk: int) -> None:
    # One interpreter per module (a cycle shows only in a clean sys.modules); four test
    # cases so a failure names a short list.
    names = MODULES[chunk::4]
    code = ("import importlib, sys, subprocess\n"
            f"names = {names!r}\n"
            "bad = []\n"
            "for n in names:\n"
            "    r = subprocess.run([sys.executable, '-c', f'import {n}'],\n"
            "                       capture_output=True, text=True)\n"
            "    if r.returncode:\n"
            "        bad.append((n, r.stderr.strip().splitlines()[-1]))\n"
            "print(bad)\n")
    result = _fresh(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("module", CORE)
def test_the_core_loads_no_io(module: str) -> None:
    code = (f"import sys, json, {module}\n"
            f"print(json.dumps(sorted(sys.modules)))\n")
    result = _fresh(code)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    bad = [m for m in loaded for io in IO_MODULES if m == io or m.startswith(io + ".")]
    assert bad == [], f"{module} loads {bad}"


def _imports(module: str) -> set[str]:
    """The linewarden modules `module` imports anywhere in its source (TYPE_CHECKING
    blocks too: a type-only import still says where a module reaches)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    origin = Path(spec.origin)  # a compiled module's origin is its .so: read the source
    source = origin if origin.suffix == ".py" else origin.with_name(
        origin.name.split(".", 1)[0] + ".py")
    tree = ast.parse(source.read_text())
    package = module if spec.origin.endswith("__init__.py") else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("linewarden"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            if base.startswith("linewarden"):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names
                           if f"{base}.{a.name}" in MODULES)
    return out


def _is_cli(module: str) -> bool:
    return module in ("linewarden.cli", "linewarden.cli_support") or \
        module.endswith(("_cli", ".cli"))


def test_only_serve_and_the_cli_import_wiring() -> None:
    importers = sorted(m for m in MODULES if "linewarden.wiring" in _imports(m))
    assert importers, "nothing imports wiring: the test reads imports wrongly"
    assert [m for m in importers if m != "linewarden.serve" and not _is_cli(m)] == []


def test_config_builds_nothing() -> None:
    """config.py reads and validates the file: it imports no component builder, no secret
    store and nothing that writes (keys, claims, secrets, ledger, filemodes, wiring...)."""
    reached = _imports("linewarden.config")
    builders = ("linewarden.keys", "linewarden.claims", "linewarden.secrets",
                "linewarden.ledger", "linewarden.filemodes", "linewarden.wiring",
                "linewarden.serve", "linewarden.web", "linewarden.proxy",
                "linewarden.killswitch", "linewarden.canary", "linewarden.bindings.wiring")
    assert [m for m in reached for b in builders if m == b or m.startswith(b + ".")] == []
    assert "linewarden.sourcemap" in reached  # the reader sees imports at all
