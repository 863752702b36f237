"""A visit's facts from its timeline alone: contact minutes, start and stop, modality,
who was there, interruptions and location. No server, no database."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notes import NotesError
from notes.contact import (
    AUDIO_ONLY,
    AUDIO_VIDEO,
    Event,
    Interruption,
    Modality,
    Person,
    VisitFacts,
    patient_side_roles,
    summarize,
    visit_facts,
)
from telehealth.db.tables import Participant, VisitEvent

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
DR = Person("dr", "clinician", "Dana Rivera")
CO = Person("co", "co_clinician", "Mo Chen")
PAT = Person("p", "patient", "Alex Morgan")
FAM = Person("f", "family_member", "Lee Morgan")
REP = Person("r", "legal_representative", "Sam Morgan")
INT = Person("i", "interpreter", "Ana Ruiz")
PEOPLE = [DR, CO, PAT, FAM, REP, INT]


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def ev(minute: float, pid: str | None, kind: str, **detail: Any) -> Event:
    return Event(kind, at(minute), pid, detail)


def facts(events: list[Event], visit_type: str = "psychotherapy",
          now: datetime | None = None) -> VisitFacts:
    return visit_facts(events, PEOPLE, visit_type=visit_type, now=now)


def basic(end: float = 40) -> list[Event]:
    """The clinician in at 0, the patient waits at 1, is let in at 3; ended at `end`."""
    return [ev(0, "dr", "admitted", by=None), ev(1, "p", "waiting"),
            ev(3, "p", "admitted", by="dr"), ev(end, "dr", "ended")]


# ---- start, stop and minutes ---------------------------------------------------------


def test_contact_runs_from_both_in_to_the_end() -> None:
    f = facts(basic())
    assert (f.started, f.stopped) == (at(3), at(40))
    assert f.contact == ((at(3), at(40)),)
    assert f.contact_seconds == 37 * 60 and f.minutes == 37
    assert f.patient_present and f.patient_contact_seconds == 37 * 60
    assert f.ended_at == at(40) and f.visit_type == "psychotherapy"


def test_minutes_are_whole_minutes_rounded_down() -> None:
    events = [ev(0, "dr", "admitted"), ev(0, "p", "admitted"),
              Event("ended", at(15) + timedelta(seconds=59), "dr")]
    f = facts(events)
    assert f.contact_seconds == 15 * 60 + 59 and f.minutes == 15
    events[-1] = Event("ended", at(16), "dr")
    assert facts(events).minutes == 16


def test_a_reconnect_gap_is_subtracted_and_listed() -> None:
    events = [*basic()[:-1], ev(10, "p", "reconnecting"), ev(12, "p", "rejoined"),
              ev(20, "dr", "reconnecting"), ev(20.5, "dr", "rejoined"), ev(40, "dr", "ended")]
    f = facts(events)
    assert f.contact_seconds == (37 - 2.5) * 60
    assert f.minutes == 34  # 34 min 30 s, rounded down
    assert f.contact == ((at(3), at(10)), (at(12), at(20)), (at(20.5), at(40)))
    assert f.interruptions == (
        Interruption("p", "patient", at(10), at(12), "rejoined"),
        Interruption("dr", "clinician", at(20), at(20.5), "rejoined"),
    )
    assert [i.seconds for i in f.interruptions] == [120, 30]
    assert (f.started, f.stopped) == (at(3), at(40))


def test_a_drop_that_never_came_back_stops_the_contact_when_it_dropped() -> None:
    events = [*basic()[:-1], ev(20, "p", "reconnecting"), ev(21, "p", "left", reason="timeout"),
              ev(30, "dr", "ended")]
    f = facts(events)
    assert (f.started, f.stopped, f.minutes) == (at(3), at(20), 17)
    assert f.interruptions == (Interruption("p", "patient", at(20), at(21), "did_not_return"),)
    (_, p) = f.present
    assert (p.last_left, p.drops, p.seconds) == (at(20), 1, 17 * 60)


def test_a_gap_still_open_when_the_visit_ends_ends_with_it() -> None:
    events = [*basic()[:-1], ev(30, "p", "reconnecting"), ev(31, "dr", "ended")]
    f = facts(events)
    assert f.stopped == at(30) and f.minutes == 27
    assert f.interruptions == (Interruption("p", "patient", at(30), at(31), "visit_ended"),)


def test_stop_is_when_the_last_one_left() -> None:
    events = [*basic()[:-1], ev(35, "p", "left", reason="left"), ev(40, "dr", "ended")]
    f = facts(events)
    assert (f.stopped, f.minutes) == (at(35), 32)


def test_a_visit_still_going_counts_until_now_or_the_last_event() -> None:
    events = basic()[:-1]
    assert facts(events, now=at(13)).minutes == 10
    assert facts(events).minutes == 0  # without `now`, the last event is the end
    assert facts(events, now=at(2)).minutes == 0  # a `now` before the events is ignored
    assert facts(events, now=at(13)).ended_at is None


def test_events_in_any_order_give_the_same_facts() -> None:
    events = [*basic()[:-1], ev(10, "p", "reconnecting"), ev(12, "p", "rejoined"),
              ev(13, "p", "media_state", audio=True, video=False), ev(40, "dr", "ended")]
    expected = facts(events)
    shuffled = events[:]
    for seed in range(20):
        random.Random(seed).shuffle(shuffled)
        assert facts(shuffled) == expected


def test_nothing_after_the_end_counts() -> None:
    events = [*basic(), ev(45, "p", "rejoined"), ev(46, "co", "admitted"),
              ev(50, "p", "left", reason="left")]
    f = facts(events)
    assert (f.stopped, f.minutes, f.ended_at) == (at(40), 37, at(40))
    assert "co" not in {p.participant_id for p in f.present}


def test_overlapping_people_are_counted_once() -> None:
    # Two clinicians overlap, and the patient is there through both.
    events = [ev(0, "dr", "admitted"), ev(5, "p", "admitted"), ev(10, "co", "admitted"),
              ev(30, "dr", "left", reason="left"), ev(35, "p", "left", reason="left"),
              ev(40, "co", "ended")]
    f = facts(events)
    assert f.contact == ((at(5), at(35)),) and f.minutes == 30


def test_a_clinician_alone_or_with_an_interpreter_is_no_contact() -> None:
    events = [ev(0, "dr", "admitted"), ev(1, "i", "admitted", by="dr"),
              ev(5, "p", "admitted", by="dr"), ev(10, "p", "left", reason="left"),
              ev(30, "dr", "ended")]
    f = facts(events)
    assert f.minutes == 5 and f.contact == ((at(5), at(10)),)


def test_a_repeated_admission_or_rejoin_while_connected_changes_nothing() -> None:
    events = [*basic()[:-1], ev(5, "p", "admitted", by="dr"), ev(6, "p", "rejoined"),
              ev(40, "dr", "ended")]
    assert facts(events).minutes == 37
    assert facts(events).interruptions == ()


def test_unknown_participants_and_people_without_events_are_ignored() -> None:
    events = [*basic()[:-1], ev(4, "stranger", "admitted"), ev(5, None, "media_state"),
              ev(40, "dr", "ended")]
    f = facts(events)
    assert f.minutes == 37
    assert [p.participant_id for p in f.present] == ["dr", "p"]


def test_an_unknown_visit_type_is_refused() -> None:
    with pytest.raises(NotesError) as err:
        facts(basic(), visit_type="group")
    assert err.value.code == "invalid_field"


def test_an_empty_timeline_has_no_contact() -> None:
    f = facts([])
    assert (f.started, f.stopped, f.minutes, f.patient_present) == (None, None, 0, False)
    assert f.present == () and f.location is None and f.modality.kind == AUDIO_ONLY


# ---- the patient who never joined, and family visits -----------------------------------


@pytest.mark.parametrize("events", [
    [ev(0, "dr", "admitted"), ev(30, "dr", "ended")],
    [ev(0, "dr", "admitted"), ev(1, "p", "waiting"), ev(2, "p", "denied", by="dr"),
     ev(2, "p", "left", reason="denied"), ev(30, "dr", "ended")],
    [ev(0, "dr", "admitted"), ev(1, "p", "waiting"), ev(30, "dr", "ended")],
    [ev(0, "p", "waiting"), ev(1, "p", "reconnecting"), ev(2, "p", "rejoined"),
     ev(30, None, "cancelled")],
])
def test_a_patient_who_never_joined(events: list[Event]) -> None:
    f = facts(events)
    assert (f.started, f.stopped, f.minutes, f.patient_present) == (None, None, 0, False)
    assert "p" not in {p.participant_id for p in f.present}
    assert f.interruptions == ()  # a drop in the waiting room is no interruption of the call


def test_a_family_visit_counts_the_family_without_the_patient() -> None:
    events = [ev(0, "dr", "admitted"), ev(2, "f", "admitted", by="dr"),
              ev(4, "r", "admitted", by="dr"), ev(20, "f", "left", reason="left"),
              ev(30, "dr", "ended")]
    family = facts(events, "family")
    assert family.minutes == 28 and family.contact == ((at(2), at(30)),)
    assert not family.patient_present and family.patient_contact_seconds == 0
    # The same people in a psychotherapy visit: no patient, no contact.
    assert facts(events, "psychotherapy").minutes == 0


def test_a_family_visit_with_the_patient_for_part_of_it() -> None:
    events = [ev(0, "dr", "admitted"), ev(2, "f", "admitted", by="dr"),
              ev(10, "p", "admitted", by="dr"), ev(20, "p", "left", reason="left"),
              ev(40, "dr", "ended")]
    f = facts(events, "family")
    assert f.minutes == 38 and f.patient_present and f.patient_contact_seconds == 600


def test_who_counts_for_which_visit_type() -> None:
    assert patient_side_roles("psychotherapy") == {"patient"}
    assert patient_side_roles("crisis") == {"patient"}
    assert patient_side_roles("intake") == {"patient"}
    assert patient_side_roles("family") == {"patient", "family_member", "legal_representative"}


# ---- modality --------------------------------------------------------------------------


def media(minute: float, pid: str, peer: str, video: bool = True) -> Event:
    return ev(minute, pid, "media_connected", peer=peer, audio=True, video=video)


def test_two_way_video_is_audio_video() -> None:
    events = [*basic()[:-1], media(3.5, "p", "dr"), media(3.5, "dr", "p"),
              ev(40, "dr", "ended")]
    f = facts(events)
    assert f.modality.kind == AUDIO_VIDEO and f.modality.reason is None
    assert f.modality.video_seconds == 36.5 * 60


def test_no_camera_from_the_patient_is_audio_only_with_the_reason() -> None:
    events = [*basic()[:-1],
              ev(3, "p", "media_state", audio=True, video=False, reason="no camera"),
              media(3.5, "p", "dr", video=False), media(3.5, "dr", "p"),
              ev(40, "dr", "ended")]
    f = facts(events)
    assert f.modality.kind == AUDIO_ONLY and f.modality.reason == "no camera"
    assert f.modality.video_seconds == 0


def test_the_media_state_wins_over_media_connected() -> None:
    # A screen shared with the camera off: media_connected says "video", the room knows better.
    events = [*basic()[:-1], ev(3, "p", "media_state", audio=True, video=False, screen=True),
              media(3.5, "p", "dr", video=True), media(3.5, "dr", "p"), ev(40, "dr", "ended")]
    assert facts(events).modality.kind == AUDIO_ONLY


def test_without_any_media_report_no_video_is_assumed() -> None:
    assert facts(basic()).modality == Modality(AUDIO_ONLY, None, 0.0)


def test_video_for_part_of_the_visit_is_audio_video_and_says_how_long() -> None:
    events = [*basic()[:-1], ev(3, "p", "media_state", audio=True, video=False),
              media(3.5, "dr", "p"), ev(20, "p", "media_state", audio=True, video=True),
              ev(30, "p", "reconnecting"), ev(31, "p", "rejoined"), ev(40, "dr", "ended")]
    f = facts(events)
    assert f.modality.kind == AUDIO_VIDEO
    assert f.modality.video_seconds == (10 + 9) * 60  # 20-30 and 31-40; not while dropped


def test_one_way_video_is_audio_only() -> None:
    events = [*basic()[:-1], ev(3, "p", "media_state", audio=True, video=False),
              media(3.5, "dr", "p"), ev(40, "dr", "ended")]
    assert facts(events).modality.kind == AUDIO_ONLY


def test_video_outside_contact_does_not_count() -> None:
    # The clinician's camera and an interpreter's, but never the patient's and theirs at once.
    events = [ev(0, "dr", "admitted"), media(0.5, "dr", "i"), ev(1, "i", "admitted"),
              media(1.5, "i", "dr"), ev(2, "p", "admitted"),
              ev(2, "p", "media_state", audio=True, video=False), ev(20, "dr", "ended")]
    assert facts(events).modality.kind == AUDIO_ONLY


def test_a_new_admission_forgets_the_old_camera_state() -> None:
    events = [*basic()[:-1], media(3.5, "p", "dr"), media(3.5, "dr", "p"),
              ev(10, "p", "left", reason="left"), ev(11, "p", "waiting"),
              ev(12, "p", "admitted", by="dr"), ev(40, "dr", "ended")]
    assert facts(events).modality.video_seconds == 6.5 * 60  # 3.5-10 only


# ---- who was there, location -------------------------------------------------------------


def test_everyone_present_with_role_in_order_of_arrival() -> None:
    events = [ev(0, "dr", "admitted"), ev(1, "i", "waiting"), ev(2, "i", "admitted", by="dr"),
              ev(1, "p", "waiting"), ev(3, "p", "admitted", by="dr"),
              ev(4, "f", "waiting"), ev(5, "f", "denied", by="dr"),
              ev(5, "f", "left", reason="denied"), ev(30, "dr", "ended")]
    f = facts(events)
    assert [(p.participant_id, p.name, p.role) for p in f.present] == [
        ("dr", "Dana Rivera", "clinician"), ("i", "Ana Ruiz", "interpreter"),
        ("p", "Alex Morgan", "patient")]
    dr, interp, _ = f.present
    assert (dr.first_joined, dr.last_left, dr.seconds) == (at(0), at(30), 1800)
    assert interp.seconds == 28 * 60 and interp.drops == 0


def loc(minute: float, pid: str, state: str = "CA", at_home: bool = True, **more: Any) -> Event:
    return ev(minute, pid, "location", state=state, at_home=at_home, **more)


def test_the_patients_location() -> None:
    events = [loc(-2, "p", "NY", False, place="work", callback_phone="555-0100"),
              loc(-1, "p", "CA", True, place="", callback_phone="555-0101"), *basic()]
    location = facts(events).location
    assert location is not None
    assert (location.state, location.at_home, location.callback_phone) == ("CA", True, "555-0101")
    assert (location.reported_by, location.reported_role, location.at) == ("p", "patient", at(-1))


def test_the_patients_own_answer_wins_over_a_representatives() -> None:
    events = [loc(-2, "p", "OR", False), loc(-1, "r", "WA", True), *basic()]
    location = facts(events).location
    assert location is not None and location.state == "OR" and not location.at_home


def test_a_representatives_answer_stands_in_for_the_patients() -> None:
    events = [loc(-1, "r", "WA", True), loc(-1, "i", "TX", False), *basic()]
    location = facts(events).location
    assert location is not None
    assert (location.state, location.reported_role) == ("WA", "legal_representative")


def test_a_malformed_location_is_ignored() -> None:
    events = [ev(-1, "p", "location", state="CA"), ev(-1, "p", "location", at_home="yes",
                                                      state="CA"), *basic()]
    assert facts(events).location is None


# ---- database rows fit as they are -------------------------------------------------------


def test_database_rows_are_timeline_events() -> None:
    people = [Participant(id=p.id, visit_id="v", role=p.role, name=p.name, created_at=T0,
                          failed_checks=0) for p in (DR, PAT)]
    rows = [VisitEvent(visit_id="v", participant_id=e.participant_id, kind=e.kind, at=e.at,
                       detail=dict(e.detail)) for e in basic()]
    f = visit_facts(rows, people, visit_type="psychotherapy")
    assert f.minutes == 37 and f.present[1].name == "Alex Morgan"
    dr, p = summarize(rows, people, at(60))
    assert dr.participant is people[0] and p.seconds == 37 * 60


def test_summarize_takes_plain_people_too() -> None:
    events = [*basic()[:-1], ev(10, "p", "reconnecting")]
    dr, p = summarize(events, [DR, PAT], at(20))
    assert dr.still_in and dr.seconds == 20 * 60 and dr.last_left == at(20)
    assert not p.still_in and p.seconds == 7 * 60 and p.drops == 1


# ---- properties ------------------------------------------------------------------------

VISIT_S = 3 * 3600
ROLES_OF = {p.id: p.role for p in PEOPLE}


@st.composite
def connected_spans(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Disjoint [start, stop) seconds within the visit, with gaps of at least 1 s."""
    cuts = sorted(draw(st.sets(st.integers(1, VISIT_S - 1), max_size=8)))
    if len(cuts) % 2:
        cuts.append(VISIT_S)
    return [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts), 2)]


