"""The server's echo participant: the pre-call network test calls it.

The browser sends an offer (with all its candidates); the echo answers, sends
the received camera video straight back, and drops the audio. The page then
reads round-trip time, loss and bitrate from its own `getStats`. Each echo
call lives at most `max_seconds` and one participant has one at a time; the
service caps how many run at once, since each costs a little CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole, MediaRelay

log = logging.getLogger("telehealth.echo")


class EchoBusy(Exception):
    """Too many echo calls at once; try again in a moment."""


class EchoService:
    def __init__(self, *, max_calls: int = 8, max_seconds: float = 30.0) -> None:
        self.max_calls = max_calls
        self.max_seconds = max_seconds
        self._calls: dict[str, RTCPeerConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._relay = MediaRelay()

    async def answer(self, participant_id: str, offer_sdp: str) -> str:
        """The echo's answer to a browser offer (complete SDP, candidates included)."""
        await self._hang_up(participant_id)
        if len(self._calls) >= self.max_calls:
            raise EchoBusy("the connection test is busy; try again in a moment")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._calls[participant_id] = pc
        sink = MediaBlackhole()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                pc.addTrack(self._relay.subscribe(track))
            else:
                sink.addTrack(track)  # received tracks must be read, or memory grows

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._hang_up(participant_id, pc)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await self._hang_up(participant_id, pc)
            raise
        await sink.start()
        task = asyncio.create_task(self._expire(participant_id, pc, sink))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pc.localDescription.sdp

    async def _expire(
        self, participant_id: str, pc: RTCPeerConnection, sink: MediaBlackhole
    ) -> None:
        try:
            await asyncio.sleep(self.max_seconds)
        finally:
            await sink.stop()
            await self._hang_up(participant_id, pc)

    async def _hang_up(self, participant_id: str, pc: RTCPeerConnection | None = None) -> None:
        current = self._calls.get(participant_id)
        if current is None or (pc is not None and current is not pc):
            return
        del self._calls[participant_id]
        with contextlib.suppress(Exception):
            await current.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for pid in list(self._calls):
            await self._hang_up(pid)

    @property
    def active(self) -> int:
        return len(self._calls)
