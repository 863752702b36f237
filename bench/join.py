"""Join benchmark: how long until both sides of a call see each other's first video frame.

Baseline: two aiortc peers wired directly in one process, offer and answer
handed over in memory: the floor that WebRTC itself sets on this machine (DTLS,
ICE on loopback, the first VP8 key frame).

Through the service: a clinician (headless participant, `admit_all`) is in the
room; a patient opens its link (join API with the date of birth), enters the
waiting room, is admitted; the figure is from opening the link to both sides
having the other's first video frame, so it holds the identity check, the
admission, the signaling relay through the real server (same process) and the
same WebRTC work as the baseline. Target: at most 1.5x.

    .venv/bin/python -m bench.join [--runs N] [--json]

Host candidates come from `TELEHEALTH_ICE_HOST_ADDRESSES` (default 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import socket
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from telehealth.app import build_app
from telehealth.config import Secret, Settings
from telehealth.media.hostaddr import host_addresses_from_env, use_host_addresses
from telehealth.media.participant import Participant, ParticipantOptions, ParticipantState
from telehealth.media.tracks import FrameCounter, MediaSource
from telehealth.visits import VisitRequest
from web.keys import SERVICES


async def direct_pair_first_frame() -> float:
    """Seconds from the start of negotiation until both peers have received a video frame.

    Each peer sends synthetic audio and video, as the headless participant does,
    with no ICE servers. Uses whatever host addresses aioice is set to gather.
    """
    pcs = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2)]
    firsts: list[asyncio.Future[float]] = []
    counters: list[FrameCounter] = []
    loop = asyncio.get_running_loop()
    for pc in pcs:
        source = MediaSource()
        for track in (source.audio_track(), source.video_track()):
            assert track is not None
            pc.addTrack(track)
        first: asyncio.Future[float] = loop.create_future()
        firsts.append(first)

        def on_track(track: MediaStreamTrack, first: asyncio.Future[float] = first) -> None:
            def seen(at: float) -> None:
                if not first.done():
                    first.set_result(at)
            on_first = seen if track.kind == "video" else None
            counters.append(FrameCounter(track, time.perf_counter, on_first).start())

        pc.on("track", on_track)
    offerer, answerer = pcs
    try:
        start = time.perf_counter()
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        async with asyncio.timeout(15):
            both = await asyncio.gather(*firsts)
        return max(both) - start
    finally:
        for pc in pcs:
            await pc.close()
        for counter in counters:
            await counter.stop()


async def through_server_first_frame(settings: Settings) -> float:
    """Seconds from a patient opening its link to first video frames both ways."""
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    try:
        svc = app[SERVICES]
        clinician = await svc.store.create_clinician(
            email=f"{secrets.token_hex(4)}@bench.example", name="Bench Clinician",
            credentials="", password_hash="-", now=svc.clock())
        created = await svc.create_visit(
            VisitRequest("Bench Patient", date(1990, 4, 27), svc.clock()), clinician)
        ids = {p.role: p.id for p in created.participants}
        dr = Participant(created.link_for_role("clinician"),
                         options=ParticipantOptions(admit_all=True))
        patient = Participant(created.link_for_role("patient"), dob="1990-04-27")
        tasks = [asyncio.create_task(dr.run())]
        await dr.wait_state(ParticipantState.ADMITTED)
        start = time.perf_counter()
        tasks.append(asyncio.create_task(patient.run()))
        async with asyncio.timeout(15):
            # Polling a snapshot: the participant has no event per peer's first frame.
            while not (_video(dr, ids["patient"]) and _video(patient, ids["clinician"])):  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - start
        await dr.end_visit()
        await asyncio.gather(*tasks)
        return elapsed
    finally:
        await runner.cleanup()


def _video(p: Participant, peer_id: str) -> bool:
    peer = p.snapshot().peers.get(peer_id)
    return peer is not None and peer.video_frames > 0


async def measure(runs: int) -> tuple[list[float], list[float]]:
    """Both figures, runs interleaved so drift on the machine hits both alike."""
    direct: list[float] = []
    served: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            port = _free_port()
            settings = Settings(port=port, data_dir=Path(tmp) / str(i),
                                public_url=f"http://127.0.0.1:{port}",
                                secret_key=Secret(secrets.token_urlsafe(40)))
            direct.append(await direct_pair_first_frame())
            served.append(await through_server_first_frame(settings))
    return direct, served


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    use_host_addresses(
        host_addresses_from_env(os.environ.get("TELEHEALTH_ICE_HOST_ADDRESSES")) or ["127.0.0.1"]
    )
    logging.basicConfig(level=logging.WARNING)
    direct, served = asyncio.run(measure(args.runs))
    ratio = statistics.median(served) / statistics.median(direct)
    figures = {
        "runs": args.runs,
        "direct_pair_first_frame_median_s": round(statistics.median(direct), 4),
        "through_server_first_frame_median_s": round(statistics.median(served), 4),
        "through_server_min_s": round(min(served), 4),
        "through_server_max_s": round(max(served), 4),
        "ratio": round(ratio, 2),
        "target": "<= 1.5",
        "met": ratio <= 1.5,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    ms = 1000
    print(f"direct pair (baseline):  median {statistics.median(direct) * ms:.0f} ms "
          f"(min {min(direct) * ms:.0f}, max {max(direct) * ms:.0f})")
    print(f"through the service:     median {statistics.median(served) * ms:.0f} ms "
          f"(min {min(served) * ms:.0f}, max {max(served) * ms:.0f})")
    print(f"ratio {ratio:.2f}x (target <= 1.5x): {'PASS' if ratio <= 1.5 else 'MISS'}"
          f" over {args.runs} runs")


if __name__ == "__main__":
    main()
