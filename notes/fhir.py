"""A session note as a FHIR R4 JSON Bundle (pure: plain records in, a validated dict out).

    build_bundle(patient, encounter, note, addenda, consents, *, practice_name, ...)
      -> {"resourceType": "Bundle", "type": "collection", "entry": [...]}
    validate_bundle(data) -> the same JSON, re-read through the R4B models, or FhirExportError

Psychotherapy notes are never exported. HIPAA psychotherapy notes (the clinician's
private analysis, kept apart from the progress note) have no parameter here and no
field in any record below, so no caller can put one in a bundle: only the progress
note, its addenda and the signed consents leave the practice.

Bundle type `collection`, not `document`. A FHIR document Bundle is one attested
clinical document led by a Composition (identifier, timestamp, Composition first):
a second rendering of the note. Here the note already is a document, the signed and
PAdES-sealed PDF, and US Core exchanges clinical notes as DocumentReference, which is
what receiving EHRs ingest; the addenda and consents are records of their own, not
sections of one document. A collection carries them as they are; `transaction` (with
`request` entries) would tell a server what to write, the receiving side's choice.

Entries, in order (fullUrl `urn:uuid:<id>`, or `<base_url>/<Type>/<id>` for a RESTful
base; every reference is another entry's fullUrl, and `validate_bundle` checks they
all resolve):
    Patient          name (text), birthDate, telecom (email when `contact` has an "@")
    RelatedPerson    the representative on record (id derived from the patient's, uuid5)
    Encounter        class v3-ActCode#VR, status, period, length (contact minutes),
                     type: CPT (AMA system) with the modifier in its text, add-ons,
                     the modality as text; participant types below; place of
                     service as a contained Location (mode "kind", CMS POS code)
    DocumentReference  the note: LOINC 34904-3, category us-core clinical-note,
                     docStatus preliminary (draft) / final (signed) / amended (with
                     addenda or status "amended"), content = the PDF (or, for a
                     draft without one, its sections as text/plain), context.encounter
    DocumentReference  one per addendum, final, relatesTo [{code appends, target note}]
    Consent          active (complete) / inactive (revoked), scope consentscope#treatment,
                     category LOINC 59284-0, policyRule v3-ActCode#OPTIN, performer
                     Patient or RelatedPerson, verification for a representative,
                     sourceAttachment = the signed PDF, identifier ni:///sha-256
Attachments carry `hash` (base64 SHA-1, as FHIR's Attachment.hash requires), `size`,
`title` and `creation`. Clinicians are display-only references (with an identifier
when `clinician_id_system` is given): the receiving EHR does not know our clinicians.

Encounter participants (`participant.type`, role text kept):
    first "clinician"                 v3-ParticipationType#PPRF primary performer
    later clinicians, "co_clinician"  v3-ParticipationType#SPRF secondary performer
    "interpreter"                     participant-type#translator
    anyone else                       v3-ParticipationType#PART participation
    "patient"                         not a participant: Encounter.subject
A "legal_representative" whose name matches the record's points at the RelatedPerson.

RelatedPerson.relationship (`relationship_codes`), the practice's words kept as text,
authority in parentheses:
    guardian, conservator, custodian          v3-RoleCode#GUARD
    power of attorney / POA ... health, medical, agent, proxy  v3-RoleCode#HPOWATT
    power of attorney / POA otherwise         v3-RoleCode#POWATT
    a parent (mother, father, ...) or "minor" in the authority  v3-RoleCode#GUARD
    anything else                             text only
    plus the family tie when named (MTH, FTH, PRN, GRMTH, GRFTH, GRPRN, SPS)

The R4B models check structure, cardinality and primitive formats but neither code
values nor FHIRPath invariants, so `validate_bundle` adds what this export relies on:
unique fullUrls (urn:uuid ones being UUIDs), resolvable references, contained
resources referenced, Consent ppc-1 (policy or policyRule) and ppc-5 (treatment
needs a patient), and the status codes. Naive datetimes are taken as UTC. Names and
dates of birth never appear in a repr.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from notes import NotesError

CPT_SYSTEM: Final = "http://www.ama-assn.org/go/cpt"
LOINC_SYSTEM: Final = "http://loinc.org"
ACT_CODE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CODE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
PARTICIPATION_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PARTICIPANT_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/participant-type"
CONSENT_SCOPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
DOC_CATEGORY_SYSTEM: Final = (
    "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category")
POS_SYSTEM: Final = (
    "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set")
URI_SYSTEM: Final = "urn:ietf:rfc:3986"
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"

MENTAL_HEALTH_NOTE: Final = "34904-3"
CONSENT_DOCUMENT: Final = "59284-0"
UUID_BASE: Final = "urn:uuid:"

NOTE_DOC_STATUS: Final = {"draft": "preliminary", "signed": "final", "amended": "amended"}
CONSENT_STATUS: Final = {"complete": "active", "revoked": "inactive"}
ENCOUNTER_STATUSES: Final = frozenset({
    "planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
    "entered-in-error", "unknown"})
MODALITIES: Final = {"audio-video": "Synchronous audio-video telehealth",
                     "audio-only": "Audio-only telehealth"}
POS_DISPLAY: Final = {"02": "Telehealth Provided Other than in Patient\u2019s Home",
                      "10": "Telehealth Provided in Patient\u2019s Home"}
SIGNER_ROLES: Final = frozenset({"patient", "legal_representative"})

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_RELATED_PERSON_NS: Final = uuid.UUID("6f1c2f4e-3a55-5d0b-9f3e-6c2b8f0e7a41")
"""Namespace of the RelatedPerson ids (uuid5 of the patient's id): stable across exports."""


class FhirExportError(NotesError):
    """A record that cannot be exported (`fhir_bad_input`) or a bundle that does not
    validate (`fhir_invalid`, with `problems`). Messages never carry names or values."""


# ---- input records ------------------------------------------------------------------


@dataclass(frozen=True)
class RepresentativeInfo:
    """The legal representative on the patient's record."""

    name: str
    relationship: str
    """In the practice's words: "mother", "legal guardian", "health care agent"."""
    authority: str = ""
    """Basis of authority: "parent of a minor", "court order 2024-123", "POA for health care"."""

    def __repr__(self) -> str:  # never put names in logs
        return f"RepresentativeInfo(relationship={self.relationship!r})"


@dataclass(frozen=True)
class PatientInfo:
    id: str
    name: str
    dob: date
    contact: str = ""
    """An email address (has an "@") or a phone number; "" for none."""
    representative: RepresentativeInfo | None = None

    def __repr__(self) -> str:  # never put names or DOBs in logs
        return f"PatientInfo(id={self.id!r})"


@dataclass(frozen=True)
class ParticipantInfo:
    """Someone present in the visit, with their role in the room."""

    role: str
    """"clinician", "co_clinician", "patient", "legal_representative", "interpreter",
    "family_member" (the visit's roles) or any other label."""
    name: str
    clinician_id: str | None = None
    """Set for the care team."""

    def __repr__(self) -> str:
        return f"ParticipantInfo(role={self.role!r})"


@dataclass(frozen=True)
class EncounterInfo:
    id: str
    status: str
    """FHIR Encounter.status: "finished", "in-progress", "cancelled", ..."""
    start: datetime | None
    end: datetime | None
    participants: tuple[ParticipantInfo, ...]
    cpt_code: str | None = None
    """The billed code; None when nothing is billable."""
    cpt_display: str = ""
    modality: str = "audio-video"
    """"audio-video" or "audio-only"."""
    modality_reason: str = ""
    """Why audio-only, when given."""
    place_of_service: str = "10"
    """CMS POS: "10" patient at home, "02" elsewhere."""
    modifier: str = "95"
    """"95", "93", "FQ", "GT"... ("" for none)."""
    contact_minutes: int | None = None
    """Minutes of synchronous contact (Encounter.length)."""
    addon_codes: tuple[tuple[str, str], ...] = ()
    """CPT add-ons billed with the code, as (code, display): (("90785", "..."),)."""


@dataclass(frozen=True)
class NoteInfo:
    """The progress note (never a psychotherapy note: there is no such record here)."""

    id: str
    status: str
    """"draft", "signed" or "amended"."""
    author_name: str
    author_credentials: str
    author_id: str | None
    signed_at: datetime | None
    created_at: datetime
    pdf: bytes | None = None
    """The rendered (signed) PDF; wins over `text_sections`."""
    text_sections: tuple[tuple[str, str], ...] = ()
    """(title, text) of each section, exported only when there is no PDF (a draft)."""

    def __repr__(self) -> str:
        return f"NoteInfo(id={self.id!r}, status={self.status!r})"


@dataclass(frozen=True)
class AddendumInfo:
    id: str
    at: datetime
    author_name: str
    reason: str
    pdf: bytes | None = None
    text: str = ""
    """Exported when there is no PDF."""
    author_credentials: str = ""
    author_id: str | None = None

    def __repr__(self) -> str:
        return f"AddendumInfo(id={self.id!r})"


@dataclass(frozen=True)
class ConsentInfo:
    """A signed consent (complete or since revoked)."""

    id: str
    status: str
    """"complete" or "revoked"."""
    signed_at: datetime
    pdf: bytes
    signer_role: str
    """"patient" or "legal_representative" (`consent.workflow.SignerRole` values)."""
    template_id: str
    template_version: str
    sha256: str
    """SHA-256 of `pdf`, hex, as recorded beside the consent; checked against the PDF."""

    def __repr__(self) -> str:
        return f"ConsentInfo(id={self.id!r}, status={self.status!r})"


# ---- mappings ---------------------------------------------------------------------

Coding = dict[str, str]

_GUARDIAN_WORDS = ("guardian", "conservator", "custodian", "custodial")
_POA_WORDS = ("power of attorney", "poa", "attorney-in-fact", "attorney in fact",
              "health care agent", "healthcare agent", "health care proxy",
              "healthcare proxy")
_HEALTH_WORDS = ("health", "medical", "agent", "proxy")
_FAMILY: Final = {
    "mother": ("MTH", "mother"), "father": ("FTH", "father"), "parent": ("PRN", "parent"),
    "grandmother": ("GRMTH", "grandmother"), "grandfather": ("GRFTH", "grandfather"),
    "grandparent": ("GRPRN", "grandparent"), "spouse": ("SPS", "spouse"),
}
_PARENT_WORDS = ("mother", "father", "parent", "mom", "dad", "stepmother", "stepfather")


def _has(text: str, words: Sequence[str]) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text) for w in words)