@st.composite
def timelines(draw: st.DrawFn) -> tuple[dict[str, list[tuple[int, int]]], list[Event]]:
    """Who was connected when, and a timeline that says so: a gap is a reconnect (back
    with `rejoined`) or a leave and a new admission, at random."""
    spans = {pid: draw(connected_spans()) for pid in ("dr", "co", "p", "f", "i")}
    events: list[Event] = []

    def add(kind: str, second: int, pid: str, **detail: Any) -> None:
        events.append(Event(kind, T0 + timedelta(seconds=second), pid, detail))

    for pid, mine in spans.items():
        for n, (a, _) in enumerate(mine):
            if n == 0:
                add("admitted", a, pid)
            elif draw(st.booleans()):
                add("reconnecting", mine[n - 1][1], pid)
                add("rejoined", a, pid)
            else:
                add("left", mine[n - 1][1], pid, reason="left")
                add("admitted", a, pid)
        if mine and mine[-1][1] < VISIT_S:
            if draw(st.booleans()):
                add("reconnecting", mine[-1][1], pid)  # and never back
            else:
                add("left", mine[-1][1], pid, reason="left")
    events.append(Event("ended", T0 + timedelta(seconds=VISIT_S), "dr"))
    return spans, events


def oracle(spans: dict[str, list[tuple[int, int]]], side: frozenset[str]) -> set[int]:
    """The seconds in which a clinician and someone of `side` were both connected."""
    def seconds(roles: frozenset[str]) -> set[int]:
        return {s for pid, mine in spans.items() if ROLES_OF[pid] in roles
                for a, b in mine for s in range(a, b)}
    return seconds(frozenset({"clinician", "co_clinician"})) & seconds(side)


