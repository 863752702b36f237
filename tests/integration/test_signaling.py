"""Every signaling message through the real server over real WebSockets (docs/protocol.md §2)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from telehealth.config import Settings
from telehealth.services import CreatedVisit
from telehealth.signaling import protocol as p

from conftest import Clock, Running
from wsclient import Frame, Peer, close_all, connect, join, open_socket, token_of

DOB = "1990-04-27"
SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Extra settings for one test (parametrize this name to change them)."""
    return {}


@pytest.fixture
def settings(settings: Settings, settings_overrides: dict[str, Any]) -> Settings:
    return replace(settings, hello_timeout_s=0.5, reconnect_grace_s=1.0, **settings_overrides)


@pytest.fixture(autouse=True)
async def _close_peers(server: Running) -> AsyncIterator[None]:
    yield
    await close_all()


# ---- helpers ----------------------------------------------------------------


async def clinician_in(server: Running, **visit: Any) -> tuple[CreatedVisit, Peer]:
    """A visit with its clinician connected, its welcome frames taken."""
    clinician, _ = await server.clinician()
    created = await server.visit(clinician, **visit)
    dr = await connect(server, created.link_for_role("clinician"))
    assert (await dr.next("admitted"))["participants"] == []
    assert (await dr.next("waiting_room"))["waiting"] == []
    return created, dr


async def waiting_ids(dr: Peer) -> list[str]:
    return [w["id"] for w in (await dr.next("waiting_room"))["waiting"]]


async def admit(dr: Peer, guest: Peer) -> Frame:
    """Admit a guest who is waiting; the `admitted` frame it gets."""
    assert guest.participant_id in await waiting_ids(dr)
    await dr.send({"type": "admit", "participant_id": guest.participant_id})
    admitted = await guest.next("admitted")
    joined = await dr.next("participant_joined")
    assert joined["participant"]["id"] == guest.participant_id
    assert guest.participant_id not in await waiting_ids(dr)
    return admitted


async def in_session(server: Running) -> tuple[CreatedVisit, Peer, Peer]:
    """Clinician and patient both in the room, all entry frames taken."""
    created, dr = await clinician_in(server)
    pat = await connect(server, created.link_for_role("patient"), dob=DOB)
    await admit(dr, pat)
    return created, dr, pat


def types(frames: list[Frame]) -> list[str]:
    return [str(f["type"]) for f in frames]


async def alive(peer: Peer, ping_id: int = 4242) -> None:
    """The connection still works: a ping gets its pong."""
    assert await peer.pong(ping_id) == {"type": "pong", "id": ping_id}


# ---- entering ---------------------------------------------------------------


async def test_clinician_enters_directly_and_patient_waits(server: Running) -> None:
    created, dr = await clinician_in(server)
    assert dr.welcome == {
        "type": "welcome", "v": 1,
        "participant": {"id": dr.participant_id, "role": "clinician", "name": "Dana Rivera"},
        "visit_id": created.visit.id, "state": "admitted", "resumed": False,
        "heartbeat_s": 5.0,
    }
    pat = await connect(server, created.link_for_role("patient"), dob=DOB)
    assert pat.welcome["state"] == "waiting"
    assert pat.welcome["participant"] == {
        "id": pat.participant_id, "role": "patient", "name": "Alex Morgan"}
    assert pat.welcome["resumed"] is False
    room = await dr.next("waiting_room")
    assert len(room["waiting"]) == 1
    entry = room["waiting"][0]
    assert {k: entry[k] for k in ("id", "role", "name")} == {
        "id": pat.participant_id, "role": "patient", "name": "Alex Morgan"}
    assert datetime.fromisoformat(entry["since"]) == server.services.clock()
    # A waiting guest hears nothing of the room, not even an `admitted` list.
    assert await pat.frames_until_quiet(0.3) == []


async def test_admit_lets_the_patient_in(server: Running) -> None:
    _, dr, pat = await in_session(server)  # `admit` checks the frames to both sides
    await pat.send({"type": "chat", "text": "hello?"})
    assert (await dr.next("chat"))["text"] == "hello?"


