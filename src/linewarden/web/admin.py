"""The admin API: bindings, policy reload. Served only on the admin listener (`[admin]
listen`: a 0600 Unix socket by default, TCP with a Bearer token), never on the public port.

Who may call is decided once for the whole admin app by `AdminGuard`, not per route: on
the Unix socket the file mode is the guard; when a token is configured (always, on TCP)
every request must carry it. No peer address is trusted: the proxy connects from the
gateway's own address, so "loopback may call" would let any subscriber in.

Writes are acknowledged by IP address only; reads show the number masked to its last
three digits unless the caller asks with `?reveal=1&reason=...`. A reveal first writes an
access record to the ledger (ledger/access.py: who, when, why, which subscriber key) and
shows nothing if that fails: no record, no reveal.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..bindings import Binding, BindingStore
from ..identifiers import is_possible_msisdn, mask_msisdn
from ..ledger.access import AccessError, AccessLog, AccessNotRecorded, check_reason
from .principal import principal

# Admin bodies are tiny JSON objects; anything bigger is a mistake or an attack.
MAX_ADMIN_BODY = 16 * 1024
# GET /admin/bindings returns at most this many (?limit= lowers it): a listing is for a
# person reading a terminal, not an export of the subscriber base.
MAX_LISTING = 1000

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("linewarden.admin")


@dataclass
class AdminContext:
    store: BindingStore
    reload: Callable[[], tuple[bool, str]]  # -> (ok, policy version or lint message)
    access: AccessLog | None = None  # None: no ledger to record reveals in, so none happen


def problem(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status,
                        headers={"Cache-Control": "no-store", **(headers or {})})


class AdminGuard:
    """ASGI middleware in front of the whole admin app: with a token, every request needs
    `Authorization: Bearer <token>` (compared in constant time); 401 otherwise."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.expected:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                # RFC 6750 §3: a 401 names the scheme the client should use.
                reply = problem(401, "admin API needs 'Authorization: Bearer <admin_token>'",
                                {"WWW-Authenticate": 'Bearer realm="linewarden-admin"'})
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def json_body(request: Request) -> dict[str, Any] | JSONResponse:
    """The request's JSON object, or the 4xx response that says why there is none."""
    raw = await request.body()
    if len(raw) > MAX_ADMIN_BODY:
        return problem(413, "request body too large")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return problem(400, "body must be a JSON object")
    if not isinstance(body, dict):
        return problem(400, "body must be a JSON object")
    return body


def _reveal(request: Request) -> bool:
    return request.query_params.get("reveal", "") in ("1", "true", "yes")


NOT_RECORDED = ("the access could not be recorded in the ledger, so no number is shown (no "
                "record, no reveal); the masked view works without reveal, or try again "
                "once the ledger is back")


async def _record_reveal(ctx: AdminContext, request: Request, action: str,
                         found: list[Binding]) -> JSONResponse | None:
    """Write the access records for revealing `found`; None once they are committed, else
    the response to send instead of the numbers."""
    try:
        reason = check_reason(request.query_params.get("reason"))
    except AccessError as exc:
        return problem(400, str(exc))
    who = principal(request)
    if who is None:
        return problem(403, "this admin connection has no known operator principal, so "
                            "numbers cannot be revealed on it")
    if ctx.access is None:
        return problem(503, NOT_RECORDED)
    try:
        await run_in_threadpool(ctx.access.record, who, action, reason,
                                [b.msisdn for b in found])
    except AccessNotRecorded as exc:
        log.error("reveal refused: %s", exc)  # the exception names no number
        return problem(503, NOT_RECORDED)
    return None


def _binding_json(b: Binding, reveal: bool) -> dict[str, Any]:
    return {"ip": b.ip, "msisdn": b.msisdn if reveal else mask_msisdn(b.msisdn),
            "session_id": b.session_id, "source": b.source, "expires_at": b.expires_at,
            "confirmed": b.confirmed, "attributes": dict(b.attributes)}


def admin_routes(ctx: AdminContext) -> list[Route]:
    async def put_binding(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        ip, msisdn, attributes = body.get("ip"), body.get("msisdn"), body.get("attributes", {})
        try:
            ip = str(ipaddress.ip_address(str(ip)))
        except ValueError:
            return problem(400, "'ip' must be an IPv4 or IPv6 address")
        if not isinstance(msisdn, str) or not is_possible_msisdn(msisdn):
            return problem(400, "'msisdn' must be an E.164 number such as 447400900123")
        if not isinstance(attributes, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
            return problem(400, "'attributes' must map strings to strings")
        await ctx.store.write(Binding(ip=ip, msisdn=msisdn.lstrip("+"),
                                      attributes=attributes, source="admin"))
        return JSONResponse({"ip": ip, "bound": True}, status_code=201)

    async def delete_binding(request: Request) -> Response:
        ip = request.path_params.get("ip") or request.query_params.get("ip", "")
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            return problem(400, "give the binding's address: DELETE /admin/bindings/<ip>")
        if not await ctx.store.remove(ip):
            return problem(404, f"no binding for {ip}")
        return Response(status_code=204)

    async def list_bindings(request: Request) -> Response:
        try:
            limit = min(int(request.query_params.get("limit", MAX_LISTING)), MAX_LISTING)
        except ValueError:
            return problem(400, "'limit' must be a number")
        reveal = _reveal(request)
        found = await ctx.store.listing(max(limit, 0))
        if reveal:
            refused = await _record_reveal(ctx, request, "admin.bindings.list", found)
            if refused is not None:
                return refused
        return JSONResponse({"count": ctx.store.count(),
                             "bindings": [_binding_json(b, reveal) for b in found]},
                            headers={"Cache-Control": "no-store"})

    async def show_binding(request: Request) -> Response:
        ip = request.path_params.get("ip", "")
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            return problem(400, "give the binding's address: GET /admin/bindings/<ip>")
        binding = await ctx.store.lookup(ip)
        if binding is None:
            return problem(404, f"no binding for {ip}")
        reveal = _reveal(request)
        if reveal:
            refused = await _record_reveal(ctx, request, "admin.bindings.show", [binding])
            if refused is not None:
                return refused
        return JSONResponse(_binding_json(binding, reveal),
                            headers={"Cache-Control": "no-store"})

    async def reload(request: Request) -> Response:
        ok, message = ctx.reload()
        if not ok:
            return problem(422, message)
        return JSONResponse({"reloaded": True, "policy_version": message})

    return [
        Route("/admin/bindings", list_bindings, methods=["GET"]),
        Route("/admin/bindings", put_binding, methods=["POST"]),
        Route("/admin/bindings", delete_binding, methods=["DELETE"]),
        Route("/admin/bindings/{ip}", show_binding, methods=["GET"]),
        Route("/admin/bindings/{ip}", delete_binding, methods=["DELETE"]),
        Route("/admin/reload", reload, methods=["POST"]),
    ]
