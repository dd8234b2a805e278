"""Client address -> subscriber. The `Binding` is plain data the decision core reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import phonenumbers


@dataclass(frozen=True, slots=True)
class Binding:
    ip: str
    msisdn: str  # E.164 digits without '+', as RADIUS Calling-Station-Id carries it
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    session_id: str = ""
    source: str = "static"  # "static", "admin", or the NAS address that created it
    expires_at: float | None = None  # epoch seconds; None never expires (static bindings)

    def live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


class BindingStore(Protocol):
    """What the data plane needs: one lookup per request, and the admin writes.

    A `local` store answers `get()` from memory, without awaiting; a shared store (Redis)
    sets `local = False` and the data plane awaits `lookup()` instead, which must return
    None (fail closed) rather than raise when the backend is unreachable."""

    local: bool

    def get(self, ip: str) -> Binding | None: ...
    async def lookup(self, ip: str) -> Binding | None: ...
    def put(self, binding: Binding) -> None: ...
    def delete(self, ip: str) -> bool: ...
    def count(self) -> int: ...


def is_possible_msisdn(value: str) -> bool:
    """E.164 digits, with or without '+', that phonenumbers deems a possible number."""
    digits = value.removeprefix("+")
    if not digits.isdigit() or not 7 <= len(digits) <= 15:
        return False
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse("+" + digits)))
    except phonenumbers.NumberParseException:
        return False