async def test_admitted_frame_lists_who_is_in(server: Running) -> None:
    created, dr = await clinician_in(server)
    pat = await connect(server, created.link_for_role("patient"), dob=DOB)
    admitted = await admit(dr, pat)
    assert admitted == {"type": "admitted", "participants": [{
        "id": dr.participant_id, "role": "clinician", "name": "Dana Rivera",
        "audio": True, "video": True, "screen": False, "state": "connected"}]}
    kinds = [e.kind for e in await server.services.timeline(created.visit)
             if e.participant_id == pat.participant_id]
    assert kinds[-2:] == ["waiting", "admitted"]


async def test_deny_closes_the_guest_with_4403(server: Running) -> None:
    created, dr = await clinician_in(server)
    pat = await connect(server, created.link_for_role("patient"), dob=DOB)
    assert await waiting_ids(dr) == [pat.participant_id]
    await dr.send({"type": "deny", "participant_id": pat.participant_id,
                   "reason": "Please call the office first."})
    assert await pat.next("denied") == {"type": "denied",
                                        "reason": "Please call the office first."}
    assert await pat.closed() == 4403
    assert await waiting_ids(dr) == []
    # Never admitted: the room is not told anyone left.
    assert "participant_left" not in types(await dr.frames_until_quiet(0.3))
    # A second deny finds no one waiting.
    await dr.send({"type": "deny", "participant_id": pat.participant_id})
    err = await dr.next("error")
    assert (err["code"], err["ref"]) == ("not_waiting", "deny")


async def test_admit_of_someone_not_waiting(server: Running) -> None:
    _, dr, pat = await in_session(server)
    for pid in (pat.participant_id, "no-such-person"):
        await dr.send({"type": "admit", "participant_id": pid})
        err = await dr.next("error")
        assert (err["code"], err["ref"]) == ("not_waiting", "admit")
    await alive(dr)


# ---- relay ------------------------------------------------------------------


async def test_offer_answer_and_ice_are_relayed_with_from(server: Running) -> None:
    _, dr, pat = await in_session(server)
    await pat.send({"type": "offer", "to": dr.participant_id, "sdp": SDP})
    assert await dr.next("offer") == {"type": "offer", "from": pat.participant_id, "sdp": SDP}
    await dr.send({"type": "answer", "to": pat.participant_id, "sdp": SDP + "a=x\r\n"})
    assert await pat.next("answer") == {
        "type": "answer", "from": dr.participant_id, "sdp": SDP + "a=x\r\n"}
    await pat.send({"type": "ice", "to": dr.participant_id, "candidate": CANDIDATE})
    assert await dr.next("ice") == {
        "type": "ice", "from": pat.participant_id, "candidate": CANDIDATE}
    await dr.send({"type": "ice", "to": pat.participant_id, "candidate": None})
    assert await pat.next("ice") == {"type": "ice", "from": dr.participant_id, "candidate": None}
    # Nothing else went either way (no echo to the sender).
    assert await dr.frames_until_quiet(0.2) == []
    assert await pat.frames_until_quiet(0.2) == []


@pytest.mark.parametrize("to", ["self", "nobody"])
async def test_relay_to_someone_not_in_the_room(server: Running, to: str) -> None:
    _, dr, pat = await in_session(server)
    target = dr.participant_id if to == "self" else "nobody"
    await dr.send({"type": "offer", "to": target, "sdp": SDP})
    err = await dr.next("error")
    assert (err["code"], err["ref"]) == ("unknown_participant", "offer")
    assert await pat.frames_until_quiet(0.2) == []


async def test_bad_ice_candidate_is_refused(server: Running) -> None:
    _, dr, pat = await in_session(server)
    await dr.send({"type": "ice", "to": pat.participant_id, "candidate": {"sdpMid": "0"}})
    err = await dr.next("error")
    assert err["code"] == "missing_field"
    assert await pat.frames_until_quiet(0.2) == []
    await alive(dr)


