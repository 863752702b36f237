"""Whole visits through the real server with real aiortc peers (the headless participant)."""

from __future__ import annotations

import asyncio

import pytest

from telehealth.media.participant import (
    JoinRefused,
    Participant,
    ParticipantOptions,
    ParticipantState,
)

from conftest import Running, until
from tcpcut import TcpCutter

pytestmark = pytest.mark.e2e
DOB = "1990-04-27"



def frames_from(p: Participant, peer_id: str) -> int:
    peer = p.snapshot().peers.get(peer_id)
    return peer.video_frames if peer else 0


async def test_clinician_and_patient_see_each_other(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    dr = Participant(created.link_for_role("clinician"),
                     options=ParticipantOptions(admit_all=True))
    patient = Participant(created.link_for_role("patient"), dob=DOB)
    tasks = [asyncio.create_task(dr.run()), asyncio.create_task(patient.run())]
    ids = {p.role: p.id for p in created.participants}

    def video_both_ways() -> bool:
        return (frames_from(dr, ids["patient"]) >= 15
                and frames_from(patient, ids["clinician"]) >= 15)

    await until(video_both_ways)
    snap = patient.snapshot()
    assert snap.connected and snap.time_to_connected_s is not None
    assert snap.audio_frames_received > 0
    await dr.end_visit()
    results = await asyncio.gather(*tasks)
    assert [r.state for r in results] == ["ended", "ended"]

    kinds = [(e.participant_id, e.kind) for e in await server.services.timeline(created.visit)]
    for expected in [(ids["patient"], "identity_verified"), (ids["patient"], "waiting"),
                     (ids["patient"], "admitted"), (ids["patient"], "media_connected"),
                     (ids["clinician"], "admitted"), (ids["clinician"], "media_connected"),
                     (ids["clinician"], "ended")]:
        assert expected in kinds, expected

    # After the end, every link of the visit is refused.
    for link in created.links.values():
        with pytest.raises(JoinRefused) as err:
            await Participant(link, dob=DOB).run(duration_s=1)
        assert err.value.code == "visit_ended"


async def test_three_way_visit_with_a_legal_representative(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician, representative=True)
    rep, rep_link = await server.services.add_participant(
        created.visit, role="legal_representative", name="")
    ids = {p.role: p.id for p in created.participants} | {"legal_representative": rep.id}
    dr = Participant(created.link_for_role("clinician"),
                     options=ParticipantOptions(admit_all=True))
    patient = Participant(created.link_for_role("patient"), dob=DOB)
    guardian = Participant(rep_link, dob=DOB, name="Sam Morgan")
    people = {"clinician": dr, "patient": patient, "legal_representative": guardian}
    tasks = [asyncio.create_task(p.run()) for p in people.values()]

    def full_mesh() -> bool:
        return all(frames_from(p, ids[other]) >= 10
                   for role, p in people.items() for other in people if other != role)

    await until(full_mesh, timeout=30)
    await dr.end_visit()
    assert [r.state for r in await asyncio.gather(*tasks)] == ["ended"] * 3


async def test_dropped_patient_rejoins_within_grace_and_media_flows_again(
    server: Running,
) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    ids = {p.role: p.id for p in created.participants}
    async with TcpCutter(_server_port(server)).running() as net:
        patient_link = created.link_for_role("patient").replace(
            f":{_server_port(server)}/", f":{net.port}/")
        dr = Participant(created.link_for_role("clinician"),
                         options=ParticipantOptions(admit_all=True))
        patient = Participant(patient_link, dob=DOB,
                              options=ParticipantOptions(backoff_initial_s=0.1))
        tasks = [asyncio.create_task(dr.run()), asyncio.create_task(patient.run())]
        await until(lambda: frames_from(dr, ids["patient"]) >= 10)
        assert net.cut() >= 2  # the patient's signaling socket, both legs

        await until(lambda: patient.snapshot().reconnects >= 1)
        await until(lambda: dr.snapshot().peers[ids["patient"]].connections >= 2)
        before = frames_from(dr, ids["patient"])
        await until(lambda: frames_from(dr, ids["patient"]) >= before + 10)
        assert patient.state is ParticipantState.ADMITTED  # no second admission needed
        await dr.end_visit()
        await asyncio.gather(*tasks)

    kinds = [(e.participant_id, e.kind) for e in await server.services.timeline(created.visit)]
    assert (ids["patient"], "reconnecting") in kinds
    assert (ids["patient"], "rejoined") in kinds
    assert kinds.count((ids["patient"], "admitted")) == 1


def _server_port(server: Running) -> int:
    return int(server.url.rsplit(":", 1)[1])
