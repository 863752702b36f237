"""Who is asking, and the headers and logs that keep health data and tokens in.

- Clinicians: a session cookie (HttpOnly, SameSite=Strict, Secure behind HTTPS)
  whose state-changing requests carry the CSRF token in `X-CSRF-Token`; or an
  API token as `Authorization: Bearer ...` (no cookie, so no CSRF).
- Every response: CSP without inline script, `Referrer-Policy: no-referrer`,
  `Cache-Control: no-store` on API and visit pages.
- The access log names the route, never the path: link tokens live in paths.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from consent.errors import ConsentError
from notes import NotesError
from telehealth.auth import AuthError, token_digest
from telehealth.db.store import StoreError
from telehealth.visits import VisitError
from web.keys import CLINICIAN, CSRF_TOKEN, services

SESSION_COOKIE = "th_session"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")

_STATUS = {
    "bad_request": 400, "invalid_field": 400, "link_invalid": 401, "dob_required": 401,
    "name_required": 401, "identity_mismatch": 401, "not_logged_in": 401,
    "bad_credentials": 401, "csrf": 403, "forbidden": 403, "link_not_yet_valid": 403,
    "not_found": 404, "exists": 409, "bad_state": 409, "link_expired": 410,
    "visit_cancelled": 410, "visit_ended": 410, "participant_removed": 410,
    "no_representative_on_record": 409, "link_locked": 423, "throttled": 429,
    "consent_required": 403, "busy": 503,
    "no_consent_session": 401, "consent_revoked": 410, "disclosure_required": 409,
    "name_mismatch": 400, "not_ready": 409, "out_of_order": 409, "field_already_signed": 409,
    "already_complete": 409, "signing_expired": 410, "signing_conflict": 409,
    "bad_signature": 400, "bad_public_key": 400, "unknown_template": 404, "too_large": 413,
    "bad_document": 400, "no_such_field": 409,
    "note_signed": 409, "note_changed": 409, "note_not_signed": 409, "sections_empty": 409,
    "carried_unreviewed": 409, "visit_not_held": 409, "no_last_note": 404,
    "unknown_format": 400, "unknown_section": 400, "add_on_not_offered": 400,
    "certificate_not_allowed": 403,
}


def error_response(code: str, message: str, action: str = "", **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, "action": action, **extra}}
    return web.json_response(body, status=_STATUS.get(code, 400))


@web.middleware
async def errors_and_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except (VisitError, NotesError) as exc:
        response = error_response(exc.code, exc.message, exc.action, **exc.extra)
    except (AuthError, StoreError, ConsentError) as exc:
        response = error_response(exc.code, exc.message)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def current_clinician(request: web.Request) -> Any:
    """The clinician behind a Bearer API token or a session cookie, or AuthError."""
    svc = services(request)
    now = svc.clock()
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        found = await svc.store.clinician_for_api_token(token_digest(auth[7:].strip()), now)
        if found is None:
            raise AuthError("not_logged_in", "That API token is not valid.")
        return found
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise AuthError("not_logged_in", "Please log in.")
    session = await svc.store.touch_web_session(
        token_digest(cookie), idle=timedelta(seconds=svc.settings.session_idle_s), now=now)
    if session is None:
        raise AuthError("not_logged_in", "Your session has ended. Please log in again.")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
            raise AuthError("csrf", "This request is missing its security token; reload the page.")
    request[CSRF_TOKEN] = session.csrf_token
    return await svc.store.clinician(session.clinician_id)


def require_clinician(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        found = await current_clinician(request)
        if found is None:
            raise AuthError("not_logged_in", "Please log in.")
        request[CLINICIAN] = found
        return await handler(request)
    return wrapped


class RedactingAccessLogger(AbstractAccessLogger):
    """Logs method, route (not path: tokens live there), status and time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = "-"
        match_info = getattr(request, "match_info", None)
        if match_info is not None and match_info.route.resource is not None:
            route = match_info.route.resource.canonical
        self.logger.info("%s %s %s %.1fms", request.method, route, response.status, time * 1000)


access_log = logging.getLogger("telehealth.access")
