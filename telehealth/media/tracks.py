"""Synthetic media sources and frame counters for the headless participant.

Sources are cheap on purpose: the video track cycles through a few pre-built
YUV images of a moving bar, the audio track repeats one pre-built 20 ms buffer
of a sine tone. A `MediaSource` hands out fresh tracks, one per peer connection:
an aiortc sender pulls frames with `track.recv()` itself, so two senders on one
track would split its frames between them.

A `FrameCounter` reads a received track until it ends. Every received track
must be read (or sunk), otherwise aiortc queues decoded frames without bound.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import struct
import threading
import time
from collections.abc import Callable, Iterator

import av
from aiortc import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame
from av.video.plane import VideoPlane

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_SAMPLE_RATE = 48_000
AUDIO_PTIME = 0.020
AUDIO_SAMPLES = int(AUDIO_SAMPLE_RATE * AUDIO_PTIME)  # 960 per 20 ms frame
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_SAMPLE_RATE)


def _bar_images(width: int, height: int, count: int) -> list[tuple[bytes, bytes, bytes]]:
    """`count` yuv420p images (Y, U, V planes, unpadded) of a bar moving left to right."""
    bar = max(2, width // 10)
    chroma_w, chroma_h = (width + 1) // 2, (height + 1) // 2
    u_plane = bytes([90]) * (chroma_w * chroma_h)
    v_plane = bytes([160]) * (chroma_w * chroma_h)
    images = []
    for i in range(count):
        x = (i * (width - bar)) // max(1, count - 1)
        row = bytes([40]) * x + bytes([235]) * bar + bytes([40]) * (width - x - bar)
        images.append((row * height, u_plane, v_plane))
    return images


def _fill_plane(plane: VideoPlane, data: bytes, width: int) -> None:
    """Copy unpadded rows into a plane whose rows may be padded to `line_size`."""
    line_size = plane.line_size
    if line_size == width:
        plane.update(data)
        return
    rows = len(data) // width
    padding = bytes(line_size - width)
    plane.update(b"".join(data[r * width:(r + 1) * width] + padding for r in range(rows)))


class _PacedVideo(VideoStreamTrack):
    """A video track whose frames are paced at `fps` on the wall clock."""

    def __init__(self, fps: float) -> None:
        super().__init__()
        self._step = round(VIDEO_CLOCK_RATE / fps)
        self._origin: float | None = None
        self._pts = 0

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        """Pace frames at `fps` on the wall clock; pts counts in the 90 kHz video clock."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._origin is None:
            self._origin = time.monotonic()
        else:
            self._pts += self._step
            wait = self._origin + self._pts / VIDEO_CLOCK_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return self._pts, VIDEO_TIME_BASE


class SyntheticVideoTrack(_PacedVideo):
    """A moving bar, `width`x`height` at `fps` frames per second."""

    def __init__(self, width: int = 320, height: int = 240, fps: float = 30.0,
                 images: int = 30) -> None:
        super().__init__(fps)
        self.width = width
        self.height = height
        self._images = _bar_images(width, height, images)
        self._index = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        y, u, v = self._images[self._index]
        self._index = (self._index + 1) % len(self._images)
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        chroma_w = (self.width + 1) // 2
        _fill_plane(frame.planes[0], y, self.width)
        _fill_plane(frame.planes[1], u, chroma_w)
        _fill_plane(frame.planes[2], v, chroma_w)
        frame.pts = pts
        frame.time_base = time_base
        return frame


def _tone(frequency: float, amplitude: float) -> bytes:
    """One 20 ms frame of a sine tone as s16 mono.

    Choose a frequency with a whole number of periods in 20 ms (a multiple of
    50 Hz) and the buffer repeats without a click.
    """
    peak = int(32767 * amplitude)
    samples = (
        int(peak * math.sin(2 * math.pi * frequency * n / AUDIO_SAMPLE_RATE))
        for n in range(AUDIO_SAMPLES)
    )
    return struct.pack(f"<{AUDIO_SAMPLES}h", *samples)


class SineAudioTrack(AudioStreamTrack):
    """A sine tone, 48 kHz s16 mono, in 20 ms frames."""

    def __init__(self, frequency: float = 400.0, amplitude: float = 0.2) -> None:
        super().__init__()
        self._buffer = _tone(frequency, amplitude)
        self._origin: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._origin is None:
            self._origin = time.monotonic()
        else:
            self._pts += AUDIO_SAMPLES
            wait = self._origin + self._pts / AUDIO_SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(self._buffer)
        frame.pts = self._pts
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.time_base = AUDIO_TIME_BASE
        return frame


class MediaFileError(ValueError):
    """A `--video` file that cannot be opened or has no video stream."""


