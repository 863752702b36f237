"""The clinician's side of the web: log in and out, the dashboard, the call, the summary.

    GET  /login, POST /login     form; a `th_login_csrf` cookie echoed in the form
    POST /logout                 form carrying the session's CSRF token
    GET  /dashboard              today's and upcoming visits (rendered by dashboard.js)
    GET  /visits/{id}/call       the clinician's in-call page (clinician_call.js)
    GET  /visits/{id}/summary    after the visit: who was there, when, for how long
    GET  /api/v1/dashboard       the dashboard's visits again (after a change)
    GET  /api/v1/live            waiting rooms and who is in, per live visit
    POST /api/v1/visits/{id}/admit | deny | ticket

Pages behind login send whoever is not logged in to /login (and back afterwards);
the JSON endpoints answer 401 like the rest of the API. Someone else's visit is a
404 everywhere. The dashboard polls `/api/v1/live`, which refreshes the session's
idle clock, so dashboard.js logs out itself after `session_idle_s` without input.

Summary times are rendered by the server in the zone the browser names in `?tz=`
(dashboard.js and clinician_call.js add it); without one, in UTC, and the page says so.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from notes.contact import summarize
from telehealth.auth import AuthError, token_digest
from telehealth.db.tables import Clinician, VisitEvent
from telehealth.services import Services
from telehealth.signaling.hub import Hub
from telehealth.signaling.room import MemberState, Refused, Room
from telehealth.visits import REPRESENTATIVE_RELATIONSHIPS, VISIT_TYPES, VisitError
from web.api import (
    end_session,
    json_body,
    managed_visit,
    participant_json,
    start_session,
    text_field,
    visit_json,
)
from web.keys import CLINICIAN, CSRF_TOKEN, clinician, services
from web.render import page
from web.security import SESSION_COOKIE, Handler, current_clinician, require_clinician

routes = web.RouteTableDef()
LOGIN_CSRF_COOKIE = "th_login_csrf"
ROLE_LABELS = {
    "clinician": "Clinician", "co_clinician": "Co-clinician", "patient": "Patient",
    "legal_representative": "Legal representative", "interpreter": "Interpreter",
    "family_member": "Family member",
}
VISIT_TYPE_LABELS = {"intake": "Intake", "psychotherapy": "Psychotherapy",
                     "family": "Family", "crisis": "Crisis"}
_REFUSALS = {
    "not_waiting": ("That person is no longer in the waiting room.",
                    "They may have left or been let in already; the dashboard updates by itself."),
    "room_full": ("The visit already has as many people as it can hold.",
                  "Ask someone to leave the call first."),
}


# ---- who is asking (pages) -------------------------------------------------


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _safe_next(value: Any) -> str:
    """Where to go after logging in: a path of ours only, never another site."""
    if (isinstance(value, str) and value.startswith("/") and value.isprintable()
            and not value.startswith(("//", "/\\")) and len(value) <= 500):
        return value
    return "/dashboard"


async def _logged_in(request: web.Request) -> Clinician | None:
    try:
        found: Clinician | None = await current_clinician(request)
    except AuthError:
        return None
    if found is not None:
        request[CLINICIAN] = found
    return found


def login_page(handler: Handler) -> Handler:
    """Like `require_clinician`, for pages: whoever is not logged in goes to /login."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if await _logged_in(request) is None:
            query = {"next": request.path_qs}
            stale = SESSION_COOKIE in request.cookies
            if stale:
                query["expired"] = "1"
            response = _redirect(f"/login?{urlencode(query)}")
            if stale:
                response.del_cookie(SESSION_COOKIE, path="/")
            return response
        return await handler(request)
    return wrapped


def message_page(request: web.Request, status: int, heading: str, message: str,
                 action: str = "", tone: str = "problem") -> web.Response:
    """A clinician page that only says something (a dead end, or what comes next)."""
    return page(request, "message.html", status=status, heading=heading, message=message,
                action=action, when="", when_label="", tone=tone)