def _role_coding(code: str, display: str) -> Coding:
    return {"system": ROLE_CODE_SYSTEM, "code": code, "display": display}


def relationship_codes(relationship: str, authority: str = "") -> list[dict[str, Any]]:
    """RelatedPerson.relationship for a representative: the legal role (GUARD, HPOWATT,
    POWATT or text only) and, when named, the family tie."""
    rel, auth = relationship.lower(), authority.lower()
    both = f"{rel} {auth}"
    legal: Coding | None = None
    if _has(both, _GUARDIAN_WORDS):
        legal = _role_coding("GUARD", "guardian")
    elif _has(both, _POA_WORDS):
        legal = (_role_coding("HPOWATT", "healthcare power of attorney")
                 if _has(both, _HEALTH_WORDS) else _role_coding("POWATT", "power of attorney"))
    elif _has(rel, _PARENT_WORDS) or _has(auth, ("parent", "minor")):
        legal = _role_coding("GUARD", "guardian")
    text = f"{relationship} ({authority})" if authority else relationship
    out: list[dict[str, Any]] = [{"coding": [legal], "text": text} if legal else {"text": text}]
    family = next((v for k, v in _FAMILY.items() if _has(rel, (k,))), None)
    if family is not None:
        out.append({"coding": [_role_coding(*family)], "text": relationship})
    return out


