"""The room state machine: events in with `now`, effects out. No server, no loop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from telehealth.signaling import protocol as p
from telehealth.signaling.room import Close, Effect, MemberState, Record, Room, Send, VisitOver

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}


@dataclass(frozen=True)
class Person:
    conn: int
    pid: str
    role: str
    name: str


DR = Person(1, "c1", "clinician", "Dr. Ruth Okafor")
PAT = Person(2, "p1", "patient", "Sam Patel")
FAM = Person(3, "f1", "family_member", "Lee Patel")
CO = Person(4, "cc1", "co_clinician", "Dr. Mo Chen")


# ---- helpers ----------------------------------------------------------------


def frames_to(effects: list[Effect], conn: int, type_: str | None = None) -> list[dict[str, Any]]:
    """Frames sent to `conn`, in order; only those of `type_` if given."""
    return [
        e.message for e in effects
        if isinstance(e, Send) and e.conn == conn and type_ in (None, e.message["type"])
    ]


def frame_to(effects: list[Effect], conn: int, type_: str) -> dict[str, Any]:
    """The one frame of `type_` sent to `conn`."""
    found = frames_to(effects, conn, type_)
    assert len(found) == 1, f"expected one {type_!r} to conn {conn}, got {found}"
    return found[0]


def types_to(effects: list[Effect], conn: int) -> list[str]:
    return [str(f["type"]) for f in frames_to(effects, conn)]


def receivers(effects: list[Effect], type_: str) -> set[int]:
    return {e.conn for e in effects if isinstance(e, Send) and e.message["type"] == type_}


def closes(effects: list[Effect]) -> dict[int, int]:
    return {e.conn: e.code for e in effects if isinstance(e, Close)}


def records(effects: list[Effect], kind: str | None = None) -> list[Record]:
    return [e for e in effects if isinstance(e, Record) and kind in (None, e.kind)]


def only_error(effects: list[Effect], conn: int) -> dict[str, Any]:
    """`effects` is exactly one error frame to `conn`; return it."""
    assert len(effects) == 1, effects
    (effect,) = effects
    assert isinstance(effect, Send) and effect.conn == conn, effect
    assert effect.message["type"] == "error"
    return effect.message


def join(room: Room, who: Person, now: datetime = NOW, conn: int | None = None) -> list[Effect]:
    return room.connect(who.conn if conn is None else conn, who.pid, who.role, who.name, now)


def send(room: Room, who: Person, msg: p.ClientMessage, now: datetime = NOW) -> list[Effect]:
    return room.receive(who.conn, msg, now)


def new_room() -> Room:
    return Room("visit-1", grace=GRACE)


def room_in_session(*guests: Person) -> Room:
    """The clinician is in and has admitted `guests` (PAT if none given)."""
    room = new_room()
    join(room, DR)
    for guest in guests or (PAT,):
        join(room, guest)
        send(room, DR, p.Admit(guest.pid))
    return room


def listed(who: Person, *, state: str = "connected", audio: bool = True, video: bool = True,
           screen: bool = False) -> dict[str, Any]:
    """`who` as it appears in an `admitted` participants list."""
    return {"id": who.pid, "role": who.role, "name": who.name,
            "audio": audio, "video": video, "screen": screen, "state": state}


def waiting_entry(who: Person, since: datetime = NOW) -> dict[str, Any]:
    return {"id": who.pid, "role": who.role, "name": who.name, "since": since.isoformat()}


# ---- entering -----------------------------------------------------------------


def test_clinician_enters_directly() -> None:
    room = new_room()
    effects = join(room, DR)
    assert types_to(effects, DR.conn) == ["welcome", "admitted", "waiting_room"]
    assert frame_to(effects, DR.conn, "welcome") == {
        "type": "welcome", "v": 1,
        "participant": {"id": "c1", "role": "clinician", "name": DR.name},
        "visit_id": "visit-1", "state": "admitted", "resumed": False, "heartbeat_s": 20.0,
    }
    assert frame_to(effects, DR.conn, "admitted") == {"type": "admitted", "participants": []}
    assert frame_to(effects, DR.conn, "waiting_room") == {"type": "waiting_room", "waiting": []}
    assert records(effects) == [Record("c1", "admitted", NOW, {"by": None})]
    assert closes(effects) == {}
    assert room.members["c1"].state is MemberState.ADMITTED


def test_patient_waits_and_the_care_team_sees_it() -> None:
    room = new_room()
    join(room, DR)
    join(room, CO)
    later = NOW + timedelta(minutes=2)
    effects = join(room, PAT, later)

    welcome = frame_to(effects, PAT.conn, "welcome")
    assert (welcome["state"], welcome["resumed"]) == ("waiting", False)
    assert types_to(effects, PAT.conn) == ["welcome"]  # no `admitted`, no waiting room
    expected = {"type": "waiting_room", "waiting": [waiting_entry(PAT, later)]}
    assert frame_to(effects, DR.conn, "waiting_room") == expected
    assert frame_to(effects, CO.conn, "waiting_room") == expected
    assert records(effects) == [Record("p1", "waiting", later)]
    assert room.members["p1"].state is MemberState.WAITING


def test_guests_in_the_room_do_not_see_the_waiting_room() -> None:
    room = room_in_session(PAT)
    effects = join(room, FAM)
    assert receivers(effects, "waiting_room") == {DR.conn}
    assert frames_to(effects, PAT.conn) == []


def test_clinician_arriving_later_sees_who_is_already_waiting() -> None:
    room = new_room()
    join(room, PAT)
    effects = join(room, DR, NOW + timedelta(minutes=5))
    assert frame_to(effects, DR.conn, "waiting_room")["waiting"] == [waiting_entry(PAT, NOW)]


def test_second_care_team_member_joins_the_first() -> None:
    room = new_room()
    join(room, DR)
    effects = join(room, CO)
    assert frame_to(effects, CO.conn, "admitted")["participants"] == [listed(DR)]
    joined = frame_to(effects, DR.conn, "participant_joined")["participant"]
    assert (joined["id"], joined["role"], joined["name"]) == ("cc1", "co_clinician", CO.name)


# ---- admit and deny -------------------------------------------------------------


def test_admit() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    effects = send(room, DR, p.Admit("p1"), NOW + timedelta(seconds=5))

    assert frame_to(effects, PAT.conn, "admitted") == {
        "type": "admitted", "participants": [listed(DR)]}
    joined = frame_to(effects, DR.conn, "participant_joined")["participant"]
    assert {k: joined[k] for k in ("id", "role", "name", "audio", "video")} == {
        "id": "p1", "role": "patient", "name": PAT.name, "audio": True, "video": True}
    assert frame_to(effects, DR.conn, "waiting_room")["waiting"] == []
    assert records(effects) == [Record("p1", "admitted", NOW + timedelta(seconds=5), {"by": "c1"})]
    assert room.members["p1"].state is MemberState.ADMITTED
    assert "participant_joined" not in types_to(effects, PAT.conn)


def test_admit_by_co_clinician_records_who() -> None:
    room = new_room()
    join(room, CO)
    join(room, PAT)
    effects = send(room, CO, p.Admit("p1"))
    assert records(effects, "admitted")[0].detail == {"by": "cc1"}


@pytest.mark.parametrize("pid", ["nobody", "c1", "p1"])
def test_admit_someone_not_waiting(pid: str) -> None:
    room = room_in_session(PAT)  # p1 already admitted
    error = only_error(send(room, DR, p.Admit(pid)), DR.conn)
    assert (error["code"], error["ref"]) == ("not_waiting", "admit")


def test_admit_a_waiting_guest_whose_socket_dropped_is_not_waiting() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    room.disconnect(PAT.conn, NOW)
    assert only_error(send(room, DR, p.Admit("p1")), DR.conn)["code"] == "not_waiting"
    assert room.members["p1"].state is MemberState.WAITING


def test_deny() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    join(room, FAM)
    effects = send(room, DR, p.Deny("p1", reason="This is not your appointment"))

    assert frame_to(effects, PAT.conn, "denied") == {
        "type": "denied", "reason": "This is not your appointment"}
    assert closes(effects) == {PAT.conn: p.CLOSE_DENIED}
    assert effects[-1] == Close(PAT.conn, 4403, "denied")  # after the denied frame
    assert records(effects, "denied") == [Record("p1", "denied", NOW, {"by": "c1"})]
    assert records(effects, "left")[0].detail == {"reason": "denied"}
    assert frame_to(effects, DR.conn, "waiting_room")["waiting"] == [waiting_entry(FAM)]
    assert frames_to(effects, FAM.conn) == []
    assert "p1" not in room.members
    assert room.disconnect(PAT.conn, NOW) == []  # the socket closing afterwards is a no-op


def test_deny_without_reason_sends_empty_reason() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    effects = send(room, DR, p.Deny("p1"))
    assert frame_to(effects, PAT.conn, "denied")["reason"] == ""


def test_deny_someone_already_admitted_is_not_waiting() -> None:
    room = room_in_session(PAT)
    error = only_error(send(room, DR, p.Deny("p1")), DR.conn)
    assert (error["code"], error["ref"]) == ("not_waiting", "deny")
    assert room.members["p1"].state is MemberState.ADMITTED


@pytest.mark.parametrize("msg", [p.Admit("f1"), p.Deny("f1"), p.End()])
@pytest.mark.parametrize("admitted", [True, False])
def test_guests_may_not_admit_deny_or_end(msg: p.ClientMessage, admitted: bool) -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    join(room, FAM)
    if admitted:
        send(room, DR, p.Admit("p1"))
    error = only_error(send(room, PAT, msg), PAT.conn)
    assert (error["code"], error["ref"]) == ("not_allowed", msg.TYPE)
    assert room.ended is None
    assert room.members["f1"].state is MemberState.WAITING


# ---- the waiting room is sealed off ---------------------------------------------

ROOM_MESSAGES: list[p.ClientMessage] = [
    p.Offer(to="c1", sdp=SDP),
    p.Answer(to="c1", sdp=SDP),
    p.Ice(to="c1", candidate=CANDIDATE),
    p.Ice(to="c1", candidate=None),
    p.Chat(text="hello?"),
    p.MediaState(audio=False, video=False),
    p.MediaConnected(peer="c1", audio=True, video=True),
]


@pytest.mark.parametrize("msg", ROOM_MESSAGES, ids=lambda m: m.TYPE)
def test_waiting_guest_may_not_send_room_traffic(msg: p.ClientMessage) -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    error = only_error(send(room, PAT, msg), PAT.conn)
    assert (error["code"], error["ref"]) == ("not_admitted", msg.TYPE)


def test_waiting_guest_receives_nothing_of_the_room() -> None:
    room = room_in_session(PAT)
    join(room, FAM)
    effects: list[Effect] = []
    for sender, other in ((DR, PAT), (PAT, DR)):
        for target in (FAM.pid, other.pid):
            effects += send(room, sender, p.Offer(to=target, sdp=SDP))
            effects += send(room, sender, p.Answer(to=target, sdp=SDP))
            effects += send(room, sender, p.Ice(to=target, candidate=CANDIDATE))
            effects += send(room, sender, p.Ice(to=target, candidate=None))
        effects += send(room, sender, p.Chat(text="can you hear me?"))
        effects += send(room, sender, p.MediaState(audio=False, video=True))
        effects += send(room, sender, p.MediaConnected(peer=other.pid, audio=True, video=True))
    effects += room.disconnect(PAT.conn, NOW)
    effects += join(room, PAT, conn=22)
    join(room, CO)
    effects += send(room, CO, p.Leave())

    assert frames_to(effects, FAM.conn) == []
    # ...while the traffic did flow between the admitted ones.
    assert len(frames_to(effects, PAT.conn, "offer")) == 1
    assert len(frames_to(effects, DR.conn, "chat")) == 2


def test_relay_to_a_waiting_guest_is_unknown_participant() -> None:
    room = room_in_session(PAT)
    join(room, FAM)
    error = only_error(send(room, DR, p.Offer(to="f1", sdp=SDP)), DR.conn)
    assert (error["code"], error["ref"]) == ("unknown_participant", "offer")


# ---- relaying -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "relayed"),
    [
        (p.Offer(to="p1", sdp=SDP), {"type": "offer", "from": "c1", "sdp": SDP}),
        (p.Answer(to="p1", sdp=SDP), {"type": "answer", "from": "c1", "sdp": SDP}),
        (p.Ice(to="p1", candidate=CANDIDATE), {"type": "ice", "from": "c1",
                                                "candidate": CANDIDATE}),
        (p.Ice(to="p1", candidate=None), {"type": "ice", "from": "c1", "candidate": None}),
    ],
    ids=["offer", "answer", "ice", "ice-end"],
)
def test_relay_goes_only_to_the_named_target(
    msg: p.ClientMessage, relayed: dict[str, Any]
) -> None:
    room = room_in_session(PAT, FAM)
    join(room, CO)
    assert send(room, DR, msg) == [Send(PAT.conn, relayed)]


def test_relay_answer_back_from_guest() -> None:
    room = room_in_session(PAT)
    assert send(room, PAT, p.Answer(to="c1", sdp=SDP)) == [
        Send(DR.conn, {"type": "answer", "from": "p1", "sdp": SDP})]


@pytest.mark.parametrize("to", ["nobody", "c1"], ids=["unknown", "self"])
@pytest.mark.parametrize("kind", ["offer", "answer", "ice"])
def test_relay_to_unknown_or_self_is_unknown_participant(to: str, kind: str) -> None:
    room = room_in_session(PAT)
    msg: p.ClientMessage = (
        p.Ice(to=to, candidate=None) if kind == "ice"
        else p.Offer(to=to, sdp=SDP) if kind == "offer" else p.Answer(to=to, sdp=SDP))
    error = only_error(send(room, DR, msg), DR.conn)
    assert (error["code"], error["ref"]) == ("unknown_participant", kind)


def test_relay_to_a_reconnecting_participant_is_unknown_participant() -> None:
    room = room_in_session(PAT)
    room.disconnect(PAT.conn, NOW)
    error = only_error(send(room, DR, p.Offer(to="p1", sdp=SDP)), DR.conn)
    assert error["code"] == "unknown_participant"


# ---- chat and media -------------------------------------------------------------


def test_chat_goes_to_everyone_admitted_including_the_sender() -> None:
    room = room_in_session(PAT)
    join(room, CO)
    join(room, FAM)  # waiting
    at = NOW + timedelta(minutes=7)
    effects = send(room, PAT, p.Chat(text="Is my camera on?"), at)
    expected = {"type": "chat", "from": "p1", "name": PAT.name, "text": "Is my camera on?",
                "at": "2026-12-01T15:07:00+00:00"}
    assert effects == [Send(c, expected) for c in (DR.conn, PAT.conn, CO.conn)]
    assert records(effects) == []  # chat is not kept on the timeline


def test_media_state_goes_to_the_others_and_is_recorded() -> None:
    room = room_in_session(PAT)
    join(room, CO)
    join(room, FAM)  # waiting
    effects = send(room, PAT, p.MediaState(audio=False, video=True, screen=True))
    frame = {"type": "media_state", "participant_id": "p1", "audio": False, "video": True,
             "screen": True}
    assert receivers(effects, "media_state") == {DR.conn, CO.conn}
    assert frame_to(effects, DR.conn, "media_state") == frame
    assert records(effects) == [Record("p1", "media_state", NOW,
                                       {"audio": False, "video": True, "screen": True})]


def test_media_state_without_screen_keeps_the_last_screen_value() -> None:
    room = room_in_session(PAT)
    send(room, PAT, p.MediaState(audio=True, video=True, screen=True))
    effects = send(room, PAT, p.MediaState(audio=False, video=False))
    assert frame_to(effects, DR.conn, "media_state")["screen"] is True


def test_newcomers_see_the_current_media_state() -> None:
    room = room_in_session(PAT)
    send(room, PAT, p.MediaState(audio=False, video=True))
    join(room, FAM)
    effects = send(room, DR, p.Admit("f1"))
    assert frame_to(effects, FAM.conn, "admitted")["participants"] == [
        listed(DR), listed(PAT, audio=False)]


def test_media_connected_is_recorded_only() -> None:
    room = room_in_session(PAT)
    effects = send(room, PAT, p.MediaConnected(peer="c1", audio=True, video=False))
    assert effects == [Record("p1", "media_connected", NOW,
                              {"peer": "c1", "audio": True, "video": False})]


def test_media_connected_with_unknown_peer() -> None:
    room = room_in_session(PAT)
    error = only_error(send(room, PAT, p.MediaConnected(peer="zz", audio=True, video=True)),
                       PAT.conn)
    assert (error["code"], error["ref"]) == ("unknown_participant", "media_connected")


# ---- a full room ------------------------------------------------------------------

GUESTS = [Person(10 + i, f"g{i}", "family_member", f"Guest {i}") for i in range(1, 7)]


def full_room() -> Room:
    """The clinician and five guests: six in the room."""
    return room_in_session(*GUESTS[:5])


def test_a_mesh_of_six_relays_between_every_pair() -> None:
    room = full_room()
    mesh = [DR, *GUESTS[:5]]
    assert len([m for m in room.members.values() if m.state is MemberState.ADMITTED]) == 6
    for a in mesh:
        for b in mesh:
            if a is not b:
                assert send(room, a, p.Offer(to=b.pid, sdp=SDP)) == [
                    Send(b.conn, {"type": "offer", "from": a.pid, "sdp": SDP})]


def test_each_entrant_is_listed_to_the_ones_already_in() -> None:
    room = new_room()
    join(room, DR)
    for i, guest in enumerate(GUESTS[:5]):
        join(room, guest)
        effects = send(room, DR, p.Admit(guest.pid))
        already_in = [DR, *GUESTS[:i]]
        assert [x["id"] for x in frame_to(effects, guest.conn, "admitted")["participants"]] == [
            x.pid for x in already_in]
        assert receivers(effects, "participant_joined") == {x.conn for x in already_in}


def test_seventh_admit_is_room_full() -> None:
    room = full_room()
    seventh = GUESTS[5]
    join(room, seventh)
    error = only_error(send(room, DR, p.Admit(seventh.pid)), DR.conn)
    assert (error["code"], error["ref"]) == ("room_full", "admit")
    assert room.members[seventh.pid].state is MemberState.WAITING
    # Once someone leaves there is a place again.
    send(room, GUESTS[0], p.Leave())
    effects = send(room, DR, p.Admit(seventh.pid))
    assert frame_to(effects, seventh.conn, "admitted")


def test_a_reconnecting_participant_keeps_its_place() -> None:
    room = full_room()
    room.disconnect(GUESTS[0].conn, NOW)
    join(room, GUESTS[5])
    assert only_error(send(room, DR, p.Admit(GUESTS[5].pid)), DR.conn)["code"] == "room_full"


def test_seventh_care_team_member_connecting_is_room_full() -> None:
    room = full_room()
    effects = join(room, CO)
    assert frame_to(effects, CO.conn, "error")["code"] == "room_full"
    assert closes(effects) == {CO.conn: p.CLOSE_UNAVAILABLE}
    assert len(effects) == 2
    assert "cc1" not in room.members
    assert room.member_for(CO.conn) is None


def test_waiting_guests_do_not_count_towards_the_limit() -> None:
    room = full_room()
    effects = join(room, GUESTS[5])
    assert frame_to(effects, GUESTS[5].conn, "welcome")["state"] == "waiting"


# ---- drops, reconnects, timeouts ----------------------------------------------------


def test_disconnect_tells_the_others_and_is_recorded() -> None:
    room = room_in_session(PAT)
    join(room, CO)
    effects = room.disconnect(PAT.conn, NOW)
    frame = {"type": "reconnecting", "participant_id": "p1"}
    assert effects == [Record("p1", "reconnecting", NOW), Send(DR.conn, frame),
                       Send(CO.conn, frame)]
    assert room.member_for(PAT.conn) is None


def test_a_dropped_participant_is_listed_as_reconnecting() -> None:
    room = room_in_session(PAT)
    room.disconnect(PAT.conn, NOW)
    join(room, FAM)
    effects = send(room, DR, p.Admit("f1"))
    assert frame_to(effects, FAM.conn, "admitted")["participants"] == [
        listed(DR), listed(PAT, state="reconnecting")]
    # The reconnecting one is not told that someone joined: it has no socket.
    assert receivers(effects, "participant_joined") == {DR.conn}


def test_waiting_guest_disconnect_updates_the_waiting_room() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    effects = room.disconnect(PAT.conn, NOW)
    assert frame_to(effects, DR.conn, "waiting_room")["waiting"] == []
    assert records(effects) == [Record("p1", "reconnecting", NOW)]


def test_reconnect_within_grace_resumes_without_new_admission() -> None:
    room = room_in_session(PAT)
    join(room, CO)
    room.disconnect(PAT.conn, NOW)
    back = NOW + GRACE - timedelta(seconds=1)
    effects = join(room, PAT, back, conn=22)

    welcome = frame_to(effects, 22, "welcome")
    assert (welcome["state"], welcome["resumed"]) == ("admitted", True)
    assert frame_to(effects, 22, "admitted")["participants"] == [listed(DR), listed(CO)]
    assert types_to(effects, 22) == ["welcome", "admitted"]
    rejoined = {"type": "rejoined", "participant_id": "p1"}
    assert frames_to(effects, DR.conn) == [rejoined]
    assert frames_to(effects, CO.conn) == [rejoined]
    assert records(effects) == [Record("p1", "rejoined", back)]
    assert closes(effects) == {}
    assert room.next_deadline() is None
    assert room.expire(NOW + GRACE * 10) == []
    assert send(room, DR, p.Offer(to="p1", sdp=SDP)) == [
        Send(22, {"type": "offer", "from": "c1", "sdp": SDP})]


def test_clinician_reconnecting_gets_the_waiting_room_again() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    room.disconnect(DR.conn, NOW)
    effects = join(room, DR, NOW + timedelta(seconds=3), conn=21)
    assert types_to(effects, 21) == ["welcome", "admitted", "waiting_room"]
    assert frame_to(effects, 21, "waiting_room")["waiting"] == [waiting_entry(PAT)]


def test_waiting_guest_reconnecting_is_still_waiting() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    room.disconnect(PAT.conn, NOW)
    effects = join(room, PAT, NOW + timedelta(seconds=10), conn=22)
    welcome = frame_to(effects, 22, "welcome")
    assert (welcome["state"], welcome["resumed"]) == ("waiting", True)
    assert types_to(effects, 22) == ["welcome"]
    # Listed again, with the time it first started waiting.
    assert frame_to(effects, DR.conn, "waiting_room")["waiting"] == [waiting_entry(PAT, NOW)]
    assert "rejoined" not in types_to(effects, DR.conn)
    assert room.members["p1"].state is MemberState.WAITING
    assert frame_to(send(room, DR, p.Admit("p1")), 22, "admitted")


def test_expire_after_grace_removes_them() -> None:
    room = room_in_session(PAT)
    room.disconnect(PAT.conn, NOW)
    assert room.expire(NOW + GRACE - timedelta(microseconds=1)) == []
    effects = room.expire(NOW + GRACE)
    assert frame_to(effects, DR.conn, "participant_left") == {
        "type": "participant_left", "participant_id": "p1", "reason": "timeout"}
    assert records(effects) == [Record("p1", "left", NOW + GRACE, {"reason": "timeout"})]
    assert "p1" not in room.members
    assert room.expire(NOW + GRACE * 2) == []


def test_after_timeout_a_guest_must_wait_again() -> None:
    room = room_in_session(PAT)
    room.disconnect(PAT.conn, NOW)
    room.expire(NOW + GRACE)
    effects = join(room, PAT, NOW + GRACE * 2, conn=22)
    welcome = frame_to(effects, 22, "welcome")
    assert (welcome["state"], welcome["resumed"]) == ("waiting", False)


def test_expired_waiting_guest_is_dropped_quietly() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    room.disconnect(PAT.conn, NOW)
    effects = room.expire(NOW + GRACE)
    assert records(effects) == [Record("p1", "left", NOW + GRACE, {"reason": "timeout"})]
    assert "participant_left" not in types_to(effects, DR.conn)
    assert "p1" not in room.members


def test_next_deadline() -> None:
    room = room_in_session(PAT, FAM)
    assert room.next_deadline() is None
    room.disconnect(FAM.conn, NOW + timedelta(seconds=10))
    assert room.next_deadline() == NOW + timedelta(seconds=10) + GRACE
    room.disconnect(PAT.conn, NOW + timedelta(seconds=20))
    assert room.next_deadline() == NOW + timedelta(seconds=10) + GRACE
    join(room, FAM, NOW + timedelta(seconds=30), conn=33)
    assert room.next_deadline() == NOW + timedelta(seconds=20) + GRACE
    room.expire(NOW + timedelta(seconds=20) + GRACE)
    assert room.next_deadline() is None


def test_grace_is_configurable() -> None:
    room = Room("visit-1", grace=timedelta(seconds=5))
    join(room, DR)
    room.disconnect(DR.conn, NOW)
    assert room.next_deadline() == NOW + timedelta(seconds=5)
    room.expire(NOW + timedelta(seconds=5))
    assert room.empty


# ---- a second connection for the same participant -----------------------------------


def test_second_connection_replaces_the_first() -> None:
    room = room_in_session(PAT)
    effects = join(room, PAT, NOW + timedelta(seconds=1), conn=22)
    assert effects[0] == Close(PAT.conn, p.CLOSE_REPLACED, "connected again elsewhere")
    assert closes(effects) == {PAT.conn: 4409}
    assert frames_to(effects, PAT.conn) == []
    welcome = frame_to(effects, 22, "welcome")
    assert (welcome["state"], welcome["resumed"]) == ("admitted", True)
    assert frame_to(effects, DR.conn, "rejoined") == {"type": "rejoined", "participant_id": "p1"}

    # The old socket closing now is stale: nothing happens, the new one stays.
    assert room.disconnect(PAT.conn, NOW + timedelta(seconds=2)) == []
    assert room.next_deadline() is None
    assert room.member_for(22) is room.members["p1"]
    assert only_error(room.receive(PAT.conn, p.Chat(text="hi"), NOW), PAT.conn)[
        "code"] == "hello_required"
    assert receivers(send(room, DR, p.Chat(text="ok")), "chat") == {DR.conn, 22}


def test_second_connection_of_a_waiting_guest() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    effects = join(room, PAT, conn=22)
    assert closes(effects) == {PAT.conn: 4409}
    assert frame_to(effects, 22, "welcome")["state"] == "waiting"
    assert room.disconnect(PAT.conn, NOW) == []
    assert frame_to(send(room, DR, p.Admit("p1")), 22, "admitted")


# ---- leaving and ending ---------------------------------------------------------------


def test_leave() -> None:
    room = room_in_session(PAT)
    effects = send(room, PAT, p.Leave(), NOW + timedelta(minutes=50))
    assert frame_to(effects, DR.conn, "participant_left") == {
        "type": "participant_left", "participant_id": "p1", "reason": "left"}
    assert effects[-1] == Close(PAT.conn, p.CLOSE_NORMAL, "left")
    assert records(effects) == [Record("p1", "left", NOW + timedelta(minutes=50),
                                       {"reason": "left"})]
    assert "p1" not in room.members
    assert room.disconnect(PAT.conn, NOW) == []
    assert room.next_deadline() is None


def test_waiting_guest_leaves() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    effects = send(room, PAT, p.Leave())
    assert frame_to(effects, DR.conn, "waiting_room")["waiting"] == []
    assert closes(effects) == {PAT.conn: 1000}
    assert room.ended is None


def test_clinician_ends_the_visit_for_everyone() -> None:
    room = room_in_session(PAT)
    join(room, CO)
    join(room, FAM)  # waiting
    effects = send(room, DR, p.End(), NOW + timedelta(minutes=45))

    ended = {"type": "ended", "reason": "ended", "by": DR.name}
    for who in (DR, PAT, CO, FAM):
        assert frames_to(effects, who.conn) == [ended]
    assert closes(effects) == {c: p.CLOSE_ENDED for c in (DR.conn, PAT.conn, CO.conn, FAM.conn)}
    assert records(effects) == [Record("c1", "ended", NOW + timedelta(minutes=45))]
    assert [e for e in effects if isinstance(e, VisitOver)] == [VisitOver("ended", "c1")]
    assert room.ended == "ended"
    assert room.empty


def test_reconnecting_members_are_not_sent_anything_when_the_visit_ends() -> None:
    room = room_in_session(PAT)
    room.disconnect(PAT.conn, NOW)
    effects = send(room, DR, p.End())
    assert receivers(effects, "ended") == {DR.conn}
    assert room.next_deadline() is None


def test_after_the_end_connects_are_refused() -> None:
    room = room_in_session(PAT)
    send(room, DR, p.End())
    for who in (PAT, DR, FAM):
        effects = join(room, who, NOW + timedelta(minutes=1), conn=40)
        assert effects == [Send(40, {"type": "ended", "reason": "ended", "by": None}),
                           Close(40, p.CLOSE_ENDED, "ended")]
    assert room.empty
    assert send(room, DR, p.End()) == [Send(DR.conn, p.error("hello_required", "say hello first"))]
    assert room.end("ended", None, NOW) == []


def test_cancellation_ends_the_visit_with_no_one_named() -> None:
    room = room_in_session(PAT)
    effects = room.end("cancelled", None, NOW)
    assert frame_to(effects, PAT.conn, "ended") == {
        "type": "ended", "reason": "cancelled", "by": None}
    assert records(effects) == [Record(None, "cancelled", NOW)]
    assert effects[-1] == VisitOver("cancelled", None)


# ---- housekeeping messages ------------------------------------------------------------


@pytest.mark.parametrize("who", [DR, PAT], ids=["admitted", "waiting"])
def test_ping_pong(who: Person) -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    assert send(room, who, p.Ping(id=42)) == [Send(who.conn, {"type": "pong", "id": 42})]
    assert send(room, who, p.Ping()) == [Send(who.conn, {"type": "pong"})]


@pytest.mark.parametrize("who", [DR, PAT], ids=["admitted", "waiting"])
def test_hello_after_welcome(who: Person) -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    error = only_error(send(room, who, p.Hello(v=1, ticket="t")), who.conn)
    assert (error["code"], error["ref"]) == ("already_said_hello", "hello")


@pytest.mark.parametrize("msg", [p.Ping(id=1), p.Chat(text="hi"), p.Leave(), p.End()],
                         ids=lambda m: m.TYPE)
def test_message_from_an_unknown_connection(msg: p.ClientMessage) -> None:
    room = room_in_session(PAT)
    error = only_error(room.receive(99, msg, NOW), 99)
    assert error["code"] == "hello_required"
    assert room.ended is None
    assert set(room.members) == {"c1", "p1"}
