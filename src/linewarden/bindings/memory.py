"""In-process bindings: the default store, one dict, no I/O.

Compact enough for a million bindings per instance (target: 250 bytes each, measured by
`bench/radius.py`): the key is the packed address (4 or 16 bytes), the value one `bytes`
record, and a `Binding` is rebuilt on each lookup (about a microsecond). A dict of frozen
dataclasses with their strings and attribute dicts costs about 500 bytes per binding.
"""

from __future__ import annotations

import math
import socket
import struct
import time
from itertools import islice
from types import MappingProxyType

from mypy_extensions import mypyc_attr

from . import Binding

_EXPIRY = struct.Struct("<d")  # expires_at; NaN for "never"
_SEP = "\0"
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
# An IPv6 client without its own binding is looked up by its /64 (see radius.py).
_V6_LEN = 16
_V6_PREFIX_BYTES = 8
_V6_HOST_ZERO = bytes(_V6_LEN - _V6_PREFIX_BYTES)


def address_key(ip: str) -> bytes | None:
    """Packed address; IPv4-mapped IPv6 (::ffff:a.b.c.d) is the IPv4 address."""
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, ip)
    except OSError:
        return None
    return packed[12:] if packed.startswith(_V4_MAPPED) else packed


def prefix64(ip: str) -> str | None:
    """The /64 network address of an IPv6 address; None for IPv4 or junk."""
    key = address_key(ip)
    if key is None or len(key) != _V6_LEN:
        return None
    return _ip_text(key[:_V6_PREFIX_BYTES] + _V6_HOST_ZERO)


def canonical_ip(ip: str) -> str | None:
    """One spelling per address ('0::1' and '::1' are the same key), or None."""
    key = address_key(ip)
    return None if key is None else _ip_text(key)


def _encode(b: Binding) -> bytes:
    fields = [b.msisdn, b.session_id, b.source]
    for name, value in b.attributes.items():
        fields += (name, value)
    if any(_SEP in f for f in fields):
        raise ValueError("binding fields must not contain NUL characters")
    expiry = math.nan if b.expires_at is None else b.expires_at
    return _EXPIRY.pack(expiry) + _SEP.join(fields).encode()


def _decode(ip: str, record: bytes) -> Binding:
    (expiry,) = _EXPIRY.unpack_from(record)
    msisdn, session_id, source, *rest = record[_EXPIRY.size:].decode().split(_SEP)
    attributes = dict(zip(rest[::2], rest[1::2], strict=True)) if rest else {}
    return Binding(ip=ip, msisdn=msisdn, attributes=MappingProxyType(attributes),
                   session_id=session_id, source=source,
                   expires_at=None if math.isnan(expiry) else expiry)


def _ip_text(key: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(key) == 4 else socket.AF_INET6, key)


# Ended sessions remembered (Stop, until the binding would have expired): beyond this many,
# the oldest are forgotten first (a late Interim is seconds late, not hours).
ENDED_MAX = 100_000


@mypyc_attr(allow_interpreted_subclasses=True)  # tests subclass it (a broken store)
class MemoryStore:
    local = True

    # Decoded bindings of recently seen addresses. An entry is valid only while the store
    # still holds the very same record object, so a write or delete invalidates it for free.
    _DECODED_MAX = 65536

    def __init__(self, *, ended_max: int = ENDED_MAX) -> None:
        self._ended_max = ended_max  # a parameter, not a patched class constant (mypyc)
        self._by_ip: dict[bytes, bytes] = {}
        self._decoded: dict[bytes, tuple[bytes, Binding]] = {}
        self._ended: dict[tuple[str, str], float] = {}  # (source, session) -> until

    # ---- synchronous: the data plane's hot path and start-up loading

    def get(self, ip: str) -> Binding | None:
        key = address_key(ip)
        if key is None:
            return None
        record = self._by_ip.get(key)
        if record is None:
            if len(key) != _V6_LEN:
                return None
            record = self._by_ip.get(key[:_V6_PREFIX_BYTES] + _V6_HOST_ZERO)
            return None if record is None else _decode(ip, record)
        cached = self._decoded.get(key)
        if cached is not None and cached[0] is record and cached[1].ip == ip:
            return cached[1]
        binding = _decode(ip, record)
        if len(self._decoded) >= self._DECODED_MAX:
            self._decoded.clear()
        self._decoded[key] = (record, binding)
        return binding

    def put(self, binding: Binding) -> None:
        key = address_key(binding.ip)
        if key is None:
            raise ValueError(f"'{binding.ip}' is not an IP address")
        self._by_ip[key] = _encode(binding)

    def delete(self, ip: str, session_id: str | None = None) -> bool:
        key = address_key(ip)
        record = self._by_ip.get(key) if key is not None else None
        if key is None or record is None:
            return False
        if session_id is not None and _decode(ip, record).session_id != session_id:
            return False
        del self._by_ip[key]
        return True

    def count(self) -> int:
        return len(self._by_ip)

    # ---- the BindingStore protocol

    async def lookup(self, ip: str) -> Binding | None:
        return self.get(ip)

    async def write(self, binding: Binding) -> None:
        self.put(binding)

    async def refresh(self, binding: Binding) -> bool:
        current = self.get(binding.ip)
        if current is not None and current.session_id != binding.session_id:
            self.delete(binding.ip)
            return False
        if current is None and self._has_ended(binding.source, binding.session_id):
            return True  # the session is over: its late Interim changes nothing
        self.put(binding)
        return True

    async def stop(self, ip: str, session_id: str, source: str, until: float) -> bool:
        if len(self._ended) >= self._ended_max:
            now = time.time()
            self._ended = {k: t for k, t in self._ended.items() if t > now}
            excess = len(self._ended) - self._ended_max // 2  # amortised: trim to half
            for key in list(islice(self._ended, max(0, excess))):
                del self._ended[key]
        self._ended.pop((source, session_id), None)  # re-insert: newest last
        self._ended[(source, session_id)] = until
        return self.delete(ip, session_id)

    def _has_ended(self, source: str, session_id: str) -> bool:
        until = self._ended.get((source, session_id))
        return until is not None and until > time.time()

    async def remove(self, ip: str, session_id: str | None = None) -> bool:
        return self.delete(ip, session_id)

    async def drop_source(self, source: str) -> int:
        """One pass over the dict (about 1 s per million bindings on the bench machine,
        during which the loop waits); Accounting-On/Off only comes when a NAS restarts."""
        needle = source.encode()
        doomed = [key for key, record in self._by_ip.items()
                  if needle in record and _decode("", record).source == source]
        for key in doomed:
            del self._by_ip[key]
        return len(doomed)

    async def listing(self, limit: int) -> list[Binding]:
        return [_decode(_ip_text(key), record)
                for key, record in islice(self._by_ip.items(), limit)]

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
