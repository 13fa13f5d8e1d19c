"""Presence: `online` while a user has any open socket on any server process, `away`
when every one of them says so (`presence:set`), `offline` once the last one closed
and `PARLEY_PRESENCE_GRACE_S` passed without a new one (a page reload does not
flicker). Characters are always online.

State (Redis when REDIS_URL is set, else a dict in this single process):
- per user, a hash: each socket's status (`s:<channel name>`), the status last
  announced and when (`status`, `seen`), when the last socket left (`left`), the name;
- one sorted set of deadlines: per socket `<user>|<channel>` scored by the moment its
  heartbeat runs out, and per user about to go offline `<user>|` scored by the end of
  the grace.
Each process refreshes its own sockets' deadlines every `PARLEY_PRESENCE_HEARTBEAT_S`
and, every `PARLEY_PRESENCE_SWEEP_S`, settles the users with a deadline past: so the
sockets of a process that died go offline by themselves within
`PARLEY_PRESENCE_TTL_S` + one sweep, seen from any live process. Every change of a
user's state is one Lua script (atomic, on Redis's clock), which also decides whether
the user's overall status changed: so exactly one process announces each change.

An announcement is one `presence:update` to every user who shares a conversation with
the user (one query for all of them), through their `user.<id>` groups.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis
import redis.asyncio as aioredis
from django.conf import settings

from characters.selectors import characters_by_slug
from chat import selectors
from chat.broadcast import ausers_send
from chat.db import db_sync_to_async
from chat.events import ConversationOut, PresenceOut, PresenceUpdate, UserRef
from chat.tasks import spawn

if TYPE_CHECKING:
    from chat.consumers import ChatConsumer

logger = logging.getLogger(__name__)

MEMORY_S = 30 * 24 * 3600  # how long a user's last status and last_seen are remembered
SWEEP_BATCH = 1000  # users settled per sweep at most


@dataclass(frozen=True)
class Change:
    """A user's overall status changed: announce it."""

    user_id: int
    name: str
    status: str
    seen: float  # epoch seconds


def _timestamp(seen: float | None) -> datetime | None:
    return None if seen is None else datetime.fromtimestamp(seen, UTC)


# --- Redis


_PRELUDE = """
local hkey, zkey = KEYS[1], KEYS[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

-- Drop the user's sockets whose heartbeat ran out; the overall status of the rest.
local function live(uid, ttl)
  local online, away = 0, 0
  for _, f in ipairs(redis.call('HKEYS', hkey)) do
    if string.sub(f, 1, 2) == 's:' then
      local member = uid .. '|' .. string.sub(f, 3)
      local deadline = tonumber(redis.call('ZSCORE', zkey, member))
      if deadline == nil or deadline <= now then
        redis.call('HDEL', hkey, f)
        redis.call('ZREM', zkey, member)
        local seen = (deadline or now) - ttl
        if seen > tonumber(redis.call('HGET', hkey, 'left') or 0) then
          redis.call('HSET', hkey, 'left', tostring(seen))
        end
      elseif redis.call('HGET', hkey, f) == 'away' then
        away = away + 1
      else
        online = online + 1
      end
    end
  end
  if online > 0 then return 'online' elseif away > 0 then return 'away' end
  return 'offline'
end

-- Record the overall status; {status, seen, name} if it changed, else false.
local function announce(status, seen, memory)
  redis.call('EXPIRE', hkey, memory)
  if redis.call('HGET', hkey, 'status') == status then return false end
  redis.call('HSET', hkey, 'status', status, 'seen', tostring(seen))
  return {status, tostring(seen), redis.call('HGET', hkey, 'name') or ''}
end
"""

# A socket is open with this status. ARGV: user, socket, status, name, ttl, memory
_TOUCH = (
    _PRELUDE
    + """
local uid, ttl = ARGV[1], tonumber(ARGV[5])
redis.call('HSET', hkey, 's:' .. ARGV[2], ARGV[3], 'name', ARGV[4])
redis.call('ZADD', zkey, now + ttl, uid .. '|' .. ARGV[2])
redis.call('ZREM', zkey, uid .. '|')
return announce(live(uid, ttl), now, ARGV[6])
"""
)

