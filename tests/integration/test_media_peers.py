"""Two real aiortc peers in one process, no server: the media half of the participant."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aioice.ice
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from telehealth.media.hostaddr import host_addresses_from_env, use_host_addresses
from telehealth.media.participant import candidate_from_wire
from telehealth.media.tracks import (
    AUDIO_SAMPLES,
    FileVideoTrack,
    FrameCounter,
    MediaFileError,
    MediaSource,
    SineAudioTrack,
    SyntheticVideoTrack,
)


@pytest.fixture
def loopback_only() -> Iterator[None]:
    use_host_addresses(["127.0.0.1"])
    yield
    use_host_addresses([])


class Pair:
    """Two peer connections, each sending synthetic audio and video, counting what it gets."""

    def __init__(self) -> None:
        self.a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.counters: dict[str, list[FrameCounter]] = {"a": [], "b": []}
        for side, pc in (("a", self.a), ("b", self.b)):
            source = MediaSource()
            for track in (source.audio_track(), source.video_track()):
                assert track is not None
                pc.addTrack(track)
            pc.on("track", self._counter_for(side))

    def _counter_for(self, side: str) -> Callable[[MediaStreamTrack], None]:
        def on_track(track: MediaStreamTrack) -> None:
            self.counters[side].append(FrameCounter(track).start())
        return on_track

    def frames(self, side: str, kind: str) -> int:
        return sum(c.frames for c in self.counters[side] if c.kind == kind)

    async def until(self, at_least: int) -> None:
        """Until both sides got `at_least` frames of each kind (counters exist once negotiated)."""
        counters = self.counters["a"] + self.counters["b"]
        assert len(counters) == 4
        await asyncio.gather(*(c.wait_frames(at_least) for c in counters))
        assert all(self.frames(side, kind) >= at_least
                   for side in "ab" for kind in ("audio", "video"))

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()
        for counter in self.counters["a"] + self.counters["b"]:
            await counter.stop()


@pytest.fixture
async def pair(loopback_only: None) -> AsyncIterator[Pair]:
    pair = Pair()
    yield pair
    await pair.close()


def _candidate_lines(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("a=candidate:")]


@pytest.mark.e2e
async def test_synthetic_media_flows_both_ways_over_loopback(pair: Pair) -> None:
    await pair.a.setLocalDescription(await pair.a.createOffer())
    offer = pair.a.localDescription
    lines = _candidate_lines(offer.sdp)
    assert lines and all(" 127.0.0.1 " in line for line in lines), lines

    await pair.b.setRemoteDescription(offer)
    await pair.b.setLocalDescription(await pair.b.createAnswer())
    await pair.a.setRemoteDescription(pair.b.localDescription)

    async with asyncio.timeout(10):
        await pair.until(10)
    assert pair.a.connectionState == pair.b.connectionState == "connected"
    assert {c.kind for c in pair.counters["a"]} == {"audio", "video"}
    assert all(c.first_frame_at is not None for c in pair.counters["a"] + pair.counters["b"])

    # Closing the connection ends the received tracks: the counters stop on their own.
    await pair.a.close()
    await pair.b.close()
    async with asyncio.timeout(5):
        await asyncio.gather(*(c.wait_ended() for c in pair.counters["a"] + pair.counters["b"]))
    assert not any(c.running for c in pair.counters["a"] + pair.counters["b"])
    assert pair.frames("a", "video") >= 10


@pytest.mark.e2e
async def test_trickled_browser_style_candidates(pair: Pair) -> None:
    """A browser sends its SDP bare and its candidates as `ice` objects, one by one."""
    await pair.a.setLocalDescription(await pair.a.createOffer())
    full = pair.a.localDescription.sdp
    lines = _candidate_lines(full)
    bare = "\r\n".join(
        line for line in full.split("\r\n")
        if not line.startswith("a=candidate:") and line != "a=end-of-candidates"
    )
    await pair.b.setRemoteDescription(RTCSessionDescription(bare, "offer"))
    await pair.b.setLocalDescription(await pair.b.createAnswer())
    await pair.a.setRemoteDescription(pair.b.localDescription)

    # The wire form of docs/protocol.md: {"candidate": "candidate:...", "sdpMid", "sdpMLineIndex"}.
    index, mid, sent = -1, None, 0
    for line in full.split("\r\n"):
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):]
        elif line.startswith("a=candidate:"):
            wire = {"candidate": line[len("a="):], "sdpMid": mid, "sdpMLineIndex": index}
            await pair.b.addIceCandidate(candidate_from_wire(wire))
            sent += 1
    assert sent == len(lines) > 0
    await pair.b.addIceCandidate(None)

    async with asyncio.timeout(10):
        await pair.until(5)


def test_candidate_from_wire_reads_the_browser_form() -> None:
    candidate = candidate_from_wire({
        "candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx "
                     "raddr 10.0.0.2 rport 46154 generation 0 ufrag abcd",
        "sdpMid": "0", "sdpMLineIndex": 0,
    })
    assert (candidate.ip, candidate.port, candidate.type) == ("203.0.113.7", 46154, "srflx")
    assert (candidate.relatedAddress, candidate.relatedPort) == ("10.0.0.2", 46154)
    assert (candidate.sdpMid, candidate.sdpMLineIndex) == ("0", 0)


def test_use_host_addresses_replaces_and_restores_aioice_lookup() -> None:
    default = aioice.ice.get_host_addresses
    try:
        use_host_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
        with pytest.raises(ValueError):
            use_host_addresses(["not-an-address"])
    finally:
        use_host_addresses([])
    assert aioice.ice.get_host_addresses is default
    assert host_addresses_from_env(" 127.0.0.1, ,::1 ") == ["127.0.0.1", "::1"]
    assert host_addresses_from_env(None) == []


async def test_synthetic_video_frames_are_paced_and_stamped() -> None:
    track = SyntheticVideoTrack(width=320, height=240, fps=30)
    frames = [await track.recv() for _ in range(4)]
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    assert [f.pts for f in frames] == [0, 3000, 6000, 9000]
    assert frames[0].time_base == fractions.Fraction(1, 90_000)
    # The bar moves: consecutive images differ.
    assert bytes(frames[0].planes[0]) != bytes(frames[1].planes[0])
    track.stop()


async def test_sine_audio_frames_are_20ms_at_48khz() -> None:
    track = SineAudioTrack()
    frames = [await track.recv() for _ in range(3)]
    assert [f.pts for f in frames] == [0, AUDIO_SAMPLES, 2 * AUDIO_SAMPLES]
    assert {(f.samples, f.sample_rate, f.format.name) for f in frames} == {(960, 48_000, "s16")}
    assert any(bytes(frames[0].planes[0]))  # not silence
    track.stop()


async def test_frame_counter_counts_until_the_track_ends() -> None:
    ticks = iter(range(100, 200))
    seen: list[float] = []
    track = SineAudioTrack()
    counter = FrameCounter(track, clock=lambda: float(next(ticks)), on_first_frame=seen.append)
    assert counter.kind == "audio" and counter.frames == 0 and counter.first_frame_at is None
    counter.start()
    async with asyncio.timeout(5):
        assert await counter.wait_first_frame() == 100.0
        assert await counter.wait_frames(3) >= 3
    assert seen == [100.0]

    track.stop()  # the next recv raises MediaStreamError: the counter ends by itself
    async with asyncio.timeout(5):
        await counter.wait_ended()
    assert not counter.running
    frames = counter.frames
    await counter.stop()
    assert counter.frames == frames >= 3 and counter.first_frame_at == 100.0


async def test_frame_counter_stop_cancels_reading_and_keeps_count() -> None:
    track = SyntheticVideoTrack(fps=30)
    counter = FrameCounter(track).start()
    async with asyncio.timeout(5):
        await counter.wait_first_frame()
    await counter.stop()
    assert not counter.running
    await counter.wait_ended()
    frames = counter.frames
    await asyncio.sleep(0.1)
    assert counter.frames == frames >= 1
    await counter.stop()  # idempotent
    track.stop()


def test_media_source_gives_fresh_tracks_and_honours_flags() -> None:
    source = MediaSource()
    first, second = source.video_track(), source.video_track()
    assert first is not None and second is not None and first is not second
    source.close()
    assert first.readyState == second.readyState == "ended"
    assert MediaSource(send_video=False).video_track() is None
    assert MediaSource(send_audio=False).audio_track() is None


async def _write_clip(path: Path, frames: int) -> None:
    """A short VP8 clip of the synthetic bar, at 30 fps."""
    source = SyntheticVideoTrack()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libvpx", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(frames):
            frame = await source.recv()
            frame.pts, frame.time_base = index, fractions.Fraction(1, 30)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    source.stop()


async def test_file_video_track_loops_at_the_files_pace(tmp_path: Path) -> None:
    clip = tmp_path / "clip.webm"
    await _write_clip(clip, 5)
    track = MediaSource(video_file=str(clip)).video_track()
    assert isinstance(track, FileVideoTrack)
    loop = asyncio.get_running_loop()
    start = loop.time()
    frames = [await track.recv() for _ in range(12)]  # past the end twice: it loops
    elapsed = loop.time() - start
    assert [f.pts for f in frames] == [3000 * i for i in range(12)]
    assert 0.3 < elapsed < 1.5  # 11 steps of 1/30 s: paced, not as fast as it decodes
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def test_unreadable_video_file_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(MediaFileError):
        MediaSource(video_file=str(tmp_path / "missing.webm"))
    (tmp_path / "text.webm").write_text("not a video")
    with pytest.raises(MediaFileError):
        MediaSource(video_file=str(tmp_path / "text.webm"))
