"""One gateway in front of two partner apps (ASGI example app and a WSGI app), per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from assertion_support import STACK_TTL, AsgiPartner, Stack, WsgiPartner, start_gateway

from lwtest import free_port


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("assertion")
    web_port = free_port()
    jwks = f"http://127.0.0.1:{web_port}/.well-known/jwks.json"
    shop = WsgiPartner.start("shop-partner", jwks)
    age = AsgiPartner.start("age-partner", jwks, directory)
    try:
        gateway = start_gateway(directory / "gw", {"age.test": age.port, "shop.test": shop.port},
                                ttl=STACK_TTL, web_port=web_port)
    except BaseException:
        age.stop()
        shop.stop()
        raise
    try:
        yield Stack(gateway, age, shop)
    finally:
        gateway.stop()
        age.stop()
        shop.stop()
