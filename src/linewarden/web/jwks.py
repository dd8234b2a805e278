"""`/.well-known/jwks.json`: the public keys partners verify assertions with (RFC 7517).

Published: the active key and every retired key whose assertions may still be valid
(`KeyRing.published`). Cacheable for `JWKS_MAX_AGE`; a partner meeting an unknown `kid`
refetches at once (linewarden.partner.JWKSFetcher does), so rotation never waits for caches.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..assertion import MAX_TTL, Signer

JWKS_PATH = "/.well-known/jwks.json"
JWKS_MAX_AGE = MAX_TTL  # as long as one assertion lives: removed keys vanish soon after
JWKS_MEDIA_TYPE = "application/jwk-set+json"  # RFC 7517 §8.5.1


def jwks_routes(signer: Signer | None, *,
                clock: Callable[[], float] = time.time) -> list[BaseRoute]:
    if signer is None:
        return []

    async def jwks(request: Request) -> Response:
        body = json.dumps(signer.ring.jwks(clock()), separators=(",", ":")).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE}", "ETag": etag,
                   "Access-Control-Allow-Origin": "*"}  # public keys: any page may read
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=JWKS_MEDIA_TYPE, headers=headers)

    return [Route(JWKS_PATH, jwks, methods=["GET", "HEAD"])]
