"""The admin API: bindings, policy reload. Loopback-only unless `[web] admin_token` is set.

It never returns a subscriber's number: writes are acknowledged by IP address only.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..bindings import Binding, BindingStore, is_possible_msisdn

# Admin bodies are tiny JSON objects; anything bigger is a mistake or an attack.
MAX_ADMIN_BODY = 16 * 1024

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class AdminContext:
    store: BindingStore
    reload: Callable[[], tuple[bool, str]]  # -> (ok, policy version or lint message)
    token: str = ""


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def guarded(ctx: AdminContext, handler: Handler) -> Handler:
    """Bearer token when configured; otherwise only a loopback client may call."""
    async def endpoint(request: Request) -> Response:
        if ctx.token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {ctx.token}".encode()):
                return _problem(401, "admin API needs 'Authorization: Bearer <admin_token>'")
        elif not _is_loopback(request):
            return _problem(403, "admin API is reachable from loopback only "
                                 "(set [web] admin_token to allow remote calls)")
        return await handler(request)
    return endpoint


async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
    raw = await request.body()
    if len(raw) > MAX_ADMIN_BODY:
        return _problem(413, "request body too large")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return _problem(400, "body must be a JSON object")
    if not isinstance(body, dict):
        return _problem(400, "body must be a JSON object")
    return body


def admin_routes(ctx: AdminContext) -> list[Route]:
    async def put_binding(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        ip, msisdn, attributes = body.get("ip"), body.get("msisdn"), body.get("attributes", {})
        try:
            ip = str(ipaddress.ip_address(str(ip)))
        except ValueError:
            return _problem(400, "'ip' must be an IPv4 or IPv6 address")
        if not isinstance(msisdn, str) or not is_possible_msisdn(msisdn):
            return _problem(400, "'msisdn' must be an E.164 number such as 447400900123")
        if not isinstance(attributes, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
            return _problem(400, "'attributes' must map strings to strings")
        ctx.store.put(Binding(ip=ip, msisdn=msisdn.lstrip("+"), attributes=attributes,
                              source="admin"))
        return JSONResponse({"ip": ip, "bound": True}, status_code=201)

    async def delete_binding(request: Request) -> Response:
        ip = request.path_params.get("ip") or request.query_params.get("ip", "")
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            return _problem(400, "give the binding's address: DELETE /admin/bindings/<ip>")
        if not ctx.store.delete(ip):
            return _problem(404, f"no binding for {ip}")
        return Response(status_code=204)

    async def reload(request: Request) -> Response:
        ok, message = ctx.reload()
        if not ok:
            return _problem(422, message)
        return JSONResponse({"reloaded": True, "policy_version": message})

    return [
        Route("/admin/bindings", guarded(ctx, put_binding), methods=["POST"]),
        Route("/admin/bindings", guarded(ctx, delete_binding), methods=["DELETE"]),
        Route("/admin/bindings/{ip}", guarded(ctx, delete_binding), methods=["DELETE"]),
        Route("/admin/reload", guarded(ctx, reload), methods=["POST"]),
    ]
