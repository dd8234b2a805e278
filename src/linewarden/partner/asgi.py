"""ASGI middleware: only requests with a valid assertion reach the app.

The verified `Claims` are in `scope["state"]["assertion"]` (Starlette:
`request.state.assertion`) and `scope["linewarden.claims"]`. A bad assertion is answered
401 (503 when the operator's keys cannot be fetched) with `{"error": code, "message": ...}`;
with `required=False` the request passes without claims and the error is in
`scope["linewarden.assertion_error"]`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

from .errors import InvalidAssertion, MalformedAssertion
from .jwks import JWKSFetcher
from .verify import (
    DEFAULT_HEADER,
    DEFAULT_LEEWAY,
    DEFAULT_REPLAY_CACHE,
    Claims,
    JWKSource,
    ReplayGuard,
    kid_of,
    verify,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AssertionMiddleware:
    def __init__(self, app: ASGIApp, *, audience: str, jwks: JWKSource,
                 header: str = DEFAULT_HEADER, issuer: str | None = None,
                 required: bool = True, replay: ReplayGuard | None = DEFAULT_REPLAY_CACHE,
                 leeway: float = DEFAULT_LEEWAY) -> None:
        self.app = app
        self.jwks = jwks
        self.required = required
        self._header = header.lower().encode("latin-1")
        self._verify = partial(verify, audience=audience, jwks=jwks, issuer=issuer,
                               replay=replay, leeway=leeway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope["headers"] if k.lower() == self._header]
        try:
            claims = await self._check(values)
        except InvalidAssertion as exc:
            if self.required:
                await _refuse(send, exc)
                return
            scope["linewarden.assertion_error"] = exc
        else:
            scope["linewarden.claims"] = claims
            scope.setdefault("state", {})["assertion"] = claims
        await self.app(scope, receive, send)

    async def _check(self, values: list[bytes]) -> Claims:
        if len(values) > 1:  # which one would the app read? refuse to guess
            raise MalformedAssertion("more than one assertion header")
        value = values[0] if values else None
        if isinstance(self.jwks, JWKSFetcher) and value and \
                self.jwks.would_fetch(kid_of(value)):
            return await asyncio.to_thread(self._verify, value)  # a fetch would block
        return self._verify(value)


async def _refuse(send: Send, exc: InvalidAssertion) -> None:
    body = json.dumps({"error": exc.code, "message": str(exc)}).encode()
    await send({"type": "http.response.start", "status": exc.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
