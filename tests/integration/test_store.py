"""The records store on both backends: migrations, and every repository call."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import inspect

from telehealth.db.engine import make_engine, migrate
from telehealth.db.store import Store, StoreError
from telehealth.db.tables import Participant, VisitEvent
from telehealth.visits import Representative, VisitRequest

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> Store:
    engine = make_engine(database_url)
    await migrate(engine)
    await migrate(engine)  # a second start finds the schema current and changes nothing
    yield Store(engine)  # type: ignore[misc]
    await engine.dispose()


async def test_schema_has_every_table(store: Store) -> None:
    async with store.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"clinicians", "web_sessions", "api_tokens", "visits", "participants",
            "visit_events", "alembic_version"} <= names


async def test_clinicians_are_unique_by_email(store: Store) -> None:
    row = await store.create_clinician(email=" Dr.Rivera@Example.org ", name="Dana Rivera",
                                       credentials="LCSW", password_hash="h", now=NOW)
    assert row.email == "dr.rivera@example.org"
    assert (await store.clinician_by_email("DR.RIVERA@example.org")).id == row.id  # type: ignore[union-attr]
    with pytest.raises(StoreError) as err:
        await store.create_clinician(email="dr.rivera@example.org", name="x", credentials="",
                                     password_hash="h", now=NOW)
    assert err.value.code == "exists"


async def test_sessions_expire_after_idle_time(store: Store) -> None:
    row = await store.create_clinician(email="a@b.c", name="A", credentials="",
                                       password_hash="h", now=NOW)
    await store.add_web_session(token_hash="s" * 64, clinician_id=row.id, csrf_token="c", now=NOW)
    idle = timedelta(minutes=30)
    assert await store.touch_web_session("s" * 64, idle=idle, now=NOW + timedelta(minutes=29))
    # touched at 29 min (more than a minute after the last write), so alive at 58 min
    assert await store.touch_web_session("s" * 64, idle=idle, now=NOW + timedelta(minutes=58))
    later = NOW + timedelta(minutes=89)
    assert await store.touch_web_session("s" * 64, idle=idle, now=later) is None
    assert await store.touch_web_session("s" * 64, idle=idle, now=NOW) is None  # deleted


async def test_api_tokens_expire(store: Store) -> None:
    row = await store.create_clinician(email="a@b.c", name="A", credentials="",
                                       password_hash="h", now=NOW)
    await store.add_api_token(token_hash="t" * 64, clinician_id=row.id, label="", now=NOW,
                              ttl=timedelta(days=1))
    assert (await store.clinician_for_api_token("t" * 64, NOW)).id == row.id  # type: ignore[union-attr]
    assert await store.clinician_for_api_token("t" * 64, NOW + timedelta(days=1)) is None
    assert await store.clinician_for_api_token("u" * 64, NOW) is None


async def test_visit_lifecycle_and_timeline(store: Store) -> None:
    clinician = await store.create_clinician(email="a@b.c", name="Dana Rivera", credentials="",
                                             password_hash="h", now=NOW)
    req = VisitRequest(patient_name="Alex Morgan", patient_dob=date(2012, 5, 1),
                       scheduled_start=NOW, visit_type="family",
                       representative=Representative("Sam Morgan", "parent", "parent of a minor"))
    visit, people = await store.create_visit(req, clinician=clinician, now=NOW)
    assert [p.role for p in people] == ["clinician", "patient"]
    loaded = await store.visit(visit.id)
    assert loaded is not None
    assert loaded.scheduled_start == NOW and loaded.scheduled_start.tzinfo is not None
    assert loaded.patient_dob == date(2012, 5, 1)
    assert loaded.representative_authority == "parent of a minor"

    rep = await store.add_participant(visit.id, role="legal_representative", name="Sam Morgan",
                                      now=NOW + timedelta(seconds=1))
    assert [p.id for p in await store.participants(visit.id)][-1] == rep.id

    # Identity answers are counted atomically: of 20 wrong answers sent at once, at most
    # four are told "wrong, try again"; the rest find the link locked. A right one too.
    results = await asyncio.gather(*(
        store.count_identity_attempt(Participant, rep.id, passed=False, now=NOW,
                                     max_attempts=5, lockout_s=900) for _ in range(20)))
    told = [r for r in results if r is not None and r.locked_until is None]
    assert len(told) <= 4 and all(r is not None for r in results)
    until = (await store.participant(rep.id)).locked_until  # type: ignore[union-attr]
    assert until == NOW + timedelta(minutes=15)
    locked = await store.count_identity_attempt(Participant, rep.id, passed=True, now=NOW,
                                                max_attempts=5, lockout_s=900)
    assert locked is not None and locked.locked_until is not None
    later = NOW + timedelta(minutes=16)
    wrong = await store.count_identity_attempt(Participant, rep.id, passed=False, now=later,
                                               max_attempts=5, lockout_s=900)
    assert wrong is not None and wrong.attempts_left == 4
    assert await store.count_identity_attempt(Participant, rep.id, passed=True, now=later,
                                              max_attempts=5, lockout_s=900) is None
    assert (await store.participant(rep.id)).failed_checks == 0  # type: ignore[union-attr]

    assert await store.set_visit_status(visit.id, "in_progress", now=NOW, only_from=("scheduled",))
    assert not await store.set_visit_status(visit.id, "cancelled", now=NOW,
                                            only_from=("scheduled",))
    assert await store.set_visit_status(visit.id, "ended", now=NOW + timedelta(minutes=50),
                                        only_from=("in_progress",))
    ended = await store.visit(visit.id)
    assert ended is not None and ended.status == "ended"
    assert ended.ended_at == NOW + timedelta(minutes=50)

    await store.add_events([
        VisitEvent(visit_id=visit.id, participant_id=rep.id, kind="admitted",
                   at=NOW + timedelta(minutes=2), detail={"by": people[0].id}),
        VisitEvent(visit_id=visit.id, participant_id=None, kind="ended",
                   at=NOW + timedelta(minutes=50), detail={}),
        VisitEvent(visit_id=visit.id, participant_id=rep.id, kind="waiting",
                   at=NOW + timedelta(minutes=1), detail={}),
    ])
    events = await store.timeline(visit.id)
    assert [e.kind for e in events] == ["waiting", "admitted", "ended"]
    assert events[1].detail == {"by": people[0].id}
    assert events[0].at == NOW + timedelta(minutes=1)

    assert [v.id for v in await store.visits_for(clinician.id)] == [visit.id]
    assert await store.visits_for(clinician.id, since=NOW + timedelta(seconds=1)) == []


async def test_co_clinicians_see_the_visits_they_were_added_to(store: Store) -> None:
    own = await store.create_clinician(email="a@b.c", name="A", credentials="",
                                       password_hash="h", now=NOW)
    colleague = await store.create_clinician(email="c@d.e", name="C", credentials="",
                                             password_hash="h", now=NOW)
    stranger = await store.create_clinician(email="s@t.u", name="S", credentials="",
                                            password_hash="h", now=NOW)
    req = VisitRequest(patient_name="Alex Morgan", patient_dob=date(1990, 4, 27),
                       scheduled_start=NOW)
    visit, _ = await store.create_visit(req, clinician=own, now=NOW)
    await store.add_participant(visit.id, role="co_clinician", name="C", now=NOW,
                                clinician_id=colleague.id)
    assert [v.id for v in await store.visits_for(colleague.id)] == [visit.id]
    assert [v.id for v in await store.visits_for(own.id)] == [visit.id]
    assert await store.visits_for(stranger.id) == []