class FileVideoTrack(_PacedVideo):
    """The video of a media file, looped, paced at its own frame rate.

    Not aiortc's `MediaPlayer(loop=True)`: after its seek back to the start the
    pts restart at 0, its pacing stops working, and it decodes as fast as it
    can into an unbounded queue. Here each `recv` decodes one frame (in a
    thread) and stamps it with our own clock, so memory stays flat.
    """

    def __init__(self, path: str) -> None:
        try:
            self._container = av.open(path)
        except (OSError, av.FFmpegError) as exc:
            raise MediaFileError(f"cannot open {path}: {exc}") from exc
        if not self._container.streams.video:
            self._container.close()
            raise MediaFileError(f"{path} has no video stream")
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate
        fps = float(rate) if rate else 30.0
        super().__init__(min(max(fps, 1.0), 60.0))
        self._frames: Iterator[VideoFrame] = self._container.decode(self._stream)
        self._lock = threading.Lock()

    def _next_frame(self) -> VideoFrame:
        with self._lock:
            if self.readyState != "live":
                raise MediaStreamError
            for _ in range(2):  # once more from the start at the end of the file
                try:
                    return next(self._frames)
                except StopIteration:
                    self._container.seek(0)
                    self._frames = self._container.decode(self._stream)
            raise MediaStreamError  # an empty file

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = await asyncio.to_thread(self._next_frame)
        frame.pts = pts
        frame.time_base = time_base
        return frame

    def stop(self) -> None:
        super().stop()
        with self._lock:
            self._container.close()


class MediaSource:
    """Hands out the local tracks for each new peer connection.

    Synthetic by default; with `video_file`, video comes from that file (each
    connection reads it on its own) and audio stays the synthetic tone.
    """

    def __init__(self, *, send_video: bool = True, send_audio: bool = True,
                 video_file: str | None = None) -> None:
        self.send_video = send_video
        self.send_audio = send_audio
        self.video_file = video_file
        self._tracks: list[MediaStreamTrack] = []
        if video_file is not None and send_video:
            FileVideoTrack(video_file).stop()  # fail now, not on the first connection

    def video_track(self) -> MediaStreamTrack | None:
        if not self.send_video:
            return None
        track: MediaStreamTrack = (
            FileVideoTrack(self.video_file) if self.video_file else SyntheticVideoTrack())
        self._keep(track)
        return track

    def audio_track(self) -> MediaStreamTrack | None:
        if not self.send_audio:
            return None
        track = SineAudioTrack()
        self._keep(track)
        return track

    def _keep(self, track: MediaStreamTrack) -> None:
        self._tracks = [t for t in self._tracks if t.readyState == "live"]
        self._tracks.append(track)

    def close(self) -> None:
        """Stop every track handed out (closing a connection does not stop its tracks)."""
        for track in self._tracks:
            track.stop()
        self._tracks.clear()


class FrameCounter:
    """Reads a received track in a task, counting frames, until it ends or is stopped.

    `first_frame_at` is the `clock()` reading when the first frame arrived
    (`time.monotonic` unless another clock is given); `on_first_frame`, if
    given, is called with it.
    """

    def __init__(self, track: MediaStreamTrack,
                 clock: Callable[[], float] = time.monotonic,
                 on_first_frame: Callable[[float], None] | None = None) -> None:
        self.track = track
        self.kind: str = str(track.kind)
        self.frames = 0
        self.first_frame_at: float | None = None
        self._clock = clock
        self._on_first_frame = on_first_frame
        self._first = asyncio.Event()
        self._tick = asyncio.Event()  # set on every frame, for `wait_frames`
        self._ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> FrameCounter:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"frame-counter-{self.kind}"
            )
        return self

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self.track.recv()
                except MediaStreamError:
                    return
                self.frames += 1
                self._tick.set()
                if self.first_frame_at is None:
                    self.first_frame_at = self._clock()
                    self._first.set()
                    if self._on_first_frame is not None:
                        self._on_first_frame(self.first_frame_at)
        finally:
            self._ended.set()
            self._tick.set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_first_frame(self) -> float:
        """Wait for the first frame; returns `first_frame_at`. Bound it with `asyncio.timeout`."""
        await self._first.wait()
        assert self.first_frame_at is not None
        return self.first_frame_at

    async def wait_frames(self, count: int) -> int:
        """Until `count` frames were read or the track ended; returns the count so far."""
        while self.frames < count and not self._ended.is_set():
            self._tick.clear()
            await self._tick.wait()
        return self.frames

    async def wait_ended(self) -> None:
        """Until the reader stopped: the track ended, or `stop` was called."""
        await self._ended.wait()

    async def stop(self) -> None:
        """Stop reading; the count stays."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # Swallow our own cancel of the reader, not a cancel of the caller.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self._ended.set()  # also when the reader was cancelled before it ever ran
