"""Who may do what: tickets across visits, dead links, guests, the waiting room, the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from telehealth.auth import LinkClaims
from telehealth.services import CreatedVisit

from conftest import Clock, Running
from wsclient import Frame, Peer, close_all, connect, join, open_socket, token_of

DOB = "1990-04-27"
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}


@pytest.fixture(autouse=True)
async def _close_peers(server: Running) -> AsyncIterator[None]:
    yield
    await close_all()


# ---- helpers ----------------------------------------------------------------


def types(frames: list[Frame]) -> list[str]:
    return [str(f["type"]) for f in frames]


async def clinician_in(server: Running, created: CreatedVisit) -> Peer:
    dr = await connect(server, created.link_for_role("clinician"))
    assert (await dr.next("admitted"))["participants"] == []
    assert (await dr.next("waiting_room"))["waiting"] == []
    return dr


async def admit(dr: Peer, guest: Peer) -> None:
    await dr.send({"type": "admit", "participant_id": guest.participant_id})
    await guest.next("admitted")
    assert (await dr.next("participant_joined"))["participant"]["id"] == guest.participant_id


async def hello_refused(server: Running, ticket: str) -> tuple[Frame, int]:
    """Say hello with `ticket` on a fresh socket; the error frame and the close code."""
    peer = await open_socket(server)
    await peer.hello(ticket)
    err = await peer.next("error")
    code = await peer.closed()
    assert "welcome" not in types(peer.buffered())
    return err, code


async def alive(peer: Peer, ping_id: int = 99) -> None:
    assert await peer.pong(ping_id) == {"type": "pong", "id": ping_id}


# ---- a ticket names its visit -------------------------------------------------------


async def test_a_link_of_visit_a_only_ever_enters_visit_a(server: Running) -> None:
    clinician, _ = await server.clinician()
    visit_a = await server.visit(clinician, patient_name="Alex Morgan")
    visit_b = await server.visit(clinician, patient_name="Blake Chen")
    dr_a = await clinician_in(server, visit_a)
    dr_b = await clinician_in(server, visit_b)
    assert dr_a.welcome["visit_id"] == visit_a.visit.id
    assert dr_b.welcome["visit_id"] == visit_b.visit.id

    pat_a = await connect(server, visit_a.link_for_role("patient"), dob=DOB)
    assert pat_a.welcome["visit_id"] == visit_a.visit.id
    assert [w["id"] for w in (await dr_a.next("waiting_room"))["waiting"]] == [
        pat_a.participant_id]
    # B's clinician cannot see A's patient, nor admit it from B's room.
    await dr_b.send({"type": "admit", "participant_id": pat_a.participant_id})
    err = await dr_b.next("error")
    assert (err["code"], err["ref"]) == ("not_waiting", "admit")
    assert await dr_b.frames_until_quiet(0.3) == []
    assert await pat_a.frames_until_quiet(0.2) == []
    # Nor reach it (or A's clinician) with signaling.
    for target in (pat_a.participant_id, dr_a.participant_id):
        await dr_b.send({"type": "offer", "to": target, "sdp": SDP})
        err = await dr_b.next("error")
        assert (err["code"], err["ref"]) == ("unknown_participant", "offer")
    await dr_b.send({"type": "chat", "text": "for B only"})
    assert (await dr_b.next("chat"))["text"] == "for B only"
    assert await dr_a.frames_until_quiet(0.2) == []
    assert await pat_a.frames_until_quiet(0.2) == []


async def test_a_ticket_mixing_two_visits_is_refused(server: Running) -> None:
    """Even a genuinely signed ticket naming visit B and a participant of A gets nowhere."""
    clinician, _ = await server.clinician()
    visit_a = await server.visit(clinician)
    visit_b = await server.visit(clinician)
    dr_b = await clinician_in(server, visit_b)
    grant = await join(server, visit_a.link_for_role("patient"), dob=DOB)
    svc = server.services
    real = svc.signer.read_ticket(str(grant["ticket"]))
    forged = svc.signer.ticket(LinkClaims(visit_b.visit.id, real.participant_id, "patient",
                                          real.not_before, real.expires))
    err, code = await hello_refused(server, forged)
    assert (err["code"], err["ref"], code) == ("link_invalid", "hello", 4401)
    assert await dr_b.frames_until_quiet(0.3) == []
    # The same mix as a link token is refused by the join API.
    link = svc.signer.link_token(LinkClaims(visit_b.visit.id, real.participant_id, "patient",
                                            real.not_before, real.expires))
    status, body = await server.post("/api/v1/join", {"token": link, "dob": DOB})
    assert (status, body["error"]["code"]) == (401, "link_invalid")


async def test_a_link_token_is_not_a_ticket(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    err, code = await hello_refused(server, token_of(created.link_for_role("clinician")))
    assert (err["code"], code) == ("link_invalid", 4401)


# ---- dead links -------------------------------------------------------------------


async def test_expired_link_and_ticket(server: Running, clock: Clock) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    grant = await join(server, created.link_for_role("patient"), dob=DOB)
    clock.advance(hours=2, minutes=59)  # still valid
    ok = await connect(server, created.link_for_role("patient"), dob=DOB)
    assert ok.welcome["state"] == "waiting"
    clock.advance(minutes=1, seconds=1)  # 3 h after the start: over
    err, code = await hello_refused(server, str(grant["ticket"]))
    assert (err["code"], err["ref"], code) == ("link_expired", "hello", 4410)
    status, body = await server.post("/api/v1/join", {
        "token": token_of(created.link_for_role("patient")), "dob": DOB})
    assert (status, body["error"]["code"]) == (410, "link_expired")
    assert body["error"]["action"]


def _tampered(token: str) -> str:
    head, payload, sig = token.split(".")
    flipped = ("A" if sig[5] != "A" else "B")
    return ".".join((head, payload, sig[:5] + flipped + sig[6:]))


async def test_tampered_link_and_ticket(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    token = token_of(created.link_for_role("patient"))
    for bad in (_tampered(token), token[:-10], token + "x", "not-a-token"):
        status, body = await server.post("/api/v1/join", {"token": bad, "dob": DOB})
        assert (status, body["error"]["code"]) == (401, "link_invalid"), bad
    grant = await join(server, created.link_for_role("patient"), dob=DOB)
    ticket = str(grant["ticket"])
    for bad in (_tampered(ticket), ticket[:-10], "garbage"):
        err, code = await hello_refused(server, bad)
        assert (err["code"], err["ref"], code) == ("link_invalid", "hello", 4401)
    # The genuine ticket still works.
    peer = await open_socket(server)
    await peer.hello(ticket)
    assert (await peer.next("welcome"))["participant"]["id"] == grant["participant"]["id"]


async def test_cancelled_visit_revokes_links_and_tickets(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    grants = [await join(server, created.link_for_role("patient"), dob=DOB),
              await join(server, created.link_for_role("clinician"))]
    await server.services.finish_visit(created.visit, "cancelled")
    for link in created.links.values():
        status, body = await server.post("/api/v1/join", {"token": token_of(link), "dob": DOB})
        assert (status, body["error"]["code"]) == (410, "visit_cancelled")
    for grant in grants:
        err, code = await hello_refused(server, str(grant["ticket"]))
        assert (err["code"], code) == ("visit_cancelled", 4410)


# ---- guests may not run the visit ---------------------------------------------------


async def _visit_with_guest(server: Running, role: str) -> tuple[CreatedVisit, Peer, Peer]:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician, representative=role == "legal_representative")
    dr = await clinician_in(server, created)
    if role == "patient":
        guest = await connect(server, created.link_for_role("patient"), dob=DOB)
    else:
        name = "" if role == "legal_representative" else "Ana Lima"
        _, link = await server.services.add_participant(created.visit, role=role, name=name)
        dob = DOB if role == "legal_representative" else None
        guest = await connect(server, link, dob=dob,
                              name="Sam Morgan" if role == "legal_representative" else None)
    assert (await dr.next("waiting_room"))["waiting"][0]["id"] == guest.participant_id
    return created, dr, guest


@pytest.mark.parametrize("admitted", [False, True], ids=["waiting", "admitted"])
@pytest.mark.parametrize("role", ["patient", "interpreter", "legal_representative"])
async def test_a_guest_may_not_admit_deny_or_end(
    server: Running, role: str, admitted: bool
) -> None:
    created, dr, guest = await _visit_with_guest(server, role)
    # Someone else in the waiting room the guest might try to let in or turn away.
    family, link = await server.services.add_participant(
        created.visit, role="family_member", name="Lee Morgan")
    other = await connect(server, link, dob=DOB)
    if admitted:
        await admit(dr, guest)
    await dr.frames_until_quiet(0.2)
    for msg in ({"type": "admit", "participant_id": family.id},
                {"type": "deny", "participant_id": family.id, "reason": "no"},
                {"type": "end"}):
        await guest.send(msg)
        err = await guest.next("error")
        assert (err["code"], err["ref"]) == ("not_allowed", msg["type"]), msg
    await alive(guest)
    # Nothing happened: the family member still waits, the visit goes on.
    assert await other.frames_until_quiet(0.2) == []
    assert await dr.frames_until_quiet(0.2) == []
    visit = await server.services.store.visit(created.visit.id)
    assert visit is not None and visit.status == "in_progress"
    await dr.send({"type": "admit", "participant_id": family.id})
    assert (await other.next("admitted"))["participants"][0]["id"] == dr.participant_id


async def test_a_waiting_guest_gets_no_room_traffic(server: Running) -> None:
    created, dr, interp = await _visit_with_guest(server, "interpreter")
    pat = await connect(server, created.link_for_role("patient"), dob=DOB)
    await dr.next("waiting_room")
    await admit(dr, pat)
    await dr.frames_until_quiet(0.2)
    # Sent to the waiting guest: refused, nothing arrives.
    for sender in (dr, pat):
        for msg in ({"type": "offer", "to": interp.participant_id, "sdp": SDP},
                    {"type": "answer", "to": interp.participant_id, "sdp": SDP},
                    {"type": "ice", "to": interp.participant_id, "candidate": CANDIDATE}):
            await sender.send(msg)
            err = await sender.next("error")
            assert (err["code"], err["ref"]) == ("unknown_participant", msg["type"])
    # Room-wide traffic passes it by.
    await pat.send({"type": "chat", "text": "private"})
    await pat.send({"type": "media_state", "audio": False, "video": False})
    await dr.send({"type": "chat", "text": "also private"})
    assert [f["text"] for f in [await dr.next("chat"), await dr.next("chat")]] == [
        "private", "also private"]
    assert (await dr.next("media_state"))["participant_id"] == pat.participant_id
    assert types(await pat.frames_until_quiet(0.2)) == ["chat", "chat"]
    assert await interp.frames_until_quiet(0.3) == []
    # And its own sends need admission first.
    sends: list[dict[str, Any]] = [
        {"type": "offer", "to": dr.participant_id, "sdp": SDP},
        {"type": "answer", "to": dr.participant_id, "sdp": SDP},
        {"type": "ice", "to": dr.participant_id, "candidate": None},
        {"type": "chat", "text": "let me in"},
        {"type": "media_state", "audio": True, "video": True},
        {"type": "media_connected", "peer": dr.participant_id, "audio": True, "video": True},
    ]
    for msg in sends:
        await interp.send(msg)
        err = await interp.next("error")
        assert (err["code"], err["ref"]) == ("not_admitted", msg["type"])
    await alive(interp)
    assert await dr.frames_until_quiet(0.2) == []
    assert await pat.frames_until_quiet(0.2) == []
    kinds = [e.kind for e in await server.services.timeline(created.visit)
             if e.participant_id == interp.participant_id]
    assert "media_connected" not in kinds


# ---- the clinician API ----------------------------------------------------------


async def test_another_clinicians_visit_is_not_found(server: Running) -> None:
    owner, owner_token = await server.clinician()
    _, other_token = await server.clinician(email="dr.okafor@example.org", name="Ruth Okafor")
    created = await server.visit(owner)
    vid = created.visit.id
    reads = [f"/api/v1/visits/{vid}", f"/api/v1/visits/{vid}/timeline"]
    writes: list[tuple[str, dict[str, Any]]] = [
        (f"/api/v1/visits/{vid}/participants", {"role": "interpreter", "name": "Ana Lima"}),
        (f"/api/v1/visits/{vid}/cancel", {}),
        (f"/api/v1/visits/{vid}/end", {}),
    ]
    for path in reads:
        status, body = await server.get(path, other_token)
        assert (status, body["error"]["code"]) == (404, "not_found"), path
        status, body = await server.get(path)
        assert (status, body["error"]["code"]) == (401, "not_logged_in"), path
        status, body = await server.get(path, "not-a-token")
        assert (status, body["error"]["code"]) == (401, "not_logged_in"), path
    for path, payload in writes:
        status, body = await server.post(path, payload, other_token)
        assert (status, body["error"]["code"]) == (404, "not_found"), path
        status, body = await server.post(path, payload)
        assert (status, body["error"]["code"]) == (401, "not_logged_in"), path
    # Not found looks exactly like a visit that does not exist.
    status, missing = await server.get("/api/v1/visits/no-such-visit", other_token)
    status_other, other = await server.get(f"/api/v1/visits/{vid}", other_token)
    assert (status, missing) == (status_other, other)
    # Nothing changed, and the owner still sees everything.
    status, body = await server.get(f"/api/v1/visits/{vid}", owner_token)
    assert status == 200
    assert body["status"] == "scheduled"
    assert sorted(p["role"] for p in body["participants"]) == ["clinician", "patient"]
    status, body = await server.get("/api/v1/visits", other_token)
    assert (status, body["visits"]) == (200, [])


async def test_cookie_session_needs_the_csrf_token_to_change_things(server: Running) -> None:
    owner, _ = await server.clinician()
    created = await server.visit(owner)
    vid = created.visit.id
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(server.url + "/api/v1/session", json={
                "email": "dr.rivera@example.org", "password": "wrong"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "bad_credentials"
        async with browser.post(server.url + "/api/v1/session", json={
                "email": "dr.rivera@example.org", "password": "correct horse battery"}) as resp:
            assert resp.status == 200
            login = await resp.json()
            cookie = resp.cookies["th_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        csrf = str(login["csrf_token"])
        assert login["clinician"]["email"] == "dr.rivera@example.org"

        async with browser.get(server.url + f"/api/v1/visits/{vid}") as resp:
            assert resp.status == 200  # reading needs no CSRF token
        add = {"role": "interpreter", "name": "Ana Lima"}
        url = server.url + f"/api/v1/visits/{vid}/participants"
        for headers in ({}, {"X-CSRF-Token": "not-it"}, {"X-CSRF-Token": ""}):
            async with browser.post(url, json=add, headers=headers) as resp:
                assert resp.status == 403, headers
                assert (await resp.json())["error"]["code"] == "csrf"
        async with browser.get(server.url + f"/api/v1/visits/{vid}") as resp:
            roles = sorted(p["role"] for p in (await resp.json())["participants"])
            assert roles == ["clinician", "patient"]  # the refused requests added no one
        async with browser.post(url, json=add, headers={"X-CSRF-Token": csrf}) as resp:
            assert resp.status == 201
            person = await resp.json()
            assert (person["role"], person["name"]) == ("interpreter", "Ana Lima")
            assert person["link"].startswith(server.url + "/v/")
        async with browser.post(server.url + f"/api/v1/visits/{vid}/cancel",
                                headers={"X-CSRF-Token": csrf}) as resp:
            assert resp.status == 200
            assert await resp.json() == {"ok": True, "status": "cancelled"}
    # Without the cookie the same session gives nothing.
    status, body = await server.get(f"/api/v1/visits/{vid}")
    assert (status, body["error"]["code"]) == (401, "not_logged_in")
