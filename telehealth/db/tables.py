"""The records store: SQLAlchemy 2 tables (the schema lives in Alembic migrations)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime, date: Date, dict[str, Any]: JSON}


class Clinician(Base):
    __tablename__ = "clinicians"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    credentials: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    supervisor_id: Mapped[str | None] = mapped_column(ForeignKey("clinicians.id"))
    """A pre-licensed clinician's supervisor, who co-signs their notes."""
    location: Mapped[str] = mapped_column(String(200), default="")
    """Where the clinician works from (the note's clinician location, editable per note)."""


class WebSession(Base):
    """A clinician's login; only the SHA-256 of the cookie value is stored."""

    __tablename__ = "web_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    clinician_id: Mapped[str] = mapped_column(ForeignKey("clinicians.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen: Mapped[datetime]


class ApiToken(Base):
    """A clinician's API token for scripts; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    clinician_id: Mapped[str] = mapped_column(ForeignKey("clinicians.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class Patient(Base):
    """A patient of the practice, across visits (their consents are kept here)."""

    __tablename__ = "patients"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    dob: Mapped[date]
    contact: Mapped[str] = mapped_column(String(320), default="")
    representative_name: Mapped[str | None] = mapped_column(String(200))
    representative_relationship: Mapped[str | None] = mapped_column(String(100))
    representative_authority: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    __table_args__ = (Index("ix_patients_dob", "dob"),)

    def __repr__(self) -> str:  # never put names or dates of birth in logs
        return f"Patient(id={self.id!r})"


class Visit(Base):
    __tablename__ = "visits"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    clinician_id: Mapped[str] = mapped_column(ForeignKey("clinicians.id"))
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patients.id"), index=True)
    """The patient record; the columns below are the visit's copy, as scheduled."""
    patient_name: Mapped[str] = mapped_column(String(200))
    patient_dob: Mapped[date]
    patient_contact: Mapped[str] = mapped_column(String(320), default="")
    representative_name: Mapped[str | None] = mapped_column(String(200))
    representative_relationship: Mapped[str | None] = mapped_column(String(100))
    representative_authority: Mapped[str | None] = mapped_column(String(200))
    scheduled_start: Mapped[datetime]
    visit_type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="scheduled")
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_visits_clinician_start", "clinician_id", "scheduled_start"),)


class Participant(Base):
    __tablename__ = "participants"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    visit_id: Mapped[str] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(200))
    clinician_id: Mapped[str | None] = mapped_column(ForeignKey("clinicians.id"))
    removed_at: Mapped[datetime | None]
    failed_checks: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime]


class VisitEvent(Base):
    """The visit timeline: one row per thing that happened, with its time."""

    __tablename__ = "visit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    visit_id: Mapped[str] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"))
    participant_id: Mapped[str | None] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (Index("ix_visit_events_visit_at", "visit_id", "at"),)


