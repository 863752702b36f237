"""The progress-note API (`/api/v1/visits/{visit_id}/note...`) for clinicians.

Who may act: the visit's clinicians (its own and co-clinicians) read, edit and amend; the
note's author signs; the author's supervisor reads and co-signs. The psychotherapy note
is the requesting clinician's own, for that visit, and no one else's.
"""

from __future__ import annotations

import json

from aiohttp import web

from telehealth.db.tables import Note, Visit
from telehealth.visits import VisitError
from web.api import json_body
from web.consent_api import clinician_requester, pdf_response
from web.keys import clinician, services
from web.security import require_clinician

routes = web.RouteTableDef()
BASE = "/api/v1/visits/{visit_id}/note"


async def note_visit(request: web.Request, *, write: bool = False) -> tuple[Visit, Note]:
    """The visit and its note (drafted now if it has none), for a clinician who may see
    it; with `write`, only for the visit's own clinicians (the supervisor reads and
    co-signs, and has no psychotherapy note of their own on it)."""
    svc = services(request)
    me = clinician(request)
    visit = await svc.store.visit(request.match_info["visit_id"])
    if visit is None:
        raise VisitError("not_found", "No such visit.")
    if await svc.may_manage(me, visit):
        author = await svc.store.clinician(visit.clinician_id)
        assert author is not None
        return visit, await svc.notes.draft_for(visit, author)
    note = await svc.notes.notes.note_for_visit(visit.id)
    author = await svc.store.clinician(note.author_id) if note else None
    named = note is not None and any(slot.get("clinician_id") == me.id
                                     for slot in note.plan.get("slots", []))
    if note is None or author is None or not (author.supervisor_id == me.id or named):
        raise VisitError("not_found", "No such visit.")  # someone else's: as if missing
    if write:
        raise VisitError("forbidden", "As the supervisor you read and co-sign this note.")
    return visit, note


@routes.get(BASE)
@require_clinician
async def show(request: web.Request) -> web.Response:
    _, note = await note_visit(request)
    svc = services(request)
    return web.json_response(await svc.notes.view(note, clinician_requester(request)))


@routes.put(BASE)
@require_clinician
async def save(request: web.Request) -> web.Response:
    _, note = await note_visit(request, write=True)
    svc = services(request)
    me = clinician_requester(request)
    note = await svc.notes.save(note, await json_body(request), me)
    return web.json_response({"version": note.version, "carried": note.carried,
                              "saved_at": note.updated_at.isoformat()})


@routes.post(BASE + "/carry-forward")
@require_clinician
async def carry_forward(request: web.Request) -> web.Response:
    _, note = await note_visit(request, write=True)
    svc = services(request)
    me = clinician_requester(request)
    note = await svc.notes.start_from_last(note, me)
    return web.json_response(await svc.notes.view(note, me))


@routes.post(BASE + "/prepare")
@require_clinician
async def prepare(request: web.Request) -> web.Response:
    _, note = await note_visit(request)
    body = await json_body(request)
    svc = services(request)
    return web.json_response(await svc.notes.prepare(
        note, clinician(request), public_key=body.get("public_key"),
        typed_name=body.get("typed_name"),
        requester=clinician_requester(request)))


@routes.post(BASE + "/finish")
@require_clinician
async def finish(request: web.Request) -> web.Response:
    _, note = await note_visit(request)
    body = await json_body(request)
    svc = services(request)
    me = clinician_requester(request)
    note = await svc.notes.finish(note, clinician(request), signing_id=body.get("signing_id"),
                                  signature=body.get("signature"), requester=me)
    return web.json_response(await svc.notes.view(note, me))


@routes.post(BASE + "/addenda")
@require_clinician
async def addendum(request: web.Request) -> web.Response:
    _, note = await note_visit(request, write=True)
    body = await json_body(request)
    svc = services(request)
    me = clinician_requester(request)
    note = await svc.notes.add_addendum(note, clinician(request), reason=body.get("reason"),
                                        text=body.get("text"), requester=me)
    return web.json_response(await svc.notes.view(note, me), status=201)


@routes.get(BASE + "/pdf")
@require_clinician
async def pdf(request: web.Request) -> web.Response:
    _, note = await note_visit(request)
    svc = services(request)
    data = svc.notes.signed_pdf(note)
    await svc.notes.exported(note, clinician_requester(request),
                             "pdf")
    return pdf_response(data, f"progress-note-{note.id[:8]}.pdf")


@routes.get(BASE + "/fhir")
@require_clinician
async def fhir(request: web.Request) -> web.Response:
    _, note = await note_visit(request)
    svc = services(request)
    bundle = await svc.notes.fhir_bundle(note)
    await svc.notes.exported(note, clinician_requester(request),
                             "fhir")
    return web.Response(text=json.dumps(bundle), content_type="application/fhir+json")


@routes.get("/api/v1/visits/{visit_id}/psychotherapy-note")
@require_clinician
async def private_note(request: web.Request) -> web.Response:
    visit, _ = await note_visit(request, write=True)
    text = await services(request).notes.private_note(visit, clinician(request),
                                                      clinician_requester(request))
    return web.json_response({"text": text})


@routes.put("/api/v1/visits/{visit_id}/psychotherapy-note")
@require_clinician
async def save_private_note(request: web.Request) -> web.Response:
    visit, _ = await note_visit(request, write=True)
    body = await json_body(request)
    await services(request).notes.save_private_note(visit, clinician(request), body.get("text"),
                                                    clinician_requester(request))
    return web.json_response({"ok": True})