@settings(max_examples=150, deadline=None)
@given(timelines(), st.sampled_from(["psychotherapy", "family"]), st.randoms())
def test_contact_is_exactly_the_shared_seconds(
    drawn: tuple[dict[str, list[tuple[int, int]]], list[Event]], visit_type: str,
    rnd: random.Random,
) -> None:
    spans, events = drawn
    rnd.shuffle(events)
    f = facts(events, visit_type)
    shared = oracle(spans, patient_side_roles(visit_type))
    assert f.contact_seconds == len(shared)
    assert f.minutes == len(shared) // 60
    if shared:
        assert f.started == T0 + timedelta(seconds=min(shared))
        assert f.stopped == T0 + timedelta(seconds=max(shared) + 1)
    else:
        assert f.started is None and f.stopped is None
    assert f.patient_present == bool(oracle(spans, frozenset({"patient"})))


@settings(max_examples=150, deadline=None)
@given(timelines(), st.sampled_from(["psychotherapy", "family", "crisis"]))
def test_contact_never_exceeds_the_wall_clock_span(
    drawn: tuple[dict[str, list[tuple[int, int]]], list[Event]], visit_type: str,
) -> None:
    f = facts(drawn[1], visit_type)
    if f.started is not None and f.stopped is not None:
        assert 0 < f.contact_seconds <= (f.stopped - f.started).total_seconds()
        assert all(a < b for a, b in f.contact)
        assert all(x[1] < y[0] for x, y in zip(f.contact, f.contact[1:], strict=False))
    assert f.minutes * 60 <= f.contact_seconds < (f.minutes + 1) * 60
    assert f.modality.video_seconds <= f.contact_seconds
    for p in f.present:
        assert p.seconds <= (p.last_left - p.first_joined).total_seconds()


