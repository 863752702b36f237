"""A real visit of two headless participants (aiortc) through the server, with the
server's clock moved by hand: the draft note waiting at the end has the right times,
people, modality and code."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from telehealth.media.participant import Participant, ParticipantOptions

from conftest import Clock, Running, until

pytestmark = pytest.mark.e2e
DOB = "1990-04-27"


async def test_a_real_visit_leaves_a_draft_note(server: Running, clock: Clock) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    ids = {p.role: p.id for p in created.participants}
    started = clock()
    dr = Participant(created.link_for_role("clinician"),
                     options=ParticipantOptions(admit_all=True))
    patient = Participant(created.link_for_role("patient"), dob=DOB)
    tasks = [asyncio.create_task(dr.run()), asyncio.create_task(patient.run())]

    def video_both_ways() -> bool:
        a = dr.snapshot().peers.get(ids["patient"])
        b = patient.snapshot().peers.get(ids["clinician"])
        return bool(a and b and a.video_frames >= 10 and b.video_frames >= 10)

    await until(video_both_ways, timeout=30)
    # The patient says where they are (as the join page's location step does).
    status, grant = await server.post("/api/v1/join", {
        "token": created.link_for_role("patient").rsplit("/v/", 1)[1], "dob": DOB})
    assert status == 200
    status, _ = await server.post("/api/v1/location", {
        "ticket": grant["ticket"], "state": "MN", "at_home": True})
    assert status == 200

    clock.advance(minutes=41)  # the session goes on for 41 minutes of server time
    await dr.end_visit()
    await asyncio.gather(*tasks)

    status, note = await server.get(f"/api/v1/visits/{created.visit.id}/note", token)
    assert status == 200, note
    header = note["header"]
    assert header["minutes"] == 41
    assert header["code"] == "90834" and header["modifier"] == "95"
    assert header["modality"] == "audio-video"
    assert header["place_of_service"] == "10"
    assert header["patient_location"]["state"] == "MN"
    assert {(p["role"], p["name"]) for p in header["present"]} == {
        ("clinician", "Dana Rivera"), ("patient", "Alex Morgan")}
    start = datetime.fromisoformat(header["start"])
    stop = datetime.fromisoformat(header["stop"])
    assert start == started and (stop - start).total_seconds() == 41 * 60
    assert note["status"] == "draft"
    # It was waiting already: made when the visit ended, not when it was opened.
    entries = await server.services.store.audit_for(f"note:{note['id']}")
    drafted = [e for e in entries if e.action == "note.drafted"]
    viewed = [e for e in entries if e.action == "note.viewed"]
    assert drafted and viewed and drafted[0].seq < viewed[0].seq
