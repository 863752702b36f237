"""progress notes, addenda, psychotherapy notes; clinician supervisor and location

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import telehealth.db.tables
from telehealth.db.migrations import add_reference_column

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC_DT = telehealth.db.tables.UTCDateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild: on SQLite that would break the foreign keys
    # of every row that points at a clinician).
    add_reference_column("clinicians", "supervisor_id", "clinicians",
                         "fk_clinicians_supervisor_id")
    op.add_column("clinicians", sa.Column("location", sa.String(length=200), nullable=False,
                                          server_default=""))
    op.create_table(
        "notes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("visit_id", sa.String(length=36), nullable=False),
        sa.Column("author_id", sa.String(length=36), nullable=False),
        sa.Column("format", sa.String(length=40), nullable=False),
        sa.Column("header", sa.JSON(), nullable=False),
        sa.Column("sections", sa.JSON(), nullable=False),
        sa.Column("carried", sa.JSON(), nullable=False),
        sa.Column("clinician_location", sa.String(length=200), nullable=False),
        sa.Column("modality_reason", sa.String(length=300), nullable=False),
        sa.Column("add_ons", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTC_DT, nullable=False),
        sa.Column("updated_at", UTC_DT, nullable=False),
        sa.Column("signed_at", UTC_DT, nullable=True),
        sa.Column("cosigned_at", UTC_DT, nullable=True),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["author_id"], ["clinicians.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("visit_id"),
    )
    op.create_table(
        "note_addenda",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("note_id", sa.String(length=36), nullable=False),
        sa.Column("author_id", sa.String(length=36), nullable=False),
        sa.Column("author_name", sa.String(length=200), nullable=False),
        sa.Column("author_credentials", sa.String(length=100), nullable=False),
        sa.Column("at", UTC_DT, nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["note_id"], ["notes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["author_id"], ["clinicians.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_note_addenda_note_id", "note_addenda", ["note_id"])
    op.create_table(
        "note_signings",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("note_id", sa.String(length=36), nullable=False),
        sa.Column("field_name", sa.String(length=60), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DT, nullable=False),
        sa.Column("expires_at", UTC_DT, nullable=False),
        sa.ForeignKeyConstraint(["note_id"], ["notes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_note_signings_note_id", "note_signings", ["note_id"])
    op.create_table(
        "psychotherapy_notes",
        sa.Column("visit_id", sa.String(length=36), nullable=False),
        sa.Column("author_id", sa.String(length=36), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("updated_at", UTC_DT, nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["author_id"], ["clinicians.id"]),
        sa.PrimaryKeyConstraint("visit_id", "author_id"),
    )


def downgrade() -> None:
    op.drop_table("psychotherapy_notes")
    op.drop_index("ix_note_signings_note_id", table_name="note_signings")
    op.drop_table("note_signings")
    op.drop_index("ix_note_addenda_note_id", table_name="note_addenda")
    op.drop_table("note_addenda")
    op.drop_table("notes")
    with op.batch_alter_table("clinicians") as batch:
        batch.drop_column("location")
        batch.drop_column("supervisor_id")
