"""Alembic migrations, and the helpers they share."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def add_reference_column(table: str, column: str, target: str, constraint: str) -> None:
    """A nullable String(36) column referencing `target.id`, added in place.

    SQLite cannot add a named constraint, and a batch rebuild of the table would break the
    foreign keys of rows pointing at it; its ADD COLUMN takes an inline REFERENCES.
    """
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE {table} ADD COLUMN {column} VARCHAR(36) "
                   f"REFERENCES {target} (id)")
        return
    op.add_column(table, sa.Column(column, sa.String(length=36), nullable=True))
    op.create_foreign_key(constraint, table, target, [column], ["id"])
