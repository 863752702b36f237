"""Repositories over the records store: the only place that speaks SQL."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from telehealth.audit import GENESIS, Entry, entry_hash
from telehealth.db.tables import (
    ApiToken,
    AuditEntry,
    Clinician,
    ConsentDocument,
    Participant,
    Patient,
    Visit,
    VisitEvent,
    WebSession,
)
from telehealth.visits import FailedCheck, VisitRequest


class StoreError(Exception):
    """A records-store request that cannot be done as asked."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


T = TypeVar("T")


def new_id() -> str:
    return str(uuid.uuid4())


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    def session(self) -> AsyncSession:
        return self._sessions()

    async def reachable(self) -> bool:
        """Whether the records store answers now (a health check)."""
        try:
            async with self.session() as s:
                await s.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    # ---- clinicians ------------------------------------------------------

    async def create_clinician(
        self, *, email: str, name: str, credentials: str, password_hash: str, now: datetime
    ) -> Clinician:
        row = Clinician(id=new_id(), email=email.strip().lower(), name=name.strip(),
                        credentials=credentials.strip(), password_hash=password_hash,
                        created_at=now)
        async with self.session() as s:
            s.add(row)
            try:
                await s.commit()
            except IntegrityError:
                raise StoreError("exists", "a clinician with that email already exists") from None
        return row

    async def clinician_by_email(self, email: str) -> Clinician | None:
        async with self.session() as s:
            return (await s.execute(
                select(Clinician).where(Clinician.email == email.strip().lower())
            )).scalar_one_or_none()

    async def clinician(self, clinician_id: str) -> Clinician | None:
        async with self.session() as s:
            return await s.get(Clinician, clinician_id)

    async def set_location(self, clinician_id: str, location: str) -> None:
        """Where the clinician works from: the next note's clinician location."""
        async with self.session() as s:
            await s.execute(update(Clinician).where(Clinician.id == clinician_id)
                            .values(location=location))
            await s.commit()

    async def set_supervisor(self, clinician_id: str, supervisor_id: str | None) -> None:
        """Whose co-signature a pre-licensed clinician's notes need (None: nobody's)."""
        async with self.session() as s:
            await s.execute(update(Clinician).where(Clinician.id == clinician_id)
                            .values(supervisor_id=supervisor_id))
            await s.commit()

    async def set_password(self, clinician_id: str, password_hash: str) -> None:
        async with self.session() as s:
            await s.execute(update(Clinician).where(Clinician.id == clinician_id)
                            .values(password_hash=password_hash))
            await s.commit()

    # ---- web sessions and API tokens --------------------------------------

    async def add_web_session(
        self, *, token_hash: str, clinician_id: str, csrf_token: str, now: datetime
    ) -> None:
        async with self.session() as s:
            s.add(WebSession(token_hash=token_hash, clinician_id=clinician_id,
                             csrf_token=csrf_token, created_at=now, last_seen=now))
            await s.commit()

    async def touch_web_session(
        self, token_hash: str, *, idle: timedelta, now: datetime
    ) -> WebSession | None:
        """The live session under `token_hash`, its idle clock restarted; None if gone."""
        async with self.session() as s:
            row = await s.get(WebSession, token_hash)
            if row is None:
                return None
            if now - row.last_seen > idle:
                await s.delete(row)
                await s.commit()
                return None
            # Writing on every request would serialise SQLite: once a minute is enough.
            if now - row.last_seen > timedelta(seconds=60):
                row.last_seen = now
                await s.commit()
            return row

    async def drop_web_session(self, token_hash: str) -> None:
        async with self.session() as s:
            await s.execute(delete(WebSession).where(WebSession.token_hash == token_hash))
            await s.commit()

    async def add_api_token(
        self, *, token_hash: str, clinician_id: str, label: str, now: datetime, ttl: timedelta
    ) -> None:
        async with self.session() as s:
            s.add(ApiToken(token_hash=token_hash, clinician_id=clinician_id, label=label,
                           created_at=now, expires_at=now + ttl))
            await s.commit()

    async def clinician_for_api_token(self, token_hash: str, now: datetime) -> Clinician | None:
        async with self.session() as s:
            return (await s.execute(
                select(Clinician).join(ApiToken, ApiToken.clinician_id == Clinician.id)
                .where(ApiToken.token_hash == token_hash, ApiToken.expires_at > now)
            )).scalar_one_or_none()

    # ---- visits and participants ----------------------------------------

    async def create_visit(
        self, req: VisitRequest, *, clinician: Clinician, now: datetime
    ) -> tuple[Visit, list[Participant]]:
        rep = req.representative
        visit = Visit(
            id=new_id(), clinician_id=clinician.id, patient_name=req.patient_name.strip(),
            patient_dob=req.patient_dob, patient_contact=req.patient_contact.strip(),
            representative_name=rep.name.strip() if rep else None,
            representative_relationship=rep.relationship.strip() if rep else None,
            representative_authority=rep.authority.strip() if rep else None,
            scheduled_start=req.scheduled_start, visit_type=req.visit_type, status="scheduled",
            created_at=now, ended_at=None,
        )
        people = [
            Participant(id=new_id(), visit_id=visit.id, role="clinician", name=clinician.name,
                        clinician_id=clinician.id, created_at=now, failed_checks=0),
            Participant(id=new_id(), visit_id=visit.id, role="patient", name=visit.patient_name,
                        created_at=now, failed_checks=0),
        ]
        async with self.session() as s:
            patient = await self._patient_for(s, visit, now)
            visit.patient_id = patient.id
            s.add(visit)
            await s.flush()
            s.add_all(people)
            await s.commit()
        return visit, people

    @staticmethod
    async def _patient_for(s: AsyncSession, visit: Visit, now: datetime) -> Patient:
        """The patient record a new visit is for: among this clinician's own patients, the
        one with the same name (spacing and case aside) and date of birth, else a new one.
        A representative named on the visit becomes the record's representative.

        Records are never matched across clinicians: another clinician's visit must not
        reach this clinician's patient's consents or change who signs for them.
        """
        wanted = " ".join(visit.patient_name.split()).lower()
        mine = select(Visit.patient_id).where(Visit.clinician_id == visit.clinician_id)
        same_dob = (await s.execute(select(Patient).where(
            Patient.dob == visit.patient_dob, Patient.id.in_(mine)))).scalars().all()
        patient = next((p for p in same_dob if " ".join(p.name.split()).lower() == wanted),
                       None)
        if patient is None:
            patient = Patient(id=new_id(), name=visit.patient_name, dob=visit.patient_dob,
                              contact=visit.patient_contact, created_at=now)
            s.add(patient)
        if visit.patient_contact:
            patient.contact = visit.patient_contact
        if visit.representative_name:
            patient.representative_name = visit.representative_name
            patient.representative_relationship = visit.representative_relationship
            patient.representative_authority = visit.representative_authority
        await s.flush()
        return patient

    async def patient(self, patient_id: str) -> Patient | None:
        async with self.session() as s:
            return await s.get(Patient, patient_id)

    async def visit(self, visit_id: str) -> Visit | None:
        async with self.session() as s:
            return await s.get(Visit, visit_id)

    async def visits_for(
        self, clinician_id: str, *, since: datetime | None = None, limit: int = 200
    ) -> Sequence[Visit]:
        """The clinician's own visits and those they were added to as co-clinician."""
        co = select(Participant.visit_id).where(Participant.clinician_id == clinician_id,
                                                Participant.removed_at.is_(None))
        query = select(Visit).where((Visit.clinician_id == clinician_id) | Visit.id.in_(co))
        if since is not None:
            query = query.where(Visit.scheduled_start >= since)
        async with self.session() as s:
            return (await s.execute(query.order_by(Visit.scheduled_start).limit(limit))
                    ).scalars().all()

    async def set_visit_status(
        self, visit_id: str, status: str, *, now: datetime, only_from: Iterable[str]
    ) -> bool:
        """Move a visit to `status` if it is in one of `only_from`; whether it moved."""
        values: dict[str, Any] = {"status": status}
        if status in ("ended", "cancelled"):
            values["ended_at"] = now
        async with self.session() as s:
            result = await s.execute(
                update(Visit).where(Visit.id == visit_id, Visit.status.in_(list(only_from)))
                .values(**values)
            )
            await s.commit()
            return bool(getattr(result, "rowcount", 0))

    async def add_participant(
        self, visit_id: str, *, role: str, name: str, now: datetime,
        clinician_id: str | None = None,
    ) -> Participant:
        row = Participant(id=new_id(), visit_id=visit_id, role=role, name=name.strip(),
                          clinician_id=clinician_id, created_at=now, failed_checks=0)
        async with self.session() as s:
            s.add(row)
            await s.commit()
        return row

    async def participants(self, visit_id: str) -> Sequence[Participant]:
        async with self.session() as s:
            return (await s.execute(
                select(Participant).where(Participant.visit_id == visit_id)
                .order_by(Participant.created_at)
            )).scalars().all()

    async def visit_and_participant(
        self, visit_id: str, participant_id: str
    ) -> tuple[Visit, Participant, Clinician] | None:
        """A participant of a visit, with the visit and its clinician, in one query."""
        async with self.session() as s:
            row = (await s.execute(
                select(Visit, Participant, Clinician)
                .join(Participant, Participant.visit_id == Visit.id)
                .join(Clinician, Clinician.id == Visit.clinician_id)
                .where(Visit.id == visit_id, Participant.id == participant_id)
            )).one_or_none()
            return None if row is None else (row[0], row[1], row[2])

    async def participant(self, participant_id: str) -> Participant | None:
        async with self.session() as s:
            return await s.get(Participant, participant_id)

    async def count_identity_attempt(
        self, model: type[Participant] | type[ConsentDocument], row_id: str, *, passed: bool,
        now: datetime, max_attempts: int, lockout_s: int,
    ) -> FailedCheck | None:
        """Count one identity answer against a link's attempts, atomically: None when it
        passed and the link is open; otherwise the link's state (locked, or attempts left).

        Every answer is counted before its result is told, in one UPDATE, so answers sent
        in parallel cannot get past the limit; a right answer resets the count.
        """
        async with self.session() as s, s.begin():
            row = (await s.execute(
                update(model)
                .where(model.id == row_id,
                       (model.locked_until.is_(None)) | (model.locked_until <= now))
                .values(failed_checks=model.failed_checks + 1)
                .returning(model.failed_checks))).first()
            if row is None:  # locked: not even a right answer gets in now
                locked = (await s.execute(select(model.locked_until)
                                          .where(model.id == row_id))).scalar_one()
                return FailedCheck(0, locked, 0)
            count = int(row[0])
            if passed and count <= max_attempts:
                await s.execute(update(model).where(model.id == row_id)
                                .values(failed_checks=0, locked_until=None))
                return None
            if count >= max_attempts:
                until = now + timedelta(seconds=lockout_s)
                await s.execute(update(model).where(model.id == row_id)
                                .values(failed_checks=0, locked_until=until))
                return FailedCheck(0, until, 0)
            return FailedCheck(count, None, max_attempts - count)

    # ---- timeline --------------------------------------------------------

    async def add_events(self, events: Iterable[VisitEvent]) -> None:
        """Append timeline rows (one Core INSERT for the batch: no unit of work to flush)."""
        rows = [{"visit_id": e.visit_id, "participant_id": e.participant_id, "kind": e.kind,
                 "at": e.at, "detail": e.detail or {}} for e in events]
        if not rows:
            return
        async with self.session() as s:
            await s.execute(insert(VisitEvent), rows)
            await s.commit()

    async def timeline(self, visit_id: str) -> Sequence[VisitEvent]:
        async with self.session() as s:
            return (await s.execute(
                select(VisitEvent).where(VisitEvent.visit_id == visit_id)
                .order_by(VisitEvent.at, VisitEvent.id)
            )).scalars().all()

    # ---- audit log -------------------------------------------------------

    async def append_audit(
        self, *, at: datetime, actor: str, action: str, subject: str,
        detail: dict[str, Any] | None = None,
    ) -> Entry:
        """Append one entry to the hash chain; concurrent writers retry on the same seq."""
        async def nothing(s: AsyncSession) -> None:
            return None

        _, entry = await self.audited(nothing, at=at, actor=actor, action=action,
                                      subject=subject, detail=detail)
        return entry

    async def audited(
        self, work: Callable[[AsyncSession], Awaitable[T]], *, at: datetime, actor: str,
        action: str, subject: str, detail: dict[str, Any] | None = None,
    ) -> tuple[T, Entry]:
        """`work` and its audit entry in one transaction: both are stored, or neither.

        `work` may raise to refuse (nothing is stored then); it runs again when another
        writer took the audit sequence number first.
        """
        detail = detail or {}
        for _ in range(20):
            try:
                async with self.session() as s, s.begin():
                    result = await work(s)
                    if self.engine.dialect.name == "postgresql":
                        await s.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                        {"k": _AUDIT_LOCK})
                    last = (await s.execute(select(AuditEntry.seq, AuditEntry.hash)
                                            .order_by(AuditEntry.seq.desc()).limit(1))).first()
                    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                    digest = entry_hash(seq, at, actor, action, subject, detail, prev)
                    s.add(AuditEntry(seq=seq, at=at, actor=actor, action=action,
                                     subject=subject, detail=detail, prev_hash=prev,
                                     hash=digest))
                return result, Entry(seq, at, actor, action, subject, detail, prev, digest)
            except IntegrityError:
                continue  # another writer took this seq: read the new last entry again
        raise StoreError("busy", "the audit log is too busy; try again")

    async def audit_for(self, subject: str) -> list[Entry]:
        """The entries about one subject ("consent:<id>"), oldest first."""
        async with self.session() as s:
            rows = (await s.execute(select(AuditEntry).where(AuditEntry.subject == subject)
                                    .order_by(AuditEntry.seq))).scalars()
            return [Entry(r.seq, r.at, r.actor, r.action, r.subject, r.detail, r.prev_hash,
                          r.hash) for r in rows]

    async def audit_entries(self) -> list[Entry]:
        async with self.session() as s:
            rows = (await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars()
            return [Entry(r.seq, r.at, r.actor, r.action, r.subject, r.detail, r.prev_hash,
                          r.hash) for r in rows]


_AUDIT_LOCK = 0x7E1E_A0D1
