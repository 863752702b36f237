"""The clinician's web side over HTTP: log in and out, idle expiry, CSRF, who may see what,
the live waiting rooms, admit/deny/ticket from the dashboard, and the summary."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from telehealth.db.tables import Participant, VisitEvent
from web.clinician_pages import describe, duration, summarize, zone_from

from conftest import Clock, Running
from wsclient import close_all, connect, open_socket

PASSWORD = "correct horse battery"
DOB = "1990-04-27"


@pytest.fixture(autouse=True)
async def _close_peers() -> AsyncIterator[None]:
    yield
    await close_all()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client with a cookie jar of its own (`unsafe`: the server is on 127.0.0.1)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def login_form(server: Running, http: aiohttp.ClientSession, path: str = "/login") -> str:
    """GET the login form; the hidden CSRF field's value."""
    async with http.get(server.url + path) as resp:
        assert resp.status == 200
        found = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
    assert found is not None
    return found.group(1)


async def post_login(server: Running, http: aiohttp.ClientSession,
                     form: dict[str, str]) -> tuple[int, str, str]:
    """POST /login; (status, Location header, body)."""
    async with http.post(server.url + "/login", data=form, allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location", ""), await resp.text()


async def log_in(server: Running, http: aiohttp.ClientSession,
                 email: str = "dr.rivera@example.org") -> str:
    """Log in through the form; the session's CSRF token."""
    csrf = await login_form(server, http)
    status, location, _ = await post_login(
        server, http, {"csrf": csrf, "email": email, "password": PASSWORD})
    assert (status, location) == (303, "/dashboard")
    async with http.get(server.url + "/api/v1/me") as resp:
        body = await resp.json()
    return str(body["csrf_token"])


async def fetch(http: aiohttp.ClientSession, method: str, url: str,
                **kwargs: Any) -> tuple[int, str, str]:
    """(status, Location, body) without following redirects."""
    async with http.request(method, url, allow_redirects=False, **kwargs) as resp:
        return resp.status, resp.headers.get("Location", ""), await resp.text()


async def api(http: aiohttp.ClientSession, method: str, url: str, csrf: str | None = None,
              body: Any = None) -> tuple[int, Any]:
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    async with http.request(method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


def session_cookie(http: aiohttp.ClientSession) -> str | None:
    found = [c.value for c in http.cookie_jar if c.key == "th_session"]
    return found[0] if found else None


# ---- log in and out -------------------------------------------------------------


async def test_login_form_carries_a_strict_httponly_csrf_cookie(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    async with browser.get(server.url + "/login") as resp:
        html = await resp.text()
        cookie = resp.cookies["th_login_csrf"]
        assert resp.headers["Cache-Control"] == "no-store"
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert f'name="csrf" value="{cookie.value}"' in html
    assert 'autocomplete="current-password"' in html


async def test_login_without_the_forms_csrf_is_refused(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    await server.clinician()
    form = {"email": "dr.rivera@example.org", "password": PASSWORD}
    # No cookie at all (a form posted from elsewhere).
    status, _, html = await post_login(server, browser, {**form, "csrf": "made-up"})
    assert status == 403 and "expired" in html
    # The cookie, but a field that does not match it.
    await login_form(server, browser)
    status, _, _ = await post_login(server, browser, {**form, "csrf": "made-up"})
    assert status == 403
    assert session_cookie(browser) is None


async def test_wrong_password_shows_the_form_again(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    await server.clinician()
    csrf = await login_form(server, browser)
    status, _, html = await post_login(server, browser, {
        "csrf": csrf, "email": "dr.rivera@example.org", "password": "not it"})
    assert status == 401
    assert "That email and password do not match" in html and 'role="alert"' in html
    assert 'value="dr.rivera@example.org"' in html  # the email stays, the password not
    assert "not it" not in html
    assert session_cookie(browser) is None


async def test_log_in_see_the_dashboard_and_log_out(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    dr, _ = await server.clinician()
    await server.visit(dr, patient_name="Jordan Lee")
    csrf = await log_in(server, browser)
    status, location, _ = await fetch(browser, "GET", server.url + "/")
    assert (status, location) == (303, "/dashboard")
    status, _, html = await fetch(browser, "GET", server.url + "/dashboard")
    assert status == 200 and "Jordan Lee" in html and "Dana Rivera" in html
    assert f'name="csrf_token" value="{csrf}"' in html  # the logout form
    # Logging out needs that token; without it nothing happens.
    status, _, _ = await fetch(browser, "POST", server.url + "/logout", data={"csrf_token": "x"})
    assert status == 403
    assert (await fetch(browser, "GET", server.url + "/dashboard"))[0] == 200
    status, location, _ = await fetch(browser, "POST", server.url + "/logout",
                                      data={"csrf_token": csrf})
    assert (status, location) == (303, "/login?logged_out=1")
    status, location, _ = await fetch(browser, "GET", server.url + "/dashboard")
    assert status == 303 and location.startswith("/login")
    status, _, html = await fetch(browser, "GET", server.url + "/login?logged_out=1")
    assert "You have logged out." in html


async def test_login_goes_back_to_the_page_asked_for_but_never_elsewhere(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    await server.clinician()
    for asked, lands in (("/visits/abc/call", "/visits/abc/call"),
                         ("//evil.example/x", "/dashboard"),
                         ("https://evil.example", "/dashboard"),
                         ("/\\evil.example", "/dashboard"),
                         ("/x\r\nSet-Cookie: a=b", "/dashboard")):
        browser.cookie_jar.clear()
        csrf = await login_form(server, browser)
        status, location, _ = await post_login(server, browser, {
            "csrf": csrf, "email": "dr.rivera@example.org", "password": PASSWORD, "next": asked})
        assert (status, location) == (303, lands)


async def test_pages_send_strangers_to_login_and_the_api_answers_401(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    status, location, _ = await fetch(browser, "GET", server.url + "/")
    assert (status, location) == (303, "/login")
    for path in ("/dashboard", "/visits/v1/call", "/visits/v1/summary"):
        status, location, _ = await fetch(browser, "GET", server.url + path)
        assert (status, location) == (303, "/login?" + urlencode({"next": path}))
    for method, path in (("GET", "/api/v1/live"), ("GET", "/api/v1/dashboard"),
                         ("POST", "/api/v1/visits/v1/admit"), ("POST", "/api/v1/visits/v1/ticket")):
        status, body = await api(browser, method, server.url + path, body={})
        assert (status, body["error"]["code"]) == (401, "not_logged_in"), path


async def test_the_session_ends_after_the_idle_time(
    server: Running, browser: aiohttp.ClientSession, clock: Clock
) -> None:
    await server.clinician()
    await log_in(server, browser)
    idle = server.services.settings.session_idle_s
    # Each visit restarts the idle clock.
    for _ in range(3):
        clock.advance(seconds=idle - 60)
        assert (await fetch(browser, "GET", server.url + "/dashboard"))[0] == 200
    clock.advance(seconds=idle + 1)
    status, location, _ = await fetch(browser, "GET", server.url + "/dashboard")
    assert status == 303
    assert location == "/login?next=%2Fdashboard&expired=1"
    status, _, html = await fetch(browser, "GET", server.url + location)
    assert status == 200 and "Your session ended after a time without activity" in html
    status, body = await api(browser, "GET", server.url + "/api/v1/live")
    assert (status, body["error"]["code"]) == (401, "not_logged_in")


async def test_changes_with_the_session_cookie_need_the_csrf_header(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    dr, _ = await server.clinician()
    created = await server.visit(dr)
    csrf = await log_in(server, browser)
    url = f"{server.url}/api/v1/visits/{created.visit.id}"
    for path, body in (("/ticket", {}), ("/admit", {"participant_id": "x"}),
                       ("/deny", {"participant_id": "x"}), ("/end", {})):
        status, answer = await api(browser, "POST", url + path, body=body)
        assert (status, answer["error"]["code"]) == (403, "csrf"), path
        status, _ = await api(browser, "POST", url + path, "not-the-token", body)
        assert status == 403
    status, _ = await api(browser, "POST", url + "/ticket", csrf, {})
    assert status == 200


# ---- someone else's visit ------------------------------------------------------------


async def test_another_clinicians_visit_is_not_found_anywhere(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    rivera, _ = await server.clinician()
    await server.clinician("dr.chen@example.org", "Mo Chen")
    created = await server.visit(rivera)
    patient = await connect(server, created.link_for_role("patient"), dob=DOB)
    csrf = await log_in(server, browser, "dr.chen@example.org")
    visit_id = created.visit.id
    for path in (f"/visits/{visit_id}/call", f"/visits/{visit_id}/summary"):
        status, _, html = await fetch(browser, "GET", server.url + path)
        assert status == 404 and "Alex Morgan" not in html
    for path, body in (("admit", {"participant_id": patient.participant_id}),
                       ("deny", {"participant_id": patient.participant_id}),
                       ("ticket", {}), ("end", {})):
        status, answer = await api(browser, "POST",
                                   f"{server.url}/api/v1/visits/{visit_id}/{path}", csrf, body)
        assert (status, answer["error"]["code"]) == (404, "not_found"), path
    status, live = await api(browser, "GET", server.url + "/api/v1/live")
    assert (status, live) == (200, {})
    status, mine = await api(browser, "GET", server.url + "/api/v1/dashboard")
    assert mine == {"visits": []}
    # The patient is still waiting, untouched.
    assert patient.welcome["state"] == "waiting"
    assert patient.buffered() == []


# ---- the live waiting room, admit and deny from the dashboard --------------------------


async def test_live_shows_who_waits_and_admit_lets_them_in(
    server: Running, browser: aiohttp.ClientSession, clock: Clock
) -> None:
    dr, _ = await server.clinician()
    created = await server.visit(dr)
    csrf = await log_in(server, browser)
    status, live = await api(browser, "GET", server.url + "/api/v1/live")
    assert (status, live) == (200, {})  # no room yet

    patient = await connect(server, created.link_for_role("patient"), dob=DOB)
    clock.advance(seconds=150)
    _, live = await api(browser, "GET", server.url + "/api/v1/live")
    visit_id = created.visit.id
    assert live == {visit_id: {"waiting": [{
        "id": patient.participant_id, "role": "patient", "name": "Alex Morgan",
        "since": (clock.now - timedelta(seconds=150)).isoformat(), "waited_s": 150}],
        "in_room": []}}

    status, answer = await api(browser, "POST", f"{server.url}/api/v1/visits/{visit_id}/admit",
                               csrf, {"participant_id": patient.participant_id})
    assert (status, answer) == (200, {"ok": True})
    assert (await patient.next("admitted"))["participants"] == []  # nobody else in yet
    _, live = await api(browser, "GET", server.url + "/api/v1/live")
    assert live[visit_id] == {"waiting": [], "in_room": [
        {"id": patient.participant_id, "role": "patient", "name": "Alex Morgan"}]}
    # Someone was let in: the visit has begun.
    _, mine = await api(browser, "GET", server.url + "/api/v1/dashboard")
    assert mine["visits"][0]["status"] == "in_progress"
    clinician_pid = next(p.id for p in created.participants if p.role == "clinician")
    admitted = [e for e in await server.services.timeline(created.visit) if e.kind == "admitted"]
    assert [(e.participant_id, e.detail) for e in admitted] == [
        (patient.participant_id, {"by": clinician_pid})]

    # Admitting again: no longer waiting, in plain words.
    status, answer = await api(browser, "POST", f"{server.url}/api/v1/visits/{visit_id}/admit",
                               csrf, {"participant_id": patient.participant_id})
    assert (status, answer["error"]["code"]) == (409, "not_waiting")
    assert "no longer in the waiting room" in answer["error"]["message"]

    # Ending from the dashboard tells the patient, and the room leaves the live list.
    status, _ = await api(browser, "POST", f"{server.url}/api/v1/visits/{visit_id}/end", csrf, {})
    assert status == 200
    assert (await patient.next("ended"))["reason"] == "ended"
    _, live = await api(browser, "GET", server.url + "/api/v1/live")
    assert live == {}


async def test_deny_from_the_dashboard_with_a_reason(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    dr, _ = await server.clinician()
    created = await server.visit(dr)
    _, link = await server.services.add_participant(created.visit, role="interpreter",
                                                    name="Ana Ruiz")
    interpreter = await connect(server, link)
    csrf = await log_in(server, browser)
    url = f"{server.url}/api/v1/visits/{created.visit.id}/deny"
    status, _ = await api(browser, "POST", url, csrf, {
        "participant_id": interpreter.participant_id, "reason": "Wrong visit, sorry."})
    assert status == 200
    assert await interpreter.next("denied") == {"type": "denied", "reason": "Wrong visit, sorry."}
    assert await interpreter.closed() == 4403
    status, answer = await api(browser, "POST", url, csrf, {
        "participant_id": interpreter.participant_id})
    assert (status, answer["error"]["code"]) == (409, "not_waiting")
    status, answer = await api(browser, "POST", url, csrf, {"participant_id": 7})
    assert (status, answer["error"]["code"]) == (400, "invalid_field")


# ---- the clinician's own ticket ----------------------------------------------------------


async def test_ticket_is_a_join_answer_for_the_clinicians_own_place(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    dr, _ = await server.clinician()
    created = await server.visit(dr)
    csrf = await log_in(server, browser)
    url = f"{server.url}/api/v1/visits/{created.visit.id}/ticket"
    status, grant = await api(browser, "POST", url, csrf, {})
    assert status == 200
    _, by_link = await server.post("/api/v1/join", {
        "token": created.link_for_role("clinician").rsplit("/v/", 1)[1]})
    assert grant.keys() == by_link.keys()
    assert grant["participant"] == by_link["participant"]
    assert grant["participant"]["role"] == "clinician"
    assert grant["visit"]["clinician_name"] == "Dana Rivera"

    peer = await open_socket(server)
    await peer.hello(grant["ticket"])
    welcome = await peer.next("welcome")
    assert (welcome["state"], welcome["participant"]["role"]) == ("admitted", "clinician")
    await peer.close()

    await api(browser, "POST", f"{server.url}/api/v1/visits/{created.visit.id}/end", csrf, {})
    status, answer = await api(browser, "POST", url, csrf, {})
    assert (status, answer["error"]["code"]) == (410, "visit_ended")


async def test_a_co_clinician_gets_their_own_place(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    rivera, _ = await server.clinician()
    chen, _ = await server.clinician("dr.chen@example.org", "Mo Chen")
    created = await server.visit(rivera)
    person, _ = await server.services.add_participant(created.visit, role="co_clinician",
                                                      name="", clinician=chen)
    csrf = await log_in(server, browser, "dr.chen@example.org")
    status, grant = await api(
        browser, "POST", f"{server.url}/api/v1/visits/{created.visit.id}/ticket", csrf, {})
    assert status == 200
    assert grant["participant"] == {"id": person.id, "role": "co_clinician", "name": "Mo Chen"}


# ---- the call page and the summary -------------------------------------------------------


async def test_call_page_carries_the_visit_but_no_ticket(
    server: Running, browser: aiohttp.ClientSession
) -> None:
    dr, _ = await server.clinician()
    created = await server.visit(dr)
    await log_in(server, browser)
    status, _, html = await fetch(browser, "GET", f"{server.url}/visits/{created.visit.id}/call")
    assert status == 200
    assert '"visit_id": "' + created.visit.id in html
    assert "/static/js/clinician_call.js" in html
    assert "eyJ" not in html  # no link token or ticket in the page itself
    assert "<script>" not in html


async def test_summary_tells_who_was_there_and_for_how_long(
    server: Running, browser: aiohttp.ClientSession, clock: Clock
) -> None:
    dr, _ = await server.clinician()
    created = await server.visit(dr)
    csrf = await log_in(server, browser)
    visit_id = created.visit.id
    _, grant = await api(browser, "POST", f"{server.url}/api/v1/visits/{visit_id}/ticket",
                         csrf, {})
    me = await open_socket(server)
    await me.hello(grant["ticket"])
    await me.next("welcome")
    patient = await connect(server, created.link_for_role("patient"), dob=DOB)
    clock.advance(minutes=2)
    await api(browser, "POST", f"{server.url}/api/v1/visits/{visit_id}/admit", csrf,
              {"participant_id": patient.participant_id})
    await patient.next("admitted")
    clock.advance(minutes=25)
    await api(browser, "POST", f"{server.url}/api/v1/visits/{visit_id}/end", csrf, {})
    await patient.next("ended")

    status, _, html = await fetch(
        browser, "GET", f"{server.url}/visits/{visit_id}/summary?tz=America/New_York")
    assert status == 200
    assert "27 min" in html and "25 min" in html  # the clinician's and the patient's
    assert "Alex Morgan (Patient) entered the waiting room" in html
    assert "Alex Morgan (Patient) was admitted by Dana Rivera (Clinician)" in html
    assert html.count("The visit was ended") == 1
    assert re.search(r"\d:\d\d:\d\d [AP]M E[SD]T", html)
    status, _, html = await fetch(browser, "GET", f"{server.url}/visits/{visit_id}/summary")
    assert "Times are in UTC." in html and " UTC</time>" in html
    # An ended visit's call page leads to its summary.
    status, location, _ = await fetch(browser, "GET", f"{server.url}/visits/{visit_id}/call")
    assert (status, location) == (303, f"/visits/{visit_id}/summary")


# ---- the summary's arithmetic (pure) ------------------------------------------------------


T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def person(pid: str, role: str = "patient", name: str = "Alex Morgan") -> Participant:
    return Participant(id=pid, visit_id="v", role=role, name=name, created_at=T0,
                       failed_checks=0)


def event(minute: float, pid: str | None, kind: str, **detail: Any) -> VisitEvent:
    return VisitEvent(visit_id="v", participant_id=pid, kind=kind,
                      at=T0 + timedelta(minutes=minute), detail=detail)


def test_a_dropped_connection_does_not_count_as_time_in_the_visit() -> None:
    people = [person("dr", "clinician", "Dana Rivera"), person("p")]
    events = [event(0, "dr", "admitted", by=None), event(1, "p", "waiting"),
              event(3, "p", "admitted", by="dr"), event(10, "p", "reconnecting"),
              event(12, "p", "rejoined"), event(20, "p", "reconnecting"),
              event(21, "p", "left", reason="timeout"), event(30, None, "ended")]
    dr, p = summarize(events, people, T0 + timedelta(hours=1))
    assert (dr.first_joined, dr.last_left, dr.seconds) == (T0, events[-1].at, 30 * 60)
    assert p.first_joined == events[2].at
    assert p.seconds == (7 + 8) * 60 and p.drops == 2
    assert p.last_left == events[5].at  # when the connection dropped, not the timeout
    assert not p.still_in


def test_someone_still_in_counts_until_now_and_a_denied_guest_never_joined() -> None:
    people = [person("dr", "clinician"), person("i", "interpreter", "Ana Ruiz")]
    events = [event(0, "dr", "admitted"), event(1, "i", "waiting"),
              event(2, "i", "denied", by="dr"), event(2, "i", "left", reason="denied")]
    dr, interpreter = summarize(events, people, T0 + timedelta(minutes=5))
    assert dr.still_in and dr.seconds == 300
    assert interpreter.denied and interpreter.first_joined is None


def test_rejoining_while_waiting_is_not_time_in_the_visit() -> None:
    events = [event(0, "p", "waiting"), event(1, "p", "reconnecting"),
              event(2, "p", "rejoined"), event(5, "p", "left", reason="left")]
    (p,) = summarize(events, [person("p")], T0 + timedelta(hours=1))
    assert p.seconds == 0 and p.first_joined is None


def test_timeline_lines_in_plain_words() -> None:
    names = {"dr": "Dana Rivera (Clinician)", "p": "Alex Morgan (Patient)"}
    assert describe(event(0, "p", "admitted", by="dr"), names) == (
        "Alex Morgan (Patient) was admitted by Dana Rivera (Clinician)")
    assert describe(event(0, "p", "denied", by="dr"), names) == (
        "Alex Morgan (Patient) was denied by Dana Rivera (Clinician)")
    assert describe(event(0, "dr", "admitted", by=None), names) == (
        "Dana Rivera (Clinician) joined the visit")
    assert describe(event(0, "p", "left", reason="timeout"), names) == (
        "Alex Morgan (Patient) did not come back after losing the connection")
    assert describe(event(0, "p", "left", reason="denied"), names) is None
    assert describe(event(0, "p", "media_state", audio=True), names) is None
    assert describe(event(0, "dr", "ended"), names) == (
        "The visit was ended by Dana Rivera (Clinician)")
    assert describe(event(0, "p", "consent_signed"), names) == (
        "Alex Morgan (Patient): consent signed")
    assert describe(event(0, None, "cancelled"), names) == "The visit was cancelled"
    assert [duration(s) for s in (44.6, 60, 61 * 60 + 30, 3 * 3600)] == [
        "45 s", "1 min", "1 h 01 min", "3 h 00 min"]


def test_only_real_zone_names_are_taken() -> None:
    assert zone_from("America/New_York") == (zone_from("America/New_York")[0], True)
    for bad in (None, "", "Nope/Zone", "../../etc/passwd", "zone.tab", "A" * 100):
        assert zone_from(bad) == (UTC, False), bad
