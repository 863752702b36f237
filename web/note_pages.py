"""The clinician's progress-note editor page.

    GET  /visits/{id}/note    the note editor (note.js loads and saves the note through
                              the progress-note API, `docs/notes-api.md`)

The page itself carries no note text: only who is looking (the note's author, a
co-clinician of the visit, or the author's supervisor) so the script offers the right
actions. Whoever is not logged in goes to /login and back; someone else's visit is a 404,
like everywhere; a visit that has not taken place says that the note comes afterwards.
"""

from __future__ import annotations

from aiohttp import web

from notes import NotesError
from telehealth.visits import VisitError
from web.clinician_pages import VISIT_TYPE_LABELS, login_page, message_page
from web.keys import CSRF_TOKEN, clinician, services
from web.notes_api import note_visit
from web.render import page

routes = web.RouteTableDef()


@routes.get("/visits/{visit_id}/note")
@login_page
async def note_page(request: web.Request) -> web.Response:
    svc = services(request)
    me = clinician(request)
    try:
        visit, note = await note_visit(request)
    except NotesError as exc:
        if exc.code == "visit_not_held":
            return message_page(request, 409, "There is no note yet",
                            "A progress note is drafted from the visit when the visit ends.",
                            "Come back after the visit: the draft will be waiting for you.",
                            tone="info")
        raise
    except VisitError:
        return message_page(request, 404, "No such visit",
                        "This visit does not exist, or it is not one of yours.",
                        "Go back to your dashboard.")
    author = await svc.store.clinician(note.author_id)
    if me.id == note.author_id:
        role = "author"
    elif (author is not None and author.supervisor_id == me.id) or any(
            slot.get("clinician_id") == me.id for slot in note.plan.get("slots", [])[1:]):
        role = "supervisor"
    else:
        role = "colleague"  # a co-clinician of the visit: reads, edits and amends
    data = {
        "csrf_token": request.get(CSRF_TOKEN) or "", "visit_id": visit.id, "role": role,
        "me": {"name": me.name, "credentials": me.credentials},
        "author_name": author.name if author else "",
        "patient_name": visit.patient_name, "idle_s": svc.settings.session_idle_s,
    }
    return page(request, "note.html", data=data, visit=visit, role=role,
                visit_type=VISIT_TYPE_LABELS.get(visit.visit_type, ""), me=me,
                csrf_token=request.get(CSRF_TOKEN) or "")
