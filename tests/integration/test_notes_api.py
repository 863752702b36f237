"""Progress notes through the running service: the draft from the timeline, autosave,
signing with the clinician's own key (PAdES), co-signature, addenda, the private
psychotherapy note, PDF and FHIR exports, the audit trail."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import aiohttp
from fhir.resources.R4B.bundle import Bundle

from consent.verify import verify
from telehealth.auth import hash_password, new_opaque_token
from telehealth.sign_cli import DeviceKey

from conftest import Running

SECTIONS = {"subjective": "Reports better sleep.", "objective": "Calm, engaged.",
            "assessment": "Improving.", "plan": "Continue CBT weekly."}


async def call(server: Running, method: str, path: str, token: str,
               body: Any = None) -> tuple[int, Any]:
    async with server.http.request(method, server.url + path, json=body,
                                   headers={"Authorization": f"Bearer {token}"}) as resp:
        if resp.content_type == "application/pdf":
            return resp.status, await resp.read()
        return resp.status, await resp.json(content_type=None)


async def sign(server: Running, visit_id: str, token: str, name: str) -> tuple[int, Any]:
    key = DeviceKey.generate()
    status, prepared = await call(server, "POST", f"/api/v1/visits/{visit_id}/note/prepare",
                                  token, {"public_key": key.spki_b64, "typed_name": name})
    if status != 200:
        return status, prepared
    return await call(server, "POST", f"/api/v1/visits/{visit_id}/note/finish", token,
                      {"signing_id": prepared["signing_id"],
                       "signature": key.sign_b64(prepared["to_sign"])})


async def test_draft_edit_sign_addendum_and_exports(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.held_visit(clinician, minutes=40)
    base = f"/api/v1/visits/{created.visit.id}/note"

    status, note = await call(server, "GET", base, token)
    assert status == 200, note
    header = note["header"]
    assert header["minutes"] == 40 and header["code"] == "90834"
    assert header["modality"] == "audio-video" and header["modifier"] == "95"
    assert header["place_of_service"] == "10"
    assert header["optional_add_ons"] == ["90785"]
    assert {p["role"] for p in header["present"]} == {"clinician", "patient"}
    assert header["consent"] is None and note["status"] == "draft"

    # Signing an empty draft is refused; autosave with a stale version too.
    status, body = await sign(server, created.visit.id, token, "Dana Rivera")
    assert status == 409 and body["error"]["code"] == "sections_empty"
    status, saved = await call(server, "PUT", base, token, {
        "version": note["version"], "sections": SECTIONS, "add_ons": ["90785"],
        "clinician_location": "Minneapolis, MN (office)"})
    assert status == 200, saved
    status, body = await call(server, "PUT", base, token, {
        "version": note["version"], "sections": {"plan": "overwritten"}})
    assert status == 409 and body["error"]["code"] == "note_changed"
    # The location is remembered for the author's next draft.
    author = await server.services.store.clinician(clinician.id)
    assert author is not None and author.location == "Minneapolis, MN (office)"

    status, body = await sign(server, created.visit.id, token, "Someone Else")
    assert status == 400 and body["error"]["code"] == "name_mismatch"
    status, signed = await sign(server, created.visit.id, token, "Dana Rivera")
    assert status == 200, signed
    assert signed["status"] == "signed" and signed["signed_at"]

    # A signed note is locked: edits refused, addenda kept beside it.
    status, body = await call(server, "PUT", base, token, {
        "version": signed["version"], "sections": {"plan": "changed after signing"}})
    assert status == 409 and body["error"]["code"] == "note_signed"
    status, pdf = await call(server, "GET", base + "/pdf", token)
    assert status == 200 and isinstance(pdf, bytes)
    status, amended = await call(server, "POST", base + "/addenda", token, {
        "reason": "Late entry", "text": "Patient called after the visit."})
    assert status == 201 and amended["addenda"][0]["reason"] == "Late entry"
    status, pdf_after = await call(server, "GET", base + "/pdf", token)
    assert pdf_after == pdf  # the original stays exactly as signed
    assert amended["sections"]["plan"] == SECTIONS["plan"]

    consents = server.services.consents
    report = await verify(pdf, [consents.ca.root_asn1])
    assert report.bottom_line == "good", report.to_dict()
    assert report.pades_level == "B-LTA"
    assert [s.signer_name for s in report.signatures if s.kind == "signature"] == [
        "Dana Rivera"]

    status, bundle = await call(server, "GET", base + "/fhir", token)
    assert status == 200
    parsed = Bundle.model_validate(bundle)
    kinds = [e.resource.get_resource_type() for e in parsed.entry or []]
    assert kinds.count("DocumentReference") == 2 and "Encounter" in kinds
    encounter = next(e["resource"] for e in bundle["entry"]
                     if e["resource"]["resourceType"] == "Encounter")
    assert encounter["class"]["code"] == "VR"
    assert any(c.get("code") == "90834" for t in encounter["type"] for c in t.get("coding", []))

    entries = await server.services.store.audit_for(f"note:{note['id']}")
    actions = [e.action for e in entries]
    for expected in ("note.drafted", "note.viewed", "note.edited", "note.signed",
                     "note.addendum", "note.exported"):
        assert expected in actions, actions
    assert not any("Reports better sleep" in json.dumps(e.detail) for e in entries)


async def test_psychotherapy_note_is_its_authors_alone(server: Running) -> None:
    clinician, token = await server.clinician()
    colleague, colleague_token = await server.clinician(email="co@example.org",
                                                        name="Co Clinician")
    created = await server.held_visit(clinician, minutes=20)
    await server.services.add_participant(created.visit, role="co_clinician", name="",
                                          clinician=colleague)
    path = f"/api/v1/visits/{created.visit.id}/psychotherapy-note"
    secret = "PRIVATE analysis of transference"
    status, _ = await call(server, "PUT", path, token, {"text": secret})
    assert status == 200
    assert (await call(server, "GET", path, token))[1] == {"text": secret}
    # The co-clinician may read the progress note but sees only their own private note.
    status, body = await call(server, "GET", path, colleague_token)
    assert status == 200 and body == {"text": ""}
    status, note = await call(server, "GET", f"/api/v1/visits/{created.visit.id}/note",
                              colleague_token)
    assert status == 200
    # No export carries it.
    await call(server, "PUT", f"/api/v1/visits/{created.visit.id}/note", token,
               {"version": note["version"], "sections": SECTIONS})
    status, bundle = await call(server, "GET", f"/api/v1/visits/{created.visit.id}/note/fhir",
                                token)
    assert status == 200 and secret not in json.dumps(bundle)
    await sign(server, created.visit.id, token, "Dana Rivera")
    status, pdf = await call(server, "GET", f"/api/v1/visits/{created.visit.id}/note/pdf",
                             token)
    assert status == 200 and secret.encode() not in pdf
    # A stranger gets nothing at all.
    _, stranger_token = await server.clinician(email="x@example.org", name="Stranger")
    status, _ = await call(server, "GET", path, stranger_token)
    assert status == 404


async def test_supervisor_co_signs(server: Running) -> None:
    svc = server.services
    supervisor, supervisor_token = await server.clinician(email="sup@example.org",
                                                          name="Sam Supervisor")
    trainee = await svc.store.create_clinician(
        email="trainee@example.org", name="Tara Trainee", credentials="MSW",
        password_hash=hash_password("a long password"), now=svc.clock())
    await svc.store.set_supervisor(trainee.id, supervisor.id)
    token, digest = new_opaque_token()
    await svc.store.add_api_token(token_hash=digest, clinician_id=trainee.id, label="t",
                                  now=svc.clock(), ttl=timedelta(days=1))
    trainee = await svc.store.clinician(trainee.id)  # type: ignore[assignment]
    created = await server.held_visit(trainee, minutes=55, at_home=False)
    base = f"/api/v1/visits/{created.visit.id}/note"
    status, note = await call(server, "GET", base, token)
    assert note["header"]["code"] == "90837" and note["header"]["place_of_service"] == "02"
    await call(server, "PUT", base, token, {"version": note["version"], "sections": SECTIONS})
    # The supervisor reads, but does not write the trainee's note or a private note on it.
    status, body = await call(server, "PUT", base, supervisor_token,
                              {"version": note["version"] + 1, "sections": {"plan": "x"}})
    assert status == 403, body
    status, _ = await call(server, "GET", f"/api/v1/visits/{created.visit.id}/psychotherapy-note",
                           supervisor_token)
    assert status == 403
    # The supervisor cannot sign before the trainee.
    status, body = await sign(server, created.visit.id, supervisor_token, "Sam Supervisor")
    assert status == 403, body
    status, signed = await sign(server, created.visit.id, token, "Tara Trainee")
    assert status == 200 and signed["status"] == "awaiting_cosign", signed
    status, cosigned = await sign(server, created.visit.id, supervisor_token, "Sam Supervisor")
    assert status == 200 and cosigned["status"] == "signed", cosigned
    status, pdf = await call(server, "GET", base + "/pdf", token)
    report = await verify(pdf, [svc.consents.ca.root_asn1])
    assert report.bottom_line == "good", report.to_dict()
    assert [s.signer_name for s in report.signatures if s.kind == "signature"] == [
        "Tara Trainee", "Sam Supervisor"]


async def test_audio_only_visit_and_its_reason(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.held_visit(clinician, minutes=30, video=False)
    base = f"/api/v1/visits/{created.visit.id}/note"
    _, note = await call(server, "GET", base, token)
    assert note["header"]["modality"] == "audio-only" and note["header"]["modifier"] == "93"
    reason = "Patient's camera would not start; patient chose audio."
    status, _ = await call(server, "PUT", base, token, {
        "version": note["version"], "sections": SECTIONS, "modality_reason": reason})
    assert status == 200
    _, note = await call(server, "GET", base, token)
    assert note["modality_reason"] == reason and reason in note["header"]["modality_text"]
    await sign(server, created.visit.id, token, "Dana Rivera")
    _, bundle = await call(server, "GET", base + "/fhir", token)
    assert reason in json.dumps(bundle)


async def test_short_visit_is_flagged_and_never_joined_gives_no_code(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.held_visit(clinician, minutes=15)
    status, note = await call(server, "GET", f"/api/v1/visits/{created.visit.id}/note", token)
    assert note["header"]["minutes"] == 15 and note["header"]["code"] is None
    assert note["header"]["billable"] is False
    # A visit ended without anyone joining.
    lonely = await server.visit(clinician)
    await server.services.finish_visit(lonely.visit, "ended", actor="test")
    status, note = await call(server, "GET", f"/api/v1/visits/{lonely.visit.id}/note", token)
    assert status == 200 and note["header"]["code"] is None
    assert note["header"]["patient_present"] is False
    # A visit that has not happened has no note.
    later = await server.visit(clinician)
    status, body = await call(server, "GET", f"/api/v1/visits/{later.visit.id}/note", token)
    assert status == 409 and body["error"]["code"] == "visit_not_held"


async def test_strangers_are_refused(server: Running) -> None:
    clinician, _token = await server.clinician()
    created = await server.held_visit(clinician, minutes=20)
    _, other = await server.clinician(email="other@example.org", name="Other")
    status, _ = await call(server, "GET", f"/api/v1/visits/{created.visit.id}/note", other)
    assert status == 404
    async with aiohttp.ClientSession() as anon, anon.get(
            f"{server.url}/api/v1/visits/{created.visit.id}/note") as resp:
        assert resp.status == 401


async def test_a_note_opened_during_the_visit_gets_the_whole_visit(server: Running) -> None:
    svc = server.services
    clinician, token = await server.clinician()
    created = await server.visit_in_progress(clinician)
    svc.clock.advance(minutes=5)  # type: ignore[attr-defined]
    base = f"/api/v1/visits/{created.visit.id}/note"
    status, early = await call(server, "GET", base, token)  # notes taken during the session
    assert status == 200 and early["header"]["minutes"] == 5
    svc.clock.advance(minutes=50)  # type: ignore[attr-defined]
    await server.end_visit(created)
    status, note = await call(server, "GET", base, token)
    assert note["header"]["minutes"] == 55 and note["header"]["code"] == "90837"
    assert note["version"] == early["version"]  # the clinician's open editor still saves


async def test_only_the_supervisor_named_on_the_note_co_signs(server: Running) -> None:
    svc = server.services
    first, first_token = await server.clinician(email="s1@example.org", name="Sue One")
    second, second_token = await server.clinician(email="s2@example.org", name="Sam Two")
    trainee, token = await server.clinician(email="t@example.org", name="Tara Trainee")
    await svc.store.set_supervisor(trainee.id, first.id)
    trainee = await svc.store.clinician(trainee.id)  # type: ignore[assignment]
    created = await server.held_visit(trainee, minutes=40)
    base = f"/api/v1/visits/{created.visit.id}/note"
    _, note = await call(server, "GET", base, token)
    await call(server, "PUT", base, token, {"version": note["version"], "sections": SECTIONS})
    status, signed = await sign(server, created.visit.id, token, "Tara Trainee")
    assert signed["status"] == "awaiting_cosign"
    status, body = await call(server, "POST", base + "/addenda", token,
                              {"reason": "late", "text": "x"})
    assert status == 409 and body["error"]["code"] == "note_not_signed"
    await svc.store.set_supervisor(trainee.id, second.id)  # the supervisor changes
    status, body = await sign(server, created.visit.id, second_token, "Sue One")
    assert status == 403, body
    status, done = await sign(server, created.visit.id, first_token, "Sue One")
    assert status == 200 and done["status"] == "signed", done
