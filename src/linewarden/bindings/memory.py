"""In-process bindings: the default store, one dict, no I/O."""

from __future__ import annotations

from . import Binding


class MemoryStore:
    local = True

    def __init__(self) -> None:
        self._by_ip: dict[str, Binding] = {}

    def get(self, ip: str) -> Binding | None:
        return self._by_ip.get(ip)

    async def lookup(self, ip: str) -> Binding | None:
        return self._by_ip.get(ip)

    def put(self, binding: Binding) -> None:
        self._by_ip[binding.ip] = binding

    def delete(self, ip: str) -> bool:
        return self._by_ip.pop(ip, None) is not None

    def count(self) -> int:
        return len(self._by_ip)