# ---- chat, media ------------------------------------------------------------


async def test_chat_reaches_everyone_admitted_including_the_sender(
    server: Running
) -> None:
    _, dr, pat = await in_session(server)
    await pat.send({"type": "chat", "text": "Can you hear me?"})
    for peer in (dr, pat):
        chat = await peer.next("chat")
        assert {k: chat[k] for k in ("from", "name", "text")} == {
            "from": pat.participant_id, "name": "Alex Morgan", "text": "Can you hear me?"}
        assert datetime.fromisoformat(chat["at"]) == server.services.clock()
        assert set(chat) == {"type", "from", "name", "text", "at"}


async def test_media_state_goes_to_everyone_else(server: Running) -> None:
    created, dr, pat = await in_session(server)
    await pat.send({"type": "media_state", "audio": False, "video": True})
    assert await dr.next("media_state") == {
        "type": "media_state", "participant_id": pat.participant_id,
        "audio": False, "video": True, "screen": False}
    await pat.send({"type": "media_state", "audio": True, "video": False, "screen": True})
    assert await dr.next("media_state") == {
        "type": "media_state", "participant_id": pat.participant_id,
        "audio": True, "video": False, "screen": True}
    assert "media_state" not in types(await pat.frames_until_quiet(0.2))
    # A newcomer sees the state in its `admitted` list.
    interp, _ = await server.services.add_participant(
        created.visit, role="interpreter", name="Ana Lima")
    link = server.services.link_for(created.visit, interp)
    guest = await connect(server, link)
    admitted = await admit(dr, guest)
    listed = {p["id"]: p for p in admitted["participants"]}
    assert (listed[pat.participant_id]["audio"], listed[pat.participant_id]["video"],
            listed[pat.participant_id]["screen"]) == (True, False, True)


async def test_media_connected_lands_in_the_timeline(server: Running) -> None:
    created, dr, pat = await in_session(server)
    await pat.send({"type": "media_connected", "peer": dr.participant_id,
                    "audio": True, "video": False})
    await alive(pat)  # processed in order: the record exists once the pong is back
    events = [e for e in await server.services.timeline(created.visit)
              if e.kind == "media_connected"]
    assert [(e.participant_id, e.detail) for e in events] == [
        (pat.participant_id, {"peer": dr.participant_id, "audio": True, "video": False})]
    # Nothing is sent to the peer for it.
    assert await dr.frames_until_quiet(0.2) == []
    await pat.send({"type": "media_connected", "peer": "ghost", "audio": True, "video": True})
    err = await pat.next("error")
    assert (err["code"], err["ref"]) == ("unknown_participant", "media_connected")


async def test_ping_pong(server: Running) -> None:
    _, dr = await clinician_in(server)
    await dr.send({"type": "ping", "id": 7})
    assert await dr.next("pong") == {"type": "pong", "id": 7}
    await dr.send({"type": "ping"})
    assert await dr.next("pong") == {"type": "pong"}


# ---- leaving and ending -----------------------------------------------------


async def test_leave_closes_1000_and_tells_the_room(server: Running) -> None:
    created, dr, pat = await in_session(server)
    await pat.send({"type": "leave"})
    assert await pat.closed() == 1000
    assert await dr.next("participant_left") == {
        "type": "participant_left", "participant_id": pat.participant_id, "reason": "left"}
    # Gone, not reconnecting: no `reconnecting` follows the close.
    assert "reconnecting" not in types(await dr.frames_until_quiet(0.3))
    left = [e for e in await server.services.timeline(created.visit) if e.kind == "left"]
    assert [(e.participant_id, e.detail) for e in left] == [
        (pat.participant_id, {"reason": "left"})]


