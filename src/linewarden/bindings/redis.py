"""Bindings shared through Redis, so many gateways and many RADIUS listeners see one view.

Layout (standalone Redis or Sentinel; the scripts touch keys they compute, so not Cluster):

    {prefix}b:{ip}        hash m (msisdn) s (session) n (source) e (expires_at) a (json);
                          PEXPIRE = the binding's remaining life, so Redis forgets it too
    {prefix}nas:{source}  sorted set ip -> expires_at (+inf for static/admin): what an
                          Accounting-On/Off of that NAS must drop
    {prefix}sources       set of sources with an index
    {prefix}ended:{source}|{session}
                          "1" for one TTL after that session's Stop: its late Interim
                          must not recreate the binding
    {prefix}changed       pub/sub channel: an address (or "*") whose binding changed

Every write is one Lua script, so a Stop's compare-and-delete and a Start's replace are
atomic against every other gateway and listener.

Staleness bound. A gateway may answer lookups from a local cache, but an entry is used
only until `cache_ttl` seconds (default 1 s) after the Redis read that filled it was
*sent*, so no gateway serves a binding that Redis deleted or replaced more than `cache_ttl`
ago. Invalidations on `{prefix}changed` usually end it within milliseconds; if the
subscription is down, the time bound alone still holds. A read that crosses an
invalidation is not cached at all. `cache_ttl = 0` disables the cache.

Incarnations. Redis acknowledges a write before it is on disk or on a replica (unless
configured otherwise), so a Redis restarted from an older snapshot, or a replica promoted
after missing the last writes, can hold a binding that accounting had already ended —
and a gateway would disclose the old subscriber's identity on the address's new owner.
So every binding records, in field `i`, the `run_id` of the Redis process that stored it
(read inside the write script: the truth, not what a client believes), and a binding is
`confirmed` only while that is still the `run_id` of the Redis the gateway talks to. A
restart or a failover changes `run_id` (a snapshot restores data, never the process id),
so everything written before is unconfirmed — no identity — until a Start or an
Interim-Update writes it again. The gateway learns the current `run_id` on every new
connection (`_on_connect`, before the connection's first command: a new process means a
new connection), from every write's answer, and from the periodic count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .. import tasks
from ..logs import RepeatLimiter
from . import Binding
from .memory import canonical_ip, prefix64

log = logging.getLogger("linewarden.bindings.redis")

DEFAULT_PREFIX = "linewarden:"
# The staleness bound above; the issue asks for 1 s by default.
DEFAULT_CACHE_TTL = 1.0
# A lookup sits on the request path: waiting longer than this for Redis costs more than
# forwarding without identity (fail closed). Loopback round trips are ~0.1 ms.
LOOKUP_TIMEOUT = 0.5
CONNECT_TIMEOUT = 1.0
# Writes are not on a request path: the NAS waits for the answer (its retransmit timer is
# typically 3-5 s), so give a loaded Redis time rather than fail and cause a retry storm.
WRITE_TIMEOUT = 2.0
# Bound on the cache; past it the cache is emptied (cheap, and it refills in `cache_ttl`).
CACHE_MAX_ENTRIES = 200_000
# How often `count()` (a sync call from /metrics) is refreshed, and the index trimmed.
COUNT_REFRESH = 5.0
# Pub/sub reconnect backoff while Redis is away.
RECONNECT_DELAY = 0.5
INVALIDATE_ALL = "*"
# Script calls per pipeline: bounds one round trip's size (and its reply's wait).
PIPELINE_MAX = 256
# `[store] replicas = N`: each pipeline of writes ends with `WAIT N timeout`, so RADIUS
# answers only once N replicas hold the write. The NAS retransmits after 3-5 s, so a
# replica that has not answered within half a second is treated as a failed write.
DEFAULT_REPLICA_TIMEOUT = 0.5
_STORE_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
_RUN_ID = re.compile(r"run_id:([0-9a-f]+)")


class NotDurable(RedisError):
    """Fewer replicas than `[store] replicas` acknowledged a write in time."""

# KEYS: binding, index of its source. ARGV: mode (write|refresh|seed), ip, msisdn,
# session, source, expires_at ("" = never), attributes json, ttl ms (0 = none), score,
# prefix, now. Returns {stored (1) or conflict (0), this Redis's run_id}. A binding written
# to another incarnation (its `i` is not this run_id) is treated as absent: it is no
# evidence of a conflict, and a Start or Interim replaces it (re-confirms it). `seed`
# (the config's static bindings) writes only over an absent or unconfirmed binding.
_WRITE = """
local key, index = KEYS[1], KEYS[2]
local mode, ip, session, source, prefix = ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[10]
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local old = redis.call('HMGET', key, 's', 'n', 'i')
local confirmed = old[1] and old[3] == run
if mode == 'seed' and confirmed then return {1, run} end
if mode == 'refresh' and not confirmed and
    redis.call('EXISTS', prefix .. 'ended:' .. source .. '|' .. session) == 1 then
  return {1, run}  -- the session is over: its late Interim changes nothing
