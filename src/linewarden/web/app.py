"""The web side of one gateway: checker page, JSON API, metrics, admin API."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..metrics import Metrics
from ..names import IdentityNames
from .admin import AdminContext, admin_routes
from .checker import checker_routes


def make_app(metrics: Metrics, admin: AdminContext, *, names: IdentityNames,
             regions: tuple[str, ...] = ("GB",), extra: list[BaseRoute] | None = None
             ) -> Starlette:
    async def prometheus(request: Request) -> Response:
        metrics.bindings.set(admin.store.count())
        metrics.flush()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n", headers={"Cache-Control": "no-store"})

    routes: list[BaseRoute] = [
        *checker_routes(regions=regions, names=names),
        Route("/metrics", prometheus),
        Route("/healthz", healthz),
        *admin_routes(admin),
        *(extra or []),
    ]
    return Starlette(routes=routes)