async def test_end_closes_everyone_and_kills_every_link(server: Running) -> None:
    created, dr, pat = await in_session(server)
    interp, interp_link = await server.services.add_participant(
        created.visit, role="interpreter", name="Ana Lima")
    waiting = await connect(server, interp_link)
    assert await waiting_ids(dr) == [interp.id]
    await dr.send({"type": "end"})
    for peer in (dr, pat, waiting):
        assert await peer.next("ended") == {"type": "ended", "reason": "ended",
                                            "by": "Dana Rivera"}
        assert await peer.closed() == 4410
    visit = await server.services.store.visit(created.visit.id)
    assert visit is not None and visit.status == "ended"
    links = [*created.links.values(), interp_link]
    assert len(links) == 3
    for link in links:
        status, body = await server.post("/api/v1/join", {"token": token_of(link), "dob": DOB})
        assert (status, body["error"]["code"]) == (410, "visit_ended"), link
    # A ticket obtained before the end does not get back in.
    again = await open_socket(server)
    await again.hello(str(pat.grant["ticket"]))
    err = await again.next("error")
    assert (err["code"], err["ref"]) == ("visit_ended", "hello")
    assert await again.closed() == 4410
    assert "ended" in [e.kind for e in await server.services.timeline(created.visit)]


async def test_cancelling_tells_a_waiting_patient(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    pat = await connect(server, created.link_for_role("patient"), dob=DOB)
    assert pat.welcome["state"] == "waiting"
    await server.services.finish_visit(created.visit, "cancelled")
    assert await pat.next("ended") == {"type": "ended", "reason": "cancelled", "by": None}
    assert await pat.closed() == 4410
    status, body = await server.post("/api/v1/join", {
        "token": token_of(created.link_for_role("patient")), "dob": DOB})
    assert (status, body["error"]["code"]) == (410, "visit_cancelled")


# ---- every error keeps the connection -----------------------------------------

BAD_FRAMES: list[tuple[str, str | bytes, str, str | None]] = [
    ("invalid_json", "{not json", "invalid_json", None),
    ("truncated_json", '{"type": "ping"', "invalid_json", None),
    ("binary", b"\x00\x01binary", "invalid_json", None),
    ("not_an_object", "[1, 2, 3]", "not_an_object", None),
    ("string", '"ping"', "not_an_object", None),
    ("unknown_type", '{"type": "dance"}', "unknown_type", "dance"),
    ("no_type", '{"text": "hi"}', "unknown_type", None),
    ("unknown_field", '{"type": "ping", "id": 1, "color": "red"}', "unknown_field", "ping"),
    ("missing_field", '{"type": "chat"}', "missing_field", "chat"),
    ("invalid_field", '{"type": "chat", "text": 5}', "invalid_field", "chat"),
    ("bool_is_not_int", '{"type": "ping", "id": true}', "invalid_field", "ping"),
    ("empty_chat", '{"type": "chat", "text": "   "}', "invalid_field", "chat"),
    ("long_chat", json.dumps({"type": "chat", "text": "x" * 2001}), "invalid_field", "chat"),
    ("too_large", json.dumps({"type": "chat", "text": "x" * 70_000}), "too_large", None),
]


@pytest.mark.parametrize(("frame", "code", "ref"), [b[1:] for b in BAD_FRAMES],
                         ids=[b[0] for b in BAD_FRAMES])
async def test_bad_frame_gets_an_error_and_the_connection_lives(
    server: Running, frame: str | bytes, code: str, ref: str | None
) -> None:
    _, dr, pat = await in_session(server)
    await pat.send_raw(frame)
    err = await pat.next("error")
    assert err["code"] == code
    assert err.get("ref") == ref
    assert isinstance(err["message"], str) and err["message"]
    await alive(pat)
    # The other side saw nothing of it, and the sender is still in the room.
    assert await dr.frames_until_quiet(0.2) == []
    await pat.send({"type": "chat", "text": "still here"})
    assert (await dr.next("chat"))["text"] == "still here"


@pytest.mark.parametrize(("frame", "code"), [b[1:3] for b in BAD_FRAMES],
                         ids=[b[0] for b in BAD_FRAMES])
async def test_bad_frame_before_hello_keeps_the_socket_for_hello(
    server: Running, frame: str | bytes, code: str
) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    grant = await join(server, created.link_for_role("clinician"))
    peer = await open_socket(server)
    await peer.send_raw(frame)
    assert (await peer.next("error"))["code"] == code
    await peer.hello(str(grant["ticket"]))
    assert (await peer.next("welcome"))["state"] == "admitted"


async def test_a_flood_is_rate_limited_and_the_connection_lives(server: Running) -> None:
    _, dr = await clinician_in(server)
    assert server.services.settings.rate_burst == 100
    flood = 250
    for i in range(flood):
        await dr.send({"type": "ping", "id": i})
    frames = await dr.frames_until_quiet(0.5)
    pongs = [f["id"] for f in frames if f["type"] == "pong"]
    limited = [f for f in frames if f["type"] == "error"]
    assert pongs[:100] == list(range(100))  # the burst goes through, in order
    assert 100 <= len(pongs) < flood
    assert 1 <= len(limited) <= 2  # at most one warning a second
    assert {f["code"] for f in limited} == {"rate_limited"}
    assert set(types(frames)) == {"pong", "error"}
    await asyncio.sleep(0.1)  # the bucket refills at rate_per_s
    await alive(dr)


# ---- hello ----------------------------------------------------------------------


async def test_hello_is_required_first_and_a_good_hello_still_works(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    grant = await join(server, created.link_for_role("patient"), dob=DOB)
    peer = await open_socket(server)
    for frame in ({"type": "ping", "id": 1}, {"type": "chat", "text": "hi"}):
        await peer.send(frame)
        err = await peer.next("error")
        assert (err["code"], err["ref"]) == ("hello_required", frame["type"])
    assert "pong" not in types(peer.buffered())
    await peer.hello(str(grant["ticket"]))
    welcome = await peer.next("welcome")
    assert (welcome["state"], welcome["participant"]["id"]) == (
        "waiting", grant["participant"]["id"])


async def test_hello_twice(server: Running) -> None:
    _, dr = await clinician_in(server)
    await dr.hello(str(dr.grant["ticket"]))
    err = await dr.next("error")
    assert (err["code"], err["ref"]) == ("already_said_hello", "hello")
    await alive(dr)
    assert "welcome" not in types(await dr.frames_until_quiet(0.2))


async def test_unsupported_version_closes_4400(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    grant = await join(server, created.link_for_role("clinician"))
    peer = await open_socket(server)
    await peer.hello(str(grant["ticket"]), v=2)
    err = await peer.next("error")
    assert (err["code"], err["ref"]) == ("version_unsupported", "hello")
    assert await peer.closed() == 4400
    assert "welcome" not in types(peer.buffered())


async def test_no_hello_in_time_closes_4400(server: Running) -> None:
    assert server.services.settings.hello_timeout_s == 0.5
    loop = asyncio.get_running_loop()
    peer = await open_socket(server)
    started = loop.time()
    await peer.send_raw("garbage")  # talking, but not saying hello, does not help
    assert await peer.closed(timeout=5) == 4400
    assert 0.4 <= loop.time() - started < 3.0
    assert types(peer.buffered()) == ["error"]


# ---- reconnecting ---------------------------------------------------------------


async def test_a_dropped_patient_comes_back_within_the_grace(server: Running) -> None:
    created, dr, pat = await in_session(server)
    await pat.drop()
    assert await dr.next("reconnecting") == {
        "type": "reconnecting", "participant_id": pat.participant_id}
    back = await connect(server, created.link_for_role("patient"), dob=DOB)
    assert back.participant_id == pat.participant_id
    assert (back.welcome["state"], back.welcome["resumed"]) == ("admitted", True)
    admitted = await back.next("admitted")
    assert [(p["id"], p["state"]) for p in admitted["participants"]] == [
        (dr.participant_id, "connected")]
    assert await dr.next("rejoined") == {"type": "rejoined", "participant_id": pat.participant_id}
    # No second admission: the clinician sees no waiting room entry and no join.
    later = await dr.frames_until_quiet(0.3)
    assert "participant_joined" not in types(later)
    assert all(not f["waiting"] for f in later if f["type"] == "waiting_room")
    # And the room works again.
    await dr.send({"type": "offer", "to": back.participant_id, "sdp": SDP})
    assert (await back.next("offer"))["from"] == dr.participant_id
    kinds = [e.kind for e in await server.services.timeline(created.visit)
             if e.participant_id == pat.participant_id
             and e.kind in ("waiting", "admitted", "reconnecting", "rejoined")]
    assert kinds == ["waiting", "admitted", "reconnecting", "rejoined"]


async def test_the_others_see_a_reconnecting_participant_in_admitted(server: Running) -> None:
    created, dr, pat = await in_session(server)
    await pat.drop()
    await dr.next("reconnecting")
    _, link = await server.services.add_participant(
        created.visit, role="interpreter", name="Ana Lima")
    guest = await connect(server, link)
    admitted = await admit(dr, guest)
    states = {p["id"]: p["state"] for p in admitted["participants"]}
    assert states == {dr.participant_id: "connected", pat.participant_id: "reconnecting"}


async def test_after_the_grace_a_dropped_patient_is_gone(server: Running, clock: Clock) -> None:
    created, dr, pat = await in_session(server)
    await pat.drop()
    await dr.next("reconnecting")
    clock.advance(seconds=1.5)  # reconnect_grace_s is 1.0 in this module
    assert await dr.next("participant_left", timeout=3) == {
        "type": "participant_left", "participant_id": pat.participant_id, "reason": "timeout"}
    # Coming back now means waiting to be admitted again.
    back = await connect(server, created.link_for_role("patient"), dob=DOB)
    assert (back.welcome["state"], back.welcome["resumed"]) == ("waiting", False)
    assert await waiting_ids(dr) == [pat.participant_id]


async def test_a_second_socket_replaces_the_first_with_4409(server: Running) -> None:
    created, dr, pat = await in_session(server)
    second = await connect(server, created.link_for_role("patient"), dob=DOB)
    assert await pat.closed() == 4409
    assert (second.welcome["state"], second.welcome["resumed"]) == ("admitted", True)
    assert await dr.next("rejoined") == {"type": "rejoined",
                                         "participant_id": pat.participant_id}
    # The replaced socket's close is no drop: the patient stays in, connected.
    later = types(await dr.frames_until_quiet(0.3))
    assert "reconnecting" not in later and "participant_left" not in later
    await second.send({"type": "chat", "text": "new tab"})
    assert (await dr.next("chat"))["from"] == pat.participant_id


async def test_a_waiting_guest_replaced_keeps_its_place(server: Running) -> None:
    created, dr = await clinician_in(server)
    pat = await connect(server, created.link_for_role("patient"), dob=DOB)
    assert await waiting_ids(dr) == [pat.participant_id]
    second = await connect(server, created.link_for_role("patient"), dob=DOB)
    assert await pat.closed() == 4409
    assert (second.welcome["state"], second.welcome["resumed"]) == ("waiting", True)
    assert await waiting_ids(dr) == [pat.participant_id]
    await dr.send({"type": "admit", "participant_id": pat.participant_id})
    assert (await second.next("admitted"))["participants"][0]["id"] == dr.participant_id


# ---- three in the room ----------------------------------------------------------


async def test_three_way_visit_relays_pairwise(server: Running) -> None:
    created, dr = await clinician_in(server, representative=True)
    _, rep_link = await server.services.add_participant(
        created.visit, role="legal_representative", name="")
    pat = await connect(server, created.link_for_role("patient"), dob=DOB)
    await admit(dr, pat)
    rep = await connect(server, rep_link, dob=DOB, name="Sam Morgan")
    assert rep.welcome["participant"]["role"] == "legal_representative"
    admitted = await admit(dr, rep)
    assert {p["id"] for p in admitted["participants"]} == {dr.participant_id,
                                                            pat.participant_id}
    joined = await pat.next("participant_joined")
    assert joined["participant"]["id"] == rep.participant_id
    peers = {"dr": dr, "pat": pat, "rep": rep}
    for sender_name, sender in peers.items():
        for target_name, target in peers.items():
            if target is sender:
                continue
            sdp = f"{SDP}a={sender_name}-to-{target_name}\r\n"
            await sender.send({"type": "offer", "to": target.participant_id, "sdp": sdp})
            assert await target.next("offer") == {
                "type": "offer", "from": sender.participant_id, "sdp": sdp}
    # Each got exactly its two offers, nothing more.
    for peer in peers.values():
        assert await peer.frames_until_quiet(0.2) == []
    await rep.send({"type": "chat", "text": "I am her father."})
    for peer in peers.values():
        assert (await peer.next("chat"))["from"] == rep.participant_id
    await rep.send({"type": "leave"})
    assert await rep.closed() == 1000
    for peer in (dr, pat):
        left = await peer.next("participant_left")
        assert (left["participant_id"], left["reason"]) == (rep.participant_id, "left")


@pytest.mark.parametrize("frame", [
    r'{"type": "chat", "text": "lone \ud800 surrogate"}',
    r'{"type": "offer", "to": "TO", "sdp": "\udfff"}',
    r'{"type": "ping", "\udc00": 1}',
    r'{"type": "\ud83d"}',
], ids=["chat", "offer", "field_name", "type"])
async def test_escaped_lone_surrogates_are_relayed_or_refused_cleanly(
    server: Running, frame: str
) -> None:
    """JSON may escape a lone surrogate (no UTF-8 for it): it must not break a socket."""
    _, dr, pat = await in_session(server)
    await pat.send_raw(frame.replace("TO", dr.participant_id))
    sent = json.loads(frame.replace("TO", dr.participant_id))
    if sent["type"] == "chat":
        for peer in (dr, pat):
            assert (await peer.next("chat"))["text"] == sent["text"]
    elif sent["type"] == "offer":
        assert (await dr.next("offer"))["sdp"] == sent["sdp"]
    else:
        assert (await pat.next("error"))["code"] in ("unknown_field", "unknown_type")
    await alive(pat)
    await pat.send({"type": "chat", "text": "after"})
    assert (await dr.next("chat"))["text"] == "after"
    assert (await pat.next("chat"))["text"] == "after"


# ---- garbage never hurts the other side -----------------------------------------

# Any code point, lone surrogates too: json.dumps sends those as \\udXXX escapes.
_char = st.characters() | st.characters() | st.integers(0xD800, 0xDFFF).map(chr)
_text = st.lists(_char, max_size=20).map("".join)
_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=False) | _text)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_text, inner, max_size=3), max_leaves=8)
_candidate = st.fixed_dictionaries(
    {"candidate": _text}, optional={"sdpMid": st.none() | _text,
                                    "sdpMLineIndex": st.none() | st.integers(-5, 5),
                                    "usernameFragment": _json})
