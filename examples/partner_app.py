"""A partner web site that trusts only the operator's signed assertion.

Run the gateway (`linewarden serve`), then this app, then browse through the gateway:

    python examples/partner_app.py --audience age-partner \\
        --jwks http://127.0.0.1:8080/.well-known/jwks.json --listen 127.0.0.1:9000
    curl -x http://127.0.0.1:3128 http://age.example/      # via the operator: 200 + claims
    curl http://127.0.0.1:9000/                            # directly: 401 {"error":"missing"}

The policy gives this partner an assertion, for example:

    [[partners]]
    id = "age-partner"
    purpose = "age_verification"
    hosts = ["age.example"]
    [partners.headers]
    X-Operator-Assertion = { claim = "assertion", include = ["age_over_18"] }

Everything identity-related is in the middleware: the app reads `request.state.assertion`,
already verified (signature, audience, expiry, replay). It never sees a phone number.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from linewarden.partner import DEFAULT_HEADER, AssertionMiddleware, Claims, JWKSFetcher


async def home(request: Request) -> JSONResponse:
    claims: Claims = request.state.assertion
    return JSONResponse({
        "verified": True,
        "subscriber": claims.sub,  # stable for this partner, meaningless to any other
        "adult": claims.age_over_18,  # None: the operator does not know
        "operator": claims.operator,
        "kid": claims.kid,
        "expires": claims.exp,
    })


def make_app(audience: str, jwks_url: str, *, header: str = DEFAULT_HEADER,
             issuer: str | None = None) -> ASGIApp:
    app = Starlette(routes=[Route("/{path:path}", home)])
    return AssertionMiddleware(app, audience=audience, jwks=JWKSFetcher(jwks_url),
                               header=header, issuer=issuer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audience", required=True, help="this partner's id in the policy")
    parser.add_argument("--jwks", required=True, help="the gateway's /.well-known/jwks.json")
    parser.add_argument("--listen", default="127.0.0.1:9000", help="host:port")
    parser.add_argument("--header", default=DEFAULT_HEADER)
    parser.add_argument("--issuer", default=None, help="expected iss (optional)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    print(f"partner app '{args.audience}' on http://{args.listen}/", flush=True)
    uvicorn.run(make_app(args.audience, args.jwks, header=args.header, issuer=args.issuer),
                host=host, port=int(port), log_level="warning")


if __name__ == "__main__":
    main()