end
local changed = 1
if confirmed and mode == 'refresh' then
  if old[1] ~= session then
    redis.call('DEL', key)
    redis.call('ZREM', prefix .. 'nas:' .. old[2], ip)
    redis.call('PUBLISH', prefix .. 'changed', ip)
    return {0, run}
  end
  changed = 0
end
if old[1] then
  if old[2] ~= source then redis.call('ZREM', prefix .. 'nas:' .. old[2], ip) end
  redis.call('DEL', key)
end
redis.call('HSET', key, 'm', ARGV[3], 's', session, 'n', source, 'e', ARGV[6], 'a', ARGV[7],
           'i', run)
if tonumber(ARGV[8]) > 0 then redis.call('PEXPIRE', key, ARGV[8]) end
redis.call('ZREMRANGEBYSCORE', index, '-inf', ARGV[11])
redis.call('ZADD', index, ARGV[9], ip)
redis.call('SADD', prefix .. 'sources', source)
if changed == 1 then redis.call('PUBLISH', prefix .. 'changed', ip) end
return {1, run}
"""

# KEYS: binding. ARGV: ip, session ("" = any), prefix.
_REMOVE = """
local old = redis.call('HMGET', KEYS[1], 's', 'n')
if not old[1] then return 0 end
if ARGV[2] ~= '' and old[1] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[3] .. 'nas:' .. old[2], ARGV[1])
redis.call('PUBLISH', ARGV[3] .. 'changed', ARGV[1])
return 1
"""

# KEYS: binding, ended-session marker. ARGV: ip, session, prefix, marker ttl ms. Stop:
# remember the session ended (a late Interim must not recreate it), then _REMOVE.
_STOP = """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
""" + _REMOVE

# KEYS: index of the source. ARGV: source, prefix. A binding another NAS has since
# replaced is left alone (its source differs).
_DROP_SOURCE = """
local n = 0
for _, ip in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. 'b:' .. ip
  if redis.call('HGET', key, 'n') == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[2] .. 'sources', ARGV[1])
redis.call('PUBLISH', ARGV[2] .. 'changed', '*')
return n
"""

# ARGV: prefix, now. Trims expired members of every index and counts the rest; returns
# {count, this Redis's run_id}.
_COUNT = """
local total = 0
for _, source in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'sources')) do
  local index = ARGV[1] .. 'nas:' .. source
  redis.call('ZREMRANGEBYSCORE', index, '-inf', ARGV[2])
  local n = redis.call('ZCARD', index)
  if n == 0 then redis.call('SREM', ARGV[1] .. 'sources', source) end
  total = total + n