def attachment_hash(data: bytes) -> str:
    """FHIR Attachment.hash: base64 of the SHA-1 of the data."""
    return base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def _attachment(data: bytes, content_type: str, title: str, created: datetime) -> dict[str, Any]:
    return {"contentType": content_type, "data": base64.b64encode(data).decode("ascii"),
            "size": len(data), "hash": attachment_hash(data), "title": title,
            "creation": _instant(created)}


def _instant(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.isoformat(timespec="seconds")


def _concept(system: str, code: str, display: str = "", text: str = "") -> dict[str, Any]:
    coding: Coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def _bad(message: str, **extra: Any) -> FhirExportError:
    return FhirExportError("fhir_bad_input", message, **extra)


# ---- the bundle ---------------------------------------------------------------------


class _Urls:
    def __init__(self, base_url: str) -> None:
        self.uuid = base_url == UUID_BASE
        self.base = base_url.rstrip("/")
        if not self.uuid and not re.fullmatch(r"https?://\S+", self.base):
            raise _bad("base_url must be 'urn:uuid:' or an http(s) FHIR base")

    def check_id(self, what: str, value: str) -> None:
        if self.uuid:
            try:
                ok = str(uuid.UUID(value)) == value
            except ValueError:
                ok = False
            if not ok:
                raise _bad(f"the {what} id must be a lowercase UUID for urn:uuid fullUrls",
                           field=what)
        elif not _ID.fullmatch(value):
            raise _bad(f"the {what} id is not a FHIR id", field=what)

    def full(self, rtype: str, rid: str) -> str:
        return f"{UUID_BASE}{rid}" if self.uuid else f"{self.base}/{rtype}/{rid}"


def _person_ref(name: str, credentials: str = "", person_id: str | None = None,
                system: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"display": f"{name}, {credentials}" if credentials else name}
    if system and person_id:
        ref["identifier"] = {"system": system, "value": person_id}
    return ref


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def related_person_id(patient_id: str) -> str:
    """The representative's RelatedPerson id: a UUID derived from the patient's id."""
    return str(uuid.uuid5(_RELATED_PERSON_NS, patient_id))


def build_bundle(patient: PatientInfo, encounter: EncounterInfo, note: NoteInfo,
                 addenda: Sequence[AddendumInfo], consents: Sequence[ConsentInfo], *,
                 practice_name: str, base_url: str = UUID_BASE,
                 timestamp: datetime | None = None,
                 patient_id_system: str | None = None,
                 clinician_id_system: str | None = None) -> dict[str, Any]:
    """The note's FHIR R4 collection Bundle, as JSON-ready data that validates with the
    R4B models (it is their own JSON output). Raises FhirExportError."""
    urls = _Urls(base_url)
    urls.check_id("patient", patient.id)
    urls.check_id("encounter", encounter.id)
    urls.check_id("note", note.id)
    for addendum in addenda:
        urls.check_id("addendum", addendum.id)
    for consent in consents:
        urls.check_id("consent", consent.id)

    practice = {"display": practice_name}
    patient_url = urls.full("Patient", patient.id)
    patient_ref = {"reference": patient_url}
    entries: list[dict[str, Any]] = [
        {"fullUrl": patient_url, "resource": _patient(patient, patient_id_system)}]

    rep_ref: dict[str, Any] | None = None
    rep = patient.representative
    if rep is not None:
        rp_id = related_person_id(patient.id)
        rp_url = urls.full("RelatedPerson", rp_id)
        rep_ref = {"reference": rp_url}
        entries.append({"fullUrl": rp_url, "resource": {
            "resourceType": "RelatedPerson", "id": rp_id, "active": True,
            "patient": patient_ref, "relationship": relationship_codes(rep.relationship,
                                                                        rep.authority),
            "name": [{"text": rep.name}]}})

    enc_url = urls.full("Encounter", encounter.id)
    entries.append({"fullUrl": enc_url, "resource": _encounter(
        encounter, patient_ref, rep, rep_ref, practice, clinician_id_system)})

    note_url = urls.full("DocumentReference", note.id)
    context: dict[str, Any] = {"encounter": [{"reference": enc_url}]}
    period = _period(encounter)
    if period:
        context["period"] = period
    entries.append({"fullUrl": note_url, "resource": _note(
        note, bool(addenda), patient_ref, practice, context, clinician_id_system)})
    for addendum in addenda:
        entries.append({"fullUrl": urls.full("DocumentReference", addendum.id),
                        "resource": _addendum(addendum, note_url, patient_ref, practice,
                                              context, clinician_id_system)})

    for consent in consents:
        entries.append({"fullUrl": urls.full("Consent", consent.id),
                        "resource": _consent(consent, patient_ref, rep_ref, practice)})

    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection"}
    if timestamp is not None:
        bundle["timestamp"] = _instant(timestamp)
    bundle["entry"] = entries
    return validate_bundle(bundle)


def _patient(patient: PatientInfo, id_system: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": patient.id}
    if id_system:
        resource["identifier"] = [{"system": id_system, "value": patient.id}]
    resource["name"] = [{"text": patient.name}]
    if patient.contact:
        system = "email" if "@" in patient.contact else "phone"
        resource["telecom"] = [{"system": system, "value": patient.contact}]
    resource["birthDate"] = patient.dob.isoformat()
    return resource


def _period(encounter: EncounterInfo) -> dict[str, str]:
    period = {}
    if encounter.start is not None:
        period["start"] = _instant(encounter.start)
    if encounter.end is not None:
        period["end"] = _instant(encounter.end)
    return period


def _encounter(encounter: EncounterInfo, patient_ref: dict[str, Any],
               rep: RepresentativeInfo | None, rep_ref: dict[str, Any] | None,
               practice: dict[str, Any], id_system: str | None) -> dict[str, Any]:
    if encounter.status not in ENCOUNTER_STATUSES:
        raise _bad("unknown encounter status", status=encounter.status)
    if encounter.modality not in MODALITIES:
        raise _bad("unknown modality", modality=encounter.modality)
    types: list[dict[str, Any]] = []
    if encounter.cpt_code:
        billed = encounter.cpt_code + (f"-{encounter.modifier}" if encounter.modifier else "")
        text = f"{billed} {encounter.cpt_display}".strip()
        types.append(_concept(CPT_SYSTEM, encounter.cpt_code, encounter.cpt_display, text))
        for code, display in encounter.addon_codes:
            types.append(_concept(CPT_SYSTEM, code, display, f"{code} {display}".strip()))
    modality = MODALITIES[encounter.modality]
    if encounter.modality == "audio-only" and encounter.modality_reason:
        modality += f" ({encounter.modality_reason})"
    types.append({"text": modality})

    participants = []
    primary_taken = False
    for p in encounter.participants:
        if p.role == "patient":
            continue
        if p.role == "clinician" and not primary_taken:
            primary_taken = True
            kind = _concept(PARTICIPATION_SYSTEM, "PPRF", "primary performer", "clinician")
        elif p.role in ("clinician", "co_clinician"):
            kind = _concept(PARTICIPATION_SYSTEM, "SPRF", "secondary performer",
                            p.role.replace("_", " "))
        elif p.role == "interpreter":
            kind = _concept(PARTICIPANT_TYPE_SYSTEM, "translator", "Translator", "interpreter")
        else:
            kind = _concept(PARTICIPATION_SYSTEM, "PART", "Participation",
                            p.role.replace("_", " "))
        if (p.role == "legal_representative" and rep is not None and rep_ref is not None
                and _same_name(p.name, rep.name)):
            individual = {**rep_ref, "display": p.name}
        else:
            individual = _person_ref(p.name, "", p.clinician_id, id_system)
        participants.append({"type": [kind], "individual": individual})

    resource: dict[str, Any] = {
        "resourceType": "Encounter", "id": encounter.id,
        "contained": [{"resourceType": "Location", "id": "pos", "mode": "kind",
                       "type": [_concept(POS_SYSTEM, encounter.place_of_service,
                                         POS_DISPLAY.get(encounter.place_of_service, ""))]}],
        "status": encounter.status,
        "class": {"system": ACT_CODE_SYSTEM, "code": "VR", "display": "virtual"},
        "type": types, "subject": patient_ref,
    }
    if participants:
        resource["participant"] = participants
    period = _period(encounter)
    if period:
        resource["period"] = period
    if encounter.contact_minutes is not None:
        resource["length"] = {"value": encounter.contact_minutes, "unit": "min",
                              "system": UCUM_SYSTEM, "code": "min"}
    resource["location"] = [{"location": {
        "reference": "#pos",
        "display": POS_DISPLAY.get(encounter.place_of_service,
                                   f"Place of service {encounter.place_of_service}")}}]
    resource["serviceProvider"] = practice
    return resource


def _doc_type() -> dict[str, Any]:
    return _concept(LOINC_SYSTEM, MENTAL_HEALTH_NOTE, "Mental health Note")


def _doc_category() -> list[dict[str, Any]]:
    return [_concept(DOC_CATEGORY_SYSTEM, "clinical-note", "Clinical Note")]


def _sections_text(sections: Sequence[tuple[str, str]]) -> bytes:
    return "\n\n".join(f"{title}\n{text}" for title, text in sections).encode("utf-8")


def _note(note: NoteInfo, has_addenda: bool, patient_ref: dict[str, Any],
          practice: dict[str, Any], context: dict[str, Any],
          id_system: str | None) -> dict[str, Any]:
    if note.status not in NOTE_DOC_STATUS:
        raise _bad("unknown note status", status=note.status)
    draft = note.status == "draft"
    if draft and has_addenda:
        raise _bad("a draft note has no addenda: addenda follow the signature")
    if not draft and note.signed_at is None:
        raise _bad("a signed note needs its signing time")
    doc_status = "amended" if has_addenda else NOTE_DOC_STATUS[note.status]
    when = note.created_at if draft or note.signed_at is None else note.signed_at
    if note.pdf is not None:
        attachment = _attachment(note.pdf, "application/pdf", "Progress note", when)
    elif note.text_sections:
        attachment = _attachment(_sections_text(note.text_sections),
                                 "text/plain; charset=utf-8", "Progress note (draft)"
                                 if draft else "Progress note", when)
    else:
        raise _bad("the note has neither a PDF nor text to export")
    author = _person_ref(note.author_name, note.author_credentials, note.author_id, id_system)
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference", "id": note.id, "status": "current",
        "docStatus": doc_status, "type": _doc_type(), "category": _doc_category(),
        "subject": patient_ref, "date": _instant(when), "author": [author],
    }
    if not draft:
        resource["authenticator"] = author
    resource["custodian"] = practice
    resource["description"] = "Telehealth progress note"
    resource["content"] = [{"attachment": attachment}]
    resource["context"] = context
    return resource


def _addendum(addendum: AddendumInfo, note_url: str, patient_ref: dict[str, Any],
              practice: dict[str, Any], context: dict[str, Any],
              id_system: str | None) -> dict[str, Any]:
    if addendum.pdf is not None:
        attachment = _attachment(addendum.pdf, "application/pdf", "Addendum", addendum.at)
    elif addendum.text:
        attachment = _attachment(addendum.text.encode("utf-8"), "text/plain; charset=utf-8",
                                 "Addendum", addendum.at)
    else:
        raise _bad("an addendum has neither a PDF nor text to export")
    author = _person_ref(addendum.author_name, addendum.author_credentials,
                         addendum.author_id, id_system)
    return {
        "resourceType": "DocumentReference", "id": addendum.id, "status": "current",
        "docStatus": "final", "type": _doc_type(), "category": _doc_category(),
        "subject": patient_ref, "date": _instant(addendum.at), "author": [author],
        "authenticator": author, "custodian": practice,
        "relatesTo": [{"code": "appends", "target": {"reference": note_url}}],
        "description": f"Addendum: {addendum.reason}" if addendum.reason else "Addendum",
        "content": [{"attachment": attachment}], "context": context,
    }


def _ni_sha256(hex_digest: str) -> str:
    """RFC 6920 named-information URI of a SHA-256."""
    raw = bytes.fromhex(hex_digest)
    return "ni:///sha-256;" + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _consent(consent: ConsentInfo, patient_ref: dict[str, Any],
             rep_ref: dict[str, Any] | None, practice: dict[str, Any]) -> dict[str, Any]:
    if consent.status not in CONSENT_STATUS:
        raise _bad("only a complete or revoked consent is exported", status=consent.status)
    if consent.signer_role not in SIGNER_ROLES:
        raise _bad("unknown consent signer role", signer_role=consent.signer_role)
    if hashlib.sha256(consent.pdf).hexdigest() != consent.sha256.lower():
        raise _bad("the consent PDF does not match its recorded SHA-256",
                   consent_id=consent.id)
    resource: dict[str, Any] = {
        "resourceType": "Consent", "id": consent.id,
        "identifier": [{"system": URI_SYSTEM, "value": _ni_sha256(consent.sha256.lower())}],
        "status": CONSENT_STATUS[consent.status],
        "scope": _concept(CONSENT_SCOPE_SYSTEM, "treatment", "Treatment"),
        "category": [_concept(LOINC_SYSTEM, CONSENT_DOCUMENT, "Consent Document")],
        "patient": patient_ref, "dateTime": _instant(consent.signed_at),
    }
    if consent.signer_role == "legal_representative":
        if rep_ref is None:
            raise _bad("a consent signed by a representative needs the representative "
                       "on the patient's record", consent_id=consent.id)
        resource["performer"] = [rep_ref]
    else:
        resource["performer"] = [patient_ref]
    resource["organization"] = [practice]
    resource["sourceAttachment"] = _attachment(
        consent.pdf, "application/pdf",
        f"Consent {consent.template_id} version {consent.template_version}", consent.signed_at)
    resource["policyRule"] = _concept(ACT_CODE_SYSTEM, "OPTIN", "opt-in")
    if consent.signer_role == "legal_representative":
        resource["verification"] = [{"verified": True, "verifiedWith": rep_ref,
                                     "verificationDate": _instant(consent.signed_at)}]
    return resource


# ---- validation ---------------------------------------------------------------------


def validate_bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` through the R4B Bundle model and this export's invariants: the model's own
    JSON, or FhirExportError("fhir_invalid", problems=[...]) (paths and messages only)."""
    try:
        model = Bundle.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                    for err in exc.errors(include_input=False, include_url=False)]
        raise FhirExportError("fhir_invalid", "the bundle is not valid FHIR R4B",
                              problems=problems) from None
    out: dict[str, Any] = json.loads(model.model_dump_json())
    problems = bundle_problems(out)
    if problems:
        raise FhirExportError("fhir_invalid", "the bundle breaks a FHIR invariant",
                              problems=problems)
    return out


def _references(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield path, value
            elif key != "contained":
                yield from _references(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _references(value, f"{path}[{i}]")


_STATUS_CODES: Final = {
    "Encounter": ENCOUNTER_STATUSES,
    "DocumentReference": frozenset({"current", "superseded", "entered-in-error"}),
    "Consent": frozenset({"draft", "proposed", "active", "rejected", "inactive",
                          "entered-in-error"}),
}
_DOC_STATUSES: Final = frozenset({"preliminary", "final", "amended", "entered-in-error"})


def bundle_problems(bundle: Mapping[str, Any]) -> list[str]:
    """What the R4B models do not check and this export relies on, as messages."""
    problems: list[str] = []
    entries = bundle.get("entry") or []
    urls = [e.get("fullUrl") for e in entries]
    if len(set(urls)) != len(urls):
        problems.append("bdl-7: fullUrl must be unique")
    known = {u for u in urls if isinstance(u, str)}
    for i, entry in enumerate(entries):
        url = entry.get("fullUrl")
        res = entry.get("resource") or {}
        rtype = res.get("resourceType", "")
        where = f"entry[{i}] {rtype}"
        if not isinstance(url, str):
            problems.append(f"{where}: no fullUrl")
        elif url.startswith(UUID_BASE):
            try:
                uuid.UUID(url.removeprefix(UUID_BASE))
            except ValueError:
                problems.append(f"{where}: urn:uuid fullUrl is not a UUID")
        contained = {c.get("id") for c in res.get("contained") or []}
        used_local = set()
        for path, ref in _references(res):
            if ref.startswith("#"):
                used_local.add(ref[1:])
                if ref[1:] not in contained:
                    problems.append(f"{where}.{path}: no contained resource {ref}")
            elif ref not in known:
                problems.append(f"{where}.{path}: reference not in the bundle")
        if contained - used_local:
            problems.append(f"{where}: dom-3: a contained resource is not referenced")
        allowed = _STATUS_CODES.get(rtype)
        if allowed is not None and res.get("status") not in allowed:
            problems.append(f"{where}.status: not a {rtype} status")
        if rtype == "DocumentReference" and res.get("docStatus", "final") not in _DOC_STATUSES:
            problems.append(f"{where}.docStatus: not a composition status")
        if rtype == "Consent":
            if not res.get("policy") and not res.get("policyRule"):
                problems.append(f"{where}: ppc-1: policy or policyRule is required")
            codes = {(c.get("system"), c.get("code"))
                     for c in (res.get("scope") or {}).get("coding") or []}
            if (CONSENT_SCOPE_SYSTEM, "treatment") in codes and not res.get("patient"):
                problems.append(f"{where}: ppc-5: a treatment consent needs a patient")
    return problems
