"""Beyond header enrichment: CAMARA-style Number Verification and the subscriber's /me page.

    api.py         the routes: /oauth/authorize, /oauth/token, /number-verification/v0/...
    authserver.py  the OAuth 2.0 authorization server (authlib); partners are its clients
    grants.py      codes and single-use access tokens, with their lifetimes
    openapi.py     the published OpenAPI document
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
from ..ledger import Recorder
from ..policy import Policy
from .api import NumberVerification, api_routes, oauth_routes
from .optout import OptOuts
from .privacy import PrivacyPage, privacy_routes

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["NumberVerification", "PrivacyPage", "numberverify_routes"]


def numberverify_routes(config: Config, store: BindingStore, recorder: Recorder,
                        policy: Callable[[], Policy],
                        switch_tripped: Callable[[], bool] = lambda: False
                        ) -> list[BaseRoute]:
    """The OAuth, Number Verification and /me routes of one gateway. `recorder` is the
    gateway's (the ledger, once serve opens it); `policy` reads the live rules."""
    from ..ledger.api import AuditSource

    optouts = OptOuts(store.book) if isinstance(store, ProfiledStore) else None
    nv = NumberVerification(policy, store, recorder, config.ledger_key(),
                            switch_tripped=switch_tripped, optouts=optouts)
    page = PrivacyPage(nv, AuditSource.from_config(config))
    return [*oauth_routes(nv), *api_routes(nv), *privacy_routes(page)]
