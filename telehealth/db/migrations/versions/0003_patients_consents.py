"""patients and consent documents

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:30:00

Visits scheduled before this revision carry the patient inline; each distinct
(name, date of birth) among them becomes one patient record.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

import telehealth.db.tables
from telehealth.db.migrations import add_reference_column

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC_DT = telehealth.db.tables.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("dob", sa.Date(), nullable=False),
        sa.Column("contact", sa.String(length=320), nullable=False),
        sa.Column("representative_name", sa.String(length=200), nullable=True),
        sa.Column("representative_relationship", sa.String(length=100), nullable=True),
        sa.Column("representative_authority", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTC_DT, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_patients_dob", "patients", ["dob"])
    # Plain ADD COLUMN (no table rebuild: on SQLite that would break the foreign keys
    # of the participants and events that point at visits).
    add_reference_column("visits", "patient_id", "patients", "fk_visits_patient_id")
    op.create_index("ix_visits_patient_id", "visits", ["patient_id"])
    _backfill_patients()

    op.create_table(
        "consent_documents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("visit_id", sa.String(length=36), nullable=True),
        sa.Column("clinician_id", sa.String(length=36), nullable=False),
        sa.Column("template_id", sa.String(length=100), nullable=False),
        sa.Column("template_version", sa.String(length=20), nullable=False),
        sa.Column("template_sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("issued_at", UTC_DT, nullable=False),
        sa.Column("completed_at", UTC_DT, nullable=True),
        sa.Column("revoked_at", UTC_DT, nullable=True),
        sa.Column("revoke_reason", sa.String(length=500), nullable=False),
        sa.Column("disclosure_accepted", sa.JSON(), nullable=False),
        sa.Column("failed_checks", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTC_DT, nullable=True),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"]),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["clinician_id"], ["clinicians.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consent_documents_patient_id", "consent_documents", ["patient_id"])
    op.create_table(
        "consent_revisions",
        sa.Column("document_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", UTC_DT, nullable=False),
        sa.Column("what", sa.String(length=40), nullable=False),
        sa.Column("field_name", sa.String(length=60), nullable=True),
        sa.Column("signer_role", sa.String(length=30), nullable=True),
        sa.Column("certificate_serial", sa.String(length=64), nullable=True),
        sa.Column("certificate_sha256", sa.String(length=64), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("prev_sha256", sa.String(length=64), nullable=True),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["consent_documents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("document_id", "seq"),
    )
    op.create_table(
        "consent_signings",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("document_id", sa.String(length=36), nullable=False),
        sa.Column("field_name", sa.String(length=60), nullable=False),
        sa.Column("base_revision", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DT, nullable=False),
        sa.Column("expires_at", UTC_DT, nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["consent_documents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consent_signings_document_id", "consent_signings", ["document_id"])
    op.create_index("ix_audit_log_subject", "audit_log", ["subject"])


def _backfill_patients() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, patient_name, patient_dob, patient_contact, representative_name, "
        "representative_relationship, representative_authority, created_at FROM visits "
        "ORDER BY created_at")).fetchall()
    seen: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (" ".join(str(row[1]).split()).lower(), str(row[2]))
        if key not in seen:
            seen[key] = str(uuid.uuid4())
            bind.execute(sa.text(
                "INSERT INTO patients (id, name, dob, contact, representative_name, "
                "representative_relationship, representative_authority, created_at) "
                "VALUES (:id, :name, :dob, :contact, :rn, :rr, :ra, :at)"),
                {"id": seen[key], "name": row[1], "dob": row[2], "contact": row[3] or "",
                 "rn": row[4], "rr": row[5], "ra": row[6], "at": row[7]})
        bind.execute(sa.text("UPDATE visits SET patient_id = :p WHERE id = :v"),
                     {"p": seen[key], "v": row[0]})


def downgrade() -> None:
    op.drop_index("ix_audit_log_subject", table_name="audit_log")
    op.drop_table("consent_signings")
    op.drop_table("consent_revisions")
    op.drop_index("ix_consent_documents_patient_id", table_name="consent_documents")
    op.drop_table("consent_documents")
    op.drop_index("ix_visits_patient_id", table_name="visits")
    with op.batch_alter_table("visits") as batch:
        batch.drop_column("patient_id")
    op.drop_index("ix_patients_dob", table_name="patients")
    op.drop_table("patients")
