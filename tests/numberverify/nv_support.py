"""Test support: the Number Verification routes served for real (uvicorn on 127.0.0.1, in
a thread) with bindings for 127.0.0.2 and 127.0.0.3, a controllable clock, a ledger stand-in,
and the sample partner app from examples/ in front of it."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from linewarden.assertion import KeyRing, Signer, SigningKey, new_private_key, public_jwk
from linewarden.bindings import Binding
from linewarden.bindings.memory import MemoryStore
from linewarden.claims import Secrets
from linewarden.decide import DisclosureRecord
from linewarden.numberverify.api import NumberVerification, api_routes, oauth_routes
from linewarden.numberverify.grants import GrantStore
from linewarden.policy import Policy
from linewarden.policy.load import parse_policy
from linewarden.web.jwks import jwks_routes
from lwtest import free_port

ROOT = Path(__file__).resolve().parents[2]
MSISDN_A = "447400900222"  # bound to 127.0.0.2
MSISDN_B = "447400900333"  # bound to 127.0.0.3
LEDGER_KEY = b"nv-test-ledger-key"
PSEUDONYM_SECRET = b"nv-test-pseudonym-secret"
SHOP_SECRET = "shop-secret-0123456789"
CARRIER_SECRET = "carrier-secret-0123456789"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_example() -> ModuleType:
    path = ROOT / "examples" / "camara_partner.py"
    spec = importlib.util.spec_from_file_location("camara_partner", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["camara_partner"] = module
    spec.loader.exec_module(module)
    return module


def policy_text(shop_redirect: str, carrier_redirect: str, extra: str = "") -> str:
    return f"""
[[partners]]
id = "shop"
purpose = "fraud_prevention"
hosts = ["shop.test"]
[partners.oauth]
client_id = "shop-client"
redirect_uris = ["{shop_redirect}"]
client_secret_sha256 = "{sha(SHOP_SECRET)}"
scopes = ["number-verification:verify"]

[[partners]]
id = "carrier"
purpose = "billing"
hosts = ["carrier.test"]
allow_raw_msisdn = true
[partners.oauth]
client_id = "carrier-client"
redirect_uris = ["{carrier_redirect}"]
client_secret_sha256 = "{sha(CARRIER_SECRET)}"
scopes = ["number-verification:verify", "number-verification:device-phone-number:read"]
{extra}
"""


@dataclass
class ListRecorder:
    rows: list[DisclosureRecord] = field(default_factory=list)
    accept: bool = True

    async def record(self, rec: DisclosureRecord) -> bool:
        if self.accept:
            self.rows.append(rec)
        return self.accept


@dataclass
class Clock:
    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Operator:
    """The routes under test, listening on 127.0.0.1."""

    nv: NumberVerification
    recorder: ListRecorder
    clock: Clock
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def bound_store() -> MemoryStore:
    store = MemoryStore()

    async def fill() -> None:
        await store.write(Binding(ip="127.0.0.2", msisdn=MSISDN_A))
        await store.write(Binding(ip="127.0.0.3", msisdn=MSISDN_B))

    asyncio.run(fill())
    return store


def make_signer(algorithm: Any = "ES256") -> Signer:
    """A key ring of one fresh key, as `keys.open_signer` would load it."""
    private = new_private_key(algorithm)
    jwk = public_jwk(private, algorithm)
    key = SigningKey(kid=jwk["kid"], algorithm=algorithm, public_jwk=jwk,
                     created=time.time(), private=private)
    return Signer("urn:linewarden:test", KeyRing((key,)))


def make_secrets(signer: Signer | None = None) -> Secrets:
    return Secrets(pseudonym_secret=PSEUDONYM_SECRET, ledger_key=LEDGER_KEY,
                   signer=signer or make_signer())


def start_operator(policy: Policy, *,
                   grants: Callable[[Clock], GrantStore] | None = None,
                   **options: Any) -> Operator:
    """`grants` makes the grant store on the operator's clock (default: memory)."""
    recorder, clock = ListRecorder(), Clock()
    secrets = options.pop("secrets", None) or make_secrets()
    nv = NumberVerification(lambda: policy, bound_store(), recorder, secrets,
                            clock=clock, grants=grants(clock) if grants else None, **options)
    app = Starlette(routes=[*oauth_routes(nv), *api_routes(nv),
                            *jwks_routes(secrets.signer, clock=clock)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    return Operator(nv, recorder, clock, f"http://127.0.0.1:{port}", server, thread)


def device(address: str) -> httpx.Client:
    """A browser on the mobile network: its connections come from `address`."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address),
                        follow_redirects=True, timeout=10, trust_env=False)


def make_policy(shop_redirect: str, carrier_redirect: str, extra: str = "") -> Policy:
    policy, _ = parse_policy(policy_text(shop_redirect, carrier_redirect, extra))
    return policy
