"""The web side of one gateway: checker page, JSON API, metrics, admin API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..metrics import Metrics
from ..names import IdentityNames
from .admin import AdminContext, admin_routes
from .checker import checker_routes


def prometheus_endpoint(metrics: Metrics, count_bindings: Callable[[], int]
                        ) -> Callable[[Request], Awaitable[Response]]:
    async def prometheus(request: Request) -> Response:
        metrics.bindings.set(count_bindings())
        metrics.flush()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
    return prometheus


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n", headers={"Cache-Control": "no-store"})


def make_worker_app(metrics: Metrics, count_bindings: Callable[[], int]) -> Starlette:
    """What a worker other than the first serves: its own metrics and health."""
    return Starlette(routes=[Route("/metrics", prometheus_endpoint(metrics, count_bindings)),
                             Route("/healthz", healthz)])


def make_app(metrics: Metrics, admin: AdminContext, *, names: IdentityNames,
             regions: tuple[str, ...] = ("GB",), extra: list[BaseRoute] | None = None
             ) -> Starlette:
    routes: list[BaseRoute] = [
        *checker_routes(regions=regions, names=names),
        Route("/metrics", prometheus_endpoint(metrics, admin.store.count)),
        Route("/healthz", healthz),
        *admin_routes(admin),
        *(extra or []),
    ]
    return Starlette(routes=routes)
