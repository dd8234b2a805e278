"""Client address -> subscriber. The `Binding` is plain data the decision core reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

# Profile facts travel to the decision core inside `Binding.attributes` under these keys
# (see profiles.py): "true"/"false", and the partner ids the subscriber opted out of,
# separated by spaces, or "*" for every partner.
AGE_OVER_18 = "age_over_18"
OPT_OUT = "opt_out"
OPT_OUT_ALL = "*"


@dataclass(frozen=True, slots=True)
class Binding:
    ip: str
    msisdn: str  # E.164 digits without '+', as RADIUS Calling-Station-Id carries it
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    session_id: str = ""
    source: str = "static"  # "static", "admin", or the NAS address that created it
    expires_at: float | None = None  # epoch seconds; None never expires (static bindings)
    # False: the store that holds this binding is not the one it was written to (a Redis
    # restarted from an older snapshot, a failover to a replica). Such a binding may be one
    # the NAS has already ended, so it names nobody until accounting confirms it again
    # (docs/bindings.md, "Trusting a shared store").
    confirmed: bool = True

    def live(self, now: float) -> bool:
        """Confirmed and not expired: the only bindings anything may disclose from."""
        return self.confirmed and (self.expires_at is None or now < self.expires_at)

    def opted_out(self, partner_id: str) -> bool:
        """The subscriber refused disclosures to this partner (or to every partner)."""
        value = self.attributes.get(OPT_OUT, "")
        if not value:
            return False
        ids = value.split()
        return OPT_OUT_ALL in ids or partner_id in ids


class BindingStore(Protocol):
    """What the data plane, the RADIUS listener and the admin API need.

    A `local` store answers `get()` from memory, without awaiting; a shared store (Redis)
    sets `local = False` and the data plane awaits `lookup()` instead, which must return
    None (fail closed) rather than raise when the backend is unreachable. Writes raise
    when they could not be stored, so the RADIUS listener leaves the NAS unanswered and
    the NAS retransmits (RFC 2866 §2: no response means "retry")."""

    local: bool

    def get(self, ip: str) -> Binding | None: ...
    async def lookup(self, ip: str) -> Binding | None: ...

    async def write(self, binding: Binding) -> None:
        """Create or replace the binding for `binding.ip` (Start, admin, static)."""
        ...

    async def refresh(self, binding: Binding) -> bool:
        """Interim-Update: refresh the same session, or create it if the address has no
        binding — unless that session has ended (`stop`): a late or retransmitted Interim
        must not bring back a binding whose address may already be someone else's. Another
        session on the address is a conflict: the binding is removed (fail closed) and False
        returned — unless that binding is unconfirmed (`Binding.confirmed`): then it is no
        evidence of anything, and the Interim replaces it."""
        ...

    async def stop(self, ip: str, session_id: str, source: str, until: float) -> bool:
        """Accounting Stop: delete the binding if it is still this session, and remember
        until `until` (epoch seconds) that the session from `source` has ended."""
        ...

    async def remove(self, ip: str, session_id: str | None = None) -> bool:
        """Delete; with `session_id`, only if the binding is still that session (Stop)."""
        ...

    async def drop_source(self, source: str) -> int:
        """Accounting-On/Off: remove every binding this NAS created."""
        ...

    async def listing(self, limit: int) -> list[Binding]:
        """Up to `limit` bindings, for the admin API (order unspecified)."""
        ...

    def count(self) -> int: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...
