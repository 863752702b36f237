"""The JSON API (`/api/v1`): join, clinician login, visits, participants, timeline."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from aiohttp import web

from telehealth.auth import AuthError, check_password, new_opaque_token, token_digest
from telehealth.db.tables import Clinician, Participant, Visit
from telehealth.visits import Representative, VisitError, VisitRequest
from web.keys import CSRF_TOKEN, clinician, services
from web.security import SESSION_COOKIE, require_clinician

routes = web.RouteTableDef()


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise VisitError("bad_request", "The request body must be JSON.") from None
    if not isinstance(body, dict):
        raise VisitError("bad_request", "The request body must be a JSON object.")
    return body


def text_field(
    body: dict[str, Any], name: str, *, required: bool = True, limit: int = 200
) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise VisitError("invalid_field", f"'{name}' must be text of at most {limit} characters.")
    return value


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise VisitError("bad_request", f"'{name}' must be text.")
    return value


# ---- joining -------------------------------------------------------------


@routes.post("/api/v1/join")
async def join(request: web.Request) -> web.Response:
    body = await json_body(request)
    token = body.get("token")
    if not isinstance(token, str) or len(token) > 4096:
        raise AuthError("link_invalid", "This link is not valid.")
    grant = await services(request).join(token, dob=_opt_str(body, "dob"),
                                         name=_opt_str(body, "name"))
    response = web.json_response(grant)
    gate = grant["consent"]
    if gate["signable"]:
        from web.consent_api import grant_visit_consent

        await grant_visit_consent(request, response, gate["consent_id"],
                                  grant["participant"]["role"])
    return response


# ---- clinician session ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewSession:
    """A clinician's fresh web session; `set_cookie` puts it on the response."""

    clinician: Clinician
    csrf_token: str
    cookie: str = field(repr=False)
    secure: bool

    def set_cookie(self, response: web.StreamResponse) -> None:
        response.set_cookie(SESSION_COOKIE, self.cookie, httponly=True, samesite="Strict",
                            path="/", secure=self.secure)


