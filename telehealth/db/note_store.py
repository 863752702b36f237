"""Progress notes, addenda, pending note signatures and psychotherapy notes (the SQL).

Each change is stored with its audit entry in one transaction (`Store.audited`). A
draft's `version` moves by one with each save, and a save or a signature names the
version it started from, so a stale tab or a racing signer changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from telehealth.db.store import Store, StoreError
from telehealth.db.tables import Note, NoteAddendum, NoteSigning, PsychotherapyNote, Visit


class NoteStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def note_for_visit(self, visit_id: str) -> Note | None:
        async with self.store.session() as s:
            return (await s.execute(select(Note).where(Note.visit_id == visit_id))
                    ).scalar_one_or_none()

    async def add(self, note: Note, *, actor: str, detail: dict[str, Any]) -> Note:
        """The visit's draft; the one already there if another request made it first."""
        async def work(s: AsyncSession) -> None:
            s.add(note)

        try:
            await self.store.audited(work, at=note.created_at, actor=actor,
                                     action="note.drafted", subject=f"note:{note.id}",
                                     detail=detail)
        except Exception:
            existing = await self.note_for_visit(note.visit_id)
            if existing is None:
                raise
            return existing
        return note

    async def change(self, note: Note, values: dict[str, Any], *, at: datetime, action: str,
                     actor: str, detail: dict[str, Any], status: str | None = None,
                     signing_id: str | None = None, addendum: NoteAddendum | None = None
                     ) -> None:
        """Move the note from `note.version` to the next with `values`; StoreError
        ("note_changed") when it is no longer at that version (or status)."""
        expected = note.version

        async def work(s: AsyncSession) -> None:
            query = update(Note).where(Note.id == note.id, Note.version == expected)
            if status is not None:
                query = query.where(Note.status == status)
            moved = await s.execute(query.values(version=expected + 1, updated_at=at,
                                                 **values))
            if not getattr(moved, "rowcount", 0):
                raise StoreError("note_changed",
                                 "This note changed in another window; reload it.")
            if signing_id is not None:
                await s.execute(delete(NoteSigning).where(NoteSigning.id == signing_id))
            if addendum is not None:
                s.add(addendum)

        await self.store.audited(work, at=at, actor=actor, action=action,
                                 subject=f"note:{note.id}", detail=detail)

    async def set_header(self, note_id: str, header: dict[str, Any], *, at: datetime,
                         actor: str) -> None:
        """The draft's header from the ended visit (not the clinician's text: no version)."""
        async def work(s: AsyncSession) -> None:
            await s.execute(update(Note).where(Note.id == note_id, Note.status == "draft")
                            .values(header=header))

        await self.store.audited(work, at=at, actor=actor, action="note.header_updated",
                                 subject=f"note:{note_id}",
                                 detail={"minutes": header.get("minutes"),
                                         "code": header.get("code")})

    async def get(self, note_id: str) -> Note | None:
        async with self.store.session() as s:
            return await s.get(Note, note_id)

    async def last_signed_by(self, author_id: str, patient_id: str | None, fmt: str,
                             before: datetime) -> Note | None:
        """The author's latest signed note of this format for the same patient."""
        if patient_id is None:
            return None
        async with self.store.session() as s:
            return (await s.execute(
                select(Note).join(Visit, Visit.id == Note.visit_id)
                .where(Note.author_id == author_id, Note.format == fmt,
                       Note.status == "signed", Visit.patient_id == patient_id,
                       Note.created_at < before)
                .order_by(Note.signed_at.desc()).limit(1))).scalar_one_or_none()

    async def addenda(self, note_id: str) -> Sequence[NoteAddendum]:
        async with self.store.session() as s:
            return (await s.execute(select(NoteAddendum).where(NoteAddendum.note_id == note_id)
                                    .order_by(NoteAddendum.at))).scalars().all()

    async def add_signing(self, signing: NoteSigning) -> None:
        async with self.store.session() as s:
            s.add(signing)
            await s.commit()

    async def signing(self, signing_id: str) -> NoteSigning | None:
        async with self.store.session() as s:
            return await s.get(NoteSigning, signing_id)

    # ---- psychotherapy notes: the author's alone ----------------------------------

    async def private_note(self, visit_id: str, author_id: str) -> PsychotherapyNote | None:
        async with self.store.session() as s:
            return await s.get(PsychotherapyNote, (visit_id, author_id))

    async def save_private_note(self, visit_id: str, author_id: str, text: str,
                                at: datetime, detail: dict[str, Any]) -> None:
        async def work(s: AsyncSession) -> None:
            row = await s.get(PsychotherapyNote, (visit_id, author_id))
            if row is None:
                s.add(PsychotherapyNote(visit_id=visit_id, author_id=author_id, text=text,
                                        updated_at=at))
            else:
                row.text, row.updated_at = text, at

        await self.store.audited(work, at=at, actor=f"clinician:{author_id}",
                                 action="psychotherapy_note.saved",
                                 subject=f"visit:{visit_id}", detail=detail)