# A socket closed. ARGV: user, socket, ttl, grace, memory
_LEAVE = (
    _PRELUDE
    + """
local uid, ttl = ARGV[1], tonumber(ARGV[3])
redis.call('HDEL', hkey, 's:' .. ARGV[2])
redis.call('ZREM', zkey, uid .. '|' .. ARGV[2])
local status = live(uid, ttl)
if status ~= 'offline' then return announce(status, now, ARGV[5]) end
redis.call('HSET', hkey, 'left', tostring(now))
redis.call('EXPIRE', hkey, ARGV[5])
if redis.call('HGET', hkey, 'status') ~= 'offline' then
  redis.call('ZADD', zkey, now + tonumber(ARGV[4]), uid .. '|')
end
return false
"""
)

# A deadline of the user passed (a socket's heartbeat, or the offline grace).
# ARGV: user, ttl, memory
_SETTLE = (
    _PRELUDE
    + """
local uid = ARGV[1]
local status = live(uid, tonumber(ARGV[2]))
if status == 'offline' then
  local due = tonumber(redis.call('ZSCORE', zkey, uid .. '|'))
  if due ~= nil and due > now then return false end
  redis.call('ZREM', zkey, uid .. '|')
  return announce('offline', tonumber(redis.call('HGET', hkey, 'left') or now), ARGV[3])
end
redis.call('ZREM', zkey, uid .. '|')
return announce(status, now, ARGV[3])
"""
)

