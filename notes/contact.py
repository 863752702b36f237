"""What really happened in a visit, from its timeline alone (pure).

The timeline is the `visit_events` rows the signaling room and the join pages write
(`telehealth.signaling.room`, `web.pages`); any object with the same four fields will do
(`TimelineEvent`), so this module never touches the database:

    waiting          a guest is in the waiting room
    admitted         in the call: care team on connect, guests when let in ({"by"})
    reconnecting     the socket dropped; the place is kept for the reconnect grace
    rejoined         the same participant is back (in the call again if admitted)
    left             gone: {"reason": "left" | "timeout" | "denied" | "removed"}
    denied           a guest was not let in ({"by"})
    media_state      what a member sends now: {"audio", "video", "screen"}; sent by the
                     client only when it differs from the server's default (all on)
    media_connected  a member's WebRTC connection to {"peer"} is up, sending {"audio",
                     "video"} (video here is any outgoing track, the screen included)
    location         where the person is: {"state", "at_home", "place", "callback_phone"}
    ended/cancelled  the visit is over for everyone

Rules (`visit_facts`):
- Connected in the call: from `admitted` (or `rejoined` after a drop) until
  `reconnecting`, `left` or the visit's end. A reconnect gap is never contact time.
- Synchronous contact: the moments at least one clinician (`clinician`, `co_clinician`)
  and at least one of the patient side were connected at once. The patient side is the
  patient; for a family visit also a family member or legal representative (family
  psychotherapy is billed with or without the patient). Interpreters never count.
  Overlapping people are a union, never counted twice.
- Minutes: whole minutes of that contact, rounded down (15 min 59 s is 15). DOMAIN.md's
  thresholds (16, 38, 53...) already carry CPT's "a unit is attained when the midpoint
  is passed", so a partial minute is not rounded up again.
- Modality: audio-video when, for some moment of contact, a clinician and someone of
  the patient side were both connected and sending camera video (two-way video);
  otherwise audio-only. A member's video is known from its `media_state` (which wins)
  or, failing one since its admission, from `video` in its `media_connected`; until
  either arrives it is not counted as flowing (the server's "all on" default is a
  guess, not evidence). `video_seconds` says for how long two-way video ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

from notes import NotesError
from telehealth.signaling.protocol import CARE_TEAM
from telehealth.visits import VISIT_TYPES

ModalityKind = Literal["audio-video", "audio-only"]
AUDIO_VIDEO: Final = "audio-video"
AUDIO_ONLY: Final = "audio-only"
Outcome = Literal["rejoined", "did_not_return", "visit_ended", "ongoing"]
Span = tuple[datetime, datetime]
CLINICIAN_ROLES = CARE_TEAM
FAMILY_SIDE = frozenset({"patient", "family_member", "legal_representative"})
_END_KINDS = ("ended", "cancelled")
_MINUTE = timedelta(minutes=1)


class TimelineEvent(Protocol):
    """One timeline row (`telehealth.db.tables.VisitEvent` is one)."""

    @property
    def kind(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def participant_id(self) -> str | None: ...
    @property
    def detail(self) -> Mapping[str, Any]: ...


class Attendee(Protocol):
    """One invited person (`telehealth.db.tables.Participant` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Event:
    """A plain `TimelineEvent`, for callers without database rows."""

    kind: str
    at: datetime
    participant_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Person:
    """A plain `Attendee`, for callers without database rows."""

    id: str
    role: str
    name: str = ""


P = TypeVar("P", bound=Attendee)


# ---- results -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Modality:
    kind: ModalityKind
    reason: str | None
    """Why video was off, when a client said (`media_state` detail `reason`)."""
    video_seconds: float
    """Seconds of contact with two-way video."""


@dataclass(frozen=True, slots=True)
class Presence:
    """Someone who was in the call (admitted at least once)."""

    participant_id: str
    name: str
    role: str
    first_joined: datetime
    last_left: datetime
    seconds: float
    """Time connected in the call, reconnect gaps left out."""
    drops: int


@dataclass(frozen=True, slots=True)
class Interruption:
    """A connection lost in the call: from `reconnecting` until back, gone or the end."""

    participant_id: str
    role: str
    started: datetime
    ended: datetime
    outcome: Outcome

    @property
    def seconds(self) -> float:
        return (self.ended - self.started).total_seconds()


@dataclass(frozen=True, slots=True)
class PatientLocation:
    """Where the patient said they are (or, failing that, who answered for them)."""

    state: str
    """A US state or territory code, or `OUTSIDE_US`."""
    at_home: bool
    place: str
    callback_phone: str
    reported_by: str
    reported_role: str
    at: datetime


@dataclass(frozen=True, slots=True)
class VisitFacts:
    visit_type: str
    started: datetime | None
    """First moment of synchronous contact (None: there was none)."""
    stopped: datetime | None
    """Last moment of synchronous contact: someone left, dropped or the visit ended."""
    contact: tuple[Span, ...]
    """The stretches of synchronous contact, in order, none overlapping."""
    contact_seconds: float
    minutes: int
    """Whole minutes of synchronous contact, rounded down."""
    patient_present: bool
    """The patient (themself) had synchronous contact with a clinician."""
    patient_contact_seconds: float
    modality: Modality
    present: tuple[Presence, ...]
    interruptions: tuple[Interruption, ...]
    location: PatientLocation | None
    ended_at: datetime | None
    """When the visit was ended or cancelled, if it was."""


@dataclass(slots=True)
class Attendance(Generic[P]):
    """One row of the visit summary page (`summarize`)."""

    participant: P
    first_joined: datetime | None = None
    last_left: datetime | None = None
    seconds: float = 0.0
    drops: int = 0
    still_in: bool = False
    denied: bool = False


# ---- who was connected when: one walk over the timeline ----------------------


@dataclass(slots=True)
class _Track:
    role: str
    spans: list[Span] = field(default_factory=list)
    video_spans: list[Span] = field(default_factory=list)
    first_joined: datetime | None = None
    last_left: datetime | None = None
    since: datetime | None = None  # connected in the call since
    admitted: bool = False  # in the call and not gone (maybe reconnecting)
    dropped: datetime | None = None  # reconnecting since, while in the call
    drops: int = 0
    denied: bool = False
    still_in: bool = False
    video: bool | None = None  # None: not known yet since admission
    video_said: bool = False  # by a media_state (wins over media_connected)
    video_since: datetime | None = None


class _Walk:
    """The connected spans of every known participant, fed one event at a time."""

    def __init__(self, people: Iterable[Attendee]) -> None:
        self.tracks = {p.id: _Track(p.role) for p in people}
        self.interruptions: list[Interruption] = []
        self.reasons: list[str] = []

    def feed(self, e: TimelineEvent) -> None:
        pid = e.participant_id
        if e.kind in _END_KINDS:
            for open_pid, open_track in self.tracks.items():
                if open_track.since is not None:
                    self._stop(open_pid, e.at)
                self._back(open_pid, e.at, "visit_ended")
                open_track.admitted = False
            return
        if pid is None or (track := self.tracks.get(pid)) is None:
            return
        if e.kind == "admitted":
            if track.since is None:  # a repeated admission changes nothing
                self._back(pid, e.at, "rejoined")
                track.admitted = True
                track.since = e.at
                track.video, track.video_said = None, False
            track.first_joined = track.first_joined or e.at
        elif e.kind == "rejoined" and track.admitted and track.since is None:
            self._back(pid, e.at, "rejoined")
            track.since = e.at
        elif e.kind == "reconnecting" and track.since is not None:
            track.drops += 1
            track.dropped = e.at
            self._stop(pid, e.at)
        elif e.kind == "left":
            track.admitted = False
            if track.since is not None:
                self._stop(pid, e.at)
            self._back(pid, e.at, "did_not_return")
        elif e.kind == "denied":
            track.denied = True
        elif e.kind == "media_state" and track.admitted:
            track.video, track.video_said = bool(e.detail.get("video")), True
            reason = e.detail.get("reason")
            if not track.video and isinstance(reason, str) and reason.strip():
                self.reasons.append(reason.strip())
        elif e.kind == "media_connected" and track.admitted and not track.video_said:
            track.video = bool(e.detail.get("video"))
        self._sync_video(track, e.at)

    def finish(self, at: datetime) -> None:
        """Whoever is still connected counts until `at`; open gaps end there, unresolved."""
        for pid, track in self.tracks.items():
            if track.since is not None:
                track.still_in = True
                self._stop(pid, at)
            self._back(pid, at, "ongoing")

    def _stop(self, pid: str, at: datetime) -> None:
        track = self.tracks[pid]
        assert track.since is not None
        track.spans.append((track.since, at))
        track.last_left = at
        track.since = None
        self._sync_video(track, at)

    def _back(self, pid: str, at: datetime, outcome: Outcome) -> None:
        track = self.tracks[pid]
        if track.dropped is not None:
            self.interruptions.append(Interruption(pid, track.role, track.dropped, at, outcome))
            track.dropped = None

    @staticmethod
    def _sync_video(track: _Track, at: datetime) -> None:
        flowing = track.since is not None and track.video is True
        if flowing and track.video_since is None:
            track.video_since = at
        elif not flowing and track.video_since is not None:
            track.video_spans.append((track.video_since, at))
            track.video_since = None


def _seconds(spans: Iterable[Span]) -> float:
    return sum(((b - a) for a, b in spans), timedelta()).total_seconds()


def _union(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _intersect(xs: Sequence[Span], ys: Sequence[Span]) -> list[Span]:
    """Of two sorted, disjoint span lists: where both hold."""
    out: list[Span] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if a < b:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


# ---- the visit's facts -------------------------------------------------------


def patient_side_roles(visit_type: str) -> frozenset[str]:
    """Whose presence with a clinician is contact time for a visit of this type."""
    return FAMILY_SIDE if visit_type == "family" else frozenset({"patient"})


def in_order(events: Iterable[TimelineEvent]) -> list[TimelineEvent]:
    """The events by time (ties keep their given order), up to the visit's end."""
    ordered = sorted(events, key=lambda e: e.at)
    for n, e in enumerate(ordered):
        if e.kind in _END_KINDS:
            return ordered[: n + 1]
    return ordered


def visit_facts(
    events: Iterable[TimelineEvent], people: Sequence[Attendee], *, visit_type: str,
    now: datetime | None = None,
) -> VisitFacts:
    """What the timeline says happened. Events may come in any order; nothing after the
    visit's end counts. Whoever is still connected when the timeline stops counts until
    `now` (default: the last event's time)."""
    if visit_type not in VISIT_TYPES:
        raise NotesError("invalid_field", f"Visit type must be one of {', '.join(VISIT_TYPES)}.")
    timeline = in_order(events)
    walk = _Walk(people)
    for e in timeline:
        walk.feed(e)
    last = timeline[-1] if timeline else None
    ended_at = last.at if last is not None and last.kind in _END_KINDS else None
    if last is not None:
        walk.finish(max(now, last.at) if now is not None else last.at)
    tracks = walk.tracks
    side = patient_side_roles(visit_type)

    def spans(roles: frozenset[str], video: bool = False) -> list[Span]:
        return _union(s for t in tracks.values() if t.role in roles
                      for s in (t.video_spans if video else t.spans))

    clinicians = spans(CLINICIAN_ROLES)
    contact = _intersect(clinicians, spans(side))
    with_patient = _intersect(clinicians, spans(frozenset({"patient"})))
    video = _intersect(spans(CLINICIAN_ROLES, True), spans(side, True))  # within contact
    contact_total = sum(((b - a) for a, b in contact), timedelta())
    names = {p.id: p.name for p in people}
    present = sorted(
        (Presence(pid, names[pid], t.role, t.first_joined, t.last_left or t.first_joined,
                  _seconds(t.spans), t.drops)
         for pid, t in tracks.items() if t.first_joined is not None),
        key=lambda p: p.first_joined)
    return VisitFacts(
        visit_type=visit_type,
        started=contact[0][0] if contact else None,
        stopped=contact[-1][1] if contact else None,
        contact=tuple(contact),
        contact_seconds=contact_total.total_seconds(),
        minutes=contact_total // _MINUTE,
        patient_present=bool(with_patient),
        patient_contact_seconds=_seconds(with_patient),
        modality=Modality(AUDIO_VIDEO if video else AUDIO_ONLY,
                          walk.reasons[-1] if walk.reasons else None, _seconds(video)),
        present=tuple(present),
        interruptions=tuple(sorted(walk.interruptions, key=lambda i: i.started)),
        location=patient_location(timeline, people),
        ended_at=ended_at,
    )


def patient_location(
    events: Iterable[TimelineEvent], people: Sequence[Attendee]
) -> PatientLocation | None:
    """The patient's latest `location`; without one, the latest of whoever may answer for
    them (a legal representative or family member: the roles the join page asks)."""
    roles = {p.id: p.role for p in people}
    found: dict[str, PatientLocation] = {}
    for e in sorted(events, key=lambda e: e.at):
        role = roles.get(e.participant_id or "")
        if e.kind != "location" or role not in FAMILY_SIDE or e.participant_id is None:
            continue
        d = e.detail
        state, at_home = d.get("state"), d.get("at_home")
        if not isinstance(state, str) or not isinstance(at_home, bool):
            continue
        found[role] = PatientLocation(
            state=state, at_home=at_home, place=str(d.get("place") or ""),
            callback_phone=str(d.get("callback_phone") or ""),
            reported_by=e.participant_id, reported_role=role, at=e.at)
    for role in ("patient", "legal_representative", "family_member"):
        if role in found:
            return found[role]
    return None


# ---- time in the room, per person (the summary page) -------------------------


def summarize(events: Iterable[TimelineEvent], people: Sequence[P],
              now: datetime) -> list[Attendance[P]]:
    """Time in the room per participant: from `admitted` (or `rejoined` after a drop) to
    `reconnecting`, `left` or the visit's end; a dropped connection does not count.
    Events are taken in the order given (the store's: by time); whoever is still in
    counts until `now`."""
    walk = _Walk(people)
    for e in events:
        walk.feed(e)
    walk.finish(now)
    rows = []
    for person in {p.id: p for p in people}.values():
        t = walk.tracks[person.id]
        rows.append(Attendance(person, t.first_joined, t.last_left,
                               sum((b - a).total_seconds() for a, b in t.spans), t.drops,
                               t.still_in, t.denied))
    return rows