end
return {total, string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')}
"""

_FIELDS = ["m", "s", "n", "e", "a", "i"]


def safe_location(url: str) -> str:
    """host:port/db for logs: never the password in the URL."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"


class RedisStore:
    local = False

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX,
                 cache_ttl: float = DEFAULT_CACHE_TTL, replicas: int = 0,
                 replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
                 static: Sequence[Binding] = ()) -> None:
        """`static`: the config's bindings, written again (over nothing newer) whenever
        Redis turns out to be a new incarnation: no RADIUS would ever re-confirm them."""
        self.url, self.prefix, self.cache_ttl = url, prefix, cache_ttl
        self.replicas, self.replica_timeout = replicas, replica_timeout
        self.static = tuple(static)
        self._where = safe_location(url)
        self._log = RepeatLimiter(log)
        # The run_id of the Redis process this gateway last talked to; None: not yet known,
        # and then no binding is confirmed.
        self.incarnation: str | None = None
        self.incarnation_changes = 0  # after the first one learnt
        self._client: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=LOOKUP_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
            decode_responses=True, redis_connect_func=self._on_connect)
        self._writer: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=WRITE_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
            decode_responses=True, redis_connect_func=self._on_connect)
        self._write = self._writer.register_script(_WRITE)
        self._remove = self._writer.register_script(_REMOVE)
        self._stop = self._writer.register_script(_STOP)
        self._batch: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._drop = self._writer.register_script(_DROP_SOURCE)
        self._count_script = self._client.register_script(_COUNT)
        self._cache: dict[str, tuple[float, Binding | None]] = {}
        self._generation = 0
        self._count = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._reseeding: asyncio.Task[None] | None = None
        self._seed_due = False  # the static bindings wait to be written to a new incarnation
        self._durability_checked = False
        self._healthy = True
        self.subscribed = asyncio.Event()

    # ---- life cycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.cache_ttl > 0:
            self._tasks.append(loop.create_task(self._follow_changes()))
        self._tasks.append(loop.create_task(self._count_forever()))

    async def close(self) -> None:
        if self._flusher is not None:  # writes already queued get their round trip first
            await asyncio.wait([self._flusher], timeout=WRITE_TIMEOUT * 2)
        await tasks.stop([*self._tasks, self._flusher, self._reseeding])
        self._tasks.clear()
        await self._client.aclose()
        await self._writer.aclose()
        self._log.settle()

    # ---- reads

    def get(self, ip: str) -> Binding | None:
        """Only the cache: a shared store is read with `lookup()` (the data plane awaits
        it because `local` is False)."""
        hit = self._cache.get(ip)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def lookup(self, ip: str) -> Binding | None:
        now = time.monotonic()
        hit = self._cache.get(ip)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        try:
            binding = await self._read(ip)
        except _STORE_ERRORS as exc:
            self._unhealthy(exc)
            return None
        self._recovered()
        if self.cache_ttl > 0 and generation == self._generation:
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[ip] = (now + self.cache_ttl, binding)
        return binding

    async def _read(self, ip: str) -> Binding | None:
        canonical = canonical_ip(ip)
        if canonical is None:
            return None
        network = prefix64(canonical)
        if network is None or network == canonical:
            row = await self._client.hmget(self._key(canonical), _FIELDS)
            return _from_hash(ip, row, self.incarnation)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hmget(self._key(canonical), _FIELDS)
            pipe.hmget(self._key(network), _FIELDS)
            exact, prefix = await pipe.execute()
        return (_from_hash(ip, exact, self.incarnation)
                or _from_hash(ip, prefix, self.incarnation))

    def count(self) -> int:
        return self._count

    async def listing(self, limit: int) -> list[Binding]:
        out: list[Binding] = []
        sources = await self._client.smembers(self.prefix + "sources")
        for source in sorted(str(s) for s in sources):
            members = await self._client.zrangebyscore(
                self._index(source), time.time(), "+inf", start=0, num=limit - len(out))
            ips = [str(m) for m in members]
            async with self._client.pipeline(transaction=False) as pipe:
                for ip in ips:
                    pipe.hmget(self._key(ip), _FIELDS)
                rows = await pipe.execute()
            out += [b for ip, row in zip(ips, rows, strict=True)
                    if (b := _from_hash(ip, row, self.incarnation)) is not None]
            if len(out) >= limit:
                break
        return out[:limit]

    # ---- writes (raise on failure: the RADIUS listener then stays silent, the NAS retries)

    async def write(self, binding: Binding) -> None:
        await self._apply("write", binding)

    async def seed(self, binding: Binding) -> None:
        """A static binding: written unless the address has a confirmed binding."""
        await self._apply("seed", binding)

    async def refresh(self, binding: Binding) -> bool:
        return await self._apply("refresh", binding)

    async def remove(self, ip: str, session_id: str | None = None) -> bool:
        canonical = _require_ip(ip)
        done = await self._run(self._remove, [self._key(canonical)],
                               [canonical, session_id or "", self.prefix])
        return bool(done)

    async def stop(self, ip: str, session_id: str, source: str, until: float) -> bool:
        canonical = _require_ip(ip)
        ttl_ms = max(1, math.ceil((until - time.time()) * 1000))
        done = await self._run(
            self._stop, [self._key(canonical), f"{self.prefix}ended:{source}|{session_id}"],
            [canonical, session_id, self.prefix, ttl_ms])
        return bool(done)

    async def drop_source(self, source: str) -> int:
        return int(await self._run(self._drop, [self._index(source)], [source, self.prefix]))

    async def _apply(self, mode: str, b: Binding) -> bool:
        canonical = _require_ip(b.ip)
        now = time.time()
        if b.expires_at is not None and b.expires_at <= now:
            await self.remove(canonical)  # already dead: never store it
            return mode == "write"
        ttl_ms = 0 if b.expires_at is None else max(1, math.ceil((b.expires_at - now) * 1000))
        score = "+inf" if b.expires_at is None else repr(b.expires_at)
        stored, run_id = await self._run(
            self._write, [self._key(canonical), self._index(b.source)],
            [mode, canonical, b.msisdn, b.session_id, b.source,
                  "" if b.expires_at is None else repr(b.expires_at),
                  json.dumps(dict(b.attributes), separators=(",", ":")), ttl_ms, score,
                  self.prefix, repr(now)])
        self._seen_incarnation(str(run_id))
        return bool(stored)

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """One script call. The calls made while a pipeline is in flight go together in the
        next one: under an accounting burst one round trip carries many writes, and
        redis-py's per-command overhead (most of a write's CPU) is paid once per batch."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((script, keys, args, future))
        if self._flusher is None or self._flusher.done():
            # The flush empties the batch and ends without yielding in between, so a call
            # that finds it running is in its next round. (The loop holds tasks weakly.)
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]] = []
        try:
            while self._batch:
                batch, self._batch = self._batch[:PIPELINE_MAX], self._batch[PIPELINE_MAX:]
                try:
                    results = await self._pipeline(batch)
                except RedisConnectionError:
                    # Every script is idempotent (replace, compare-and-refresh,
                    # compare-and-delete): one retry on a connection Redis closed (e.g.
                    # after a restart) is safe.
                    try:
                        results = await self._pipeline(batch)
                    except Exception as exc:
                        results = [exc] * len(batch)
                except Exception as exc:
                    results = [exc] * len(batch)
                for (*_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except asyncio.CancelledError:
            for *_, future in [*batch, *self._batch]:
                future.cancel()
            self._batch = []
            raise

    async def _pipeline(self, batch: list[tuple[AsyncScript, list[str], list[Any],
                                                 asyncio.Future[Any]]]) -> list[Any]:
        async with self._writer.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                await script(keys=keys, args=args, client=pipe)
            if self.replicas:
                pipe.execute_command("WAIT", self.replicas,
                                     max(1, round(self.replica_timeout * 1000)))
            results = list(await pipe.execute(raise_on_error=False))
        if self.replicas:
            acked = results.pop()
            if not isinstance(acked, int) or acked < self.replicas:
                # Stored on the primary, not yet durable: no answer, the NAS retries (and
                # every script is idempotent).
                raise NotDurable(f"{acked} of {self.replicas} replicas acknowledged within "
                                 f"{self.replica_timeout} s ([store] replicas)")
        return results

    # ---- incarnations (see the module docstring)

    async def _on_connect(self, conn: Any) -> None:
        """redis-py's hook for every new connection, before its first command."""
        await conn.on_connect()
        await conn.send_command("INFO", "server")
        match = _RUN_ID.search(str(await conn.read_response()))
        if match is None:
            raise RedisError("INFO server carries no run_id")
        self._seen_incarnation(match.group(1))

    def _seen_incarnation(self, run_id: str) -> None:
        if run_id == self.incarnation:
            return
        previous, self.incarnation = self.incarnation, run_id
        self.invalidate(INVALIDATE_ALL)  # nothing cached may outlive the change
        if previous is None:
            return
        self.incarnation_changes += 1
        self._log.warning("redis at %s is a new incarnation (restart or failover: its run_id "
                          "changed); bindings written before are unconfirmed, no identity, "
                          "until accounting writes them again", self._where)
        self._seed_due = bool(self.static)
        self._reseed_soon()

    def _reseed_soon(self) -> None:
        if self._seed_due and (self._reseeding is None or self._reseeding.done()):
            self._reseeding = asyncio.get_running_loop().create_task(self._reseed())

    async def _reseed(self) -> None:
        try:
            await asyncio.gather(*(self.seed(b) for b in self.static))
            self._seed_due = False
        except Exception as exc:  # the periodic count tries again
            self._log.error("redis at %s: static bindings not written again yet (%s)",
                            self._where, type(exc).__name__)

    async def _check_durability(self) -> None:
        """Once Redis answers: say plainly when an acknowledged Stop can be lost."""
        self._durability_checked = True
        if self.replicas:
            return
        try:
            found = await self._writer.config_get("append*")
        except RedisError as exc:
            log.warning("redis at %s: cannot read its persistence settings (CONFIG GET: %s); "
                        "if it can lose acknowledged writes, identity pauses after a restart "
                        "until each subscriber's next Interim-Update (docs/bindings.md)",
                        self._where, type(exc).__name__)
            return
        appendonly, fsync = found.get("appendonly"), found.get("appendfsync")
        if appendonly != "yes" or fsync != "always":
            log.warning("redis at %s: appendonly=%s appendfsync=%s, and [store] replicas = 0: "
                        "an acknowledged Start or Stop can be lost in a crash. Bindings "
                        "written before a restart are then distrusted (no identity until the "
                        "next Interim-Update). fix: 'appendonly yes' and 'appendfsync always' "
                        "in redis.conf, or [store] replicas = N with replicas",
                        self._where, appendonly, fsync)

    # ---- cache invalidation and housekeeping

    def invalidate(self, ip: str) -> None:
        self._generation += 1
        if ip == INVALIDATE_ALL:
            self._cache.clear()
        else:
            self._cache.pop(ip, None)

    async def _follow_changes(self) -> None:
        channel = self.prefix + "changed"
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self.invalidate(INVALIDATE_ALL)  # whatever we missed while away
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.invalidate(str(message["data"]))
            except _STORE_ERRORS as exc:
                self.subscribed.clear()
                self._unhealthy(exc)
            finally:
                with contextlib.suppress(*_STORE_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RECONNECT_DELAY)

    async def _count_forever(self) -> None:
        while True:
            try:
                count, run_id = await self._count_script(args=[self.prefix, time.time()])
                self._count = int(count)
                self._seen_incarnation(str(run_id))
                self._reseed_soon()
                self._recovered()
                if not self._durability_checked:
                    await self._check_durability()
            except _STORE_ERRORS as exc:
                self._unhealthy(exc)
            await asyncio.sleep(COUNT_REFRESH)

    def _unhealthy(self, exc: BaseException) -> None:
        if self._healthy:
            self._healthy = False
            self._log.error("redis at %s unreachable (%s): lookups fail closed (no identity) "
                            "and accounting stays unanswered until it returns", self._where,
                            type(exc).__name__)

    def _recovered(self) -> None:
        if not self._healthy:
            self._healthy = True
            self._log.warning("redis at %s reachable again", self._where)

    def _key(self, ip: str) -> str:
        return f"{self.prefix}b:{ip}"

    def _index(self, source: str) -> str:
        return f"{self.prefix}nas:{source}"


def _require_ip(ip: str) -> str:
    canonical = canonical_ip(ip)
    if canonical is None:
        raise ValueError(f"'{ip}' is not an IP address")
    return canonical


def _from_hash(ip: str, values: list[Any], incarnation: str | None) -> Binding | None:
    msisdn, session_id, source, expires, attributes, written_to = values
    if msisdn is None:
        return None
    return Binding(ip=ip, msisdn=str(msisdn), session_id=str(session_id or ""),
                   source=str(source or ""),
                   attributes=MappingProxyType(json.loads(attributes or "{}")),
                   expires_at=float(expires) if expires else None,
                   confirmed=incarnation is not None and written_to == incarnation)