# Heartbeat of this process's sockets; the indexes of those no longer known (swept).
# KEYS: deadlines, then each socket's user hash. ARGV: ttl, memory, then user, socket...
_REFRESH = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local ttl = tonumber(ARGV[1])
local missing = {}
for i = 2, #KEYS do
  local uid, sock = ARGV[2 * i - 1], ARGV[2 * i]
  if redis.call('HEXISTS', KEYS[i], 's:' .. sock) == 1 then
    redis.call('ZADD', KEYS[1], now + ttl, uid .. '|' .. sock)
    redis.call('EXPIRE', KEYS[i], ARGV[2])
  else
    missing[#missing + 1] = tostring(i - 2)
  end
end
return missing
"""

# Members of the deadline set that are due. KEYS: deadlines. ARGV: limit
_DUE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tostring(now), 'LIMIT', 0, ARGV[1])
"""

_SCRIPTS = {"touch": _TOUCH, "leave": _LEAVE, "settle": _SETTLE, "refresh": _REFRESH, "due": _DUE}


def _change(user_id: int, reply) -> Change | None:
    if not reply:
        return None
    status, seen, name = reply
    return Change(user_id=user_id, name=name, status=status, seen=float(seen))


def _params() -> tuple[float, float]:
    return settings.PARLEY_PRESENCE_TTL_S, settings.PARLEY_PRESENCE_GRACE_S


class RedisStore:
    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.deadlines = f"{prefix}:due"
        self._sync = redis.Redis.from_url(url, decode_responses=True)
        self._async: dict[asyncio.AbstractEventLoop, dict] = {}

    def _user(self, user_id: int) -> str:
        return f"{self.prefix}:u:{user_id}"

    def _scripts(self) -> dict:
        """Scripts bound to this event loop's client (an asyncio client per loop)."""
        loop = asyncio.get_running_loop()
        scripts = self._async.get(loop)
        if scripts is None:
            for old in [lp for lp in self._async if lp.is_closed()]:
                del self._async[old]
            client = aioredis.Redis.from_url(self.url, decode_responses=True)
            scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
            self._async[loop] = scripts
        return scripts

    async def touch(self, *, user_id: int, name: str, socket: str, status: str) -> Change | None:
        ttl, _ = _params()
        reply = await self._scripts()["touch"](
            keys=[self._user(user_id), self.deadlines],
            args=[user_id, socket, status, name, ttl, MEMORY_S],
        )
        return _change(user_id, reply)

    async def leave(self, *, user_id: int, socket: str) -> Change | None:
        ttl, grace = _params()
        reply = await self._scripts()["leave"](
            keys=[self._user(user_id), self.deadlines],
            args=[user_id, socket, ttl, grace, MEMORY_S],
        )
        return _change(user_id, reply)

    async def settle(self, *, user_id: int) -> Change | None:
        ttl, _ = _params()
        reply = await self._scripts()["settle"](
            keys=[self._user(user_id), self.deadlines], args=[user_id, ttl, MEMORY_S]
        )
        return _change(user_id, reply)

    async def refresh(self, sockets: list[tuple[int, str]]) -> list[int]:
        ttl, _ = _params()
        missing: list[int] = []
        for start in range(0, len(sockets), 500):
            chunk = sockets[start : start + 500]
            reply = await self._scripts()["refresh"](
                keys=[self.deadlines, *(self._user(uid) for uid, _ in chunk)],
                args=[ttl, MEMORY_S, *(v for pair in chunk for v in pair)],
            )
            missing += [start + int(i) for i in reply]
        return missing

    async def due(self) -> list[int]:
        members = await self._scripts()["due"](keys=[self.deadlines], args=[SWEEP_BATCH])
        return sorted({int(m.split("|", 1)[0]) for m in members})

    def snapshot(self, user_ids: list[int]) -> dict[int, tuple[str, float | None]]:
        """Synchronous (services run in threads): the announced status of each user."""
        pipe = self._sync.pipeline(transaction=False)
        for uid in user_ids:
            pipe.hmget(self._user(uid), ["status", "seen"])
        found = {}
        for uid, (status, seen) in zip(user_ids, pipe.execute(), strict=True):
            found[uid] = (status or "offline", float(seen) if seen else None)
        return found


# --- One process without Redis (development): the same rules on a dict


@dataclass
class _User:
    name: str = ""
    sockets: dict[str, str] | None = None
    status: str | None = None
    seen: float | None = None
    left: float = 0.0


class LocalStore:
    def __init__(self) -> None:
        self._users: dict[int, _User] = {}
        self._deadlines: dict[tuple[int, str], float] = {}  # socket "" = offline grace
        self._lock = threading.Lock()

    def _live(self, user_id: int, user: _User, now: float, ttl: float) -> str:
        online = away = 0
        for socket, status in list(user.sockets.items()):
            deadline = self._deadlines.get((user_id, socket))
            if deadline is None or deadline <= now:
                del user.sockets[socket]
                self._deadlines.pop((user_id, socket), None)
                user.left = max(user.left, (deadline or now) - ttl)
            elif status == "away":
                away += 1
            else:
                online += 1
        return "online" if online else "away" if away else "offline"

    def _announce(self, user_id: int, user: _User, status: str, seen: float) -> Change | None:
        if user.status == status:
            return None
        user.status, user.seen = status, seen
        return Change(user_id=user_id, name=user.name, status=status, seen=seen)

    def _user(self, user_id: int) -> _User:
        return self._users.setdefault(user_id, _User(sockets={}))

    async def touch(self, *, user_id: int, name: str, socket: str, status: str) -> Change | None:
        ttl, _ = _params()
        now = time.time()
        with self._lock:
            user = self._user(user_id)
            user.name = name
            user.sockets[socket] = status
            self._deadlines[(user_id, socket)] = now + ttl
            self._deadlines.pop((user_id, ""), None)
            return self._announce(user_id, user, self._live(user_id, user, now, ttl), now)

    async def leave(self, *, user_id: int, socket: str) -> Change | None:
        ttl, grace = _params()
        now = time.time()
        with self._lock:
            user = self._user(user_id)
            user.sockets.pop(socket, None)
            self._deadlines.pop((user_id, socket), None)
            status = self._live(user_id, user, now, ttl)
            if status != "offline":
                return self._announce(user_id, user, status, now)
            user.left = now
            if user.status != "offline":
                self._deadlines[(user_id, "")] = now + grace
            return None

    async def settle(self, *, user_id: int) -> Change | None:
        ttl, _ = _params()
        now = time.time()
        with self._lock:
            user = self._user(user_id)
            status = self._live(user_id, user, now, ttl)
            due = self._deadlines.get((user_id, ""))
            if status == "offline" and due is not None and due > now:
                return None
            self._deadlines.pop((user_id, ""), None)
            seen = (user.left or now) if status == "offline" else now
            return self._announce(user_id, user, status, seen)

    async def refresh(self, sockets: list[tuple[int, str]]) -> list[int]:
        ttl, _ = _params()
        now = time.time()
        missing = []
        with self._lock:
            for i, (uid, socket) in enumerate(sockets):
                user = self._users.get(uid)
                if user is None or socket not in user.sockets:
                    missing.append(i)
                else:
                    self._deadlines[(uid, socket)] = now + ttl
        return missing

    async def due(self) -> list[int]:
        now = time.time()
        with self._lock:
            return sorted({uid for (uid, _), at in self._deadlines.items() if at <= now})

    def snapshot(self, user_ids: list[int]) -> dict[int, tuple[str, float | None]]:
        with self._lock:
            found = {}
            for uid in user_ids:
                user = self._users.get(uid)
                found[uid] = (user.status or "offline", user.seen) if user else ("offline", None)
            return found


# --- This process's side: its sockets, their heartbeat, the sweep, announcements


class Presence:
    def __init__(self) -> None:
        self._store: RedisStore | LocalStore | None = None
        self._store_key: tuple[str, str] | None = None
        self._sockets: dict[ChatConsumer, str] = {}  # open sockets -> their own status
        self._task: asyncio.Task | None = None

    def store(self) -> RedisStore | LocalStore:
        prefix = f"{settings.CACHES['default'].get('KEY_PREFIX', 'parley')}:presence"
        key = (settings.REDIS_URL, prefix)
        if self._store is None or self._store_key != key:
            self._store = RedisStore(*key) if settings.REDIS_URL else LocalStore()
            self._store_key = key
        return self._store

    # Presence is best effort: a failure (Redis unreachable) is logged, and the socket
    # works on; the heartbeat puts the socket back once Redis answers.

    async def socket_opened(self, consumer: ChatConsumer) -> None:
        if not settings.PARLEY_PRESENCE:
            return
        self._sockets[consumer] = "online"
        self._maintain_soon()
        await self._touch(consumer)

    async def status_set(self, consumer: ChatConsumer, status: str) -> None:
        if consumer in self._sockets:  # else: closing
            self._sockets[consumer] = status
            await self._touch(consumer)

    async def socket_closed(self, consumer: ChatConsumer) -> None:
        if self._sockets.pop(consumer, None) is None:
            return
        try:
            change = await self.store().leave(
                user_id=consumer.user.pk, socket=consumer.channel_name
            )
        except Exception:
            logger.exception("Presence: closing socket of user %s", consumer.user.pk)
            return
        announce(change)

    async def _touch(self, consumer: ChatConsumer) -> None:
        try:
            change = await self.store().touch(
                user_id=consumer.user.pk,
                name=consumer.user.name,
                socket=consumer.channel_name,
                status=self._sockets[consumer],
            )
        except Exception:
            logger.exception("Presence: socket of user %s", consumer.user.pk)
            return
        announce(change)

    def _maintain_soon(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._maintain())

    async def _maintain(self) -> None:
        """While this process has sockets: sweep due users, refresh our heartbeats."""
        last_beat = time.monotonic()
        while self._sockets:
            await asyncio.sleep(settings.PARLEY_PRESENCE_SWEEP_S)
            try:
                if time.monotonic() - last_beat >= settings.PARLEY_PRESENCE_HEARTBEAT_S:
                    last_beat = time.monotonic()
                    await self.heartbeat()
                await self.sweep()
            except Exception:
                logger.exception("Presence maintenance failed")

    async def heartbeat(self) -> None:
        consumers = list(self._sockets)
        sockets = [(c.user.pk, c.channel_name) for c in consumers]
        for i in await self.store().refresh(sockets):
            # Swept as gone (this process stalled past the TTL), yet open: back online.
            if consumers[i] in self._sockets:
                await self._touch(consumers[i])

    async def sweep(self) -> None:
        store = self.store()
        for user_id in await store.due():
            announce(await store.settle(user_id=user_id))


tracker = Presence()


def announce(change: Change | None) -> None:
    if change is not None:
        spawn(_announce, change=change)


async def _announce(change: Change) -> None:
    audience = await db_sync_to_async(selectors.co_member_ids)(user_id=change.user_id)
    if not audience:
        return
    frame = PresenceUpdate(
        user=UserRef(id=change.user_id, name=change.name, type="user"),
        status=change.status,
        last_seen=_timestamp(change.seen),
    )
    await ausers_send(user_ids=audience, frame=frame)


def conversation_presence(*, conversation: ConversationOut, viewer_id: int) -> list[PresenceOut]:
    """The presence of a conversation's members but the viewer, characters (always
    online) included: for `conversation:joined`. No query without characters."""
    if not settings.PARLEY_PRESENCE:
        return []
    people = [m for m in conversation.members if m.id != viewer_id]
    states = tracker.store().snapshot([m.id for m in people])
    found = [
        PresenceOut(
            user=UserRef(id=m.id, name=m.display_name or m.username, type="user"),
            status=states[m.id][0],
            last_seen=_timestamp(states[m.id][1]),
        )
        for m in people
    ]
    characters = characters_by_slug(slugs=set(conversation.characters))
    for slug in conversation.characters:
        if slug in characters:
            ref = UserRef(id=characters[slug].pk, name=characters[slug].name, type="character")
            found.append(PresenceOut(user=ref, status="online", last_seen=None))
    return found
