"""The room of one visit: who is waiting, who is in, what is relayed to whom.

Pure state machine. The hub feeds it events (a connection said hello, a typed
message arrived, a socket dropped, time passed) with `now`, and carries out the
effects it returns: `Send` a frame to a connection, `Close` a connection,
`Record` a timeline event, `VisitOver` to mark the visit ended in storage.

    guest connects ──> waiting ──admit──> admitted ──leave/timeout──> gone
                          └──deny──> gone
    care team connects ─────────────────> admitted
    socket drops: place kept for `grace`; the same participant may come back
    (resumed, no new admission) until then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from telehealth.signaling import protocol as p


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    conn: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Record:
    """A visit timeline event (stored by the hub in `visit_events`)."""

    participant_id: str | None
    kind: str
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VisitOver:
    reason: str  # "ended" or "cancelled"
    by_participant_id: str | None


Effect = Send | Close | Record | VisitOver


class Refused(Exception):
    """An admit or deny that cannot be carried out; `code` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MemberState(Enum):
    WAITING = "waiting"
    ADMITTED = "admitted"


@dataclass(slots=True)
class Member:
    id: str
    role: str
    name: str
    state: MemberState
    since: datetime
    conn: int | None
    dropped_at: datetime | None = None
    audio: bool = True
    video: bool = True
    screen: bool = False

    @property
    def care_team(self) -> bool:
        return self.role in p.CARE_TEAM

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "role": self.role, "name": self.name,
            "audio": self.audio, "video": self.video, "screen": self.screen,
            "state": "connected" if self.conn is not None else "reconnecting",
        }


