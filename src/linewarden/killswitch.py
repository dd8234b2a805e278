"""The kill switch: while tripped, no request gets any identity claim (stripping continues).

`KillSwitch.tripped` is a plain attribute the data plane reads once per request. Everything
that can change it — a trip, a person's clear, a message from another instance, losing the
shared store — recomputes it in one place (`_settle`).

State lives in three places, each for a reason:
  * memory: the per-request read;
  * `<state_dir>/killswitch.json`: survives a restart. A file that exists but cannot be read
    or parsed means TRIPPED (fail closed); only a person's clear
    replaces it. A running instance also watches it (every `POLL_INTERVAL`) and adopts a
    newer state written there by another process: `linewarden killswitch trip` writes it
    when the admin API cannot be reached;
  * Redis (when `[store] url` is redis://): every instance sharing it converges within 1 s.
    A change is SET and PUBLISHed atomically (one Lua script); subscribers apply
    the message at once, and a poll every `POLL_INTERVAL` catches a lost message or a dropped
    subscription. Conflicts: the record with the later `at` wins, a trip wins a tie.
    While the shared state cannot be confirmed for `UNREACHABLE_AFTER`, this instance
    withholds identity (another instance may have tripped meanwhile) until Redis answers.

Clearing is for people only: `clear()` needs a reason and a name, and is logged with both.
The canary can only trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import tasks
from .filemodes import replace_private
from .metrics import Metrics

log = logging.getLogger("linewarden.killswitch")

STATE_FILE = "killswitch.json"
DEFAULT_KEY = "linewarden:killswitch"  # the Redis key; the channel is KEY + ":changes"

# A trip reaches every instance within 1 s. Pub/sub delivers in milliseconds; the poll is the
# fallback for a lost message, so poll + one Redis round trip must stay under 1 s.
POLL_INTERVAL = 0.25
# One Redis command may take this long before it counts as failed (a healthy local Redis
# answers in well under a millisecond).
REDIS_TIMEOUT = 0.5
# Not having confirmed the shared state for this long means another instance's trip could
# have been missed: withhold identity here until Redis answers again (fail closed).
UNREACHABLE_AFTER = 1.0
# Reasons are free text typed by people; they go to logs and webhooks, which must never
# carry a raw MSISDN (invariant 5). Runs of 7+ digits (with optional '+') are masked.
MAX_REASON_CHARS = 500
_NUMBER_RUN = re.compile(r"\+?\d[\d \-.]{5,}\d")

# Compare-and-set, then publish, in one atomic step on the Redis server. Returns the record
# that won (the stored one when it is newer, else ours).
_SET_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, c = pcall(cjson.decode, cur)
  local n = cjson.decode(ARGV[1])
  if ok and type(c) == 'table' and type(c.at) == 'number' then
    if c.at > n.at or (c.at == n.at and c.tripped and not n.tripped) then
      return cur
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return ARGV[1]
"""


class KillSwitchError(Exception):
    """A refused change (no reason, no name, state not persisted)."""


def mask_numbers(text: str) -> str:
    """Free text safe for logs and webhooks: digit runs that could be a number are masked."""
    return _NUMBER_RUN.sub("[number]", text)[:MAX_REASON_CHARS]


@dataclass(frozen=True, slots=True)
class SwitchState:
    tripped: bool
    reason: str
    by: str  # a person's name, "canary", or "linewarden" (fail-closed start)
    at: float  # epoch seconds of the change; 0.0: never changed
    instance: str  # the gateway instance that made the change

    def wins_over(self, other: SwitchState) -> bool:
        """Last writer wins; at the same instant a trip beats a clear (fail closed)."""
        return (self.at, self.tripped) > (other.at, other.tripped)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> SwitchState:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        tripped, at = data.get("tripped"), data.get("at")
        if not isinstance(tripped, bool) or not isinstance(at, int | float) \
                or not math.isfinite(at):
            raise ValueError("'tripped' must be a boolean and 'at' a number")
        return cls(tripped, str(data.get("reason", "")), str(data.get("by", "")), float(at),
                   str(data.get("instance", "")))


NEVER_TRIPPED = SwitchState(False, "", "", 0.0, "")

Listener = Callable[[SwitchState], None]


