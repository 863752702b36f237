"""Consent documents, their revisions and pending signatures (the SQL for `consents`).

Every change that matters to the record is made with its audit entry in one
transaction (`Store.audited`): the new revision and its entry are stored, or neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from telehealth.audit import Entry
from telehealth.db.store import Store, StoreError
from telehealth.db.tables import ConsentDocument, ConsentRevision, ConsentSigning

OPEN_STATUSES = ("awaiting_clinician", "awaiting_patient")


class ConsentStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add_document(self, doc: ConsentDocument, first: ConsentRevision, *,
                           actor: str, detail: dict[str, Any]) -> Entry:
        async def work(s: AsyncSession) -> None:
            s.add(doc)
            await s.flush()
            s.add(first)

        _, entry = await self.store.audited(work, at=doc.issued_at, actor=actor,
                                            action="consent.issued",
                                            subject=f"consent:{doc.id}", detail=detail)
        return entry

    async def document(self, document_id: str) -> ConsentDocument | None:
        async with self.store.session() as s:
            return await s.get(ConsentDocument, document_id)

    async def documents_for_patient(self, patient_id: str) -> Sequence[ConsentDocument]:
        """The patient's consents, newest first, without their bytes."""
        async with self.store.session() as s:
            return (await s.execute(
                select(ConsentDocument)
                .options(defer(ConsentDocument.pdf), defer(ConsentDocument.html))
                .where(ConsentDocument.patient_id == patient_id)
                .order_by(ConsentDocument.issued_at.desc())
            )).scalars().all()

    async def documents_with_status(self, statuses: Sequence[str]) -> Sequence[str]:
        async with self.store.session() as s:
            return (await s.execute(select(ConsentDocument.id).where(
                ConsentDocument.status.in_(list(statuses))))).scalars().all()

    async def revisions(self, document_id: str) -> Sequence[ConsentRevision]:
        """Every revision's record, oldest first, without its bytes."""
        async with self.store.session() as s:
            return (await s.execute(
                select(ConsentRevision).options(defer(ConsentRevision.pdf))
                .where(ConsentRevision.document_id == document_id)
                .order_by(ConsentRevision.seq)
            )).scalars().all()

    async def add_signing(self, signing: ConsentSigning) -> None:
        async with self.store.session() as s:
            s.add(signing)
            await s.commit()

    async def signing(self, signing_id: str) -> ConsentSigning | None:
        async with self.store.session() as s:
            return await s.get(ConsentSigning, signing_id)

    async def store_revision(
        self, doc: ConsentDocument, revision: ConsentRevision, *, pdf: bytes,
        values: dict[str, Any], action: str, actor: str, detail: dict[str, Any],
        signing_id: str | None = None, only_statuses: Sequence[str] = OPEN_STATUSES,
    ) -> Entry:
        """Revision `doc.revision + 1` with its audit entry, if the document is still at
        `doc.revision` and in one of `only_statuses` (a withdrawn consent takes no
        signature); StoreError("signing_conflict") when another change got there first."""
        expected = doc.revision

        async def work(s: AsyncSession) -> None:
            moved = await s.execute(
                update(ConsentDocument)
                .where(ConsentDocument.id == doc.id, ConsentDocument.revision == expected,
                       ConsentDocument.status.in_(list(only_statuses)))
                .values(pdf=pdf, sha256=revision.sha256, revision=expected + 1, **values))
            if not getattr(moved, "rowcount", 0):
                raise StoreError("signing_conflict",
                                 "Someone else changed this consent first; open it again.")
            s.add(revision)
            if signing_id is not None:
                await s.execute(delete(ConsentSigning).where(ConsentSigning.id == signing_id))

        _, entry = await self.store.audited(work, at=revision.at, actor=actor, action=action,
                                            subject=f"consent:{doc.id}", detail=detail)
        return entry

    async def update(self, document_id: str, values: dict[str, Any], *, at: datetime,
                     action: str, actor: str, detail: dict[str, Any],
                     only_statuses: Sequence[str] | None = None) -> bool:
        """Change a consent's row with its audit entry; False (nothing stored) when its
        status is not one of `only_statuses`."""
        async def work(s: AsyncSession) -> None:
            query = update(ConsentDocument).where(ConsentDocument.id == document_id)
            if only_statuses is not None:
                query = query.where(ConsentDocument.status.in_(list(only_statuses)))
            moved = await s.execute(query.values(**values))
            if not getattr(moved, "rowcount", 0):
                raise _Unchanged

        try:
            await self.store.audited(work, at=at, actor=actor, action=action,
                                     subject=f"consent:{document_id}", detail=detail)
        except _Unchanged:
            return False
        return True


class _Unchanged(Exception):
    """No row matched: nothing to store, no audit entry."""
