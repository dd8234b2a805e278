"""The small pieces of proxy/intercept.py on their own."""

from __future__ import annotations

import socket

import pytest

from linewarden.proxy.intercept import original_destination, same_address


@pytest.mark.parametrize(("a", "b", "same"), [
    (("10.0.0.1", 80), ("10.0.0.1", 80), True),
    (("::ffff:10.0.0.1", 80), ("10.0.0.1", 80), True),  # what a dual-stack socket reports
    (("fd99:2:0:0::2", 80), ("fd99:2::2", 80), True),
    (("FD99:2::2", 80), ("fd99:2::2", 80), True),
    (("10.0.0.1", 80), ("10.0.0.1", 8080), False),  # the port is part of the destination
    (("10.0.0.1", 80), ("10.0.0.2", 80), False),
    (("not-an-address", 80), ("10.0.0.1", 80), False),
])
def test_same_address(a: tuple[str, int], b: tuple[str, int], same: bool) -> None:
    assert same_address(a, b) is same


def test_connection_subclasses_are_compiled_with_the_server() -> None:
    """mypyc: an interpreted class cannot subclass a compiled one ("interpreted classes
    cannot inherit from compiled", raised at the first accepted connection). If a build
    compiles proxy/server.py it must compile intercept.py and proxied.py with it (checked:
    the six proxy modules compile together and tests/deploy passes on them)."""
    from linewarden.proxy import intercept, proxied, server

    def compiled(module: object) -> bool:
        return not str(getattr(module, "__file__", "")).endswith(".py")

    if compiled(server):
        missing = [m.__name__ for m in (intercept, proxied) if not compiled(m)]
        assert missing == [], f"add {missing} to the mypyc build beside proxy/server.py"


def test_original_destination_of_a_connection_that_was_not_redirected() -> None:
    """No NAT: the kernel has no original destination to give (no conntrack entry), or
    gives the listener's own address; never something else."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            found = original_destination(accepted)
            assert found is None or found == server.getsockname()
    finally:
        server.close()
