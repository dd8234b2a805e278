"""Beyond header enrichment: CAMARA-style Number Verification and the subscriber's /me page.

    api.py         the routes: /oauth/*, OIDC discovery, /number-verification/v2/...
    authserver.py  the OpenID Connect authorization server (authlib); partners are clients
    grants.py      codes, single-use tokens, nonces, rate counts: the store interface and
                   its memory implementation; redisgrants.py the shared one
    openapi.py     this server's OpenAPI document (CAMARA r3.2, API 2.1.0)
    privacy.py     /me: who received my identity, and the opt-out forms
    optout.py      opt-outs written to the [profiles] store every instance reads

`numberverify_routes()` is what `linewarden serve` mounts (docs/numberverify.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from ..bindings import BindingStore
from ..bindings.profiles import ProfiledStore
from ..claims import Secrets
from ..ledger import Recorder
from ..policy.model import Policy
from .api import NumberVerification, api_routes, oauth_routes
from .grants import GrantStore, MemoryGrants
from .optout import OptOuts
from .privacy import PrivacyPage, privacy_routes

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["NumberVerification", "PrivacyPage", "numberverify_routes", "open_grants"]


def open_grants(config: Config) -> GrantStore:
    """Where codes and tokens live: the `[store]` the bindings use (Redis: shared by every
    instance; memory: this process)."""
    section = config.model.store
    if section.url.startswith("memory://"):
        return MemoryGrants()
    from .redisgrants import RedisGrants

    return RedisGrants(section.url, prefix=section.prefix)


def numberverify_routes(config: Config, store: BindingStore, recorder: Recorder,
                        policy: Callable[[], Policy],
                        switch_tripped: Callable[[], bool],
                        secrets: Secrets) -> list[BaseRoute]:
    """The OIDC, Number Verification and /me routes of one gateway. `recorder` is the
    gateway's (the ledger, once serve opens it); `policy` reads the live rules; `secrets`
    the running gateway's (its signer follows key rotation)."""
    from ..ledger.api import AuditSource

    optouts = OptOuts(store.book) if isinstance(store, ProfiledStore) else None
    section = config.model.numberverify
    nv = NumberVerification(policy, store, recorder, secrets,
                            switch_tripped=switch_tripped, optouts=optouts,
                            grants=open_grants(config), issuer=section.issuer,
                            rate_limit=section.rate_limit)
    page = PrivacyPage(nv, AuditSource.from_config(config))
    return [*oauth_routes(nv), *api_routes(nv), *privacy_routes(page)]
