"""The kill switch and the canary that trips it, as one part of `linewarden serve`.

`serve.py` builds a `LeakGuard` before the gateway (so the persisted switch state is read
before the first request), passes `switch.tripped` to the data plane, mounts `routes()`,
and calls `open()` / `start()` / `close()` around the listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.routing import BaseRoute

from .alerts import Alerter
from .bindings import BindingStore
from .canary import CONTROL_HOST, Canary, canary_settings
from .config import Config
from .decide import Rules
from .hostport import connect_address
from .killswitch import KillSwitch
from .metrics import Metrics
from .testing.leak_drill import FAULTS_ENV, FAULTS_VALUE, fault_routes
from .testing.leak_drill import enabled as faults_enabled
from .web.killswitch import killswitch_routes

log = logging.getLogger("linewarden.leakguard")


class LeakGuard:
    def __init__(self, config: Config, metrics: Metrics, store: BindingStore,
                 rules: Callable[[], Rules]) -> None:
        self.config = config
        store_url = config.model.store.url
        self.switch = KillSwitch(config.state_dir, metrics=metrics,
                                 redis_url=store_url if store_url.startswith("redis") else "",
                                 instance=config.proxy.instance_id)
        self.alerter = Alerter(webhook=config.model.canary.webhook if config.model.canary
                               else "", metrics=metrics, instance=config.proxy.instance_id)
        self.store = store
        self.canary: Canary | None = None
        if config.model.canary is not None:
            self.canary = Canary(canary_settings(config), rules, switch=self.switch,
                                 alerter=self.alerter, metrics=metrics)
        metrics.test_faults_enabled.set(1 if faults_enabled() else 0)

    def resolve(self, resolve: dict[str, str]) -> dict[str, str]:
        """The proxy's resolve map, plus the canary's default control host -> our checker."""
        if self.canary is None or CONTROL_HOST in resolve:
            return resolve
        host, port = connect_address(self.config.web.listen)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return {**resolve, CONTROL_HOST: target}

    def routes(self, get_rules: Callable[[], Rules],
               set_rules: Callable[[Rules], None]) -> list[BaseRoute]:
        """Admin routes (mounted on the admin listener only)."""
        return [*killswitch_routes(self.switch, self.canary),
                *fault_routes(get_rules, set_rules)]

    async def open(self) -> None:
        """Before the proxy listens (and after the store started): converge the switch with
        the other instances, and put the reserved probe subscriber in the store."""
        await self.switch.open()
        if self.canary is not None:
            await self.store.write(self.canary.settings.probe)
        if faults_enabled():
            log.error("TEST FAULT HOOKS ENABLED (%s=%s): this gateway can be made to leak "
                      "on purpose; never run it like this in production",
                      FAULTS_ENV, FAULTS_VALUE)

    def start(self) -> None:
        """After the proxy and the checker listen: the canary's first round runs now."""
        if self.canary is not None:
            self.canary.start()

    async def close(self) -> None:
        if self.canary is not None:
            await self.canary.stop()
        else:
            await self.alerter.close()
        await self.switch.close()

    def banner_lines(self) -> list[str]:
        lines = []
        if self.switch.tripped:
            lines.append(f"  KILL SWITCH TRIPPED: no identity is disclosed "
                         f"({self.switch.status()['reason']})")
        if self.canary is not None:
            lines.append(f"  canary   every {self.canary.settings.interval:g} s from "
                         f"{self.canary.settings.probe.ip}")
        if faults_enabled():
            lines.append(f"  WARNING  test fault hooks enabled ({FAULTS_ENV}); never in "
                         "production")
        return lines