def _not_found(request: web.Request) -> web.Response:
    return message_page(request, 404, "No such visit",
                    "This visit does not exist, or it is not one of yours.",
                    "Go back to your dashboard.")


def _nav(request: web.Request) -> dict[str, Any]:
    """What every clinician page's top bar needs."""
    return {"me": clinician(request), "csrf_token": request.get(CSRF_TOKEN) or ""}


# ---- log in and out ----------------------------------------------------------


def _login_form(request: web.Request, *, status: int = 200, error: str = "",
                notice: str = "", email: str = "", next_path: str = "") -> web.Response:
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", status=status, login_csrf=token, error=error,
                    notice=notice, email=email, next_path=_safe_next(next_path))
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict",
                        path="/login", secure=services(request).settings.cookie_secure)
    return response


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    return _redirect("/dashboard" if await _logged_in(request) else "/login")


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    if await _logged_in(request) is not None:
        return _redirect(_safe_next(request.query.get("next")))
    notice = ""
    if request.query.get("expired"):
        notice = "Your session ended after a time without activity. Please log in again."
    elif request.query.get("logged_out"):
        notice = "You have logged out."
    return _login_form(request, notice=notice, next_path=request.query.get("next", ""))


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    email, password, sent = form.get("email"), form.get("password"), form.get("csrf")
    next_path = str(form.get("next") or "")
    email = email.strip()[:320] if isinstance(email, str) else ""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (isinstance(sent, str) and cookie
            and hmac.compare_digest(sent.encode(), cookie.encode())):
        return _login_form(request, status=403, email=email, next_path=next_path,
                           error="This form had expired. Please enter your password again.")
    if not email or not isinstance(password, str) or not password or len(password) > 1024:
        return _login_form(request, status=400, email=email, next_path=next_path,
                           error="Enter both your email and your password.")
    try:
        session = await start_session(request, email, password)
    except AuthError:
        return _login_form(request, status=401, email=email, next_path=next_path,
                           error="That email and password do not match. Check both and "
                                 "try again.")
    response = _redirect(_safe_next(next_path))
    await end_session(request, response)  # an older session of this browser ends here
    session.set_cookie(response)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    svc = services(request)
    form = await request.post()
    cookie = request.cookies.get(SESSION_COOKIE)
    session = None
    if cookie:
        session = await svc.store.touch_web_session(
            token_digest(cookie), idle=timedelta(seconds=svc.settings.session_idle_s),
            now=svc.clock())
    if session is not None:
        sent = form.get("csrf_token")
        if not (isinstance(sent, str)
                and hmac.compare_digest(sent.encode(), session.csrf_token.encode())):
            return message_page(request, 403, "You are still logged in",
                            "This page was out of date, so we did not log you out.",
                            "Reload the dashboard and use Log out again.")
    idle = form.get("reason") == "idle"
    response = _redirect("/login?expired=1" if idle else "/login?logged_out=1")
    await end_session(request, response)
    return response


# ---- the dashboard -----------------------------------------------------------


async def _dashboard_visits(svc: Services, me: Clinician) -> list[dict[str, Any]]:
    """The clinician's visits from two days ago on (the page keeps today's and later,
    in the browser's own zone), with every participant and, while live, their link."""
    out = []
    for visit in await svc.store.visits_for(me.id, since=svc.clock() - timedelta(days=2)):
        live = visit.status in ("scheduled", "in_progress")
        people = await svc.store.participants(visit.id)
        out.append({
            **visit_json(visit),
            "consent_on_file": await svc.consent_on_file(visit),
            "participants": [participant_json(p, svc.link_for(visit, p) if live else None)
                             for p in people if p.removed_at is None],
        })
    return out


