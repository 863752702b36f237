"""Join benchmark: how long until both sides of a call see each other's first video frame.

Baseline half: two aiortc peers wired directly in one process, offer and answer
handed over in memory: the floor that WebRTC itself sets on this machine (DTLS,
ICE on loopback, the first VP8 key frame). The server half (two headless
participants joining through the real service) is to be added beside it, and
reported as a ratio to this baseline.

    .venv/bin/python bench/join.py [--runs N] [--json]

Host candidates come from `TELEHEALTH_ICE_HOST_ADDRESSES` (default 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from telehealth.media.hostaddr import host_addresses_from_env, use_host_addresses
from telehealth.media.tracks import FrameCounter, MediaSource


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


async def baseline(runs: int) -> list[float]:
    return [await direct_pair_first_frame() for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    use_host_addresses(
        host_addresses_from_env(os.environ.get("TELEHEALTH_ICE_HOST_ADDRESSES")) or ["127.0.0.1"]
    )
    times = asyncio.run(baseline(args.runs))
    figures = {
        "runs": len(times),
        "direct_pair_first_frame_median_s": statistics.median(times),
        "direct_pair_first_frame_min_s": min(times),
        "direct_pair_first_frame_max_s": max(times),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        median = figures["direct_pair_first_frame_median_s"]
        print(f"direct pair, first video frame both ways: median {median * 1000:.0f} ms"
              f" (min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}) over {len(times)} runs")


if __name__ == "__main__":
    main()
