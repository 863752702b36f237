"""Admit and deny from the dashboard: `Room.admit_by` / `deny_by` for a clinician who
need not be connected to the room. Same effects as in the call; refusals raise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_room import (
    DR,
    FAM,
    NOW,
    PAT,
    closes,
    frame_to,
    frames_to,
    join,
    listed,
    new_room,
    records,
    waiting_entry,
)

from telehealth.signaling.room import MemberState, Record, Refused, Room

LATER = NOW + timedelta(minutes=3)


def test_waiting_list_is_what_the_care_team_is_sent() -> None:
    room = new_room()
    join(room, PAT)
    join(room, FAM, LATER)
    assert room.waiting_list() == [waiting_entry(PAT), waiting_entry(FAM, LATER)]
    room.disconnect(FAM.conn, LATER)  # dropped while waiting: not waiting any more
    assert room.waiting_list() == [waiting_entry(PAT)]


def test_admit_by_a_clinician_outside_the_room() -> None:
    room = new_room()
    join(room, PAT)
    effects = room.admit_by("p1", "c1", LATER)
    assert frame_to(effects, PAT.conn, "admitted") == {"type": "admitted", "participants": []}
    assert records(effects) == [Record("p1", "admitted", LATER, {"by": "c1"})]
    assert room.members["p1"].state is MemberState.ADMITTED
    assert room.members["p1"].since == LATER
    assert room.waiting_list() == []


def test_admit_by_tells_whoever_is_in_the_room_and_updates_their_waiting_room() -> None:
    room = new_room()
    join(room, DR)
    join(room, PAT)
    join(room, FAM)
    effects = room.admit_by("p1", "c1", LATER)
    assert frame_to(effects, PAT.conn, "admitted")["participants"] == [listed(DR)]
    assert frame_to(effects, DR.conn, "participant_joined")["participant"]["id"] == "p1"
    assert frame_to(effects, DR.conn, "waiting_room")["waiting"] == [waiting_entry(FAM)]
    assert frames_to(effects, FAM.conn) == []


def test_deny_by_a_clinician_outside_the_room() -> None:
    room = new_room()
    join(room, PAT)
    effects = room.deny_by("p1", "c1", "Please call the office.", LATER)
    assert frame_to(effects, PAT.conn, "denied") == {
        "type": "denied", "reason": "Please call the office."}
    assert closes(effects) == {PAT.conn: 4403}
    assert records(effects, "denied") == [Record("p1", "denied", LATER, {"by": "c1"})]
    assert records(effects, "left")[0].detail == {"reason": "denied"}
    assert room.empty


@pytest.mark.parametrize("pid", ["nobody", "c1"])
def test_admit_or_deny_of_someone_not_waiting_raises(pid: str) -> None:
    room = new_room()
    join(room, DR)
    for act in (lambda: room.admit_by(pid, "c1", NOW), lambda: room.deny_by(pid, "c1", None, NOW)):
        with pytest.raises(Refused) as refused:
            act()
        assert refused.value.code == "not_waiting"
    assert room.members["c1"].state is MemberState.ADMITTED


def test_a_waiting_guest_whose_socket_dropped_cannot_be_admitted() -> None:
    room = new_room()
    join(room, PAT)
    room.disconnect(PAT.conn, NOW)
    with pytest.raises(Refused):
        room.admit_by("p1", "c1", NOW)
    assert room.members["p1"].state is MemberState.WAITING


def test_admit_by_into_a_full_room_raises_room_full() -> None:
    room = Room("visit-1", max_participants=1)
    join(room, DR)
    join(room, PAT)
    with pytest.raises(Refused) as refused:
        room.admit_by("p1", "c1", NOW)
    assert refused.value.code == "room_full"
    assert room.members["p1"].state is MemberState.WAITING


def test_nothing_is_waiting_after_the_visit_ended() -> None:
    room = new_room()
    join(room, PAT)
    room.end("ended", None, NOW)
    with pytest.raises(Refused):
        room.admit_by("p1", "c1", LATER)
