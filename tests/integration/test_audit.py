"""The hash-chained audit log on both records stores: appends, races, and tampering."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from telehealth.audit import GENESIS, verify_chain
from telehealth.db.engine import make_engine, migrate
from telehealth.db.store import Store
from telehealth.db.tables import AuditEntry

NOW = datetime(2026, 12, 1, 15, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> Store:
    engine = make_engine(database_url)
    await migrate(engine)
    yield Store(engine)  # type: ignore[misc]
    await engine.dispose()


async def test_entries_chain_and_verify(store: Store) -> None:
    first = await store.append_audit(at=NOW, actor="clinician:c1", action="visit.created",
                                     subject="visit:v1", detail={"visit_type": "intake"})
    second = await store.append_audit(at=NOW + timedelta(seconds=1), actor="cli",
                                      action="visit.cancelled", subject="visit:v1")
    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    entries = await store.audit_entries()
    assert entries == [first, second]  # read back exactly as written (times included)
    assert verify_chain(entries).ok


async def test_concurrent_writers_get_distinct_places(store: Store) -> None:
    await asyncio.gather(*[
        store.append_audit(at=NOW, actor=f"a{i}", action="x", subject="s") for i in range(12)])
    entries = await store.audit_entries()
    assert [e.seq for e in entries] == list(range(1, 13))
    assert verify_chain(entries).ok


async def test_tampering_is_found(store: Store) -> None:
    for i in range(4):
        await store.append_audit(at=NOW, actor="a", action=f"step{i}", subject="s")
    async with store.session() as s:
        await s.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(action="other"))
        await s.commit()
    report = verify_chain(await store.audit_entries())
    assert (report.ok, report.first_bad_seq, report.reason) == (
        False, 3, "its contents were changed")
    entries = [e for e in await store.audit_entries() if e.seq != 2]
    assert verify_chain(entries).reason == "entry 2 is missing"
