"""Migrations: the schema they build is the one the tables declare, and 0003 turns the
patients of visits scheduled before it into patient records."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from telehealth.db.engine import make_engine, migrate
from telehealth.db.tables import Base


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": False})
    return [d for d in compare_metadata(context, Base.metadata)
            if not (isinstance(d, tuple) and d[0] in ("remove_table",)
                    and d[1].name == "alembic_version")]


async def test_the_migrated_schema_is_the_declared_one(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_visits_before_patient_records_get_one(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await migrate(engine, "0002")
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO clinicians (id, email, name, credentials, password_hash, created_at) "
                "VALUES ('c1', 'a@example.org', 'A', '', 'x', :at)"),
                {"at": _when(conn, "2026-11-01 10:00:00")})
            for visit_id, name, dob in (("v1", "Alex Morgan", "1990-04-27"),
                                        ("v2", "alex  MORGAN", "1990-04-27"),
                                        ("v3", "Alex Morgan", "1991-04-27")):
                await conn.execute(text(
                    "INSERT INTO visits (id, clinician_id, patient_name, patient_dob, "
                    "patient_contact, scheduled_start, visit_type, status, created_at) VALUES "
                    "(:id, 'c1', :name, :dob, '', :at, 'psychotherapy', 'scheduled', :at)"),
                    {"id": visit_id, "name": name, "dob": _date(conn, dob),
                     "at": _when(conn, "2026-11-01 10:00:00")})
                # Rows pointing at visits and clinicians: the migrations must not rebuild
                # those tables (on SQLite that breaks these foreign keys).
                await conn.execute(text(
                    "INSERT INTO participants (id, visit_id, role, name, clinician_id, "
                    "failed_checks, created_at) VALUES (:id, :v, 'clinician', 'A', 'c1', 0, :at)"),
                    {"id": f"p-{visit_id}", "v": visit_id,
                     "at": _when(conn, "2026-11-01 10:00:00")})
        await migrate(engine)
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT id, patient_id FROM visits ORDER BY id"))).fetchall()
            patients = (await conn.execute(text("SELECT count(*) FROM patients"))).scalar()
        by_visit = dict(rows)
        assert patients == 2
        assert by_visit["v1"] == by_visit["v2"] != by_visit["v3"]
        assert all(by_visit.values())
    finally:
        await engine.dispose()


def _date(conn: Any, iso: str) -> Any:
    from datetime import date

    return iso if conn.dialect.name == "sqlite" else date.fromisoformat(iso)


def _when(conn: Any, iso: str) -> Any:
    from datetime import UTC, datetime

    return iso if conn.dialect.name == "sqlite" else datetime.fromisoformat(iso).replace(
        tzinfo=UTC)


async def test_instances_starting_at_once_migrate_once(pg_url: str) -> None:
    """Several instances start together on an empty PostgreSQL database: the advisory
    lock makes them take turns; every one comes up on the newest schema."""
    import asyncio

    engines = [make_engine(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(migrate(e) for e in engines))
        async with engines[0].connect() as conn:
            assert await conn.run_sync(_diff) == []
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))
                        ).scalars().all()
        assert len(versions) == 1
    finally:
        for e in engines:
            await e.dispose()