@settings(max_examples=150, deadline=None)
@given(timelines(), st.sampled_from(["dr", "p"]), st.data())
def test_subtracting_a_gap_never_increases_contact(
    drawn: tuple[dict[str, list[tuple[int, int]]], list[Event]], pid: str, data: st.DataObject,
) -> None:
    spans, events = drawn
    long_enough = [(a, b) for a, b in spans[pid] if b - a >= 3]
    if not long_enough:
        return
    # The same person drops for a while inside a stretch where they were connected.
    a, b = data.draw(st.sampled_from(long_enough))
    start = data.draw(st.integers(a + 1, b - 2))
    back = data.draw(st.integers(start + 1, b - 1))
    gap = [Event("reconnecting", T0 + timedelta(seconds=start), pid),
           Event("rejoined", T0 + timedelta(seconds=back), pid)]
    before, after = facts(events), facts([*events, *gap])
    assert after.contact_seconds <= before.contact_seconds
    assert after.minutes <= before.minutes
    assert before.contact_seconds - after.contact_seconds <= back - start
    assert len(after.interruptions) == len(before.interruptions) + 1
    assert after.present == tuple(
        p if p.participant_id != pid else replace(
            p, seconds=p.seconds - (back - start), drops=p.drops + 1)
        for p in before.present)
