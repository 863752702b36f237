"""The async shell around the rooms: WebSocket <-> room state machine <-> storage.

    socket frame ──parse──> typed message ──Room.receive(now)──> effects
    effects: Send -> the connection's outbound queue (a writer task drains it)
             Close -> after the frames queued before it
             Record -> the timeline writer (batched into `visit_events`)
             VisitOver -> visit status in storage (links die with it)

Rooms live in a broker (telehealth/signaling/broker.py): in this process by
default, in Redis when several instances serve one practice. The hub hands the
broker a pure room operation and carries out the effects it gives back; a
Send/Close for a socket on another instance goes to that instance through the
broker. Record and VisitOver stay with the instance that ran the operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from aiohttp import WSMsgType, web

from telehealth.auth import AuthError
from telehealth.config import Settings
from telehealth.db.store import Store
from telehealth.db.tables import Participant, Visit, VisitEvent
from telehealth.signaling import protocol as p
from telehealth.signaling.broker import (
    Broker,
    BrokerUnavailable,
    LocalBroker,
    Remote,
    RoomOp,
    instance_of,
)
from telehealth.signaling.ratelimit import TokenBucket
from telehealth.signaling.room import Close, Effect, Record, Refused, Room, Send, VisitOver
from telehealth.visits import VisitError

log = logging.getLogger("telehealth.signaling")
Clock = Callable[[], datetime]
# Checks a `hello` ticket: the visit and participant it lets in, or AuthError / VisitError.
Gatekeeper = Callable[[str], Awaitable[tuple[Visit, Participant]]]
_CLOSE = object()
_MAX_QUEUED = 2000
_EVENT_BATCH_S = 0.25


class Connection:
    """One participant socket and its outbound queue."""

    __slots__ = ("bucket", "closing", "id", "queue", "visit_id", "writer", "ws")

    def __init__(self, conn_id: int, ws: web.WebSocketResponse, bucket: TokenBucket) -> None:
        self.id = conn_id
        self.ws = ws
        self.bucket = bucket
        self.visit_id: str | None = None
        self.queue: deque[Any] = deque()
        self.writer: asyncio.Task[None] | None = None
        self.closing = False

    def send(self, text: str) -> None:
        if self.closing:
            return
        if len(self.queue) >= _MAX_QUEUED:
            # A reader this slow would hold the whole room back: treat it as dropped.
            self.close(p.CLOSE_UNAVAILABLE, "too slow")
            return
        self.queue.append(text)
        self._kick()

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.queue.append((_CLOSE, code, reason))
        self._kick()

    def _kick(self) -> None:
        if self.writer is None or self.writer.done():
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.queue:
                item = self.queue.popleft()
                if isinstance(item, str):
                    await self.ws.send_str(item)
                else:
                    _, code, reason = item
                    await self.ws.close(code=code, message=reason.encode())
                    return
        except (ConnectionError, RuntimeError):
            self.queue.clear()


class Hub:
    def __init__(
        self, settings: Settings, store: Store, gatekeeper: Gatekeeper, clock: Clock,
        on_visit_over: Callable[[str], Awaitable[None]] | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.on_visit_over = on_visit_over
        """Called with the visit's id once the room has ended it (the note's draft)."""
        self.settings = settings
        self.store = store
        self.gatekeeper = gatekeeper
        self.clock = clock
        self.broker = broker or LocalBroker()
        self.conns: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._events: list[VisitEvent] = []
        self._events_ready = asyncio.Event()
        self._flushing = asyncio.Lock()  # a flush waits for one already writing
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def rooms(self) -> dict[str, Room]:
        """The rooms this instance knows of (all of them with one instance)."""
        return self.broker.rooms

    def _next_conn_id(self) -> int:
        return self.broker.instance_id << 32 | next(self._ids)

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self._deliver)
        self._tasks = [asyncio.create_task(self._write_events()),
                       asyncio.create_task(self._expire_loop())]

    async def stop(self) -> None:
        for conn in list(self.conns.values()):
            conn.close(p.CLOSE_UNAVAILABLE, "server shutting down")
        # Not in the middle of a write: a commit cancelled halfway keeps SQLite locked.
        async with self._flushing:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.flush_events()
        await self.broker.stop()

    def record(self, events: Sequence[VisitEvent]) -> None:
        """Queue timeline events for the batched writer (the caller does not wait on disk)."""
        self._events.extend(events)
        self._events_ready.set()

    async def flush_events(self) -> None:
        async with self._flushing:
            batch, self._events = self._events, []
            if batch:
                try:
                    await self.store.add_events(batch)
                except BaseException:
                    self._events[:0] = batch  # kept, in order, for the next try
                    raise

    async def _write_events(self) -> None:
        while True:
            await self._events_ready.wait()
            # Gather what a join or an admission brings along into one commit, and keep
            # the write off the few milliseconds in which peers are setting up media.
            await asyncio.sleep(_EVENT_BATCH_S)
            self._events_ready.clear()
            try:
                await self.flush_events()
            except Exception:  # keep the timeline writer alive whatever storage does
                log.exception("could not write timeline events; retrying")
                await asyncio.sleep(1.0)
                self._events_ready.set()

    async def _expire_loop(self) -> None:
        interval = max(0.05, min(1.0, self.settings.reconnect_grace_s / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self._sweep()
            except BrokerUnavailable:
                continue
            except Exception:  # keep the sweep alive whatever happens to one room
                log.exception("reconnect sweep failed")

    def _due(self, room: Room, now: datetime) -> bool:
        deadline = room.next_deadline()
        if deadline is not None and now >= deadline:
            return True
        return any(m.conn is not None and self.broker.gone(m.conn, self.conns)
                   for m in room.members.values())

    async def _sweep(self) -> None:
        """Run out reconnect graces; members whose socket is gone (their instance died,
        or the drop could not be recorded while Redis was away) start theirs."""
        now = self.clock()
        for visit_id, room in (await self.broker.snapshot()).items():
            if not self._due(room, now):
                continue

            def sweep(room: Room) -> list[Effect]:
                effects: list[Effect] = []
                for m in list(room.members.values()):
                    if m.conn is not None and self.broker.gone(m.conn, self.conns):
                        effects += room.disconnect(m.conn, now)
                deadline = room.next_deadline()
                if deadline is not None and now >= deadline:
                    effects += room.expire(now)
                return effects

            await self._apply(visit_id, await self.broker.update(visit_id, sweep) or [])

    # ---- effects ---------------------------------------------------------

    def _deliver(self, items: Sequence[Remote]) -> None:
        """Send/Close items another instance addressed to sockets here."""
        for item in items:
            conn = self.conns.get(int(item[1]))
            if conn is None:
                continue
            if item[0] == "send":
                conn.send(str(item[2]))
            elif item[0] == "close":
                conn.close(int(item[2]), str(item[3]))

    async def _apply(self, visit_id: str, effects: Sequence[Effect]) -> None:
        # Storage first: whoever is told the visit is over (and closed) must find it
        # over when they come straight back with a link or ticket.
        if any(isinstance(e, VisitOver) for e in effects):
            effects = sorted(effects, key=lambda e: not isinstance(e, VisitOver))
        remote: dict[int, list[Remote]] = {}
        here = self.broker.instance_id
        for effect in effects:
            if isinstance(effect, Send):
                conn = self.conns.get(effect.conn)
                if conn is not None:
                    conn.send(p.encode(effect.message))
                elif instance_of(effect.conn) != here:
                    remote.setdefault(instance_of(effect.conn), []).append(
                        ("send", effect.conn, p.encode(effect.message)))
            elif isinstance(effect, Close):
                conn = self.conns.get(effect.conn)
                if conn is not None:
                    conn.close(effect.code, effect.reason)
                elif instance_of(effect.conn) != here:
                    remote.setdefault(instance_of(effect.conn), []).append(
                        ("close", effect.conn, effect.code, effect.reason))
            elif isinstance(effect, Record):
                self.record([VisitEvent(
                    visit_id=visit_id, participant_id=effect.participant_id, kind=effect.kind,
                    at=effect.at, detail=effect.detail)])
            elif isinstance(effect, VisitOver):
                now = self.clock()
                if await self.store.set_visit_status(visit_id, effect.reason, now=now,
                                                     only_from=("scheduled", "in_progress")):
                    await self.store.append_audit(
                        at=now, actor=f"participant:{effect.by_participant_id}",
                        action=f"visit.{effect.reason}", subject=f"visit:{visit_id}")
                    if effect.reason == "ended" and self.on_visit_over is not None:
                        await self.on_visit_over(visit_id)
        for instance, items in remote.items():
            try:
                await self.broker.publish(instance, items)
            except BrokerUnavailable:
                log.warning("could not reach instance %d's sockets", instance)

    async def _update(
        self, visit_id: str, op: RoomOp, create: Callable[[], Room] | None = None,
    ) -> bool:
        """Run `op` on the room and carry out its effects; False when there is no room."""
        effects = await self.broker.update(visit_id, op, create)
        if effects is None:
            return False
        await self._apply(visit_id, effects)
        return True

    async def end_visit(self, visit_id: str, reason: str, by_participant_id: str | None) -> None:
        """End or cancel from outside the room (dashboard, API): tell whoever is connected."""
        now = self.clock()

        def end(room: Room) -> list[Effect]:
            by = room.members.get(by_participant_id) if by_participant_id else None
            # Storage and the timeline were updated by the caller (the visit must not be
            # `ended` twice on it); the room only tells and disconnects.
            return [e for e in room.end(reason, by, now)
                    if not isinstance(e, VisitOver | Record)]

        try:
            await self._update(visit_id, end)
        except BrokerUnavailable:
            # Storage says ended (links and tickets die with it); close what is here.
            frame = p.encode({"type": "ended", "reason": reason, "by": None})
            for conn in list(self.conns.values()):
                if conn.visit_id == visit_id:
                    conn.send(frame)
                    conn.close(p.CLOSE_ENDED, reason)

    async def _start_visit(self, visit_id: str, now: datetime) -> None:
        await self.store.set_visit_status(visit_id, "in_progress", now=now,
                                          only_from=("scheduled",))

    async def admit(self, visit_id: str, pid: str, by_participant_id: str) -> None:
        """Admit from outside the room (the dashboard). Raises `Refused` if `pid` is not
        waiting here."""
        now = self.clock()
        await self._outside(visit_id, lambda room: room.admit_by(pid, by_participant_id, now))
        await self._start_visit(visit_id, now)  # someone is in, even before a clinician

    async def deny(
        self, visit_id: str, pid: str, by_participant_id: str, reason: str | None
    ) -> None:
        """Deny from outside the room (the dashboard). Raises `Refused` like `admit`."""
        now = self.clock()
        await self._outside(
            visit_id, lambda room: room.deny_by(pid, by_participant_id, reason, now))

    async def _outside(self, visit_id: str, op: RoomOp) -> None:
        try:
            found = await self._update(visit_id, op)
        except BrokerUnavailable as exc:
            raise Refused("unavailable", f"{exc}; try again in a moment") from None
        if not found:
            raise Refused("not_waiting", "that participant is not waiting")

    # ---- the socket ------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            heartbeat=self.settings.heartbeat_s,
            # Frames over our own limit get an error frame, not a dropped connection;
            # only frames far beyond it are cut by aiohttp (close 1009).
            max_msg_size=max(1 << 20, 4 * self.settings.max_message_bytes),
        )
        await ws.prepare(request)
        conn = Connection(self._next_conn_id(), ws, TokenBucket(
            self.settings.rate_burst, self.settings.rate_per_s, time.monotonic()))
        self.conns[conn.id] = conn
        try:
            if await self._hello(conn):
                await self._read(conn)
        finally:
            self.conns.pop(conn.id, None)
            if conn.visit_id is not None:
                now = self.clock()
                # If the broker is away, its sweep finds the socket gone once it is back.
                with contextlib.suppress(BrokerUnavailable):
                    await self._update(conn.visit_id,
                                       lambda room: room.disconnect(conn.id, now))
            if conn.writer is not None:
                with contextlib.suppress(Exception):
                    await conn.writer
            if not ws.closed:
                await ws.close()
        return ws

    def _error(self, conn: Connection, code: str, message: str, ref: str | None = None) -> None:
        conn.send(p.encode(p.error(code, message, ref)))

    async def _next_text(self, conn: Connection, wait_s: float | None) -> str | None:
        """The next text frame; None when the socket is done. Binary frames get an error."""
        while True:
            msg = await conn.ws.receive(timeout=wait_s)
            if msg.type is WSMsgType.TEXT:
                return str(msg.data)
            if msg.type is WSMsgType.BINARY:
                self._error(conn, "invalid_json", "frames must be JSON text")
                continue
            return None

    async def _hello(self, conn: Connection) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.hello_timeout_s
        while True:
            try:
                text = await self._next_text(conn, max(0.0, deadline - loop.time()))
            except TimeoutError:
                conn.close(p.CLOSE_PROTOCOL, "no hello")
                return False
            if text is None:
                return False
            try:
                msg = p.parse(text, self.settings.max_message_bytes)
            except p.ProtocolError as exc:
                conn.send(p.encode(exc.frame()))
                continue
            if not isinstance(msg, p.Hello):
                self._error(conn, "hello_required", "say hello first", msg.TYPE)
                continue
            if msg.v != p.VERSION:
                self._error(conn, "version_unsupported",
                            f"this server speaks version {p.VERSION}", "hello")
                conn.close(p.CLOSE_PROTOCOL, "version")
                return False
            return await self._admit_socket(conn, msg.ticket)

    async def _admit_socket(self, conn: Connection, ticket: str) -> bool:
        now = self.clock()
        try:
            visit, person = await self.gatekeeper(ticket)
        except AuthError as exc:
            self._error(conn, exc.code, exc.message, "hello")
            conn.close(p.CLOSE_TICKET_INVALID, exc.code)
            return False
        except VisitError as exc:
            self._error(conn, exc.code, exc.message, "hello")
            gated = exc.code == "consent_required"
            conn.close(p.CLOSE_CONSENT_REQUIRED if gated else p.CLOSE_ENDED, exc.code)
            return False
        if person.role in p.CARE_TEAM and visit.status == "scheduled":
            await self._start_visit(visit.id, now)
        def create() -> Room:
            return Room(visit.id, max_participants=self.settings.max_participants,
                        grace=timedelta(seconds=self.settings.reconnect_grace_s),
                        heartbeat_s=self.settings.heartbeat_s)

        conn.visit_id = visit.id
        try:
            await self._update(
                visit.id, lambda room: room.connect(conn.id, person.id, person.role,
                                                    person.name, now), create)
        except BrokerUnavailable:
            self._error(conn, "unavailable",
                        "signaling is temporarily unavailable; try again in a moment", "hello")
            conn.close(p.CLOSE_UNAVAILABLE, "temporarily unavailable, try again")
            return False
        return not conn.closing

    async def _read(self, conn: Connection) -> None:
        assert conn.visit_id is not None
        limit = self.settings.max_message_bytes
        while not conn.closing:
            text = await self._next_text(conn, None)
            if text is None:
                return
            mono = time.monotonic()
            if not conn.bucket.take(mono):
                if conn.bucket.should_warn(mono):
                    self._error(conn, "rate_limited", "too many messages; slow down")
                continue
            try:
                msg = p.parse(text, limit)
            except p.ProtocolError as exc:
                conn.send(p.encode(exc.frame()))
                continue
            if isinstance(msg, p.Ping):  # the room's answer, without a round trip to it
                pong: dict[str, Any] = {"type": "pong"}
                if msg.id is not None:
                    pong["id"] = msg.id
                conn.send(p.encode(pong))
                continue
            try:
                found = await self._update(conn.visit_id, _receive(conn.id, msg, self.clock()))
            except BrokerUnavailable:
                self._error(conn, "unavailable", "signaling is temporarily unavailable; "
                            "the message was not delivered, try again", msg.TYPE)
                continue
            if not found:
                conn.close(p.CLOSE_UNAVAILABLE, "visit state lost; connect again")
                return


def _receive(conn: int, msg: p.ClientMessage, now: datetime) -> RoomOp:
    return lambda room: room.receive(conn, msg, now)
