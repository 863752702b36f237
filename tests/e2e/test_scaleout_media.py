"""Headless aiortc participants on two instances (one Redis, one PostgreSQL): media flows.

The patient signals through instance A, the clinician through instance B; the media
itself is peer to peer. Then the patient's path is moved to B (as a load balancer does
when an instance goes away) and the call comes back without a second admission.
"""

from __future__ import annotations

import asyncio

import pytest

from telehealth.config import Settings
from telehealth.media.participant import Participant, ParticipantOptions, ParticipantState

from conftest import Clock, Running, redis_instances, until
from tcpcut import TcpCutter

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("needs_redis")]
DOB = "1990-04-27"
REDIS = "redis://127.0.0.1:6379/0"


def port_of(server: Running) -> int:
    return int(server.url.rsplit(":", 1)[1])


def on(link: str, server: Running, port: int | None = None) -> str:
    """`link` (minted with some instance's URL) pointed at `server` (or at `port`)."""
    token = link.rsplit("/v/", 1)[1]
    base = server.url if port is None else f"http://127.0.0.1:{port}"
    return f"{base}/v/{token}"


def frames_from(p: Participant, peer_id: str) -> int:
    peer = p.snapshot().peers.get(peer_id)
    return peer.video_frames if peer else 0


async def test_video_both_ways_across_instances(
    settings: Settings, clock: Clock, pg_url: str,
) -> None:
    async with redis_instances(settings, clock, pg_url, REDIS) as (a, b):
        clinician, _ = await a.clinician()
        created = await a.visit(clinician)
        ids = {p.role: p.id for p in created.participants}
        patient = Participant(on(created.link_for_role("patient"), a), dob=DOB)
        dr = Participant(on(created.link_for_role("clinician"), b),
                         options=ParticipantOptions(admit_all=True))
        tasks = [asyncio.create_task(patient.run()), asyncio.create_task(dr.run())]

        def video_both_ways() -> bool:
            return (frames_from(dr, ids["patient"]) >= 15
                    and frames_from(patient, ids["clinician"]) >= 15)

        await until(video_both_ways)
        assert patient.snapshot().audio_frames_received > 0
        await dr.end_visit()
        assert [r.state for r in await asyncio.gather(*tasks)] == ["ended", "ended"]
        for server in (a, b):
            assert server.services.hub is not None
            await server.services.hub.flush_events()
        kinds = [(e.participant_id, e.kind) for e in await b.services.timeline(created.visit)]
        for expected in [(ids["patient"], "waiting"), (ids["patient"], "admitted"),
                         (ids["patient"], "media_connected"),
                         (ids["clinician"], "media_connected"), (ids["clinician"], "ended")]:
            assert expected in kinds, expected


async def test_patient_moved_to_the_other_instance_and_media_flows_again(
    settings: Settings, clock: Clock, pg_url: str,
) -> None:
    async with redis_instances(settings, clock, pg_url, REDIS) as (a, b):
        clinician, _ = await a.clinician()
        created = await a.visit(clinician)
        ids = {p.role: p.id for p in created.participants}
        # The patient reaches the service through a "load balancer" that sends it to A.
        async with TcpCutter(port_of(a)).running() as lb:
            patient = Participant(on(created.link_for_role("patient"), a, lb.port), dob=DOB,
                                  options=ParticipantOptions(backoff_initial_s=0.1))
            dr = Participant(on(created.link_for_role("clinician"), b),
                             options=ParticipantOptions(admit_all=True))
            tasks = [asyncio.create_task(patient.run()), asyncio.create_task(dr.run())]
            await until(lambda: frames_from(dr, ids["patient"]) >= 10)

            lb.target_port = port_of(b)  # A is taken out: new connections go to B
            assert lb.cut() >= 2
            await until(lambda: patient.snapshot().reconnects >= 1)
            await until(lambda: dr.snapshot().peers[ids["patient"]].connections >= 2)
            before = frames_from(dr, ids["patient"])
            await until(lambda: frames_from(dr, ids["patient"]) >= before + 10)
            before = frames_from(patient, ids["clinician"])
            await until(lambda: frames_from(patient, ids["clinician"]) >= before + 10)
            assert patient.state is ParticipantState.ADMITTED  # no second admission
            await dr.end_visit()
            await asyncio.gather(*tasks)
        for server in (a, b):
            assert server.services.hub is not None
            await server.services.hub.flush_events()
        kinds = [(e.participant_id, e.kind) for e in await a.services.timeline(created.visit)]
        assert (ids["patient"], "reconnecting") in kinds
        assert (ids["patient"], "rejoined") in kinds
        assert kinds.count((ids["patient"], "admitted")) == 1
