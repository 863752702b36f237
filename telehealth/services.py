"""What the service does, for every face it has (web API, pages, CLI).

`Services` holds the parts `build_app` wires (settings, store, signer, clock,
and the signaling hub when a server runs) and carries out visit operations:
create, add participants, mint links, join with the identity check, end or
cancel. Rules live in `visits.py`; storage in `db/store.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from telehealth.auth import AuthError, LinkClaims, Signer
from telehealth.config import Settings
from telehealth.consents import Consents
from telehealth.db.store import Store
from telehealth.db.tables import Clinician, Participant, Visit, VisitEvent
from telehealth.media.ice import ice_servers
from telehealth.signaling.hub import Hub
from telehealth.throttle import LoginThrottle
from telehealth.visit_notes import VisitNotes
from telehealth.visits import (
    ADDABLE_ROLES,
    VisitError,
    VisitRequest,
    check_identity,
    check_joinable,
    check_lock,
    link_window,
    refusal_after,
    validate_request,
)

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CreatedVisit:
    visit: Visit
    participants: list[Participant]
    links: dict[str, str]  # participant id -> link

    def link_for_role(self, role: str) -> str:
        return next(self.links[p.id] for p in self.participants if p.role == role)


@dataclass
class Services:
    settings: Settings
    store: Store
    signer: Signer
    clock: Clock
    consents: Consents
    notes: VisitNotes
    hub: Hub | None = None
    login_throttle: LoginThrottle = field(
        default_factory=lambda: LoginThrottle(limit=10, window_s=15 * 60))

    # ---- links -----------------------------------------------------------

    def link_for(self, visit: Visit, person: Participant) -> str:
        """The participant's join link. Deterministic: minting it again gives the same one."""
        token = self.signer.link_token(self._claims(visit, person))
        return f"{self.settings.base_url}/v/{token}"

    def _claims(self, visit: Visit, person: Participant) -> LinkClaims:
        """What a link of `person` to `visit` carries (and a ticket from it)."""
        nbf, exp = link_window(visit.scheduled_start, self.settings.link_valid_before_s,
                               self.settings.link_valid_after_s)
        return LinkClaims(visit.id, person.id, person.role, nbf, exp)

    # ---- visits ----------------------------------------------------------

    async def create_visit(self, req: VisitRequest, clinician: Clinician) -> CreatedVisit:
        now = self.clock()
        validate_request(req, now)
        visit, people = await self.store.create_visit(req, clinician=clinician, now=now)
        await self.store.append_audit(at=now, actor=f"clinician:{clinician.id}",
                                      action="visit.created", subject=f"visit:{visit.id}",
                                      detail={"visit_type": visit.visit_type})
        return CreatedVisit(visit, people, {p.id: self.link_for(visit, p) for p in people})

    async def add_participant(
        self, visit: Visit, *, role: str, name: str, clinician: Clinician | None = None
    ) -> tuple[Participant, str]:
        if role not in ADDABLE_ROLES:
            raise VisitError("invalid_field", f"Role must be one of {', '.join(ADDABLE_ROLES)}.")
        if visit.status in ("ended", "cancelled"):
            raise VisitError(f"visit_{visit.status}", f"This visit is {visit.status}.")
        if role == "legal_representative":
            if not visit.representative_name:
                raise VisitError(
                    "no_representative_on_record",
                    "The patient's record names no legal representative.",
                    "Add the representative (name, relationship, authority) to the visit first.")
            name = visit.representative_name
        if role == "co_clinician" and clinician is not None:
            name = clinician.name
        if not name.strip():
            raise VisitError("invalid_field", "A participant needs a name.")
        person = await self.store.add_participant(
            visit.id, role=role, name=name, now=self.clock(),
            clinician_id=clinician.id if clinician else None)
        return person, self.link_for(visit, person)

    async def may_manage(self, clinician: Clinician, visit: Visit) -> bool:
        """The visit's own clinician, or a co-clinician added to it."""
        if visit.clinician_id == clinician.id:
            return True
        return any(p.clinician_id == clinician.id and p.removed_at is None
                   for p in await self.store.participants(visit.id))

    async def finish_visit(self, visit: Visit, reason: str, actor: str = "admin") -> None:
        """End (`ended`) or cancel (`cancelled`) a visit: links die, the room is told."""
        allowed = ("scheduled",) if reason == "cancelled" else ("scheduled", "in_progress")
        if visit.status not in allowed:
            raise VisitError("bad_state", f"A visit that is {visit.status} cannot be {reason}.")
        now = self.clock()
        if not await self.store.set_visit_status(visit.id, reason, now=now, only_from=allowed):
            raise VisitError("bad_state", f"The visit can no longer be {reason}.")
        await self.store.append_audit(at=now, actor=actor, action=f"visit.{reason}",
                                      subject=f"visit:{visit.id}")
        await self._write_events([VisitEvent(visit_id=visit.id, participant_id=None,
                                             kind=reason, at=now, detail={})])
        if self.hub is not None:
            await self.hub.end_visit(visit.id, reason, None)
        if reason == "ended":
            await self.visit_over(visit.id)

    async def visit_over(self, visit_id: str) -> None:
        """A visit just ended (from the dashboard, API, CLI or the room): its note's draft
        is made now, so that it is waiting for the clinician."""
        visit = await self.store.visit(visit_id)
        if visit is None or visit.status != "ended":
            return
        try:
            await self.notes.after_visit(visit)
        except Exception:  # the visit is over regardless; the draft is made when opened
            log.exception("drafting the note of visit %s failed", visit_id)

    # ---- joining ---------------------------------------------------------

    async def resolve(self, claims: LinkClaims) -> tuple[Visit, Participant, Clinician]:
        """The visit, participant and clinician a genuine link or ticket names."""
        found = await self.store.visit_and_participant(claims.visit_id, claims.participant_id)
        if found is None:
            raise AuthError("link_invalid", "This link is not valid.")
        return found

    def check_usable(self, claims: LinkClaims, visit: Visit, person: Participant) -> None:
        """Refuse (VisitError) a link or ticket whose visit is over, or outside its window."""
        check_joinable(status=visit.status, removed=person.removed_at is not None,
                       not_before=claims.not_before, expires=claims.expires, now=self.clock())

    async def check_ticket(self, ticket: str) -> tuple[Visit, Participant]:
        """The visit and participant of a ticket that may still be used now."""
        claims = self.signer.read_ticket(ticket)
        visit, person, _ = await self.resolve(claims)
        self.check_usable(claims, visit, person)
        return visit, person

    async def room_entry(self, ticket: str) -> tuple[Visit, Participant]:
        """A ticket that may enter the visit's room now (the consent gate included)."""
        visit, person = await self.check_ticket(ticket)
        gate = await self.consent_gate(visit, person)
        if gate["required"] and not gate["on_file"]:
            raise VisitError("consent_required",
                             "A signed telehealth consent is needed before the visit.",
                             "Sign the consent form your practice sent you, then come back.")
        return visit, person

    async def record(self, visit: Visit, person: Participant, kind: str,
                     detail: dict[str, Any] | None = None) -> None:
        """One timeline event now (for what happens outside the signaling room)."""
        await self._write_events([VisitEvent(visit_id=visit.id, participant_id=person.id,
                                             kind=kind, at=self.clock(), detail=detail or {})])

    async def _write_events(self, events: list[VisitEvent]) -> None:
        """Timeline rows: batched by the running hub (no wait on disk), else written now."""
        if self.hub is not None:
            self.hub.record(events)
        else:
            await self.store.add_events(events)

    async def consent_on_file(self, visit: Visit) -> bool:
        """Whether the visit's patient has a signed, unrevoked telehealth consent."""
        return await self.consents.on_file(visit.patient_id) is not None

    async def consent_gate(self, visit: Visit, person: Participant) -> dict[str, Any]:
        """Whether this participant must have a telehealth consent on file to wait, and
        the consent they may sign if not."""
        required = (self.settings.require_telehealth_consent
                    and person.role in ("patient", "legal_representative"))
        return await self.consents.gate(visit, person, required)

    async def join(
        self, token: str, *, dob: str | None, name: str | None
    ) -> dict[str, Any]:
        """Check a link and the identity answers; give a ticket for the WebSocket."""
        claims = self.signer.read_link(token)
        visit, person, clinician = await self.resolve(claims)
        now = self.clock()
        events = [_event(visit, person, "link_opened", now)]
        try:
            self.check_usable(claims, visit, person)
            check_lock(person.locked_until, now)
            record_name = (visit.representative_name or ""
                           if person.role == "legal_representative" else person.name)
            passed = check_identity(role=person.role, record_dob=visit.patient_dob,
                                    record_name=record_name, dob=dob, name=name)
            failed = await self.store.count_identity_attempt(
                Participant, person.id, passed=passed, now=now,
                max_attempts=self.settings.dob_max_attempts,
                lockout_s=self.settings.dob_lockout_s)
            if failed is not None:
                events.append(_event(visit, person, "identity_failed", now))
                if failed.locked_until is not None:
                    events.append(_event(visit, person, "link_locked", now))
                raise refusal_after(failed)
            events.append(_event(visit, person, "identity_verified", now))
        finally:
            await self._write_events(events)
        return await self._grant(claims, visit, person, clinician, now)

    async def own_participant(self, visit: Visit, clinician: Clinician) -> Participant:
        """The clinician's own place in `visit`: its clinician, else a co-clinician one."""
        mine = [p for p in await self.store.participants(visit.id)
                if p.clinician_id == clinician.id and p.removed_at is None
                and p.role in ("clinician", "co_clinician")]
        if not mine:
            raise VisitError("not_found", "No such visit.")
        return min(mine, key=lambda p: p.role != "clinician")

    async def clinician_ticket(self, visit: Visit, clinician: Clinician) -> dict[str, Any]:
        """What `join` answers, for the clinician's own participant of `visit`: the
        clinician's call page needs no link (nor an identity check: they are logged in)."""
        claims = self._claims(visit, await self.own_participant(visit, clinician))
        visit, person, owner = await self.resolve(claims)
        self.check_usable(claims, visit, person)
        return await self._grant(claims, visit, person, owner, self.clock())

    async def _grant(self, claims: LinkClaims, visit: Visit, person: Participant,
                     clinician: Clinician, now: datetime) -> dict[str, Any]:
        """The answer to a join: a WebSocket ticket, who and what, ICE servers."""
        return {
            "ticket": self.signer.ticket(claims),
            "ws_url": "/ws",
            "participant": {"id": person.id, "role": person.role, "name": person.name},
            "visit": {
                "id": visit.id, "scheduled_start": visit.scheduled_start.isoformat(),
                "visit_type": visit.visit_type, "clinician_name": clinician.name,
                "practice_name": self.settings.practice_name,
            },
            "ice_servers": ice_servers(self.settings, person.id, now),
            "reconnect_grace_s": self.settings.reconnect_grace_s,
            "consent": await self.consent_gate(visit, person),
        }

    async def timeline(self, visit: Visit) -> Sequence[VisitEvent]:
        if self.hub is not None:
            await self.hub.flush_events()
        return await self.store.timeline(visit.id)


def _event(visit: Visit, person: Participant, kind: str, at: datetime) -> VisitEvent:
    return VisitEvent(visit_id=visit.id, participant_id=person.id, kind=kind, at=at, detail={})