@routes.get("/dashboard")
@login_page
async def dashboard(request: web.Request) -> web.Response:
    svc = services(request)
    data = {
        "csrf_token": request.get(CSRF_TOKEN), "idle_s": svc.settings.session_idle_s,
        "visits": await _dashboard_visits(svc, clinician(request)),
        "role_labels": ROLE_LABELS, "visit_type_labels": VISIT_TYPE_LABELS,
    }
    return page(request, "dashboard.html", data=data, visit_types=VISIT_TYPES,
                visit_type_labels=VISIT_TYPE_LABELS,
                relationships=REPRESENTATIVE_RELATIONSHIPS, **_nav(request))


@routes.get("/api/v1/dashboard")
@require_clinician
async def dashboard_visits(request: web.Request) -> web.Response:
    visits = await _dashboard_visits(services(request), clinician(request))
    return web.json_response({"visits": visits})


# ---- the live waiting rooms --------------------------------------------------


def _hub(svc: Services) -> Hub:
    if svc.hub is None:  # only without a server (the CLI), never behind a route
        raise VisitError("unavailable", "The signaling service is not running.")
    return svc.hub


def live_json(room: Room, now: datetime) -> dict[str, Any]:
    """Who waits (and for how many seconds by the server's clock) and who is in."""
    waiting = [{**w, "waited_s": max(0, int((now - datetime.fromisoformat(w["since"]))
                                            .total_seconds()))}
               for w in room.waiting_list()]
    in_room = [{"id": m.id, "role": m.role, "name": m.name}
               for m in room.members.values() if m.state is MemberState.ADMITTED]
    return {"waiting": waiting, "in_room": in_room}


@routes.get("/api/v1/live")
@require_clinician
async def live(request: web.Request) -> web.Response:
    svc = services(request)
    hub, now = _hub(svc), svc.clock()
    # A room lives only while its links do, so visits this recent cover every room.
    since = now - timedelta(seconds=svc.settings.link_valid_after_s) - timedelta(days=1)
    mine = {v.id for v in await svc.store.visits_for(clinician(request).id, since=since)}
    return web.json_response({visit_id: live_json(room, now)
                              for visit_id, room in list(hub.rooms.items())
                              if visit_id in mine and room.ended is None})


def _refused(exc: Refused) -> web.Response:
    message, action = _REFUSALS.get(exc.code, (exc.message, ""))
    return web.json_response(VisitError(exc.code, message, action).body(), status=409)


@routes.post("/api/v1/visits/{visit_id}/admit")
@require_clinician
async def admit(request: web.Request) -> web.Response:
    svc = services(request)
    visit = await managed_visit(request)
    pid = text_field(await json_body(request), "participant_id", limit=64)
    by = await svc.own_participant(visit, clinician(request))
    try:
        await _hub(svc).admit(visit.id, pid, by.id)
    except Refused as exc:
        return _refused(exc)
    return web.json_response({"ok": True})


@routes.post("/api/v1/visits/{visit_id}/deny")
@require_clinician
async def deny(request: web.Request) -> web.Response:
    svc = services(request)
    visit = await managed_visit(request)
    body = await json_body(request)
    pid = text_field(body, "participant_id", limit=64)
    reason = text_field(body, "reason", required=False, limit=200).strip() or None
    by = await svc.own_participant(visit, clinician(request))
    try:
        await _hub(svc).deny(visit.id, pid, by.id, reason)
    except Refused as exc:
        return _refused(exc)
    return web.json_response({"ok": True})


@routes.post("/api/v1/visits/{visit_id}/ticket")
@require_clinician
async def ticket(request: web.Request) -> web.Response:
    svc = services(request)
    visit = await managed_visit(request)
    return web.json_response(await svc.clinician_ticket(visit, clinician(request)))


# ---- the call and the summary ------------------------------------------------


