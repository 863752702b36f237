"""Progress notes for the service's faces: the draft waiting when a visit ends, autosave,
signing (PAdES, with the clinician's own device key, like consents), co-signature,
addenda, the author's private psychotherapy note, and exports (PDF, FHIR).

The rules live in `notes/` (facts from the timeline, billing, lifecycle, formats);
this module adds the records (`db/note_store.py`) and the audit trail. Note text is
health data: it is never logged, and audit entries name sections, never their text.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from consent.signing import PreparedSignature
from notes import NotesError
from notes.billing import PayerSettings, suggest_for
from notes.contact import visit_facts
from notes.document import printable_header, render_note_pdf
from notes.draft import ConsentOnFile, draft_header
from notes.formats import NoteFormats
from notes.lifecycle import (
    AWAITING_COSIGN,
    DRAFT,
    SIGNED,
    Draft,
    carry_forward,
    check_addendum,
    check_editable,
    check_signable,
    edit,
    signers,
    status_after_signature,
)
from telehealth.config import Settings
from telehealth.consents import (
    CERT_HOURS,
    Consents,
    Requester,
    b64_field,
    plan_json,
    plan_of_json,
)
from telehealth.db.note_store import NoteStore
from telehealth.db.store import Store, new_id
from telehealth.db.tables import Clinician, Note, NoteAddendum, NoteSigning, Visit
from telehealth.visits import VisitError, same_name

SIGNING_S = 10 * 60


class VisitNotes:
    def __init__(self, settings: Settings, store: Store, consents: Consents,
                 clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.store = store
        self.notes = NoteStore(store)
        self.consents = consents
        self.clock = clock
        self.formats = NoteFormats([settings.data_dir / "templates" / "notes"])
        self.payer = PayerSettings(video_modifier=settings.video_modifier or None,
                                   audio_only_modifier=settings.audio_only_modifier or None)
        self.timeline: Callable[[Visit], Awaitable[Sequence[Any]]] | None = None
        """The visit's events, the running hub's batch flushed first (set by `build_services`)."""
        self._render_lock = asyncio.Lock()

    # ---- the draft --------------------------------------------------------------

    async def _events(self, visit: Visit) -> Sequence[Any]:
        if self.timeline is not None:
            return await self.timeline(visit)
        return await self.store.timeline(visit.id)

    async def facts_header(self, visit: Visit, author: Clinician) -> dict[str, Any]:
        """What the visit's timeline says, as the note's read-only header."""
        facts = visit_facts(await self._events(visit), await self.store.participants(visit.id),
                            visit_type=visit.visit_type, now=visit.ended_at or self.clock())
        consent = await self.consents.on_file(visit.patient_id)
        return draft_header(
            facts, suggest_for(facts, self.payer),
            ConsentOnFile(consent.id, consent.sha256, consent.completed_at) if consent else None,
            visit_id=visit.id, scheduled_start=visit.scheduled_start,
            clinician_name=author.name, clinician_credentials=author.credentials,
            tz=self.settings.zone())

    async def draft_for(self, visit: Visit, author: Clinician) -> Note:
        """The visit's note; made now from the timeline if there is none yet."""
        found = await self.notes.note_for_visit(visit.id)
        if found is not None:
            if found.status == DRAFT and visit.status == "ended" and not found.header.get("final"):
                # Opened during the visit: what the visit says is known only now.
                header = {**await self.facts_header(visit, author), "final": True}
                await self.notes.set_header(found.id, header, at=self.clock(),
                                            actor=f"clinician:{author.id}")
                found.header = header
            return found
        if visit.status not in ("ended", "in_progress"):
            raise NotesError("visit_not_held", "This visit has not taken place.",
                             "The note is drafted when the visit ends.")
        fmt = self.formats.get(self.settings.note_format)
        now = self.clock()
        header = {**await self.facts_header(visit, author), "final": visit.status == "ended"}
        note = Note(id=new_id(), visit_id=visit.id, author_id=visit.clinician_id,
                    format=fmt.id, header=header,
                    sections={k: "" for k in fmt.keys}, carried=[],
                    clinician_location=author.location, modality_reason="", add_ons=[],
                    status=DRAFT, version=1,
                    plan={}, pdf=None, sha256=None, created_at=now, updated_at=now,
                    signed_at=None, cosigned_at=None)
        return await self.notes.add(note, actor=f"clinician:{author.id}",
                                    detail={"visit": visit.id, "format": fmt.id})

    async def after_visit(self, visit: Visit) -> None:
        """The draft waiting when the visit ends (the visit's own clinician is the author)."""
        author = await self.store.clinician(visit.clinician_id)
        if author is not None:
            await self.draft_for(visit, author)

    # ---- reading ----------------------------------------------------------------

    async def view(self, note: Note, requester: Requester) -> dict[str, Any]:
        fmt = self.formats.get(note.format)
        addenda = await self.notes.addenda(note.id)
        await self.store.append_audit(at=self.clock(), actor=requester.actor,
                                      action="note.viewed", subject=f"note:{note.id}",
                                      detail=requester.detail())
        return {
            "id": note.id, "visit_id": note.visit_id, "status": note.status,
            "version": note.version, "format": fmt.to_json(),
            "formats": [{"id": f.id, "title": f.title} for f in self.formats.formats.values()],
            "header": printable_header(_header(note)), "sections": note.sections,
            "modality_reason": note.modality_reason,
            "carried": note.carried, "clinician_location": note.clinician_location,
            "add_ons": note.add_ons, "signed_at": _iso(note.signed_at),
            "cosigned_at": _iso(note.cosigned_at), "sha256": note.sha256,
            "signatures": [{"field": s["field"], "printed_name": s["printed_name"],
                            "role_label": s["role_label"], "signed_at": s["signed_at"]}
                           for s in note.plan.get("slots", [])],
            "next_field": _next_field(note),
            "addenda": [{"id": a.id, "at": a.at.isoformat(), "author_name": a.author_name,
                         "author_credentials": a.author_credentials, "reason": a.reason,
                         "text": a.text} for a in addenda],
        }

    # ---- editing the draft --------------------------------------------------------

    async def save(self, note: Note, body: dict[str, Any], requester: Requester) -> Note:
        """Autosave: changed sections, reviewed carried sections, format, location, add-ons."""
        version = body.get("version")
        if version != note.version:
            raise NotesError("note_changed", "This note changed in another window; reload it.")
        fmt = self.formats.get(str(body.get("format", note.format)))
        sections, carried = note.sections, tuple(note.carried)
        if fmt.id != note.format:  # keep what fits the new format's sections
            sections = {k: note.sections.get(k, "") for k in fmt.keys}
            carried = tuple(k for k in carried if k in fmt.keys)
        changes = body.get("sections") or {}
        reviewed = body.get("reviewed") or []
        if not isinstance(changes, dict) or not isinstance(reviewed, list):
            raise NotesError("invalid_field", "'sections' is an object, 'reviewed' a list.")
        draft = edit(note.status, fmt, Draft(sections, carried), changes,
                     [str(r) for r in reviewed])
        values: dict[str, Any] = {"format": fmt.id, "sections": draft.sections,
                                  "carried": list(draft.carried)}
        if "clinician_location" in body:
            location = body["clinician_location"]
            if not isinstance(location, str) or len(location) > 200:
                raise NotesError("invalid_field", "The clinician location is at most 200 "
                                                  "characters of text.")
            values["clinician_location"] = location
        if "modality_reason" in body:
            reason = body["modality_reason"]
            if not isinstance(reason, str) or len(reason) > 300:
                raise NotesError("invalid_field", "The reason for audio-only is at most 300 "
                                                  "characters of text.")
            values["modality_reason"] = reason
        if "add_ons" in body:
            values["add_ons"] = self._add_ons(note, body["add_ons"])
        await self.notes.change(
            note, values, at=self.clock(), action="note.edited", actor=requester.actor,
            status=DRAFT, detail=requester.detail(
                sections=sorted(k for k in changes if changes[k] != sections.get(k, "")),
                format=fmt.id))
        if "clinician_location" in values and requester.actor == f"clinician:{note.author_id}":
            # Remembered as where the author works from: the next draft starts with it.
            await self.store.set_location(note.author_id, values["clinician_location"])
        return await self._reload(note)

    def _add_ons(self, note: Note, chosen: Any) -> list[str]:
        if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
            raise NotesError("invalid_field", "'add_ons' is a list of codes.")
        offered = note.header.get("optional_add_ons", [])
        for code in chosen:
            if code not in offered:
                raise NotesError("add_on_not_offered", f"{code} cannot be added to this code.")
        return sorted(set(chosen))

    async def start_from_last(self, note: Note, requester: Requester) -> Note:
        """Copy the author's last signed note of this format for the patient; marked."""
        check_editable(note.status)
        visit = await self.store.visit(note.visit_id)
        assert visit is not None
        last = await self.notes.last_signed_by(note.author_id, visit.patient_id, note.format,
                                               note.created_at)
        if last is None:
            raise NotesError("no_last_note", "There is no earlier signed note of this format "
                                             "for this patient.")
        fmt = self.formats.get(note.format)
        draft = carry_forward(fmt, last.sections)
        await self.notes.change(note, {"sections": draft.sections, "carried": list(draft.carried)},
                                at=self.clock(), action="note.carried_forward",
                                actor=requester.actor, status=DRAFT,
                                detail=requester.detail(source=last.id))
        return await self._reload(note)

    async def _reload(self, note: Note) -> Note:
        found = await self.notes.get(note.id)
        assert found is not None
        return found

    # ---- signing ------------------------------------------------------------------

    async def prepare(self, note: Note, clinician: Clinician, *, public_key: Any,
                      typed_name: Any, requester: Requester) -> dict[str, Any]:
        """The signer's certificate and the bytes their key signs: the author signs the
        draft (rendered now, with every signature field), the supervisor co-signs it."""
        visit = await self.store.visit(note.visit_id)
        assert visit is not None
        if note.status == DRAFT:
            if clinician.id != note.author_id:
                raise VisitError("forbidden", "Only the note's author signs it.")
            fmt = self.formats.get(note.format)
            check_signable(note.status, fmt, Draft(note.sections, tuple(note.carried)))
            supervisor = (await self.store.clinician(clinician.supervisor_id)
                          if clinician.supervisor_id else None)
            plan = signers(clinician.name, clinician.credentials,
                           (supervisor.name, supervisor.credentials) if supervisor else None)
            patient = await self.store.patient(visit.patient_id) if visit.patient_id else None
            async with self._render_lock:
                pdf = await asyncio.to_thread(
                    render_note_pdf, note_id=note.id,
                    practice_name=self.settings.practice_name,
                    patient_name=patient.name if patient else visit.patient_name,
                    patient_dob=patient.dob if patient else visit.patient_dob, fmt=fmt,
                    header=_header(note), sections=note.sections,
                    clinician_location=note.clinician_location,
                    chosen_add_ons=note.add_ons, plan=plan)
            slot = plan.slots[0]
            plan_state = plan_json(plan)
            # Who signs each slot, by account: a later change of supervisor does not let
            # someone else sign under the name printed on the note.
            plan_state["slots"][0]["clinician_id"] = clinician.id
            if supervisor is not None:
                plan_state["slots"][1]["clinician_id"] = supervisor.id
        elif note.status == AWAITING_COSIGN:
            plan = plan_of_json(note.plan)
            slot = plan.slots[-1]
            if clinician.id != note.plan["slots"][-1].get("clinician_id"):
                raise VisitError("forbidden", "Only the supervisor named on this note co-signs it.")
            assert note.pdf is not None
            pdf = note.pdf
            plan_state = note.plan
        else:
            raise NotesError("note_signed", "This note is already signed.",
                             "Add an addendum instead.")
        if not isinstance(typed_name, str) or not same_name(typed_name,
                                                            slot.signer.printed_name):
            raise NotesError("name_mismatch", "Type your full name exactly as it is on your "
                                              "account.")
        issued = self.consents.ca.issue_signer_certificate(
            b64_field(public_key, "public_key"), slot.signer.printed_name, "clinician",
            email=clinician.email, hours=CERT_HOURS)
        to_sign, state = await self.consents.signer.prepare(pdf, slot.field_name, issued.asn1,
                                                            slot.signer, slot.certify)
        now = self.clock()
        signing = NoteSigning(id=new_id(), note_id=note.id, field_name=slot.field_name,
                              base_version=note.version,
                              state=_with_plan(state.to_json(), plan_state), created_at=now,
                              expires_at=now + timedelta(seconds=SIGNING_S))
        await self.notes.add_signing(signing)
        return {"signing_id": signing.id, "to_sign": base64.b64encode(to_sign).decode(),
                "certificate": base64.b64encode(issued.der).decode()}

    async def finish(self, note: Note, clinician: Clinician, *, signing_id: Any,
                     signature: Any, requester: Requester) -> Note:
        if not isinstance(signing_id, str):
            raise NotesError("invalid_field", "'signing_id' is required.")
        signing = await self.notes.signing(signing_id)
        now = self.clock()
        if signing is None or signing.note_id != note.id or now >= signing.expires_at:
            raise NotesError("signing_expired", "This signing step is no longer open.",
                             "Press Sign again.")
        if signing.base_version != note.version:
            raise NotesError("note_changed", "The note changed since you began signing.",
                             "Review it and sign again.")
        state_json, plan_state = _split_plan(signing.state)
        state = PreparedSignature.from_json(state_json)
        signed = await self.consents.signer.finish(state, b64_field(signature, "signature", 512))
        plan = plan_of_json(plan_state)
        slots = [dict(s) for s in plan_state["slots"]]
        for s in slots:
            if s["field"] == signing.field_name:
                s["signed_at"] = now.isoformat()
        status = status_after_signature(signing.field_name, plan)
        values: dict[str, Any] = {"pdf": signed, "sha256": hashlib.sha256(signed).hexdigest(),
                                  "status": status, "plan": {**plan_state, "slots": slots}}
        values["signed_at" if signing.field_name == plan.slots[0].field_name
               else "cosigned_at"] = now
        await self.notes.change(
            note, values, at=now, action="note.signed" if status != SIGNED or len(slots) == 1
            else "note.cosigned", actor=requester.actor, signing_id=signing.id,
            detail=requester.detail(field=signing.field_name, sha256=values["sha256"],
                                    status=status))
        return await self._reload(note)

    # ---- after signing --------------------------------------------------------------

    async def add_addendum(self, note: Note, clinician: Clinician, *, reason: Any, text: Any,
                           requester: Requester) -> Note:
        reason_s, text_s = check_addendum(note.status, reason, text)
        now = self.clock()
        addendum = NoteAddendum(id=new_id(), note_id=note.id, author_id=clinician.id,
                                author_name=clinician.name,
                                author_credentials=clinician.credentials, at=now,
                                reason=reason_s, text=text_s,
                                sha256=hashlib.sha256(text_s.encode()).hexdigest())
        await self.notes.change(note, {}, at=now, action="note.addendum", actor=requester.actor,
                                addendum=addendum, detail=requester.detail(
                                    addendum=addendum.id, sha256=addendum.sha256))
        return await self._reload(note)

    async def exported(self, note: Note, requester: Requester, what: str) -> None:
        await self.store.append_audit(at=self.clock(), actor=requester.actor,
                                      action="note.exported", subject=f"note:{note.id}",
                                      detail=requester.detail(format=what))

    def signed_pdf(self, note: Note) -> bytes:
        if note.pdf is None or note.status == DRAFT:
            raise NotesError("note_not_signed", "Only a signed note is exported as a PDF.",
                             "Sign the note first.")
        return note.pdf

    async def fhir_bundle(self, note: Note) -> dict[str, Any]:
        """The note, its addenda, the visit and the patient's consents as FHIR R4."""
        from notes import fhir

        visit = await self.store.visit(note.visit_id)
        assert visit is not None
        patient = await self.store.patient(visit.patient_id) if visit.patient_id else None
        if patient is None:
            raise NotesError("no_patient", "This visit has no patient record.")
        author = await self.store.clinician(note.author_id)
        header = note.header
        rep = patient.representative_name
        people = [p for p in await self.store.participants(visit.id) if p.removed_at is None]
        add_ons = tuple((a["code"], "") for a in header.get("add_ons", [])) + tuple(
            (c, "Interactive complexity") for c in note.add_ons)
        encounter = fhir.EncounterInfo(
            id=visit.id, status={"ended": "finished", "in_progress": "in-progress",
                                 "cancelled": "cancelled"}.get(visit.status, "planned"),
            start=_dt(header.get("start")), end=_dt(header.get("stop")),
            participants=tuple(fhir.ParticipantInfo(p.role, p.name, p.clinician_id)
                               for p in people if p.role != "patient"),
            cpt_code=header.get("code"), modality=header["modality"],
            modality_reason=_header(note).get("modality_reason", ""),
            place_of_service=header.get("place_of_service") or "02",
            modifier=header.get("modifier") or "", contact_minutes=header.get("minutes"),
            addon_codes=add_ons)
        consents = []
        for doc in await self.consents.for_patient(patient.id):
            if doc.status in ("complete", "revoked") and doc.completed_at is not None:
                full = await self.consents.get(doc.id)
                consents.append(fhir.ConsentInfo(
                    id=doc.id, status=doc.status, signed_at=doc.completed_at, pdf=full.pdf,
                    signer_role=doc.plan["slots"][-1]["role"], template_id=doc.template_id,
                    template_version=doc.template_version, sha256=full.sha256))
        fmt = self.formats.get(note.format)
        return fhir.build_bundle(
            fhir.PatientInfo(patient.id, patient.name, patient.dob, patient.contact,
                             fhir.RepresentativeInfo(rep, patient.representative_relationship
                                                     or "", patient.representative_authority
                                                     or "") if rep else None),
            encounter,
            fhir.NoteInfo(id=note.id, status="signed" if note.status == SIGNED else "draft",
                          author_name=author.name if author else "",
                          author_credentials=author.credentials if author else "",
                          author_id=note.author_id, signed_at=note.signed_at,
                          created_at=note.created_at,
                          pdf=note.pdf if note.status == SIGNED else None,
                          text_sections=tuple((s.title, note.sections.get(s.key, ""))
                                              for s in fmt.sections)),
            [fhir.AddendumInfo(a.id, a.at, a.author_name, a.reason, None, a.text,
                               a.author_credentials, a.author_id)
             for a in await self.notes.addenda(note.id)] if note.status == SIGNED else [],
            consents, practice_name=self.settings.practice_name, timestamp=self.clock())

    # ---- psychotherapy notes ------------------------------------------------------------

    async def private_note(self, visit: Visit, clinician: Clinician,
                           requester: Requester) -> str:
        """The clinician's own psychotherapy note for the visit (no one else's, ever)."""
        row = await self.notes.private_note(visit.id, clinician.id)
        await self.store.append_audit(at=self.clock(), actor=requester.actor,
                                      action="psychotherapy_note.viewed",
                                      subject=f"visit:{visit.id}", detail=requester.detail())
        return row.text if row else ""

    async def save_private_note(self, visit: Visit, clinician: Clinician, text: Any,
                                requester: Requester) -> None:
        if not isinstance(text, str) or len(text) > 50_000:
            raise NotesError("invalid_field", "'text' must be text of at most 50000 characters.")
        await self.notes.save_private_note(visit.id, clinician.id, text, self.clock(),
                                           requester.detail(chars=len(text)))


def _header(note: Note) -> dict[str, Any]:
    """The note's header with the clinician's reason for audio-only, when given."""
    if note.modality_reason:
        return {**note.header, "modality_reason": note.modality_reason}
    return note.header


def _next_field(note: Note) -> str | None:
    pending = [s["field"] for s in note.plan.get("slots", []) if not s["signed_at"]]
    return pending[0] if pending else None


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _dt(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def _with_plan(state_json: str, plan: dict[str, Any]) -> str:
    import json

    return json.dumps({"state": state_json, "plan": plan})


def _split_plan(text: str) -> tuple[str, dict[str, Any]]:
    import json

    data = json.loads(text)
    return str(data["state"]), dict(data["plan"])


__all__ = ["VisitNotes"]
