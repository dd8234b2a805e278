"""The two web apps of one gateway process.

* public (`[web] listen`): the leak checker, `/me`, Number Verification, JWKS, `/healthz`;
  what a subscriber or a partner may reach;
* admin (`[admin] listen`): `/metrics` and `/admin/...`, behind `AdminGuard`. Nothing on the
  public app changes the gateway or lists subscribers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..metrics import Metrics
from ..names import IdentityNames
from .admin import AdminContext, AdminGuard, admin_routes
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


def make_public_app(*, names: IdentityNames, regions: tuple[str, ...] = ("GB",),
                    extra: list[BaseRoute] | None = None) -> Starlette:
    """What `[web] listen` serves: pages for subscribers and partners, nothing else."""
    return Starlette(routes=[*checker_routes(regions=regions, names=names),
                             Route("/healthz", healthz), *(extra or [])])


def make_admin_app(metrics: Metrics, admin: AdminContext, token: str,
                   extra: list[BaseRoute] | None = None) -> Starlette:
    """What `[admin] listen` serves for worker 0: metrics, the admin API, `extra` admin
    routes (kill switch, canary, audit), every one behind the guard."""
    return Starlette(routes=[Route("/metrics", prometheus_endpoint(metrics, admin.store.count)),
                             Route("/healthz", healthz), *admin_routes(admin),
                             *(extra or [])],
                     middleware=[Middleware(AdminGuard, token=token)])


def make_worker_admin_app(metrics: Metrics, count_bindings: Callable[[], int],
                          token: str) -> Starlette:
    """What a worker other than the first serves on its own admin listener: its metrics
    and health."""
    return Starlette(routes=[Route("/metrics", prometheus_endpoint(metrics, count_bindings)),
                             Route("/healthz", healthz)],
                     middleware=[Middleware(AdminGuard, token=token)])
