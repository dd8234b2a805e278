"""From the config to running parts: the store `[store] url` names (with `[profiles]`
joined to its reads) and the RADIUS listener `[radius]` asks for."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ..sourcemap import ConfigError
from . import BindingStore
from .memory import MemoryStore
from .profiles import ProfileBook, ProfiledStore, ProfileError, create_empty
from .radius import RadiusListener, listener_settings
from .redis import RedisStore

if TYPE_CHECKING:
    from ..config import Config


def open_store(config: Config) -> BindingStore:
    """Not started yet: the caller awaits `store.start()` in its event loop."""
    section = config.model.store
    store: BindingStore
    if section.url.startswith("memory://"):
        store = MemoryStore()
    else:
        store = RedisStore(section.url, prefix=section.prefix, cache_ttl=section.cache_ttl,
                           replicas=section.replicas, replica_timeout=section.replica_timeout,
                           static=config.bindings())
    profiles = config.model.profiles
    if profiles is None:
        return store
    path = config.resolve_path(profiles.file)
    try:
        if profiles.create:
            create_empty(path, profiles.table)
        book = ProfileBook(path, profiles.table)
    except (ProfileError, OSError, sqlite3.Error) as exc:
        raise ConfigError(config.path, None, f"[profiles] {exc}",
                          "fix the file or the [profiles] file setting") from None
    return ProfiledStore(store, book, profiles.reload_interval)


class StoreCollector(Collector):
    """`linewarden_store_incarnation_changes_total`: how often the shared store came back as
    another Redis process (restart, failover) — each time, identity pauses for every
    subscriber until their next accounting (docs/bindings.md)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "linewarden_store_incarnation_changes",
            "Times the binding store turned out to be another Redis process (restart, "
            "failover): bindings written before were unconfirmed",
            value=self.store.incarnation_changes)


def register_store_metrics(store: BindingStore, registry: CollectorRegistry) -> None:
    inner = store.inner if isinstance(store, ProfiledStore) else store
    if isinstance(inner, RedisStore):
        registry.register(StoreCollector(inner))


def radius_listener(config: Config, store: BindingStore,
                    registry: CollectorRegistry | None = None) -> RadiusListener | None:
    """None without a [radius] section. Not started yet: await `listener.start()`."""
    from ..hostport import listener_address

    section = config.model.radius
    if section is None:
        return None
    try:
        secrets = section.client_secrets(config.base)
    except ValueError as exc:
        raise ConfigError(config.path, None, str(exc)) from None
    if not secrets:
        raise ConfigError(config.path, None, "[radius] has no clients",
                          "add [[radius.clients]] address = \"<NAS address>\"")
    settings = listener_settings(listener_address(section.listen), b"", secrets,
                                 section.binding_ttl())
    return RadiusListener(settings, store, registry=registry)