class AuditEntry(Base):
    """Append-only, hash-chained (see `telehealth.audit`)."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(60))
    subject: Mapped[str] = mapped_column(String(80))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    __table_args__ = (Index("ix_audit_log_subject", "subject"),)


class ConsentDocument(Base):
    """A consent issued to a patient: its current signed bytes and where it stands.

    `revision` counts stored revisions; a signing step stores revision n+1 only if the
    row is still at n, so of two signers racing for one field exactly one wins.
    """

    __tablename__ = "consent_documents"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    visit_id: Mapped[str | None] = mapped_column(ForeignKey("visits.id", ondelete="SET NULL"))
    clinician_id: Mapped[str] = mapped_column(ForeignKey("clinicians.id"))
    template_id: Mapped[str] = mapped_column(String(100))
    template_version: Mapped[str] = mapped_column(String(20))
    template_sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(200))
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The signature slots in order, and the representative who signs (if any)."""
    html: Mapped[str] = mapped_column(Text)
    """What the PDF was rendered from: shown on screen to the signer."""
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(30))
    issued_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoke_reason: Mapped[str] = mapped_column(String(500), default="")
    disclosure_accepted: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Role -> {"id", "version", "at"} of the e-signature disclosure each signer accepted."""
    failed_checks: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]


class ConsentRevision(Base):
    """Every stored revision of a consent's PDF, with its hash and the one before."""

    __tablename__ = "consent_revisions"
    document_id: Mapped[str] = mapped_column(
        ForeignKey("consent_documents.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    what: Mapped[str] = mapped_column(String(40))
    field_name: Mapped[str | None] = mapped_column(String(60))
    signer_role: Mapped[str | None] = mapped_column(String(30))
    certificate_serial: Mapped[str | None] = mapped_column(String(64))
    certificate_sha256: Mapped[str | None] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    prev_sha256: Mapped[str | None] = mapped_column(String(64))
    pdf: Mapped[bytes] = mapped_column(LargeBinary)


class ConsentSigning(Base):
    """A prepared signature waiting for the signer's device (prepare -> finish)."""

    __tablename__ = "consent_signings"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    document_id: Mapped[str] = mapped_column(
        ForeignKey("consent_documents.id", ondelete="CASCADE"), index=True)
    field_name: Mapped[str] = mapped_column(String(60))
    base_revision: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(Text)
    """`consent.signing.PreparedSignature.to_json()`."""
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class Note(Base):
    """A visit's progress note: a draft, then signed (its PDF and SHA-256 kept)."""

    __tablename__ = "notes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    visit_id: Mapped[str] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"),
                                          unique=True)
    author_id: Mapped[str] = mapped_column(ForeignKey("clinicians.id"))
    format: Mapped[str] = mapped_column(String(40))
    header: Mapped[dict[str, Any]] = mapped_column(JSON)
    """What the visit says happened (read-only in the editor)."""
    sections: Mapped[dict[str, Any]] = mapped_column(JSON)
    carried: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Sections with text carried from the last note, not yet edited or reviewed."""
    clinician_location: Mapped[str] = mapped_column(String(200), default="")
    modality_reason: Mapped[str] = mapped_column(String(300), default="")
    """Why the visit was audio-only, in the clinician's words (the payer asks)."""
    add_ons: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Optional add-on codes the clinician chose (90785)."""
    status: Mapped[str] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer, default=1)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Signature slots (author, supervisor) once signing began."""
    pdf: Mapped[bytes | None] = mapped_column(LargeBinary)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    signed_at: Mapped[datetime | None]
    cosigned_at: Mapped[datetime | None]


class NoteAddendum(Base):
    """A correction or addition to a signed note; the note itself never changes."""

    __tablename__ = "note_addenda"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    note_id: Mapped[str] = mapped_column(ForeignKey("notes.id", ondelete="CASCADE"),
                                         index=True)
    author_id: Mapped[str] = mapped_column(ForeignKey("clinicians.id"))
    author_name: Mapped[str] = mapped_column(String(200))
    author_credentials: Mapped[str] = mapped_column(String(100), default="")
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(500))
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the addendum's text, recorded in the audit log too."""


class NoteSigning(Base):
    """A prepared signature on a note's PDF, waiting for the clinician's device."""

    __tablename__ = "note_signings"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    note_id: Mapped[str] = mapped_column(ForeignKey("notes.id", ondelete="CASCADE"),
                                         index=True)
    field_name: Mapped[str] = mapped_column(String(60))
    base_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(Text)
    """`consent.signing.PreparedSignature.to_json()` (the rendered note inside)."""
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class PsychotherapyNote(Base):
    """HIPAA psychotherapy notes: the author's private analysis, readable by them alone,
    kept apart from the progress note and never exported."""

    __tablename__ = "psychotherapy_notes"
    visit_id: Mapped[str] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"),
                                          primary_key=True)
    author_id: Mapped[str] = mapped_column(ForeignKey("clinicians.id"), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]