# Every client type but `leave` (that one would end the test's session).
_TYPES = sorted(set(p.MESSAGES) - {"leave"})


def _value(kind: type, ids: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Mostly a value of the declared kind, sometimes anything."""
    right: st.SearchStrategy[Any]
    if kind is str:
        right = st.sampled_from(ids) | _text
    elif kind is bool:
        right = st.booleans()
    elif kind is int:
        right = st.integers(-(2**40), 2**40)
    else:
        right = st.none() | _candidate
    return right | right | right | _json


@st.composite
def garbage_frame(draw: st.DrawFn, ids: tuple[str, str]) -> str | bytes:
    """A frame of any shape: raw text, raw bytes, any JSON, or a message, maybe bent."""
    kind = draw(st.sampled_from(["text", "bytes", "json", "object", "message", "message"]))
    if kind == "text":
        return draw(st.text(max_size=60))
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    if kind == "json":
        return json.dumps(draw(_json))
    obj: dict[str, Any] = {}
    if kind == "object":
        obj = draw(st.dictionaries(_text, _json, max_size=4))
        obj["type"] = draw(st.sampled_from(_TYPES) | _text.filter(lambda t: t != "leave")
                           | _scalars)
        return json.dumps(obj)
    type_ = draw(st.sampled_from(_TYPES))
    obj["type"] = type_
    for name, field in p.MESSAGES[type_].FIELDS.items():
        if draw(st.integers(0, 9)) > 0:  # now and then a field is missing
            obj[name] = draw(_value(field.kind, (*ids, "ghost")))
    if draw(st.integers(0, 9)) == 0:
        obj[draw(_text)] = draw(_json)
    return json.dumps(obj)


@pytest.fixture
async def pair(server: Running) -> tuple[Peer, Peer]:
    """Clinician and patient in the room, shared by every example of a hypothesis test."""
    _, dr, pat = await in_session(server)
    return dr, pat


_counter = itertools.count(10**9)


def relays_expected(frames: list[str | bytes], sender: str, other: str) -> list[Frame]:
    """What `other` must receive for `frames` from `sender` (a patient in the room).

    The frame parser (unit-tested on its own) is the oracle for which frames are
    well formed; what the service then does with them is what is under test here.
    """
    out: list[Frame] = []
    for raw in frames:
        if isinstance(raw, bytes):
            continue
        try:
            msg = p.parse(raw, 64 * 1024)
        except p.ProtocolError:
            continue
        if isinstance(msg, p.Chat):
            out.append({"type": "chat", "from": sender, "text": msg.text})
        elif isinstance(msg, p.Offer | p.Answer) and msg.to == other:
            out.append({"type": msg.TYPE, "from": sender, "sdp": msg.sdp})
        elif isinstance(msg, p.Ice) and msg.to == other:
            out.append({"type": "ice", "from": sender, "candidate": msg.candidate})
        elif isinstance(msg, p.MediaState):
            out.append({"type": "media_state", "participant_id": sender,
                        "audio": msg.audio, "video": msg.video})
    return out


def _shown(frame: Frame) -> Frame:
    """A relayed frame without the fields the service adds (time, name, screen)."""
    return {k: v for k, v in frame.items() if k not in ("at", "name", "screen")}


@pytest.mark.parametrize("settings_overrides", [{"rate_burst": 1_000_000}], ids=["no-limit"])
# No shrinking: a failing example is reported as drawn (shrinking through 5 s waits
# would outlast the test timeout).
@hypothesis_settings(max_examples=80, deadline=None, database=None, phases=[Phase.generate],
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(data=st.data())
async def test_garbage_from_one_participant_never_disturbs_the_other(
    pair: tuple[Peer, Peer], data: st.DataObject
) -> None:
    dr, pat = pair
    ids = (dr.participant_id, pat.participant_id)
    frames = data.draw(st.lists(garbage_frame(ids), min_size=1, max_size=6), label="frames")
    n = next(_counter)
    for frame in frames:
        await pat.send_raw(frame)
    # The patient is still connected...
    assert await pat.pong(n) == {"type": "pong", "id": n}
    await pat.frames_until_quiet(0)
    # ...and the clinician got exactly the relays of the well-formed frames, then
    # the marker (one connection's frames are handled in order).
    marker = f"marker {n}"
    await pat.send({"type": "chat", "text": marker})
    got: list[Frame] = []
    while True:
        chat = await dr.next("chat")
        if chat["text"] == marker:
            break
        got.append(chat)
    got += [f for f in await dr.frames_until_quiet(0) if f["type"] != "pong"]
    got.sort(key=lambda f: f["type"] == "chat")  # `next` took the chats out of order
    expected = relays_expected(frames, pat.participant_id, dr.participant_id)
    expected.sort(key=lambda f: f["type"] == "chat")
    assert [_shown(f) for f in got] == expected
    assert await dr.pong(n) == {"type": "pong", "id": n}