class KillSwitch:
    """Read `tripped` per request; `trip()` / `clear()` change it everywhere."""

    def __init__(self, state_dir: Path, *, redis_url: str = "", instance: str = "",
                 key: str = DEFAULT_KEY, metrics: Metrics | None = None,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.path = Path(state_dir) / STATE_FILE
        self.instance = instance or socket.gethostname()
        self.redis_url = redis_url
        self.key, self.channel = key, key + ":changes"
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.listeners: list[Listener] = []
        self.shared_unreachable = False
        self.file_unreadable = ""  # set by _load(): holds this instance tripped
        self.state = self._load()
        self.tripped = False
        self._redis: Any = None  # redis.asyncio.Redis, imported only when configured
        self._tasks: list[asyncio.Task[None]] = []
        self._confirmed_at = 0.0
        self._settle(announce=False)

    # ------------------------------------------------------------ the two changes

    async def trip(self, reason: str, by: str) -> SwitchState:
        """Stop every disclosure now: memory first, then the file, then the other instances."""
        reason, by = mask_numbers(reason.strip()), by.strip()
        if not reason or not by:
            raise KillSwitchError("a trip needs a reason and who is tripping")
        state = SwitchState(True, reason, by, time.time(), self.instance)
        self._adopt(state)
        await self._push(state)
        return self.state

    async def clear(self, reason: str, by: str) -> SwitchState:
        """Resume disclosures. Only a person clears, with a reason; both are logged."""
        reason, by = mask_numbers(reason.strip()), by.strip()
        if not reason:
            raise KillSwitchError("clearing the kill switch needs a reason "
                                  "(what was found and fixed)")
        if not by or by == "canary":
            raise KillSwitchError("clearing the kill switch needs the name of the person "
                                  "clearing it")
        state = SwitchState(False, reason, by, max(time.time(), self.state.at), self.instance)
        try:
            self._write(state)  # a clear that would not survive a restart is refused
        except OSError as exc:
            raise KillSwitchError(f"cannot persist the state to {self.path}: {exc}") from None
        if self.file_unreadable:
            log.warning("kill switch: unreadable state file replaced by %s's clear", by)
            self.file_unreadable = ""
        self._adopt(state, persisted=True)
        self._settle()
        await self._push(state)
        return self.state

    @property
    def cause(self) -> str:
        """Why `tripped`, as the withheld-disclosure metric says it: "killswitch" (tripped,
        or the state file is unreadable), "killswitch_unknown" (only the shared state is
        unconfirmed: Redis is away, and another instance may have tripped), "" (not)."""
        if self.state.tripped or self.file_unreadable:
            return "killswitch"
        return "killswitch_unknown" if self.shared_unreachable else ""

    def status(self) -> dict[str, Any]:
        return {
            "tripped": self.tripped,
            "reason": self.file_unreadable or self.state.reason,
            "by": self.state.by,
            "at": self.state.at or None,
            "changed_on": self.state.instance,
            "instance": self.instance,
            "shared": bool(self.redis_url),
            "shared_unreachable": self.shared_unreachable,
            "state_file_unreadable": bool(self.file_unreadable),
        }

    # ------------------------------------------------------------ persistence

    def _load(self) -> SwitchState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return NEVER_TRIPPED
        except OSError as exc:
            return self._unreadable(f"cannot read {self.path}: {exc.strerror}")
        try:
            return SwitchState.from_json(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._unreadable(f"{self.path} is corrupt: {exc}")

    def _unreadable(self, why: str) -> SwitchState:
        """Tripped on this instance only (its disk is the problem, not the others'), and
        nothing from Redis un-trips it: only a person's clear, which rewrites the file."""
        log.error("kill switch state unreadable, starting TRIPPED (fail closed): %s; "
                  "a person must clear it: linewarden killswitch clear --reason ...", why)
        self.file_unreadable = f"state file unreadable: {why}"
        return NEVER_TRIPPED

    def _write(self, state: SwitchState) -> None:
        write_state(self.path, state)

    # ------------------------------------------------------------ applying a state

    def _adopt(self, state: SwitchState, *, persisted: bool = False) -> None:
        if state == self.state:
            return
        self.state = state
        if not persisted:
            try:
                self._write(state)
            except OSError as exc:
                # A trip still holds in memory; a restart may then come up cleared, so say so.
                log.error("kill switch state not persisted to %s: %s", self.path, exc)
        log.warning(json.dumps({"event": "killswitch",
                                "action": "trip" if state.tripped else "clear",
                                "reason": state.reason, "by": state.by,
                                "changed_on": state.instance, "instance": self.instance}))
        if self.metrics is not None:
            self.metrics.count(self.metrics.killswitch_changes,
                               "trip" if state.tripped else "clear")
        self._settle()

    def _settle(self, *, announce: bool = True) -> None:
        was = self.tripped
        self.tripped = self.state.tripped or self.shared_unreachable or bool(self.file_unreadable)
        if self.metrics is not None:
            self.metrics.killswitch_tripped.set(1 if self.tripped else 0)
            self.metrics.killswitch_shared_unreachable.set(1 if self.shared_unreachable else 0)
        if announce and self.tripped != was:
            for listener in list(self.listeners):
                try:
                    listener(self.state)
                except Exception:
                    log.exception("kill switch listener failed")

    # ------------------------------------------------------------ sharing via Redis

    async def open(self) -> None:
        """Watch the state file; connect to Redis (if configured) and converge before the
        first request."""
        self._tasks = [asyncio.create_task(self._file_loop(), name="killswitch-file")]
        if not self.redis_url:
            return
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(
            self.redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        self._confirmed_at = time.monotonic()
        if not await self._sync():
            self._set_unreachable(True)  # unknown at start: withhold until confirmed
        self._tasks += [asyncio.create_task(self._poll_loop(), name="killswitch-poll"),
                        asyncio.create_task(self._listen_loop(), name="killswitch-listen")]

    async def close(self) -> None:
        await tasks.stop(self._tasks)
        self._tasks = []
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    # ------------------------------------------------------------ the file, from outside

    def _file_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    async def _file_loop(self) -> None:
        """Adopt a newer state another process wrote (our own writes read back equal)."""
        seen = self._file_signature()
        while True:
            await asyncio.sleep(self.poll_interval)
            now = self._file_signature()
            if now == seen or now is None:
                seen = now
                continue
            seen = now
            try:
                state = SwitchState.from_json(self.path.read_bytes())
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                # Memory holds a known state; a bad rewrite is reported, and counts at the
                # next start (unreadable means tripped there).
                log.error("kill switch state file %s changed but cannot be read: %s",
                          self.path, exc)
                continue
            if state.wins_over(self.state):
                self._adopt(state, persisted=True)  # Redis gets it from the next poll

    async def _push(self, state: SwitchState) -> None:
        if self._redis is None:
            return
        try:
            winner = await self._redis.eval(_SET_IF_NEWER, 2, self.key, self.channel,
                                            state.to_json())
        except Exception as exc:
            # The local change holds; the poll pushes it once Redis is back (ours is newer).
            log.error("kill switch change not shared yet (Redis: %s); retrying", exc)
            return
        self._confirmed(SwitchState.from_json(winner))

    async def _sync(self) -> bool:
        """One poll: adopt a newer shared state, or share ours if it is newer."""
        try:
            raw = await self._redis.get(self.key)
        except Exception as exc:
            log.debug("kill switch poll failed: %s", exc)
            return False
        try:
            remote = SwitchState.from_json(raw) if raw is not None else None
        except (ValueError, UnicodeDecodeError):
            remote = None  # a corrupt shared record is overwritten by ours below
            log.error("kill switch record in Redis (%s) is corrupt; replacing it", self.key)
        if remote is None or self.state.wins_over(remote):
            await self._push(self.state)
        else:
            self._confirmed(remote)
        return True

    def _confirmed(self, remote: SwitchState) -> None:
        self._confirmed_at = time.monotonic()
        if remote.wins_over(self.state):
            self._adopt(remote)
        self._set_unreachable(False)

    def _set_unreachable(self, value: bool) -> None:
        if value == self.shared_unreachable:
            return
        self.shared_unreachable = value
        if value:
            log.error("kill switch: shared state in Redis unconfirmed for %.1f s; withholding "
                      "identity on this instance until it answers", UNREACHABLE_AFTER)
        else:
            log.warning("kill switch: shared state reachable again")
        self._settle()

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if not await self._sync() and \
                    time.monotonic() - self._confirmed_at > UNREACHABLE_AFTER:
                self._set_unreachable(True)

    async def _listen_loop(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        try:
                            self._confirmed(SwitchState.from_json(message["data"]))
                        except (ValueError, UnicodeDecodeError):
                            log.error("ignoring a malformed kill switch message")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("kill switch subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(self.poll_interval)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


# ------------------------------------------------------------ without a running gateway

def write_state(path: Path, state: SwitchState) -> None:
    """Atomic replace: a crash mid-write leaves the old file, never half a new one. The
    file is 0600 and a new state dir 0700, whatever the umask (filemodes.py)."""
    replace_private(path, (state.to_json() + "\n").encode())


def share_state(redis_url: str, state: SwitchState, key: str = DEFAULT_KEY) -> SwitchState:
    """SET-if-newer and PUBLISH `state` in Redis, as a running instance would; for the CLI
    when no gateway answers. Returns the record that won. Raises on any Redis error."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT * 4,
                                  socket_connect_timeout=REDIS_TIMEOUT * 4)
    try:
        winner = client.eval(_SET_IF_NEWER, 2, key, key + ":changes", state.to_json())
    finally:
        client.close()
    return SwitchState.from_json(winner)