class Room:
    """State of one visit's signaling room."""

    def __init__(
        self, visit_id: str, *, max_participants: int = 6,
        grace: timedelta = timedelta(seconds=60), heartbeat_s: float = 20.0,
    ) -> None:
        self.visit_id = visit_id
        self.heartbeat_s = heartbeat_s
        self.max_participants = max_participants
        self.grace = grace
        self.members: dict[str, Member] = {}
        self._by_conn: dict[int, Member] = {}
        self.ended: str | None = None

    # ---- state -----------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything the room knows, JSON-safe (datetimes as ISO strings), in order."""
        return {
            "visit_id": self.visit_id, "max_participants": self.max_participants,
            "grace_s": self.grace.total_seconds(), "heartbeat_s": self.heartbeat_s,
            "ended": self.ended,
            "members": [{
                "id": m.id, "role": m.role, "name": m.name, "state": m.state.value,
                "since": m.since.isoformat(), "conn": m.conn,
                "dropped_at": m.dropped_at.isoformat() if m.dropped_at else None,
                "audio": m.audio, "video": m.video, "screen": m.screen,
            } for m in self.members.values()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Room:
        """The room `to_state` described; it behaves as the original would."""
        room = cls(str(state["visit_id"]), max_participants=int(state["max_participants"]),
                   grace=timedelta(seconds=float(state["grace_s"])),
                   heartbeat_s=float(state["heartbeat_s"]))
        room.ended = state["ended"]
        for m in state["members"]:
            dropped = m["dropped_at"]
            member = Member(
                str(m["id"]), str(m["role"]), str(m["name"]), MemberState(m["state"]),
                datetime.fromisoformat(m["since"]), m["conn"],
                datetime.fromisoformat(dropped) if dropped else None,
                bool(m["audio"]), bool(m["video"]), bool(m["screen"]))
            room.members[member.id] = member
            if member.conn is not None:
                room._by_conn[member.conn] = member
        return room

    # ---- queries ---------------------------------------------------------

    def _admitted(self) -> list[Member]:
        return [m for m in self.members.values() if m.state is MemberState.ADMITTED]

    def _present(self, exclude: Member | None = None) -> list[int]:
        """Connections of admitted members that can hear room traffic."""
        return [
            m.conn for m in self.members.values()
            if m.state is MemberState.ADMITTED and m.conn is not None and m is not exclude
        ]

    def waiting_list(self) -> list[dict[str, Any]]:
        """Who is waiting now (connected guests), as the `waiting_room` frame lists them."""
        return [
            {"id": m.id, "role": m.role, "name": m.name, "since": m.since.isoformat()}
            for m in self.members.values()
            if m.state is MemberState.WAITING and m.conn is not None
        ]

    def _waiting_room_frame(self) -> dict[str, Any]:
        return {"type": "waiting_room", "waiting": self.waiting_list()}

    def _waiting_room(self) -> list[Effect]:
        """The waiting room as it is now, to every connected member of the care team."""
        frame = self._waiting_room_frame()
        return [
            Send(m.conn, frame) for m in self._admitted() if m.care_team and m.conn is not None
        ]

    def next_deadline(self) -> datetime | None:
        """When the earliest reconnect grace runs out, if any is running."""
        drops = [m.dropped_at for m in self.members.values() if m.dropped_at is not None]
        return min(drops) + self.grace if drops else None

    @property
    def empty(self) -> bool:
        return not self.members

    def member_for(self, conn: int) -> Member | None:
        return self._by_conn.get(conn)

    # ---- events ----------------------------------------------------------

    def connect(self, conn: int, pid: str, role: str, name: str, now: datetime) -> list[Effect]:
        """A connection said a valid hello for participant `pid`."""
        if self.ended is not None:
            return [Send(conn, _ended(self.ended, None)), Close(conn, p.CLOSE_ENDED, self.ended)]
        member = self.members.get(pid)
        if member is not None:
            return self._resume(conn, member, now)
        if role in p.CARE_TEAM and len(self._admitted()) >= self.max_participants:
            return [
                Send(conn, p.error("room_full", "the visit already has the most participants")),
                Close(conn, p.CLOSE_UNAVAILABLE, "room full"),
            ]
        state = MemberState.ADMITTED if role in p.CARE_TEAM else MemberState.WAITING
        member = Member(pid, role, name, state, now, conn)
        self.members[pid] = member
        self._by_conn[conn] = member
        effects: list[Effect] = [Send(conn, self._welcome(member, resumed=False))]
        if state is MemberState.ADMITTED:
            effects += self._enter(member, now, by=None)
        else:
            effects.append(Record(pid, "waiting", now))
            effects += self._waiting_room()
        return effects

    def _resume(self, conn: int, member: Member, now: datetime) -> list[Effect]:
        effects: list[Effect] = []
        if member.conn is not None:
            effects.append(Close(member.conn, p.CLOSE_REPLACED, "connected again elsewhere"))
            del self._by_conn[member.conn]
        member.conn = conn
        member.dropped_at = None
        self._by_conn[conn] = member
        effects.append(Send(conn, self._welcome(member, resumed=True)))
        if member.state is MemberState.ADMITTED:
            effects.append(Send(conn, self._admitted_frame(member)))
            rejoined = {"type": "rejoined", "participant_id": member.id}
            effects += [Send(c, rejoined) for c in self._present(exclude=member)]
            if member.care_team:
                effects.append(Send(conn, self._waiting_room_frame()))
        else:
            effects += self._waiting_room()
        effects.append(Record(member.id, "rejoined", now))
        return effects

    def _welcome(self, member: Member, *, resumed: bool) -> dict[str, Any]:
        return {
            "type": "welcome", "v": p.VERSION,
            "participant": {"id": member.id, "role": member.role, "name": member.name},
            "visit_id": self.visit_id, "state": member.state.value, "resumed": resumed,
            "heartbeat_s": self.heartbeat_s,
        }

    def _admitted_frame(self, member: Member) -> dict[str, Any]:
        others = [m.public() for m in self._admitted() if m is not member]
        return {"type": "admitted", "participants": others}

    def _enter(self, member: Member, now: datetime, by: str | None) -> list[Effect]:
        """`member` has just become admitted: tell it who is in, tell them it came."""
        assert member.conn is not None
        effects: list[Effect] = [Send(member.conn, self._admitted_frame(member))]
        joined = {"type": "participant_joined", "participant": member.public()}
        effects += [Send(c, joined) for c in self._present(exclude=member)]
        effects.append(Record(member.id, "admitted", now, {"by": by}))
        if member.care_team:
            effects.append(Send(member.conn, self._waiting_room_frame()))
        return effects

    def disconnect(self, conn: int, now: datetime) -> list[Effect]:
        """The socket of `conn` is gone (dropped, closed by us, or replaced)."""
        member = self._by_conn.pop(conn, None)
        if member is None or member.conn != conn:
            return []
        member.conn = None
        member.dropped_at = now
        effects: list[Effect] = [Record(member.id, "reconnecting", now)]
        if member.state is MemberState.ADMITTED:
            frame = {"type": "reconnecting", "participant_id": member.id}
            effects += [Send(c, frame) for c in self._present()]
        else:
            effects += self._waiting_room()
        return effects

    def expire(self, now: datetime) -> list[Effect]:
        """Drop everyone whose reconnect grace has run out."""
        effects: list[Effect] = []
        for member in list(self.members.values()):
            if member.dropped_at is not None and now >= member.dropped_at + self.grace:
                effects += self._remove(member, "timeout", now)
        return effects

    def _remove(self, member: Member, reason: str, now: datetime) -> list[Effect]:
        del self.members[member.id]
        if member.conn is not None:
            self._by_conn.pop(member.conn, None)
        effects: list[Effect] = [Record(member.id, "left", now, {"reason": reason})]
        if member.state is MemberState.ADMITTED:
            frame = {"type": "participant_left", "participant_id": member.id, "reason": reason}
            effects += [Send(c, frame) for c in self._present()]
        else:
            effects += self._waiting_room()
        return effects

    def end(self, reason: str, by: Member | None, now: datetime) -> list[Effect]:
        """End the visit for everyone (a clinician's `end`, or a cancellation)."""
        if self.ended is not None:
            return []
        self.ended = reason
        frame = _ended(reason, by.name if by else None)
        effects: list[Effect] = []
        for member in self.members.values():
            if member.conn is not None:
                effects += [Send(member.conn, frame), Close(member.conn, p.CLOSE_ENDED, reason)]
        effects.append(Record(by.id if by else None, reason, now))
        effects.append(VisitOver(reason, by.id if by else None))
        self.members.clear()
        self._by_conn.clear()
        return effects

    def receive(self, conn: int, msg: p.ClientMessage, now: datetime) -> list[Effect]:
        """A typed message from an established connection."""
        member = self._by_conn.get(conn)
        if member is None:
            return [Send(conn, p.error("hello_required", "say hello first"))]
        if isinstance(msg, p.Ping):
            pong: dict[str, Any] = {"type": "pong"}
            if msg.id is not None:
                pong["id"] = msg.id
            return [Send(conn, pong)]
        if isinstance(msg, p.Hello):
            return [Send(conn, p.error("already_said_hello", "hello was already said", "hello"))]
        if msg.CARE_TEAM_ONLY and not member.care_team:
            return [Send(conn, p.error(
                "not_allowed", f"a {member.role} may not send '{msg.TYPE}'", msg.TYPE))]
        if msg.NEEDS_ADMISSION and member.state is not MemberState.ADMITTED:
            return [Send(conn, p.error(
                "not_admitted", f"'{msg.TYPE}' needs you to be admitted first", msg.TYPE))]
        return self._handle(member, conn, msg, now)

    def _handle(
        self, member: Member, conn: int, msg: p.ClientMessage, now: datetime
    ) -> list[Effect]:
        match msg:
            case p.Offer(to=to, sdp=sdp) | p.Answer(to=to, sdp=sdp):
                frame = {"type": msg.TYPE, "from": member.id, "sdp": sdp}
                return self._relay(member, conn, to, frame)
            case p.Ice(to=to, candidate=candidate):
                return self._relay(member, conn, to, {"type": "ice", "from": member.id,
                                                      "candidate": candidate})
            case p.Chat(text=text):
                frame = {"type": "chat", "from": member.id, "name": member.name,
                         "text": text, "at": now.isoformat()}
                return [Send(c, frame) for c in self._present()]
            case p.LobbyChat(text=text, to=to):
                return self._lobby_chat(member, conn, text, to, now)
            case p.MediaState(audio=audio, video=video, screen=screen):
                member.audio, member.video = audio, video
                if screen is not None:
                    member.screen = screen
                state: dict[str, Any] = {"type": "media_state", "participant_id": member.id,
                                         "audio": audio, "video": video, "screen": member.screen}
                effects: list[Effect] = [Send(c, state) for c in self._present(exclude=member)]
                effects.append(Record(member.id, "media_state", now,
                                      {"audio": audio, "video": video, "screen": member.screen}))
                return effects
            case p.MediaConnected(peer=peer, audio=audio, video=video):
                if peer not in self.members:
                    return [Send(conn, p.error("unknown_participant", "no such participant",
                                               msg.TYPE))]
                return [Record(member.id, "media_connected", now,
                               {"peer": peer, "audio": audio, "video": video})]
            case p.Admit(participant_id=pid):
                try:
                    return self.admit_by(pid, member.id, now)
                except Refused as exc:
                    return [Send(conn, p.error(exc.code, exc.message, "admit"))]
            case p.Deny(participant_id=pid, reason=reason):
                try:
                    return self.deny_by(pid, member.id, reason, now)
                except Refused as exc:
                    return [Send(conn, p.error(exc.code, exc.message, "deny"))]
            case p.Leave():
                effects = self._remove(member, "left", now)
                return [*effects, Close(conn, p.CLOSE_NORMAL, "left")]
            case p.End():
                return self.end("ended", member, now)
        raise AssertionError(f"unhandled message {msg.TYPE}")  # pragma: no cover

    def _lobby_chat(
        self, member: Member, conn: int, text: str, to: str | None, now: datetime
    ) -> list[Effect]:
        """A waiting guest and the care team talk; the room hears none of it."""
        care_team = [m.conn for m in self._admitted() if m.care_team and m.conn is not None]
        if member.care_team:
            guest = self.members.get(to) if to else None
            if guest is None or guest.state is not MemberState.WAITING or guest.conn is None:
                return [Send(conn, p.error("not_waiting", "that participant is not waiting",
                                           "lobby_chat"))]
            receivers = [guest.conn, *care_team]
        elif member.state is MemberState.WAITING:
            if to is not None:
                return [Send(conn, p.error("invalid_field", "a guest's lobby chat goes to the "
                                           "care team; leave 'to' out", "lobby_chat"))]
            if not care_team:
                return [Send(conn, p.error("no_care_team", "no one from the care team is "
                                           "connected yet; the message was not sent",
                                           "lobby_chat"))]
            guest = member
            receivers = [conn, *care_team]
        else:
            return [Send(conn, p.error("not_allowed", "lobby chat is for the waiting room; "
                                       "use chat", "lobby_chat"))]
        frame = {"type": "lobby_chat", "from": member.id, "name": member.name, "text": text,
                 "at": now.isoformat(), "with": guest.id}
        return [Send(c, frame) for c in dict.fromkeys(receivers)]

    def _relay(self, member: Member, conn: int, to: str, frame: dict[str, Any]) -> list[Effect]:
        target = self.members.get(to)
        if (target is None or target is member or target.state is not MemberState.ADMITTED
                or target.conn is None):
            return [Send(conn, p.error(
                "unknown_participant", "that participant is not in the room", frame["type"]))]
        return [Send(target.conn, frame)]

    def admit_by(self, pid: str, by_id: str, now: datetime) -> list[Effect]:
        """Admit `pid` for care-team participant `by_id`, in the room (`admit`) or not
        (the dashboard). Raises `Refused` when `pid` is not waiting or the room is full."""
        guest = self.members.get(pid)
        if guest is None or guest.state is not MemberState.WAITING or guest.conn is None:
            raise Refused("not_waiting", "that participant is not waiting")
        if len(self._admitted()) >= self.max_participants:
            raise Refused("room_full",
                          f"the visit already has {self.max_participants} participants")
        guest.state = MemberState.ADMITTED
        guest.since = now
        effects = self._enter(guest, now, by=by_id)
        effects += self._waiting_room()
        return effects

    def deny_by(self, pid: str, by_id: str, reason: str | None, now: datetime) -> list[Effect]:
        """Deny `pid` for care-team participant `by_id` (in the room or not). Raises `Refused`."""
        guest = self.members.get(pid)
        if guest is None or guest.state is not MemberState.WAITING:
            raise Refused("not_waiting", "that participant is not waiting")
        effects: list[Effect] = []
        guest_conn = guest.conn
        if guest_conn is not None:
            effects.append(Send(guest_conn, {"type": "denied", "reason": reason or ""}))
        effects.append(Record(guest.id, "denied", now, {"by": by_id}))
        effects += self._remove(guest, "denied", now)
        if guest_conn is not None:
            effects.append(Close(guest_conn, p.CLOSE_DENIED, "denied"))
        return effects


def _ended(reason: str, by: str | None) -> dict[str, Any]:
    return {"type": "ended", "reason": reason, "by": by}
