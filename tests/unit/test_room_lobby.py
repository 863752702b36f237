"""Lobby chat: a waiting guest and the care team talk; the room hears none of it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from telehealth.signaling import protocol as p
from telehealth.signaling.room import Effect, Room, Send

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def sent(effects: list[Effect], kind: str) -> dict[int, dict[str, Any]]:
    return {e.conn: e.message for e in effects
            if isinstance(e, Send) and e.message["type"] == kind}


def errors(effects: list[Effect]) -> list[str]:
    return [e.message["code"] for e in effects
            if isinstance(e, Send) and e.message["type"] == "error"]


def room_with_waiting_patient() -> Room:
    room = Room("v1")
    room.connect(1, "dr", "clinician", "Dana Rivera", NOW)
    room.connect(2, "co", "co_clinician", "Lee Park", NOW)
    room.connect(3, "pat", "patient", "Alex Morgan", NOW)
    room.connect(4, "rep", "legal_representative", "Sam Morgan", NOW)
    room.admit_by("rep", "dr", NOW)
    return room


def test_a_waiting_guest_writes_to_the_care_team_only() -> None:
    room = room_with_waiting_patient()
    effects = room.receive(3, p.LobbyChat(text="I'm here, running late"), NOW)
    frames = sent(effects, "lobby_chat")
    assert set(frames) == {1, 2, 3}  # both clinicians and the sender; not the admitted rep
    assert frames[1] == {"type": "lobby_chat", "from": "pat", "name": "Alex Morgan",
                         "text": "I'm here, running late", "at": NOW.isoformat(),
                         "with": "pat"}


def test_the_care_team_answers_one_waiting_guest() -> None:
    room = room_with_waiting_patient()
    effects = room.receive(1, p.LobbyChat(text="I'll be with you in 2 minutes", to="pat"), NOW)
    frames = sent(effects, "lobby_chat")
    assert set(frames) == {1, 2, 3}
    assert frames[3]["with"] == "pat" and frames[3]["from"] == "dr"
    assert errors(room.receive(1, p.LobbyChat(text="x"), NOW)) == ["not_waiting"]
    assert errors(room.receive(1, p.LobbyChat(text="x", to="rep"), NOW)) == ["not_waiting"]


def test_admitted_guests_use_room_chat_and_guests_cannot_address() -> None:
    room = room_with_waiting_patient()
    assert errors(room.receive(4, p.LobbyChat(text="hi"), NOW)) == ["not_allowed"]
    assert errors(room.receive(3, p.LobbyChat(text="hi", to="dr"), NOW)) == ["invalid_field"]


def test_nobody_to_read_it_is_said() -> None:
    room = Room("v1")
    room.connect(3, "pat", "patient", "Alex Morgan", NOW)
    effects = room.receive(3, p.LobbyChat(text="hello?"), NOW)
    assert errors(effects) == ["no_care_team"]
    assert sent(effects, "lobby_chat") == {}
