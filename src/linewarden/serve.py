"""`linewarden serve`: every configured part in one process, on one uvloop event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator

import uvicorn
import uvloop
from starlette.applications import Starlette

from . import tasks
from .bindings.wiring import open_store, radius_listener, register_store_metrics
from .config import Config, ProxySection
from .decide import Rules
from .destinations import DestinationPolicy, parse_networks
from .hostport import listener_address
from .keys import watch_keys
from .leakguard import LeakGuard
from .ledger import Recorder, access_log_from_config, ledger_from_config, signer_from_config
from .ledger.api import audit_routes
from .ledger.writer import LedgerCollector, LedgerWriter
from .listen import bind_error, bind_tcp
from .metrics import Metrics
from .numberverify import numberverify_routes
from .proxy.intercept import InterceptConnection, transparent_socket
from .proxy.proxied import ProxiedConnection, TrustedPeers
from .proxy.server import ClientConnection, Gateway
from .secrets import check_at_start
from .sourcemap import ConfigError, ConfigErrors
from .web.admin import AdminContext
from .web.admin_socket import PeerCredProtocol, open_admin_socket
from .web.app import make_admin_app, make_public_app, make_worker_admin_app
from .web.jwks import jwks_routes
from .wiring import generate_secrets, settings

log = logging.getLogger("linewarden")


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the service owns SIGTERM/SIGINT/SIGHUP


class Service:
    """One process of `serve`. With several workers, worker 0 also runs what must run once
    (RADIUS listener, canary, the public pages, the full admin API); the others run the
    data plane and report their own metrics on their own admin listener
    (`Config.admin_address(worker)`: `admin-wK.sock`, or the admin TCP port + K)."""

    def __init__(self, config: Config, recorder: Recorder | None = None, *,
                 worker: int = 0, workers: int = 1) -> None:
        self.worker, self.workers = worker, workers
        listeners = own_listeners(config, workers)  # before worker > 0 drops [radius]
        if workers > 1:
            # Each worker keeps its own ledger hash chain; the others hear RADIUS through
            # the shared store and the canary's probes through the shared port.
            config.model.proxy.instance_id = f"{config.proxy.instance_id}-w{worker}"
            if worker > 0:
                config.model.radius = config.model.canary = None
        self.config = config
        self.settings = settings(config)
        self.metrics = Metrics()
        self.store = open_store(config)  # [store] url, with [profiles] joined to reads
        register_store_metrics(self.store, self.metrics.registry)
        self.radius = radius_listener(config, self.store, self.metrics.registry)
        # The disclosure ledger: the proxy adds identity only once its row is committed.
        self._owns_recorder = recorder is None
        self.recorder: Recorder = recorder or ledger_from_config(config,
                                                                 self.settings.secrets)
        if isinstance(self.recorder, LedgerWriter):
            self.metrics.registry.register(LedgerCollector(self.recorder))
        proxy = config.proxy
        # Kill switch state is read here, before the gateway exists (a tripped or unreadable
        # state file holds from the very first request); the canary rounds read live rules.
        self.leakguard = LeakGuard(config, self.metrics, self.store, lambda: self.gateway.rules)
        switch = self.leakguard.switch
        self.gateway = Gateway(
            Rules(config.policy, self.settings), self.store, self.recorder,
            resolve=self.leakguard.resolve(proxy.resolve), connect_timeout=proxy.connect_timeout,
            read_timeout=proxy.read_timeout, header_timeout=proxy.header_timeout,
            idle_timeout=proxy.idle_timeout, tunnel_idle_timeout=proxy.tunnel_idle_timeout,
            metrics=self.metrics,
            destinations=DestinationPolicy(proxy.deny_destinations, proxy.allow_destinations,
                                           listeners),
            switch_tripped=lambda: switch.tripped,
            switch_cause=lambda: switch.cause or "killswitch")
        self.gateway.new_connection = connection_factory(self.gateway, proxy)
        self._stop = asyncio.Event()
        self._servers: list[HttpServer] = []
        self._key_watch: asyncio.Task[None] | None = None

    def reload(self) -> tuple[bool, str]:
        """Re-read the policy; a bad file is refused and the running policy stays."""
        try:
            policy = self.config.reload_policy()
        except (ConfigError, ConfigErrors) as exc:
            self.metrics.count(self.metrics.reloads, "refused")
            log.error("policy reload refused, keeping version %s:\n%s",
                      self.gateway.rules.policy.version, exc)
            return False, str(exc)
        self.gateway.rules = Rules(policy, self.settings)  # one reference swap: atomic
        self.metrics.count(self.metrics.reloads, "ok")
        log.info("policy reloaded: version %s, %d partners", policy.version,
                 len(policy.partners))
        return True, policy.version

    def _reload_all(self) -> tuple[bool, str]:
        """POST /admin/reload: this worker now, and every worker through the supervisor."""
        result = self.reload()
        if result[0] and self.workers > 1:
            os.kill(os.getppid(), signal.SIGHUP)
        return result

    def _set_rules(self, rules: Rules) -> None:
        self.gateway.rules = rules  # the leak drill's seam (testing/leak_drill.py) swaps rules here

    async def run(self) -> None:
        """Start every part, serve until SIGTERM/SIGINT, then stop them in order."""
        # The admin socket first: a second `serve` on the same state_dir stops here, before
        # it touches the proxy port, the store or the ledger.
        self.admin_socket = open_admin_socket(self.config.admin_address(self.worker))
        try:
            await self._start_parts()
            await self._start_web()
        except BaseException:
            self.admin_socket.remove()
            raise
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signalled, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.worker == 0:
            self._banner()
        # The banner is for the person at the terminal; this line is for the service log.
        log.info("started: worker %d of %d, proxy %s, policy %s (%d partners), %d bindings",
                 self.worker, self.workers, self.config.proxy.listen,
                 self.gateway.rules.policy.version, len(self.gateway.rules.policy.partners),
                 self.store.count())
        settle_garbage_collector()
        self.leakguard.start()  # the canary's first round, now that proxy and checker listen
        await self._stop.wait()
        await self._shutdown()

    async def _start_parts(self) -> None:
        """Store, RADIUS, kill switch, ledger writer and the proxy, in dependency order."""
        proxy_host, proxy_port = listener_address(self.config.proxy.listen)
        await self.store.start()
        for binding in self.config.bindings():
            await self.store.write(binding)
        if self.radius is not None:
            await self.radius.start()
        await self.leakguard.open()  # switch converged with other instances; probe binding
        if isinstance(self.recorder, LedgerWriter) and self._owns_recorder:
            await self.recorder.start()
        try:
            sock = None
            if self.config.proxy.mode == "tproxy":
                sock = transparent_socket(proxy_host, proxy_port, reuse_port=self.workers > 1)
            await self.gateway.start(proxy_host, proxy_port, reuse_port=self.workers > 1,
                                     sock=sock)
        except OSError as exc:  # one sentence with the address and the fix (listen.py)
            raise bind_error(exc, proxy_host, proxy_port, "[proxy] listen") from None
        self._key_watch = asyncio.get_running_loop().create_task(
            watch_keys(self.config, self.settings.secrets.signer))

    async def _start_web(self) -> None:
        """The admin listener (every worker: its own metrics at least) and, on worker 0,
        the public pages."""
        token = self.config.admin_token()
        if self.admin_socket.address.path is None and not token:
            raise ValueError("[admin] listen is TCP and no admin_token is set")  # config.py
        if self.worker > 0:
            admin_app = make_worker_admin_app(self.metrics, self.store.count, token)
        else:
            ctx = AdminContext(self.store, self._reload_all,
                               access=access_log_from_config(self.config))
            admin_app = make_admin_app(self.metrics, ctx, token, extra=[
                *self.leakguard.routes(lambda: self.gateway.rules, self._set_rules),
                *audit_routes(self.config)])
        try:
            self._servers.append(await _serve_http(admin_app, sock=self.admin_socket.sock,
                                                   where=str(self.admin_socket.address),
                                                   protocol=PeerCredProtocol))
            if self.worker == 0:
                web_host, web_port = listener_address(self.config.web.listen)
                public = make_public_app(names=self.gateway.rules.names, extra=[
                    *jwks_routes(self.settings.secrets.signer),
                    *numberverify_routes(self.config, self.store, self.recorder,
                                         lambda: self.gateway.rules.policy,
                                         lambda: self.leakguard.switch.tripped,
                                         self.settings.secrets)])
                # Bound here, not by uvicorn: a busy port is one sentence, not its log line.
                sock = bind_tcp(web_host, web_port, "[web] listen")
                self._servers.append(await _serve_http(public, sock=sock,
                                                       where=self.config.web.listen))
        except BaseException:
            await self._stop_web()
            await self.leakguard.close()
            await self._close_parts()
            raise

    def _signalled(self, sig: int) -> None:
        """The first SIGTERM/SIGINT drains; a second one exits at once (what was committed
        stays committed; what was in flight is cut)."""
        if self._stop.is_set():
            log.warning("%s again: exiting now, without waiting for the drain",
                        signal.Signals(sig).name)
            self.admin_socket.remove()
            logging.shutdown()
            os._exit(128 + sig)
        log.info("%s received: stopping", signal.Signals(sig).name)
        self._stop.set()

    async def _shutdown(self) -> None:
        """Stop in order: the canary, the proxy (drained), the listeners' accepting, the
        parts (the ledger flushes its queue), the store."""
        await self.leakguard.close()  # no canary round against a proxy that is closing
        await self._drain()
        for server, _task in self._servers:
            server.should_exit = True
        await self._close_parts()
        await self._stop_web()
        self.admin_socket.remove()
        await self.store.close()
        log.info("stopped")

    async def _drain(self) -> None:
        timeout = self.config.proxy.drain_timeout
        in_flight = sum(c.in_flight() for c in self.gateway.connections)
        log.info("stopping: no new connections; %d requests in flight get up to %.0f s to "
                 "finish (a second signal exits at once)", in_flight, timeout)
        finished, cut = await self.gateway.drain(timeout)
        log.info("drained: %d requests finished, %d cut", finished, cut)

    async def _stop_web(self) -> None:
        for server, _task in self._servers:
            server.should_exit = True
        for _server, task in self._servers:
            await task

    async def _close_parts(self) -> None:
        await tasks.stop([self._key_watch])
        if self.radius is not None:
            await self.radius.close()
        await self.gateway.close()
        if isinstance(self.recorder, LedgerWriter) and self._owns_recorder:
            await self.recorder.close()  # flushes what the queue still holds

    def _banner(self) -> None:
        proxy, web = self.config.proxy.listen, self.config.web.listen
        partner = next((p for p in self.config.policy.partners), None)
        admin = self.admin_socket.address
        lines = [f"linewarden {self.config.path}: policy {self.gateway.rules.policy.version}, "
                 f"{len(self.config.policy.partners)} partners, "
                 f"{self.store.count()} bindings",
                 f"  proxy    http://{proxy}",
                 f"  checker  http://{web}/"]
        if admin.path is not None:
            lines += [f"  admin    {admin.path} (0600; linewarden bindings|killswitch|reload "
                      "use it)",
                      f"  metrics  curl --unix-socket {admin.path} http://admin/metrics"]
        else:
            lines += [f"  admin    {admin}/admin/ (Bearer [admin] admin_token)",
                      f"  metrics  {admin}/metrics (Bearer [admin] admin_token)"]
        if self.workers > 1:
            lines.append(f"  workers  {self.workers}; worker K's metrics on "
                         f"{self.config.admin_address(1)} (K=1), ...")
        if self.radius is not None:
            lines.append(f"  radius   udp://{self.radius.address[0]}:{self.radius.address[1]}")
        if partner is not None:
            host = next((h for h in partner.hosts if not h.startswith("*.")), partner.hosts[0])
            lines.append(f"  try      curl -x http://{proxy} http://{host}/api/check")
        lines += self.leakguard.banner_lines()
        print("\n".join(lines), flush=True)


def connection_factory(gateway: Gateway, proxy: ProxySection
                       ) -> Callable[[], ClientConnection]:
    """What an accepted proxy connection becomes, by `[proxy] mode` and `trusted_proxies`;
    the plain forward listener keeps the plain class (no per-request cost)."""
    if proxy.mode != "forward":
        tproxy = proxy.mode == "tproxy"
        return lambda: InterceptConnection(gateway, tproxy)
    if proxy.trusted_proxies:
        trusted = TrustedPeers(parse_networks(proxy.trusted_proxies))
        return lambda: ProxiedConnection(gateway, trusted)
    return lambda: ClientConnection(gateway)


def own_listeners(config: Config, workers: int) -> list[tuple[str, int]]:
    """Every address this gateway listens on, every worker's included: the proxy refuses
    them as destinations (destinations.py), whatever allow_destinations says."""
    addresses = [listener_address(config.proxy.listen), listener_address(config.web.listen)]
    # The admin listener on TCP: worker K's is the admin port + K (a Unix socket is no
    # destination the proxy can connect to).
    addresses += [(a.host, a.port) for a in map(config.admin_address, range(workers))
                  if a.path is None]
    if config.model.radius is not None:
        addresses.append(listener_address(config.model.radius.listen))
    out = []
    for host, port in addresses:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            continue  # the listener itself will fail to start, and say why
        out += [(str(info[4][0]), port) for info in infos]
    return out


HttpServer = tuple["_Uvicorn", "asyncio.Task[None]"]


async def _serve_http(app: Starlette, *, where: str, sock: socket.socket | None = None,
                      host: str = "", port: int = 0,
                      protocol: type[asyncio.Protocol] | str = "auto") -> HttpServer:
    """Run `app` with uvicorn on `sock` (already listening) or on host:port; return once
    it accepts connections."""
    server = _Uvicorn(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                     lifespan="off", access_log=False, http=protocol))
    task = asyncio.get_running_loop().create_task(
        server.serve(sockets=[sock] if sock is not None else None))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        with contextlib.suppress(SystemExit):  # uvicorn exits on a bind error
            task.result()
        raise OSError(f"cannot listen on {where}")
    return server, task


def serve(config: Config, workers: int | None = None) -> int:
    """Run `serve`; returns the exit code. Several workers are forked processes."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    workers = workers or config.proxy.workers
    generate_secrets(config)  # once, here, before the workers would race to
    check_at_start(config)  # private state dir; secrets agreed (secrets.py)
    if workers == 1:
        _run_worker(config, 0, 1)
        return 0
    if not config.model.store.url.startswith(("redis://", "rediss://")):
        raise ValueError(f"{workers} workers need a shared store: set [store] url = "
                         "\"redis://...\" so every worker sees the same bindings and kill switch")
    signer_from_config(config)  # the ledger's checkpoint key, once, before the workers
    return _supervise(config, workers)


