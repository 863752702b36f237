"""The patient's (and every guest's) side: the link page, the echo test, the location.

`GET /v/<token>` answers every state of a link with a page a patient can act
on (expired, cancelled, ended, locked, not open yet) and otherwise the join
page, whose script walks identity check -> device check -> location ->
consent gate -> waiting room -> call. Before the identity check the page shows
only the practice, the clinician and the time, never who the patient is.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehealth.auth import AuthError
from telehealth.media.echo import EchoBusy, EchoService
from telehealth.visits import VisitError, check_lock, identity_check_for
from web.api import json_body, text_field
from web.keys import services
from web.render import page

routes = web.RouteTableDef()
ECHO = web.AppKey("echo", EchoService)

ROLE_LABELS = {
    "patient": "Patient", "legal_representative": "Legal representative",
    "interpreter": "Interpreter", "family_member": "Family member",
    "clinician": "Clinician", "co_clinician": "Clinician",
}
VISIT_LABELS = {"intake": "First appointment", "psychotherapy": "Therapy session",
                "family": "Family session", "crisis": "Crisis session"}
# code -> (heading, what happened in plain words, HTTP status)
_REFUSALS = {
    "link_invalid": ("This link does not work",
                     "The link may be incomplete: sometimes the end of it gets cut off.", 401),
    "link_expired": ("This link has expired",
                     "Links work from an hour before the appointment until three hours after.",
                     410),
    "link_not_yet_valid": ("Your visit is not open yet",
                           "Your link opens one hour before your appointment.", 403),
    "visit_cancelled": ("This visit was cancelled", "Your clinician cancelled this visit.", 410),
    "visit_ended": ("This visit has ended", "The visit is over, so its link no longer works.",
                    410),
    "participant_removed": ("This link was withdrawn", "The practice withdrew this link.", 410),
    "link_locked": ("This link is locked for now",
                    "There were too many tries with a date of birth that did not match.", 423),
}


def refusal_page(request: web.Request, code: str, action: str,
                 when: str | None = None, when_label: str = "") -> web.Response:
    heading, message, status = _REFUSALS.get(
        code, ("This link cannot be used", "Something is wrong with this link.", 400))
    return page(request, "message.html", status=status, heading=heading, message=message,
                action=action, when=when, when_label=when_label,
                tone="info" if code == "link_not_yet_valid" else "problem")


@routes.get("/v/{token}")
async def link_page(request: web.Request) -> web.Response:
    svc = services(request)
    try:
        claims = svc.signer.read_link(request.match_info["token"])
        visit, person, clinician = await svc.resolve(claims)
        svc.check_usable(claims, visit, person)
        check_lock(person.locked_until, svc.clock())
    except AuthError as exc:
        return refusal_page(request, exc.code,
                            "Open the whole link from your message again, "
                            "or ask your practice to send it again.")
    except VisitError as exc:
        if exc.code == "link_not_yet_valid":
            return refusal_page(request, exc.code, exc.action, exc.extra.get("opens_at"),
                                "It opens at")
        if exc.code == "link_locked":
            return refusal_page(request, exc.code, exc.action, exc.extra.get("locked_until"),
                                "You can try again at")
        return refusal_page(request, exc.code, exc.action)
    needs_dob, needs_name = identity_check_for(person.role)
    data: dict[str, Any] = {
        "role": person.role, "role_label": ROLE_LABELS.get(person.role, person.role),
        "needs_dob": needs_dob, "needs_name": needs_name,
        "clinician_name": clinician.name, "clinician_credentials": clinician.credentials,
        "scheduled_start": visit.scheduled_start.isoformat(),
        "visit_label": VISIT_LABELS.get(visit.visit_type, "Visit"),
        "asks_location": person.role in ("patient", "legal_representative", "family_member"),
        "practice_name": svc.settings.practice_name,
    }
    return page(request, "join.html", data=data, body_class="join",
                clinician_name=clinician.name, visit_label=data["visit_label"],
                role_label=data["role_label"], credentials=clinician.credentials,
                role=person.role)


@routes.post("/api/v1/echo")
async def echo(request: web.Request) -> web.Response:
    """The pre-call network test: answer the browser's offer with the echo participant."""
    body = await json_body(request)
    _, person = await services(request).check_ticket(text_field(body, "ticket", limit=4096))
    sdp = text_field(body, "sdp", limit=60_000)
    try:
        answer = await request.app[ECHO].answer(person.id, sdp)
    except EchoBusy as exc:
        return web.json_response({"error": {"code": "busy", "message": str(exc),
                                            "action": "Try again in a moment."}}, status=503)
    except ValueError:
        raise VisitError("bad_request", "That is not a WebRTC offer.") from None
    return web.json_response({"type": "answer", "sdp": answer})


US_STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
    "NH NJ NM NY NC ND OH OK OR PA PR RI SC SD TN TX UT VT VA VI WA WV WI WY GU AS MP"
).split()


@routes.post("/api/v1/location")
async def location(request: web.Request) -> web.Response:
    """Where the patient is for this visit: needed for the note and the emergency plan."""
    body = await json_body(request)
    svc = services(request)
    visit, person = await svc.check_ticket(text_field(body, "ticket", limit=4096))
    state = text_field(body, "state", limit=8)
    if state not in (*US_STATES, "OUTSIDE_US"):
        raise VisitError("invalid_field", "Choose the state you are in right now.")
    at_home = body.get("at_home")
    if not isinstance(at_home, bool):
        raise VisitError("invalid_field", "Tell us whether you are at home.")
    detail = {
        "state": state, "at_home": at_home,
        "place": text_field(body, "place", required=False, limit=300),
        "callback_phone": text_field(body, "callback_phone", required=False, limit=40),
    }
    await svc.record(visit, person, "location", detail)
    return web.json_response({"ok": True})
