"""WSGI middleware: only requests with a valid assertion reach the app.

The verified `Claims` are in `environ["linewarden.claims"]`. A bad assertion is answered
401 (503 when the operator's keys cannot be fetched) with `{"error": code, "message": ...}`;
with `required=False` the request passes without claims and the error is in
`environ["linewarden.assertion_error"]`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from .errors import InvalidAssertion
from .verify import (
    DEFAULT_HEADER,
    DEFAULT_LEEWAY,
    DEFAULT_REPLAY_CACHE,
    JWKSource,
    ReplayGuard,
    verify,
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WSGIAssertionMiddleware:
    def __init__(self, app: WSGIApp, *, audience: str, jwks: JWKSource,
                 header: str = DEFAULT_HEADER, issuer: str | None = None,
                 required: bool = True, replay: ReplayGuard | None = DEFAULT_REPLAY_CACHE,
                 leeway: float = DEFAULT_LEEWAY) -> None:
        self.app = app
        self.required = required
        # CGI naming folds '-' and '_' together (X_Operator_Assertion lands here too); that
        # is harmless for a signed value: a smuggled copy still has to verify.
        self._key = "HTTP_" + header.upper().replace("-", "_")
        self._verify = partial(verify, audience=audience, jwks=jwks, issuer=issuer,
                               replay=replay, leeway=leeway)

    def __call__(self, environ: dict[str, Any],
                 start_response: StartResponse) -> Iterable[bytes]:
        try:
            environ["linewarden.claims"] = self._verify(environ.get(self._key))
        except InvalidAssertion as exc:
            if self.required:
                body = json.dumps({"error": exc.code, "message": str(exc)}).encode()
                start_response(f"{exc.status} {_REASONS[exc.status]}",
                               [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store")])
                return [body]
            environ["linewarden.assertion_error"] = exc
        return self.app(environ, start_response)


_REASONS = {401: "Unauthorized", 503: "Service Unavailable"}
