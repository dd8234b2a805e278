"""Admin API for the kill switch and the canary (on the admin listener, like all of /admin).

    GET  /admin/killswitch          state (and the last canary round, if a canary runs)
    POST /admin/killswitch/trip     {"reason": "...", "by": "..."}   both optional: trip at once
    POST /admin/killswitch/clear    {"reason": "...", "by": "..."}   both required: a person
    GET  /admin/canary              the last canary round
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..canary import Canary
from ..killswitch import KillSwitch, KillSwitchError
from .admin import json_body, problem

_NO_STORE = {"Cache-Control": "no-store"}


async def _body(request: Request) -> dict[str, Any] | JSONResponse:
    body = await json_body(request)
    if isinstance(body, JSONResponse):
        return body
    if not all(isinstance(body.get(k, ""), str) for k in ("reason", "by")):
        return problem(400, 'body must be a JSON object: {"reason": "...", "by": "..."}')
    return body


def killswitch_routes(switch: KillSwitch,
                      canary: Canary | None = None) -> list[Route]:
    def state() -> dict[str, Any]:
        doc = switch.status()
        if canary is not None:
            doc["canary"] = canary.last.to_json() if canary.last else None
        return doc

    async def status(request: Request) -> Response:
        return JSONResponse(state(), headers=_NO_STORE)

    async def trip(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        client = request.client.host if request.client else "admin socket"
        try:
            await switch.trip(body.get("reason") or "tripped through the admin API, no reason "
                              "given", body.get("by") or f"admin API ({client})")
        except KillSwitchError as exc:
            return problem(400, str(exc))
        return JSONResponse(state(), headers=_NO_STORE)

    async def clear(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            await switch.clear(body.get("reason", ""), body.get("by", ""))
        except KillSwitchError as exc:
            return problem(400, str(exc))
        return JSONResponse(state(), headers=_NO_STORE)

    async def last_round(request: Request) -> Response:
        if canary is None:
            return problem(404, "no canary runs here (no [canary] section in the config)")
        if canary.last is None:
            return problem(404, "the canary has not finished a round yet")
        return JSONResponse(canary.last.to_json(), headers=_NO_STORE)

    return [
        Route("/admin/killswitch", status, methods=["GET"]),
        Route("/admin/killswitch/trip", trip, methods=["POST"]),
        Route("/admin/killswitch/clear", clear, methods=["POST"]),
        Route("/admin/canary", last_round, methods=["GET"]),
    ]
