"""Where rooms live and how effects reach sockets on other instances.

The hub never holds a room across an await: it asks the broker to run a pure
room operation (`op(room) -> effects`) on the room's current state, and then
carries out the effects itself. Two brokers:

- `LocalBroker` (default): one process; rooms in a dict, every socket local.
- `RedisBroker` (`REDIS_URL`): any number of instances serve one visit.
    {prefix}room:{visit_id}  the room's state (`Room.to_state()` JSON), with a TTL;
                             updated with WATCH/MULTI/EXEC, retried on conflict
    {prefix}rooms            set of visit ids with a room (for the sweep)
    {prefix}inst:{id}        pub/sub channel: Send/Close for sockets on instance `id`
    {prefix}alive:{id}       instance heartbeat (TTL); a member whose socket is on an
                             instance that stopped beating is treated as dropped
    {prefix}epoch            random value set once per Redis data set: when it changes,
                             Redis lost its data and instances put back the rooms they knew

Connection ids are global: `instance_id << 32 | n`, so an effect's target
instance is read off its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Sequence
from typing import Any

from telehealth.signaling.room import Effect, Room

log = logging.getLogger("telehealth.signaling.broker")

RoomOp = Callable[[Room], list[Effect]]
# A Send or Close for a socket elsewhere: ("send", conn, text) or ("close", conn, code, reason).
Remote = tuple[Any, ...]
Deliver = Callable[[Sequence[Remote]], None]


def instance_of(conn: int) -> int:
    return conn >> 32


class BrokerUnavailable(Exception):
    """The shared state cannot be reached now (Redis down); try again later."""


class Broker(ABC):
    """Rooms and cross-instance delivery, as the hub needs them."""

    instance_id: int
    rooms: dict[str, Room]
    """The rooms this instance knows (for the dashboard); authoritative only locally."""

    @abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Begin; `deliver` gets Send/Close effects for local sockets sent by others."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop background work and release connections."""

    @abstractmethod
    async def update(
        self, visit_id: str, op: RoomOp, create: Callable[[], Room] | None = None,
    ) -> list[Effect] | None:
        """Run `op` on the room's current state and keep the result; its effects. None when
        there is no room and no `create`. `op` may run more than once (it must be pure);
        exceptions from it (`Refused`) propagate and change nothing."""

    @abstractmethod
    async def snapshot(self) -> dict[str, Room]:
        """Every room, read now (the expire sweep decides on these copies)."""

    async def healthy(self) -> bool:
        """Whether the broker can serve a new hello now (the health check asks)."""
        return True

    def gone(self, conn: int, local: Container[int]) -> bool:
        """Whether `conn`, named in some room, has no socket anywhere any more."""
        return False

    @abstractmethod
    async def publish(self, instance: int, items: Sequence[Remote]) -> None:
        """Hand Send/Close items to the instance that holds their sockets."""


class LocalBroker(Broker):
    """One process: rooms in a dict, every connection on this instance (ids 1, 2, ...)."""

    def __init__(self) -> None:
        self.instance_id = 0
        self.rooms = {}

    async def start(self, deliver: Deliver) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, instance: int, items: Sequence[Remote]) -> None:
        return None  # there is no other instance

    async def update(
        self, visit_id: str, op: RoomOp, create: Callable[[], Room] | None = None,
    ) -> list[Effect] | None:
        room = self.rooms.get(visit_id)
        if room is None:
            if create is None:
                return None
            room = self.rooms[visit_id] = create()
        try:
            return op(room)
        finally:
            if room.empty and self.rooms.get(visit_id) is room:
                del self.rooms[visit_id]

    async def snapshot(self) -> dict[str, Room]:
        return dict(self.rooms)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError
    return (RedisError, OSError, asyncio.TimeoutError)


