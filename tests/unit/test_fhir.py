"""The FHIR export: every bundle re-read by the R4B models, references resolved, codes checked."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import inspect
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from notes import fhir
from notes.fhir import (
    AddendumInfo,
    ConsentInfo,
    EncounterInfo,
    FhirExportError,
    NoteInfo,
    ParticipantInfo,
    PatientInfo,
    RepresentativeInfo,
    attachment_hash,
    build_bundle,
    bundle_problems,
    relationship_codes,
    validate_bundle,
)

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
NS = uuid.UUID("0f4e2a1c-7b7d-4c61-9d43-4ab0f7d1c001")
LOINC = "http://loinc.org"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
NOTE_PDF = b"%PDF-1.7\n% signed progress note\n%%EOF\n"
ADDENDUM_PDFS = (b"%PDF-1.7\n% addendum one\n%%EOF\n", b"%PDF-1.7\n% addendum two\n%%EOF\n")
CONSENT_PDF = b"%PDF-1.7\n% signed telehealth consent\n%%EOF\n"
SECTIONS = (("Subjective", "Reports better sleep this week."),
            ("Objective", "Alert, engaged, euthymic."),
            ("Assessment", "Progressing toward goal 1."),
            ("Plan", "Continue weekly CBT."))


def uid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


GUARDIAN = RepresentativeInfo("Jane Rivera", "mother", "parent of a minor")
MINOR = PatientInfo(uid("patient-minor"), "Sam Rivera", date(2012, 5, 1), "jane@example.org",
                    GUARDIAN)
ADULT = PatientInfo(uid("patient-adult"), "Robin Lee", date(1980, 2, 29), "+1 555 0100")
CARE_TEAM = (ParticipantInfo("clinician", "Dana Kim", uid("clinician-1")),
             ParticipantInfo("patient", "Sam Rivera"),
             ParticipantInfo("legal_representative", "Jane Rivera"),
             ParticipantInfo("co_clinician", "Lee Park", uid("clinician-2")),
             ParticipantInfo("interpreter", "Ana Soto"))


def encounter(**changes: Any) -> EncounterInfo:
    base = EncounterInfo(uid("encounter"), "finished", T0, T0 + timedelta(minutes=50),
                         CARE_TEAM, "90834", "Psychotherapy, 45 minutes with patient",
                         contact_minutes=47,
                         addon_codes=(("90785", "Interactive complexity"),))
    return dataclasses.replace(base, **changes)


def signed_note(**changes: Any) -> NoteInfo:
    base = NoteInfo(uid("note"), "signed", "Dana Kim", "PhD, LP", uid("clinician-1"),
                    signed_at=T0 + timedelta(minutes=70), created_at=T0 + timedelta(minutes=50),
                    pdf=NOTE_PDF, text_sections=SECTIONS)
    return dataclasses.replace(base, **changes)


def addenda() -> tuple[AddendumInfo, ...]:
    return tuple(AddendumInfo(uid(f"addendum-{i}"), T0 + timedelta(days=i + 1), "Dana Kim",
                              f"correction {i}", pdf, author_credentials="PhD, LP")
                 for i, pdf in enumerate(ADDENDUM_PDFS))


def consent(status: str = "complete", signer: str = "legal_representative",
            pdf: bytes = CONSENT_PDF, name: str = "consent") -> ConsentInfo:
    return ConsentInfo(uid(name), status, T0 - timedelta(days=30), pdf, signer,
                       "telehealth-consent", "3", hashlib.sha256(pdf).hexdigest())


def export(patient: PatientInfo = MINOR, enc: EncounterInfo | None = None,
           note: NoteInfo | None = None, adds: tuple[AddendumInfo, ...] = (),
           consents: tuple[ConsentInfo, ...] = (), **kw: Any) -> dict[str, Any]:
    bundle = build_bundle(patient, enc or encounter(), note or signed_note(), adds, consents,
                          practice_name="Harbor Counseling", **kw)
    check_valid(bundle)
    return bundle


# ---- independent checks --------------------------------------------------------------


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def check_valid(bundle: dict[str, Any]) -> None:
    """Re-read the JSON with the R4B models (the bundle and each resource on its own) and
    resolve every reference inside the bundle."""
    text = json.dumps(bundle)
    Bundle.model_validate_json(text)
    assert bundle["type"] == "collection"
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    for entry in bundle["entry"]:
        res = entry["resource"]
        get_fhir_model_class(res["resourceType"]).model_validate(res)
        contained = {c["id"] for c in res.get("contained", [])}
        for ref in references(res):
            assert ref in urls or (ref.startswith("#") and ref[1:] in contained), ref
    assert bundle_problems(bundle) == []


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def url_of(bundle: dict[str, Any], rtype: str, rid: str) -> str:
    for e in bundle["entry"]:
        if e["resource"]["resourceType"] == rtype and e["resource"]["id"] == rid:
            return str(e["fullUrl"])
    raise AssertionError(f"no {rtype}/{rid}")


def codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept.get("coding", [])}


def sha1_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def check_attachment(att: dict[str, Any], data: bytes, content_type: str) -> None:
    assert att["contentType"] == content_type
    assert base64.b64decode(att["data"]) == data
    assert att["hash"] == sha1_b64(data) == attachment_hash(data)
    assert att["size"] == len(data)
    assert att["title"]


def decoded_strings(node: Any) -> Iterator[str]:
    """Every key and string value, with attachment data decoded."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            if key == "data" and isinstance(value, str):
                yield base64.b64decode(value).decode("utf-8", "replace")
            else:
                yield from decoded_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from decoded_strings(value)
    elif isinstance(node, str):
        yield node


