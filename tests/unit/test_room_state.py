"""`Room.to_state()` / `Room.from_state()`: a room through JSON behaves as the original.

Each scenario builds a room in one interesting state; every next event is applied to a
fresh original and to its JSON round-tripped copy, and the effects (and the states
after) must be equal. Connection ids are large (instance << 32 | n) as in scale-out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from telehealth.signaling import protocol as p
from telehealth.signaling.room import Effect, Refused, Room

NOW = datetime(2026, 12, 1, 15, 0, 0, 123456, tzinfo=UTC)
GRACE = timedelta(seconds=60)
A = 0x5EED_CAFE << 32  # instance A's connection ids
B = 0x0BAD_F00D << 32
DR, PAT, FAM, NEW = A | 1, B | 1, B | 2, A | 9


def roundtrip(room: Room) -> Room:
    return Room.from_state(json.loads(json.dumps(room.to_state())))


def fresh() -> Room:
    return Room("visit-1", max_participants=3, grace=GRACE, heartbeat_s=7.5)


def clinician_only() -> Room:
    room = fresh()
    room.connect(DR, "c1", "clinician", "Dr. Ruth Okafor", NOW)
    return room


def patient_waiting() -> Room:
    room = clinician_only()
    room.connect(PAT, "p1", "patient", "Sam Patel", NOW + timedelta(seconds=1))
    return room


def in_session() -> Room:
    room = patient_waiting()
    room.admit_by("p1", "c1", NOW + timedelta(seconds=2))
    room.receive(PAT, p.MediaState(audio=False, video=True, screen=True),
                 NOW + timedelta(seconds=3))
    return room


def patient_dropped() -> Room:
    room = in_session()
    room.connect(FAM, "f1", "family_member", "Lee Patel", NOW + timedelta(seconds=4))
    room.disconnect(PAT, NOW + timedelta(seconds=5))
    return room


def guest_dropped_while_waiting() -> Room:
    room = patient_waiting()
    room.disconnect(PAT, NOW + timedelta(seconds=5))
    return room


def ended() -> Room:
    room = in_session()
    room.end("ended", room.members["c1"], NOW + timedelta(seconds=9))
    return room


SCENARIOS: dict[str, Callable[[], Room]] = {
    "fresh": fresh, "clinician_only": clinician_only, "patient_waiting": patient_waiting,
    "in_session": in_session, "patient_dropped": patient_dropped,
    "guest_dropped_while_waiting": guest_dropped_while_waiting, "ended": ended,
}

LATER = NOW + timedelta(seconds=30)
EVENTS: dict[str, Callable[[Room], list[Effect]]] = {
    "new guest": lambda r: r.connect(NEW, "g9", "interpreter", "Ana", LATER),
    "new co-clinician": lambda r: r.connect(NEW, "cc1", "co_clinician", "Dr. Mo Chen", LATER),
    "patient back": lambda r: r.connect(NEW, "p1", "patient", "Sam Patel", LATER),
    "clinician again": lambda r: r.connect(NEW, "c1", "clinician", "Dr. Ruth Okafor", LATER),
    "clinician drops": lambda r: r.disconnect(DR, LATER),
    "patient drops": lambda r: r.disconnect(PAT, LATER),
    "before grace ends": lambda r: r.expire(NOW + timedelta(seconds=30)),
    "grace over": lambda r: r.expire(NOW + GRACE + timedelta(seconds=10)),
    "chat": lambda r: r.receive(DR, p.Chat(text="hello"), LATER),
    "patient chat": lambda r: r.receive(PAT, p.Chat(text="hi"), LATER),
    "lobby chat": lambda r: r.receive(PAT, p.LobbyChat(text="waiting"), LATER),
    "offer": lambda r: r.receive(DR, p.Offer(to="p1", sdp="v=0"), LATER),
    "ice": lambda r: r.receive(PAT, p.Ice(to="c1", candidate=None), LATER),
    "media connected": lambda r: r.receive(PAT, p.MediaConnected(peer="c1", audio=True,
                                                                 video=True), LATER),
    "admit": lambda r: r.admit_by("p1", "c1", LATER),
    "deny": lambda r: r.deny_by("p1", "c1", "not now", LATER),
    "leave": lambda r: r.receive(PAT, p.Leave(), LATER),
    "end": lambda r: r.receive(DR, p.End(), LATER),
}


def outcome(room: Room, event: Callable[[Room], list[Effect]]) -> object:
    try:
        effects: object = event(room)
    except Refused as exc:
        effects = ("refused", exc.code)
    return effects, room.to_state(), room.next_deadline(), room.waiting_list()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_state_is_json_and_round_trips(scenario: str) -> None:
    room = SCENARIOS[scenario]()
    state = room.to_state()
    assert json.loads(json.dumps(state)) == state  # JSON-safe
    copy = roundtrip(room)
    assert copy.to_state() == state
    assert copy.next_deadline() == room.next_deadline()
    assert copy.waiting_list() == room.waiting_list()
    assert {c: m.id for c, m in copy._by_conn.items()} == {
        c: m.id for c, m in room._by_conn.items()}


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_copy_behaves_as_the_original(scenario: str, event: str) -> None:
    build, apply = SCENARIOS[scenario], EVENTS[event]
    assert outcome(roundtrip(build()), apply) == outcome(build(), apply)


def test_datetimes_keep_zone_and_microseconds() -> None:
    state = patient_dropped().to_state()
    pat = next(m for m in state["members"] if m["id"] == "p1")
    assert datetime.fromisoformat(pat["dropped_at"]) == NOW + timedelta(seconds=5)
    assert roundtrip(patient_dropped()).members["p1"].since == NOW + timedelta(seconds=2)
    assert roundtrip(patient_dropped()).grace == GRACE