async def start_session(request: web.Request, email: str, password: str) -> NewSession:
    """Check email and password and open a web session (the API's and the login form's)."""
    svc = services(request)
    key = email.strip().lower()
    wait = await svc.login_throttle.retry_after(key)
    if wait > 0:
        raise AuthError("throttled", f"Too many failed log-ins. Try again in {int(wait // 60) + 1} "
                                     "minutes, or reset your password with your administrator.")
    found = await svc.store.clinician_by_email(email)
    if found is None or not check_password(found.password_hash, password):
        await svc.login_throttle.failed(key)
        raise AuthError("bad_credentials", "That email and password do not match.")
    await svc.login_throttle.succeeded(key)
    token, digest = new_opaque_token()
    csrf = secrets.token_urlsafe(24)
    await svc.store.add_web_session(token_hash=digest, clinician_id=found.id, csrf_token=csrf,
                                    now=svc.clock())
    return NewSession(found, csrf, token, svc.settings.cookie_secure)


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    """Drop the web session of the request's cookie (if any) and clear the cookie."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await services(request).store.drop_web_session(token_digest(cookie))
    response.del_cookie(SESSION_COOKIE, path="/")


@routes.post("/api/v1/session")
async def login(request: web.Request) -> web.Response:
    body = await json_body(request)
    session = await start_session(request, text_field(body, "email", limit=320),
                                  text_field(body, "password", limit=1024))
    response = web.json_response({"clinician": _clinician(session.clinician),
                                  "csrf_token": session.csrf_token})
    session.set_cookie(response)
    return response


@routes.delete("/api/v1/session")
@require_clinician
async def logout(request: web.Request) -> web.Response:
    response = web.json_response({"ok": True})
    await end_session(request, response)
    return response


@routes.get("/api/v1/me")
@require_clinician
async def me(request: web.Request) -> web.Response:
    return web.json_response({"clinician": _clinician(clinician(request)),
                              "csrf_token": request.get(CSRF_TOKEN)})


def _clinician(c: Any) -> dict[str, Any]:
    return {"id": c.id, "email": c.email, "name": c.name, "credentials": c.credentials}


# ---- visits --------------------------------------------------------------


def visit_request(body: dict[str, Any]) -> VisitRequest:
    """A `VisitRequest` from the JSON (or CLI) fields, with clear errors."""
    try:
        dob = date.fromisoformat(text_field(body, "patient_dob", limit=10))
    except ValueError:
        raise VisitError("invalid_field", "'patient_dob' must look like 1990-04-27.") from None
    try:
        start = datetime.fromisoformat(text_field(body, "scheduled_start", limit=40))
    except ValueError:
        raise VisitError("invalid_field",
                         "'scheduled_start' must be ISO 8601 with a zone.") from None
    rep = body.get("legal_representative")
    representative = None
    if rep is not None:
        if not isinstance(rep, dict):
            raise VisitError("invalid_field", "'legal_representative' must be an object.")
        representative = Representative(text_field(rep, "name"), text_field(rep, "relationship"),
                                        text_field(rep, "authority"))
    return VisitRequest(
        patient_name=text_field(body, "patient_name"), patient_dob=dob, scheduled_start=start,
        visit_type=text_field(body, "visit_type", required=False) or "psychotherapy",
        patient_contact=text_field(body, "patient_contact", required=False, limit=320),
        representative=representative,
    )


async def managed_visit(request: web.Request) -> Visit:
    svc = services(request)
    visit = await svc.store.visit(request.match_info["visit_id"])
    # Someone else's visit answers exactly like a missing one.
    if visit is None or not await svc.may_manage(clinician(request), visit):
        raise VisitError("not_found", "No such visit.")
    return visit


def visit_json(visit: Visit) -> dict[str, Any]:
    return {
        "id": visit.id, "patient_name": visit.patient_name,
        "scheduled_start": visit.scheduled_start.isoformat(), "visit_type": visit.visit_type,
        "status": visit.status, "ended_at": visit.ended_at.isoformat() if visit.ended_at else None,
        "legal_representative": {
            "name": visit.representative_name, "relationship": visit.representative_relationship,
            "authority": visit.representative_authority,
        } if visit.representative_name else None,
    }


def participant_json(person: Participant, link: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": person.id, "role": person.role, "name": person.name}
    if link is not None:
        out["link"] = link
    return out


@routes.post("/api/v1/visits")
@require_clinician
async def create_visit(request: web.Request) -> web.Response:
    created = await services(request).create_visit(visit_request(await json_body(request)),
                                                   clinician(request))
    return web.json_response({
        "visit_id": created.visit.id,
        "patient_link": created.link_for_role("patient"),
        "clinician_link": created.link_for_role("clinician"),
        "visit": visit_json(created.visit),
    }, status=201)


@routes.get("/api/v1/visits")
@require_clinician
async def list_visits(request: web.Request) -> web.Response:
    visits = await services(request).store.visits_for(clinician(request).id)
    return web.json_response({"visits": [visit_json(v) for v in visits]})


@routes.get("/api/v1/visits/{visit_id}")
@require_clinician
async def show_visit(request: web.Request) -> web.Response:
    svc = services(request)
    visit = await managed_visit(request)
    people = await svc.store.participants(visit.id)
    live = visit.status in ("scheduled", "in_progress")
    return web.json_response({**visit_json(visit), "participants": [
        participant_json(p, svc.link_for(visit, p) if live else None) for p in people]})


@routes.post("/api/v1/visits/{visit_id}/participants")
@require_clinician
async def add_participant(request: web.Request) -> web.Response:
    svc = services(request)
    visit = await managed_visit(request)
    body = await json_body(request)
    role = text_field(body, "role", limit=40)
    colleague = None
    if role == "co_clinician" and body.get("email"):
        colleague = await svc.store.clinician_by_email(text_field(body, "email", limit=320))
        if colleague is None:
            raise VisitError("invalid_field", "No clinician has that email.")
    name = text_field(body, "name", required=role not in ("legal_representative", "co_clinician"))
    person, link = await svc.add_participant(visit, role=role, name=name, clinician=colleague)
    return web.json_response(participant_json(person, link), status=201)


@routes.post("/api/v1/visits/{visit_id}/cancel")
@require_clinician
async def cancel_visit(request: web.Request) -> web.Response:
    visit = await managed_visit(request)
    await services(request).finish_visit(visit, "cancelled",
                                         actor=f"clinician:{clinician(request).id}")
    return web.json_response({"ok": True, "status": "cancelled"})


@routes.post("/api/v1/visits/{visit_id}/end")
@require_clinician
async def end_visit(request: web.Request) -> web.Response:
    visit = await managed_visit(request)
    await services(request).finish_visit(visit, "ended",
                                         actor=f"clinician:{clinician(request).id}")
    return web.json_response({"ok": True, "status": "ended"})


@routes.get("/api/v1/visits/{visit_id}/timeline")
@require_clinician
async def timeline(request: web.Request) -> web.Response:
    visit = await managed_visit(request)
    events = await services(request).timeline(visit)
    return web.json_response({"events": [
        {"at": e.at.isoformat(), "participant_id": e.participant_id, "kind": e.kind,
         "detail": e.detail} for e in events]})