class RedisBroker(Broker):
    """Rooms in Redis, effects for other instances over pub/sub, presence by heartbeat."""

    def __init__(
        self, url: str, prefix: str = "th:", *, room_ttl_s: int = 12 * 3600,
        ended_ttl_s: int = 15 * 60, alive_ttl_s: float = 5.0, timeout_s: float = 1.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.instance_id = secrets.randbits(31) or 1
        self.rooms = {}
        self.room_ttl_s = room_ttl_s
        self.ended_ttl_s = ended_ttl_s
        self.alive_ttl_s = alive_ttl_s
        self.timeout_s = timeout_s
        self._epochs: dict[str, str] = {}  # visit id -> epoch its cached room was read in
        self._dead: set[int] = set()
        self._missing_since: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._deliver: Deliver | None = None
        self._errors = _redis_errors()
        self._down_logged = False
        self._stopped = False
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        # Short timeouts and no retry loop: a hello while Redis is away is answered
        # "unavailable" in about a second, not after a long wait.
        # redis-py's own annotations are loose (bytes | str everywhere): Any here.
        self.redis: Any = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1), decode_responses=True)
        # (One immediate retry: a pooled connection from before a Redis restart fails once.)
        # Pub/sub waits for messages as long as there are none: no read timeout there.
        self._sub_redis: Any = Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), decode_responses=True, health_check_interval=5)

    # ---- keys ---------------------------------------------------------------

    def _room_key(self, visit_id: str) -> str:
        return f"{self.prefix}room:{visit_id}"

    @property
    def _rooms_key(self) -> str:
        return f"{self.prefix}rooms"

    @property
    def _epoch_key(self) -> str:
        return f"{self.prefix}epoch"

    def _alive_key(self, instance: int) -> str:
        return f"{self.prefix}alive:{instance}"

    def _channel(self, instance: int) -> str:
        return f"{self.prefix}inst:{instance}"

    # ---- lifecycle ----------------------------------------------------------

    async def healthy(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        with contextlib.suppress(BrokerUnavailable):
            await self._beat()  # others see us at once (if Redis is there now)
        self._tasks = [asyncio.create_task(self._heartbeat()),
                       asyncio.create_task(self._subscribe())]

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(*self._errors):
            await self.redis.delete(self._alive_key(self.instance_id))
        await self.redis.aclose()
        await self._sub_redis.aclose()

    def _unavailable(self, exc: BaseException) -> BrokerUnavailable:
        if not self._down_logged:
            log.warning("Redis unreachable (%s); signaling is unavailable until it is back",
                        type(exc).__name__)
            self._down_logged = True
        return BrokerUnavailable("the signaling service is temporarily unavailable")

    def _up(self) -> None:
        if self._down_logged:
            log.warning("Redis reachable again; signaling resumed")
            self._down_logged = False

    async def _beat(self) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self._alive_key(self.instance_id), "1",
                         px=int(self.alive_ttl_s * 1000))
                pipe.set(self._epoch_key, secrets.token_hex(8), nx=True, ex=7 * 24 * 3600)
                pipe.expire(self._epoch_key, 7 * 24 * 3600)
                await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from None
        self._up()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.alive_ttl_s / 4)
            try:
                await self._beat()
            except BrokerUnavailable:
                pass
            except Exception:  # a silent heartbeat would get our participants dropped
                log.exception("heartbeat failed")

    async def _subscribe(self) -> None:
        """Read our channel forever, coming back after every Redis outage."""
        channel = self._channel(self.instance_id)
        while True:
            pubsub = self._sub_redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._on_message(msg["data"])
            except self._errors:
                await asyncio.sleep(0.2)
            except Exception:  # keep listening whatever one message did
                log.exception("broker subscription failed; subscribing again")
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(*self._errors):
                    await pubsub.aclose()

    def _on_message(self, data: str) -> None:
        try:
            items = [tuple(item) for item in json.loads(data)]
        except (ValueError, TypeError):
            log.warning("dropped a malformed broker message")
            return
        if self._deliver is not None:
            self._deliver(items)

    async def publish(self, instance: int, items: Sequence[Remote]) -> None:
        try:
            await self.redis.publish(self._channel(instance), json.dumps(list(items)))
        except self._errors as exc:
            raise self._unavailable(exc) from None

    # ---- rooms --------------------------------------------------------------

    async def _epoch(self, seen: str | None) -> str:
        if seen is not None:
            return seen
        await self.redis.set(self._epoch_key, secrets.token_hex(8), nx=True, ex=7 * 24 * 3600)
        return str(await self.redis.get(self._epoch_key))

    def _base(
        self, visit_id: str, raw: str | None, epoch: str, create: Callable[[], Room] | None,
    ) -> tuple[Room | None, bool]:
        """The room to run an op on, and whether it must be written even if unchanged."""
        if raw is not None:
            return Room.from_state(json.loads(raw)), False
        cached = self.rooms.get(visit_id)
        if cached is not None and self._epochs.get(visit_id) != epoch:
            # Redis lost its data (restarted): put back the room as we last saw it.
            return Room.from_state(cached.to_state()), True
        if create is None:
            return None, False
        return create(), True

    def _remember(self, visit_id: str, room: Room | None, epoch: str) -> None:
        if room is None or room.empty:
            self.rooms.pop(visit_id, None)
            self._epochs.pop(visit_id, None)
        else:
            self.rooms[visit_id] = room
            self._epochs[visit_id] = epoch

    async def update(
        self, visit_id: str, op: RoomOp, create: Callable[[], Room] | None = None,
    ) -> list[Effect] | None:
        from redis.exceptions import WatchError
        key = self._room_key(visit_id)
        try:
            # Most traffic (offers, answers, ICE, chat) changes nothing: one read, no
            # transaction. Anything that changes the room goes through WATCH/MULTI/EXEC.
            raw, seen = await self.redis.mget(key, self._epoch_key)
            epoch = await self._epoch(seen)
            room, force = self._base(visit_id, raw, epoch, create)
            if room is None:
                self._remember(visit_id, None, epoch)
                return None
            before = room.to_state()
            effects = op(room)
            if not force and room.to_state() == before:
                self._remember(visit_id, room, epoch)
                self._up()
                return effects
            async with self.redis.pipeline(transaction=True) as pipe:
                for _ in range(100):
                    try:
                        await pipe.watch(key)
                        raw, seen = await pipe.mget(key, self._epoch_key)
                        epoch = seen if seen is not None else epoch
                        room, force = self._base(visit_id, raw, epoch, create)
                        if room is None:
                            await pipe.reset()
                            self._remember(visit_id, None, epoch)
                            return None
                        before = room.to_state()
                        effects = op(room)
                        after = room.to_state()
                        if not force and after == before:
                            await pipe.reset()
                        else:
                            pipe.multi()
                            self._write(pipe, visit_id, room, after)
                            await pipe.execute()
                        self._remember(visit_id, room, epoch)
                        self._up()
                        return effects
                    except WatchError:
                        continue  # someone else changed the room: run op on the new state
            raise BrokerUnavailable("the room is too busy to update; try again")
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def _write(self, pipe: Any, visit_id: str, room: Room, state: dict[str, Any]) -> None:
        key = self._room_key(visit_id)
        if room.empty and room.ended is None:
            pipe.delete(key)
            pipe.srem(self._rooms_key, visit_id)
            return
        # An ended room stays a while, so a hello racing the end is told it ended.
        ttl = self.ended_ttl_s if room.ended is not None else self.room_ttl_s
        pipe.set(key, json.dumps(state, separators=(",", ":")), ex=ttl)
        pipe.sadd(self._rooms_key, visit_id)
        pipe.expire(self._rooms_key, self.room_ttl_s)

    async def snapshot(self) -> dict[str, Room]:
        try:
            members = await self.redis.smembers(self._rooms_key)
            ids = sorted({str(v) for v in members} | set(self.rooms))
            if not ids:
                self._up()
                return {}
            *raws, seen = await self.redis.mget(
                [self._room_key(v) for v in ids] + [self._epoch_key])
            epoch = await self._epoch(seen)
            found: dict[str, Room] = {}
            lost: list[str] = []
            for visit_id, raw in zip(ids, raws, strict=True):
                if raw is not None:
                    room = Room.from_state(json.loads(raw))
                    self._remember(visit_id, room, epoch)
                    if not room.empty:
                        found[visit_id] = room
                elif visit_id in self.rooms and self._epochs.get(visit_id) != epoch:
                    lost.append(visit_id)
                else:
                    self._remember(visit_id, None, epoch)
                    with contextlib.suppress(*self._errors):
                        await self.redis.srem(self._rooms_key, visit_id)
            for visit_id in lost:  # Redis came back empty: put back what we knew
                effects = await self.update(visit_id, lambda room: [])
                if effects is not None and visit_id in self.rooms:
                    found[visit_id] = self.rooms[visit_id]
            await self._check_alive(found.values())
            self._up()
            return found
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def _check_alive(self, rooms: Any) -> None:
        others = sorted({instance_of(m.conn) for room in rooms for m in room.members.values()
                         if m.conn is not None} - {self.instance_id})
        if not others:
            return
        beats = await self.redis.mget([self._alive_key(i) for i in others])
        now = time.monotonic()
        for instance, beat in zip(others, beats, strict=True):
            if beat is not None:
                self._missing_since.pop(instance, None)
                self._dead.discard(instance)
                continue
            # A missing beat right after Redis came back (empty) may only mean "not yet"
            # (instances beat every TTL/4): gone is missing for half a TTL of our watching.
            since = self._missing_since.setdefault(instance, now)
            if now - since >= self.alive_ttl_s / 2:
                self._dead.add(instance)

    def gone(self, conn: int, local: Container[int]) -> bool:
        instance = instance_of(conn)
        if instance == self.instance_id:
            return conn not in local
        return instance in self._dead