@routes.get("/visits/{visit_id}/call")
@login_page
async def call_page(request: web.Request) -> web.Response:
    try:
        visit = await managed_visit(request)
    except VisitError:
        return _not_found(request)
    summary = f"/visits/{visit.id}/summary"
    if visit.status in ("ended", "cancelled"):
        return _redirect(summary)
    data = {"csrf_token": request.get(CSRF_TOKEN), "visit_id": visit.id,
            "summary_url": summary, "patient_name": visit.patient_name}
    return page(request, "clinician_call.html", data=data, visit=visit, **_nav(request))


@routes.get("/visits/{visit_id}/summary")
@login_page
async def summary_page(request: web.Request) -> web.Response:
    svc = services(request)
    try:
        visit = await managed_visit(request)
    except VisitError:
        return _not_found(request)
    zone, zone_named = zone_from(request.query.get("tz"))
    people = await svc.store.participants(visit.id)
    events = await svc.timeline(visit)
    attendance = summarize(events, people, svc.clock())
    names = {p.id: f"{p.name} ({ROLE_LABELS.get(p.role, p.role)})" for p in people}
    local = Local(zone)
    return page(request, "summary.html", visit=visit, attendance=attendance, local=local,
                zone_named=zone_named, visit_type=VISIT_TYPE_LABELS.get(visit.visit_type, ""),
                role_labels=ROLE_LABELS, duration=duration,
                lines=[(e.at, text) for e in events
                       if (text := describe(e, names)) is not None],
                **_nav(request))


_ZONE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}")


def zone_from(key: str | None) -> tuple[tzinfo, bool]:
    """The IANA zone the browser named, or UTC; and whether it was a real one."""
    if key and len(key) <= 64 and _ZONE_KEY.fullmatch(key):
        try:
            return ZoneInfo(key), True
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    return UTC, False


@dataclass(frozen=True, slots=True)
class Local:
    """Times as the clinician reads them: in their zone, with the zone's short name."""

    zone: tzinfo

    def time(self, at: datetime, *, seconds: bool = True) -> str:
        t = at.astimezone(self.zone)
        clock = t.strftime("%I:%M:%S %p" if seconds else "%I:%M %p").lstrip("0")
        return f"{clock} {t.tzname()}"

    def date(self, at: datetime) -> str:
        t = at.astimezone(self.zone)
        return f"{t.strftime('%A, %B')} {t.day}, {t.year}"


# ---- the summary in plain words (pure; the arithmetic is notes.contact) ------


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `1 h 05 min`."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    h, m = divmod(s // 60, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


_SAYS = {
    "link_opened": "{who} opened their link",
    "identity_verified": "{who} confirmed the date of birth",
    "identity_failed": "{who} gave a date of birth that did not match",
    "link_locked": "{who}'s link was locked after too many attempts",
    "location": "{who} said where they are",
    "waiting": "{who} entered the waiting room",
    "admitted": "{who} joined the visit",
    "denied": "{who} was not let in",
    "reconnecting": "{who} lost the connection",
    "rejoined": "{who} reconnected",
}
_LEFT = {"left": "{who} left", "timeout": "{who} did not come back after losing the connection",
         "removed": "{who} was removed"}
_QUIET = {"media_state", "media_connected"}


def describe(event: VisitEvent, names: dict[str, str]) -> str | None:
    """One timeline line in plain words; None for what the summary leaves out."""
    who = names.get(event.participant_id or "", "Someone")
    by = names.get(str(event.detail.get("by") or ""))  # who admitted or denied them
    if event.kind in ("ended", "cancelled"):
        what = f"The visit was {event.kind}"
        return f"{what} by {who}" if event.participant_id else what
    if event.kind == "left":
        template = _LEFT.get(str(event.detail.get("reason")))
        return template.format(who=who) if template else None  # "denied": said already
    if event.kind in _QUIET:
        return None
    if by and event.kind in ("admitted", "denied"):
        return f"{who} was {event.kind} by {by}"
    return _SAYS.get(event.kind, "{who}: " + event.kind.replace("_", " ")).format(who=who)
