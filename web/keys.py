"""Typed application keys shared by the web handlers."""

from __future__ import annotations

from aiohttp import web

from telehealth.db.tables import Clinician
from telehealth.services import Services

SERVICES = web.AppKey("services", Services)
CLINICIAN = web.RequestKey("clinician", Clinician)  # set by `web.security.require_clinician`
CSRF_TOKEN = web.RequestKey("csrf_token", str)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def clinician(request: web.Request) -> Clinician:
    return request[CLINICIAN]
