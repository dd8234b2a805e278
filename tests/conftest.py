"""Shared fixtures: the echo origin, the TLS origin and the gateway subprocess.

The classes live in `lwtest.py` (a plain module, importable from any test directory:
pytest swaps `conftest` modules in sys.modules as it collects, so tests never import this
file by name).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lwtest import Gateway, Origin, TlsOrigin, chromium_browser, start_gateway


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test stale compiled code: in the editable install a mypyc-built module
    (`.so`) shadows its source, so an edited source would silently not be what runs."""
    import linewarden

    package = Path(linewarden.__file__).parent
    stale = [str(so.relative_to(package)) for so in package.rglob("*.so")
             if (source := so.parent / (so.name.split(".", 1)[0] + ".py")).exists()
             and source.stat().st_mtime > so.stat().st_mtime]
    if stale:
        raise pytest.UsageError(
            f"compiled modules older than their sources: {', '.join(sorted(stale))}; "
            "rebuild with `make venv`, or go pure with `make pure`")


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    server = Origin().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOrigin]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("tls.test", "127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_pem = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    server = Origin(tls=ctx).start()
    try:
        yield TlsOrigin(server, ca_pem)
    finally:
        server.stop()


@pytest.fixture
def gateway_factory(tmp_path: Path, origin: Origin) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway with custom options (stopped after the test)."""
    started: list[Gateway] = []

    def make(name: str = "gw", **options: Any) -> Gateway:
        gw = start_gateway(tmp_path / name, options.pop("origin_port", origin.port), **options)
        started.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in started:
            gw.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, origin: Origin,
            tls_origin: TlsOrigin) -> Iterator[Gateway]:
    """The shared gateway: default timeouts, the default partners, TLS port allowed."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), origin.port,
                       tls_port=tls_origin.port)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Headless Chromium with no proxy (a test that browses through the gateway passes
    `--proxy-server` to `lwtest.chromium_browser` itself)."""
    with chromium_browser() as browser:
        yield browser