# ---- the scenarios --------------------------------------------------------------------


def test_signed_note_with_two_addenda_and_a_guardian_consent() -> None:
    adds = addenda()
    bundle = export(adds=adds, consents=(consent(),), timestamp=T0 + timedelta(days=5))
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "Patient", "RelatedPerson", "Encounter", "DocumentReference", "DocumentReference",
        "DocumentReference", "Consent"]
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])
    assert bundle["timestamp"] == "2026-12-06T15:00:00Z"
    patient_url = url_of(bundle, "Patient", MINOR.id)
    (patient,) = resources(bundle, "Patient")
    assert patient["birthDate"] == "2012-05-01"
    assert patient["telecom"] == [{"system": "email", "value": "jane@example.org"}]

    (person,) = resources(bundle, "RelatedPerson")
    person_url = url_of(bundle, "RelatedPerson", person["id"])
    assert person["patient"] == {"reference": patient_url}
    assert (ROLE_CODE, "GUARD") in codes(person["relationship"][0])
    assert person["relationship"][0]["text"] == "mother (parent of a minor)"
    assert (ROLE_CODE, "MTH") in codes(person["relationship"][1])

    (enc,) = resources(bundle, "Encounter")
    enc_url = url_of(bundle, "Encounter", enc["id"])
    assert enc["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    assert enc["class"]["code"] == "VR"
    assert enc["subject"] == {"reference": patient_url}
    assert enc["period"] == {"start": "2026-12-01T15:00:00Z", "end": "2026-12-01T15:50:00Z"}
    assert enc["length"]["value"] == 47 and enc["length"]["code"] == "min"
    assert ("http://www.ama-assn.org/go/cpt", "90834") in codes(enc["type"][0])
    assert enc["type"][0]["text"].startswith("90834-95")
    assert ("http://www.ama-assn.org/go/cpt", "90785") in codes(enc["type"][1])
    roles = [(p["type"][0]["coding"][0]["code"], p["individual"]) for p in enc["participant"]]
    assert [code for code, _ in roles] == ["PPRF", "PART", "SPRF", "translator"]
    assert roles[1][1]["reference"] == person_url  # the representative on record
    assert roles[0][1] == {"display": "Dana Kim"}
    assert not any(p["individual"].get("display") == "Sam Rivera" for p in enc["participant"])
    (pos,) = enc["contained"]
    assert pos["resourceType"] == "Location" and codes(pos["type"][0]) == {(fhir.POS_SYSTEM, "10")}

    original, *adds_out = resources(bundle, "DocumentReference")
    note_url = url_of(bundle, "DocumentReference", original["id"])
    for doc in (original, *adds_out):
        assert codes(doc["type"]) == {(LOINC, "34904-3")}
        assert codes(doc["category"][0]) == {(fhir.DOC_CATEGORY_SYSTEM, "clinical-note")}
        assert doc["subject"] == {"reference": patient_url}
        assert doc["context"]["encounter"] == [{"reference": enc_url}]
        assert doc["status"] == "current"
    assert original["docStatus"] == "amended"
    assert "relatesTo" not in original
    assert original["authenticator"] == {"display": "Dana Kim, PhD, LP"}
    assert original["date"] == "2026-12-01T16:10:00Z"
    check_attachment(original["content"][0]["attachment"], NOTE_PDF, "application/pdf")
    assert len(original["content"]) == 1  # the signed PDF only, not the editor's sections
    for doc, addendum, pdf in zip(adds_out, adds, ADDENDUM_PDFS, strict=True):
        assert doc["id"] == addendum.id
        assert doc["docStatus"] == "final"
        assert doc["relatesTo"] == [{"code": "appends", "target": {"reference": note_url}}]
        assert doc["description"] == f"Addendum: {addendum.reason}"
        check_attachment(doc["content"][0]["attachment"], pdf, "application/pdf")

    (cons,) = resources(bundle, "Consent")
    assert cons["status"] == "active"
    assert codes(cons["scope"]) == {(fhir.CONSENT_SCOPE_SYSTEM, "treatment")}
    assert codes(cons["category"][0]) == {(LOINC, "59284-0")}
    assert cons["patient"] == {"reference": patient_url}
    assert cons["performer"] == [{"reference": person_url}]
    assert cons["policyRule"]["coding"][0]["code"] == "OPTIN"
    assert cons["verification"] == [{"verified": True, "verifiedWith": {"reference": person_url},
                                     "verificationDate": "2026-11-01T15:00:00Z"}]
    check_attachment(cons["sourceAttachment"], CONSENT_PDF, "application/pdf")
    digest = base64.urlsafe_b64encode(hashlib.sha256(CONSENT_PDF).digest()).decode().rstrip("=")
    assert cons["identifier"][0]["value"] == f"ni:///sha-256;{digest}"


def test_draft_note_without_a_pdf_exports_its_sections() -> None:
    note = NoteInfo(uid("draft"), "draft", "Dana Kim", "PhD", None, None, T0, None, SECTIONS)
    bundle = export(note=note)
    (doc,) = resources(bundle, "DocumentReference")
    assert doc["docStatus"] == "preliminary"
    assert "authenticator" not in doc
    assert doc["date"] == "2026-12-01T15:00:00Z"
    text = "\n\n".join(f"{title}\n{body}" for title, body in SECTIONS).encode()
    check_attachment(doc["content"][0]["attachment"], text, "text/plain; charset=utf-8")
    assert resources(bundle, "Consent") == []

    with pytest.raises(FhirExportError) as err:
        build_bundle(MINOR, encounter(), note, addenda(), (), practice_name="P")
    assert err.value.code == "fhir_bad_input"
    with pytest.raises(FhirExportError):
        build_bundle(MINOR, encounter(), dataclasses.replace(note, text_sections=()), (), (),
                     practice_name="P")


def test_revoked_consent_signed_by_an_adult_patient() -> None:
    bundle = export(patient=ADULT, enc=encounter(participants=CARE_TEAM[:2]),
                    consents=(consent("revoked", "patient"),))
    assert resources(bundle, "RelatedPerson") == []
    (cons,) = resources(bundle, "Consent")
    assert cons["status"] == "inactive"
    assert cons["performer"] == [{"reference": url_of(bundle, "Patient", ADULT.id)}]
    assert "verification" not in cons
    assert "policyRule" in cons
    (patient,) = resources(bundle, "Patient")
    assert patient["telecom"] == [{"system": "phone", "value": "+1 555 0100"}]
    (doc,) = resources(bundle, "DocumentReference")
    assert doc["docStatus"] == "final"


def test_audio_only_encounter_outside_the_home() -> None:
    enc = encounter(modality="audio-only", modality_reason="patient's camera failed",
                    modifier="93", place_of_service="02", addon_codes=())
    bundle = export(enc=enc)
    (out,) = resources(bundle, "Encounter")
    assert out["class"]["code"] == "VR"
    assert out["type"][0]["text"].startswith("90834-93")
    assert out["type"][1] == {"text": "Audio-only telehealth (patient's camera failed)"}
    assert codes(out["contained"][0]["type"][0]) == {(fhir.POS_SYSTEM, "02")}
    assert out["location"][0]["location"]["reference"] == "#pos"


def test_unbilled_unfinished_encounter() -> None:
    enc = encounter(status="in-progress", end=None, cpt_code=None, contact_minutes=None)
    (out,) = resources(export(enc=enc), "Encounter")
    assert out["status"] == "in-progress"
    assert out["period"] == {"start": "2026-12-01T15:00:00Z"}
    assert "length" not in out
    assert out["type"] == [{"text": "Synchronous audio-video telehealth"}]


def test_restful_base_url_and_identifiers() -> None:
    patient = dataclasses.replace(MINOR, id="pt-42")
    bundle = export(patient=patient, base_url="https://ehr.example.org/fhir/",
                    consents=(consent(),), patient_id_system="https://harbor.example/patients",
                    clinician_id_system="https://harbor.example/clinicians")
    assert url_of(bundle, "Patient", "pt-42") == "https://ehr.example.org/fhir/Patient/pt-42"
    (pt,) = resources(bundle, "Patient")
    assert pt["identifier"] == [{"system": "https://harbor.example/patients", "value": "pt-42"}]
    (enc,) = resources(bundle, "Encounter")
    assert enc["participant"][0]["individual"]["identifier"]["value"] == uid("clinician-1")


def test_no_psychotherapy_note_can_be_exported() -> None:
    params = inspect.signature(build_bundle).parameters
    assert not any("psycho" in name.lower() for name in params)
    for record in (PatientInfo, RepresentativeInfo, ParticipantInfo, EncounterInfo, NoteInfo,
                   AddendumInfo, ConsentInfo):
        assert not any("psycho" in f.name.lower() for f in dataclasses.fields(record))
    assert "never exported" in (fhir.__doc__ or "")

    draft = NoteInfo(uid("draft"), "draft", "Dana Kim", "PhD", None, None, T0, None, SECTIONS)
    for bundle in (export(note=draft),
                   export(adds=addenda(), consents=(consent(),))):
        strings = list(decoded_strings(bundle))
        assert not any("psychotherapy note" in s.lower() for s in strings)
        contents = [base64.b64decode(e["resource"]["content"][0]["attachment"]["data"])
                    for e in bundle["entry"] if "content" in e["resource"]]
        provided = {NOTE_PDF, *ADDENDUM_PDFS,
                    "\n\n".join(f"{t}\n{b}" for t, b in SECTIONS).encode()}
        assert set(contents) <= provided


@pytest.mark.parametrize(("relationship", "authority", "legal", "family"), [
    ("mother", "parent of a minor", "GUARD", "MTH"),
    ("father", "", "GUARD", "FTH"),
    ("legal guardian", "court order 2024-123", "GUARD", None),
    ("grandmother", "custodial guardian", "GUARD", "GRMTH"),
    ("health care agent", "POA for health care", "HPOWATT", None),
    ("daughter", "durable power of attorney", "POWATT", None),
    ("mother", "POA for health care", "HPOWATT", "MTH"),
    ("aunt", "kinship caregiver affidavit", None, None),
])
def test_relationship_codes(relationship: str, authority: str, legal: str | None,
                            family: str | None) -> None:
    out = relationship_codes(relationship, authority)
    assert out[0]["text"] == (f"{relationship} ({authority})" if authority else relationship)
    assert [c["code"] for c in out[0].get("coding", [])] == ([legal] if legal else [])
    if family is None:
        assert len(out) == 1
    else:
        assert [c["code"] for c in out[1]["coding"]] == [family]


def test_bad_input_is_refused() -> None:
    with pytest.raises(FhirExportError, match="SHA-256"):
        build_bundle(MINOR, encounter(), signed_note(), (),
                     (dataclasses.replace(consent(), sha256="00" * 32),), practice_name="P")
    with pytest.raises(FhirExportError, match="representative"):
        build_bundle(ADULT, encounter(), signed_note(), (), (consent(),), practice_name="P")
    with pytest.raises(FhirExportError, match="UUID"):
        build_bundle(dataclasses.replace(ADULT, id="pt-42"), encounter(), signed_note(), (), (),
                     practice_name="P")
    with pytest.raises(FhirExportError, match="encounter status"):
        build_bundle(ADULT, encounter(status="done"), signed_note(), (), (), practice_name="P")
    with pytest.raises(FhirExportError, match="signing time"):
        build_bundle(ADULT, encounter(), signed_note(signed_at=None), (), (), practice_name="P")
    with pytest.raises(FhirExportError, match="only a complete or revoked"):
        build_bundle(ADULT, encounter(), signed_note(), (), (consent("pending", "patient"),),
                     practice_name="P")


def test_validate_bundle_catches_what_the_models_do_not() -> None:
    good = export(consents=(consent(),))
    assert validate_bundle(good) == good

    dangling = json.loads(json.dumps(good))
    dangling["entry"][3]["resource"]["subject"]["reference"] = f"urn:uuid:{uid('nobody')}"
    no_policy = json.loads(json.dumps(good))
    del no_policy["entry"][-1]["resource"]["policyRule"]
    Bundle.model_validate(no_policy)  # the R4B model alone accepts it
    bad_status = json.loads(json.dumps(good))
    bad_status["entry"][-1]["resource"]["status"] = "complete"
    for broken, rule in ((dangling, "reference not in the bundle"), (no_policy, "ppc-1"),
                         (bad_status, "not a Consent status")):
        with pytest.raises(FhirExportError) as err:
            validate_bundle(broken)
        assert err.value.code == "fhir_invalid"
        assert any(rule in p for p in err.value.extra["problems"])

    malformed = json.loads(json.dumps(good))
    malformed["entry"][0]["resource"]["birthDate"] = "01/05/2012"
    with pytest.raises(FhirExportError) as err:
        validate_bundle(malformed)
    problems = err.value.extra["problems"]
    assert any("birthDate" in p for p in problems)
    assert not any("01/05/2012" in p for p in problems)  # no values in the error


def test_reprs_hide_names_and_dates_of_birth() -> None:
    for record in (MINOR, GUARDIAN, CARE_TEAM[0], signed_note(), addenda()[0], consent()):
        text = repr(record)
        assert "Rivera" not in text and "Dana" not in text and "2012" not in text
