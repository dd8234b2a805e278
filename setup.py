"""Build hook: compile the data plane's hot modules with mypyc (ships with mypy).

`pip install .` compiles them; `LINEWARDEN_PURE=1 pip install .` installs pure Python.
The same sources run both ways (`make test` runs the suite on the compiled build and the
core and gateway tests on the pure sources too). mypyc type-checks what it compiles, so
the build needs mypy and the runtime dependencies importable: the Makefile installs
them first and builds with `--no-build-isolation`. If mypyc is missing or refuses the
code, the install goes on pure (with a warning), never broken.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

# The request path: parse, decide, render, relay, count. Modules outside it gain nothing
# measurable and keep their dynamic freedom (pydantic models, click, Starlette).
HOT_MODULES = [
    "src/linewarden/decide.py",
    "src/linewarden/http.py",
    "src/linewarden/names.py",
    "src/linewarden/claims.py",
    "src/linewarden/proxy/server.py",
    "src/linewarden/proxy/upstream.py",
    "src/linewarden/proxy/limits.py",
    # Subclasses of proxy/server.py's ClientConnection: compiled with it (an interpreted
    # class cannot inherit from a compiled one), and their PROXY-protocol reader.
    "src/linewarden/proxy/intercept.py",
    "src/linewarden/proxy/proxied.py",
    "src/linewarden/proxy/proxyproto.py",
    "src/linewarden/metrics.py",
    "src/linewarden/bindings/memory.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("LINEWARDEN_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("linewarden: mypyc not available, installing pure Python", file=sys.stderr)
        return []
    try:
        return list(mypycify(HOT_MODULES, opt_level="3"))
    except (SystemExit, Exception) as exc:  # mypy errors end in SystemExit
        print(f"linewarden: mypyc refused the build ({exc!r}); installing pure Python",
              file=sys.stderr)
        return []


setup(ext_modules=ext_modules())