# CPython's cyclic GC, with its default thresholds, ran a full collection every few hundred
# requests over everything the gateway holds (policy, bindings, caches, the web app): that
# pause was the partner path's whole p99 (36 ms, against 5.6 ms with these thresholds:
# docs/benchmarks.md). Requests make little cyclic garbage, so collect less often, and
# never walk the start-up objects again.
GC_THRESHOLDS = (50_000, 20, 100)


def settle_garbage_collector() -> None:
    """Once start-up is done: collect, move what survives out of the GC's way, and raise
    the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _run_worker(config: Config, worker: int, workers: int) -> None:
    uvloop.install()
    asyncio.run(Service(config, worker=worker, workers=workers).run())


def _supervise(config: Config, workers: int) -> int:
    """Fork the workers, pass signals on, and stop them all if one dies: a gateway that
    silently runs at half capacity is worse than one that stops and is restarted."""
    children: dict[int, int] = {}
    for worker in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run_worker(config, worker, workers)
            except BaseException:  # the worker's own error is already logged
                log.exception("worker %d failed", worker)
                code = 1
            os._exit(code)
        children[pid] = worker
    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or sig != signal.SIGHUP
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    failed = False
    while children:
        pid, status = os.wait()
        worker = children.pop(pid, -1)
        if worker < 0 or stopping:
            continue
        log.error("worker %d exited (status %d); stopping the others", worker, status)
        failed = stopping = True
        for other in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(other, signal.SIGTERM)
    return 1 if failed else 0
